"""`rlab export RUN --format onnx --out car.onnx`: a finished run's policy for the on-vehicle runtime.

Registered as the top-level command ``export`` through the ``rlab.commands`` entry point (shared.cli adds
this app with ``add_typer``, so the command is the app's callback). torch and stable-baselines3 are imported
inside the command (`robot.deploy.export`), so ``rlab --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

FORMATS = ("onnx",)
EXIT_USAGE = 2


class _CommandGroup(TyperGroup):
    """A group without subcommands whose callback is the command. ``add_typer`` makes every app a group, and
    a group stops parsing options at its first positional (it would be the subcommand's name), so
    ``rlab export RUN --format onnx`` would fail (the options taken for a subcommand): this one parses like
    a plain command, and an extra argument is an error."""

    allow_interspersed_args = True
    allow_extra_args = False

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super(TyperGroup, self).parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:  # without TyperGroup's "COMMAND [ARGS]..."
        return super(TyperGroup, self).collect_usage_pieces(ctx)


app = typer.Typer(cls=_CommandGroup, help="Export a finished run's policy for deployment (ONNX + metadata JSON).",
                  no_args_is_help=True, add_completion=False)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


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
