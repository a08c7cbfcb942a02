"""`rlab export RUN --format onnx --out car.onnx`: a finished run's policy for the on-vehicle runtime.

Registered as the top-level command ``export`` through the ``rlab.commands`` entry point (shared.cli adds
this app with ``add_typer``, so the command is the app's callback). torch and stable-baselines3 are imported
inside the command (`robot.deploy.export`), so ``rlab --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shared.clikit import SingleCommandGroup
from shared.clikit import fail as _fail

FORMATS = ("onnx",)
EXIT_USAGE = 2


app = typer.Typer(cls=SingleCommandGroup, help="Export a finished run's policy for deployment (ONNX + metadata JSON).",
                  no_args_is_help=True, add_completion=False)



def _run_folder(run: str, runs_root: Path) -> Path:
    """A folder path as given; otherwise a unique part of a run's name under `runs_root`."""
    path = Path(run)
    if path.is_dir():
        return path
    from shared.tracking.listing import resolve_run

    try:
        return resolve_run(run, runs_root)
    except LookupError as err:
        raise _fail(f"RUN {run!r} is neither a folder nor a run's name: {err}", EXIT_USAGE) from None


@app.callback(invoke_without_command=True)
def export(
    run: Annotated[str, typer.Argument(help="Run folder (or a unique part of its name under --runs-root)")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="Export format: onnx")] = "onnx",
    out: Annotated[Path | None, typer.Option(
        help="Output file (default RUN/export/policy.onnx); the metadata goes to OUT.json")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset")] = 17,
    runs_root: Annotated[Path, typer.Option(help="Where runs live (for run names)")] = Path("runs"),
) -> None:
    """Export RUN's final/policy.zip: observation normalisation + deterministic actor + action unscaling
    and clipping, input `observation` [batch, n_obs], outputs `command` [steer_rad, throttle_fraction]
    and `action` (normalised); the metadata JSON describes the observation layout and limits."""
    if fmt.strip().lower() not in FORMATS:
        raise _fail(f"--format must be one of {', '.join(FORMATS)} (the only export format so far), got {fmt!r}",
                    EXIT_USAGE)
    run_dir = _run_folder(run, runs_root)
    target = out if out is not None else run_dir / "export" / "policy.onnx"

    from robot.deploy.export import ExportError, export_onnx

    try:
        onnx_path, meta_path = export_onnx(run_dir, target, opset=opset)
    except (ExportError, FileNotFoundError) as err:
        raise _fail(str(err)) from None
    typer.echo(f"onnx: {onnx_path}")
    typer.echo(f"metadata: {meta_path}")
