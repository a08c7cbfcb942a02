"""`rlab`: the lab's command line. Tracks plug in through entry points (see shared.tracks).

Heavy imports (torch, transformers, matplotlib) happen inside the commands, so ``rlab --help``
answers fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from shared.clikit import fail as _fail
from shared.tracks import COMMANDS_GROUP, DATA_GROUP, MODELS_GROUP, EvalRequest, track_names

app = typer.Typer(
    name="rlab",
    help="RL lab: train experiments per track, evaluate runs, render galleries.\n\n"
    "Tracks: " + ", ".join(track_names()) + ". Start with `rlab train diag --help-config`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
runs_app = typer.Typer(help="List, inspect, compare and plot runs.", no_args_is_help=True)
models_app = typer.Typer(help="Build the lab's small models locally (nothing is downloaded).",
                         no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(models_app, name="models")

RUNS_ROOT = Path("runs")
EXIT_USAGE = 2



def _resolve(refs: list[str], runs_root: Path) -> list[Path]:
    """Run folders from paths or unique name parts; a bad reference exits 2 with the candidates."""
    from shared.tracking.listing import resolve_run

    try:
        return [resolve_run(r, runs_root) for r in refs]
    except LookupError as err:
        raise _fail(str(err), EXIT_USAGE) from None


def _setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


# ------------------------------------------------------------------------------------------ train


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
def train(
    track: Annotated[str, typer.Argument(help="Track to train: " + ", ".join(track_names()))],
    config: Annotated[str | None, typer.Option(
        "--config", "-c", help="Experiment name in the track's configs/ (default: 'default') or a YAML path")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-s", help="Dotted override key=value (repeatable), e.g. --set train.steps=50")] = None,
    run_dir: Annotated[Path | None, typer.Option(
        help="Run folder to create (default runs/<track>/<name>-<time>)")] = None,
    resume: Annotated[str | None, typer.Option(help="Continue this run from its last valid checkpoint")] = None,
    runs_root: Annotated[Path, typer.Option(help="Where new runs go")] = RUNS_ROOT,
    help_config: Annotated[bool, typer.Option(
        "--help-config", help="Print every config field with its help and default")] = False,
    wandb: Annotated[bool, typer.Option(help="Also log to Weights & Biases (off by default)")] = False,
) -> None:
    """Train TRACK (or resume a killed run with --resume RUN)."""
    from shared.config import ConfigError, describe_config, load_config, to_yaml
    from shared.tracks import load_track

    try:
        trk = load_track(track)
    except KeyError as err:
        raise _fail(str(err.args[0]), EXIT_USAGE) from None
    if help_config:
        typer.echo(describe_config(trk.schema))
        return
    _setup_logging()
    try:
        if resume:
            if config or run_dir:
                raise _fail("--resume continues a run with its own saved config; drop --config/--run-dir",
                            EXIT_USAGE)
            path = _resolve([resume], runs_root)[0]
            cfg = load_config(trk.schema, path / "config.yaml", set_ or ())
        else:
            cfg = load_config(trk.schema, config or "default", set_ or (), trk.configs_dir)
    except ConfigError as err:
        raise _fail(f"config: {err}", EXIT_USAGE) from None
    except (FileNotFoundError, LookupError) as err:
        raise _fail(str(err), EXIT_USAGE) from None
    _run_training(trk, cfg, to_yaml(cfg), resume_path=path if resume else None, run_dir=run_dir,
                  runs_root=runs_root, wandb=wandb)


def _join_launch(cfg) -> tuple[int, object]:
    """(rank, device) under a multi-process launch (accelerate launch / torchrun) whose config asks for
    data parallelism (LM tracks' system.distributed), after joining the process group; (0, None) otherwise."""
    system = getattr(cfg, "system", None)
    if system is None:
        return 0, None
    from shared.lm.runtime import init_distributed, launch_rank, launch_world_size, resolve_device, resolve_distributed

    world = launch_world_size()
    if resolve_distributed(system.distributed, world) == "none":
        return 0, None
    device = resolve_device(system.device, world)
    init_distributed(device)
    return launch_rank(), device


def _run_training(trk, cfg, cfg_yaml: str, resume_path, run_dir, runs_root, wandb) -> Path:
    from shared.tracking.run import Run

    rank, device = _join_launch(cfg)
    if rank > 0:  # rank 0 writes the run folder; the others follow it, writing nothing
        path = _follow_training(trk, cfg, resume_path, device)
        _leave_launch(device)
        return path
    if resume_path is not None:
        run = Run.open(resume_path, wandb=wandb)
        if set(cfg_yaml.splitlines()) != set(run.config_path.read_text().splitlines()):
            run.config_path.write_text(cfg_yaml)  # --set on resume: the saved config follows
    else:
        name = getattr(cfg, "name", trk.name)
        run = Run.create(trk.name, name, cfg_yaml, cfg.train.seed, root=runs_root, run_dir=run_dir, wandb=wandb)
    if device is not None and resume_path is None:  # the new folder's name, for the other processes
        from shared.lm.runtime import broadcast_object

        broadcast_object(str(run.path), device)
    typer.echo(f"run: {run.path}", err=True)
    try:
        with run:
            trk.train(cfg, run, resume_path is not None)
    except KeyboardInterrupt:
        run.mark("stopped")
        raise _fail(f"interrupted; resume with: rlab train {trk.name} --resume {run.path}", 130) from None
    except Exception as err:  # noqa: BLE001 - record the failure in run.json, then report it
        run.mark("failed")
        if type(err).__name__ == "TrainingStopped":
            raise _fail(str(err)) from None
        raise
    run.mark("finished")
    _leave_launch(device)
    typer.echo(str(run.path))
    return run.path


def _leave_launch(device) -> None:
    """After a finished multi-process run: every process waits for the others, then leaves the process group.
    A process that exited with gloo still up while another was finishing its writes was seen to abort at exit
    ("terminate called without an active exception") in one of about twenty two-process runs under load."""
    if device is None:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _follow_training(trk, cfg, resume_path, device) -> Path:
    """A process of rank > 0: train in a read-only view of the run folder rank 0 created."""
    from shared.lm.runtime import broadcast_object
    from shared.tracking.run import Run

    path = resume_path if resume_path is not None else Path(broadcast_object(None, device))
    with Run.open(path, read_only=True) as run:
        trk.train(cfg, run, resume_path is not None)
    return run.path


# ------------------------------------------------------------------------------------------- eval


@app.command("eval")
def eval_(
    run: Annotated[str, typer.Argument(help="Run folder (or a unique part of its name under runs/)")],
    split: Annotated[str, typer.Option(help="Held-out split")] = "test",
    k: Annotated[str, typer.Option(help="Comma-separated k for pass@k / mean@k; n = max(k) samples per item")] = "1",
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N items")] = None,
    track: Annotated[str | None, typer.Option(
        "--track", help="Robot tracks: the circuit to drive (bundled name or CSV path; rccar)")] = None,
    laps: Annotated[int | None, typer.Option(help="Robot tracks: laps to drive (rccar)")] = None,
    worlds: Annotated[str | None, typer.Option(
        help="flight: generated worlds to fly in (heldout, heldout_textures, val, train)")] = None,
    episodes: Annotated[int | None, typer.Option(help="flight: flights per controller")] = None,
    world: Annotated[str | None, typer.Option(
        help="flight: a world file (OBJ, URDF or SDF; pybullet_data:NAME for one shipped with pybullet)")] = None,
    start: Annotated[str | None, typer.Option(help="flight: start pose x,y,z,yaw_deg in --world")] = None,
    runs_root: Annotated[Path, typer.Option(help="Where runs live")] = RUNS_ROOT,
) -> None:
    """Evaluate a finished run's model on a held-out split: mean@k and pass@k (LM tracks), laps (rccar),
    collision-free flight distance against the baselines (flight)."""
    from shared.tracks import load_track

    try:
        ks = tuple(sorted({int(x) for x in k.split(",") if x.strip()}))
        if not ks or min(ks) < 1:
            raise ValueError
    except ValueError:
        raise _fail(f"--k must be positive integers separated by commas, got {k!r}", EXIT_USAGE) from None
    path = _resolve([run], runs_root)[0]
    run_track = _run_track(path)
    trk = load_track(run_track)
    if trk.evaluate is None:
        raise _fail(f"track {run_track!r} has no evaluation", EXIT_USAGE)
    try:
        options = {key: value for key, value in (("track", track), ("laps", laps), ("worlds", worlds),
                                                 ("episodes", episodes), ("world", world), ("start", start))
                   if value is not None}
        metrics = trk.evaluate(EvalRequest(path, split, ks, limit, options))
    except (FileNotFoundError, ValueError) as err:
        raise _fail(str(err)) from None
    for key, value in metrics.items():
        typer.echo(f"{key}: {value:.4f}")


def _run_track(path: Path) -> str:
    import json

    info = path / "run.json"
    if info.exists():
        return json.loads(info.read_text())["track"]
    return path.parent.name


# ---------------------------------------------------------------------------------------- gallery


@app.command()
def gallery(
    runs: Annotated[list[str], typer.Argument(help="One or more runs")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default: RUN/gallery for one run)")] = None,
    group_by: Annotated[str, typer.Option(help="Group media by 'step' or by evaluation 'item'")] = "step",
    runs_root: Annotated[Path, typer.Option(help="Where runs live")] = RUNS_ROOT,
) -> None:
    """Render a static HTML gallery (opens from disk) and print the path of its index.html."""
    from shared.gallery import build_gallery

    if group_by not in ("step", "item"):
        raise _fail("--group-by must be 'step' or 'item'", EXIT_USAGE)
    paths = _resolve(runs, runs_root)
    if out is None and len(paths) > 1:
        raise _fail("several runs need --out DIR", EXIT_USAGE)
    index = build_gallery(paths, out, group_by=group_by)
    typer.echo(str(index.resolve()))


# ------------------------------------------------------------------------------------------- runs


@runs_app.command("ls")
def runs_ls(runs_root: Annotated[Path, typer.Option(help="Where runs live")] = RUNS_ROOT,
            track: Annotated[str | None, typer.Option(help="Only this track")] = None) -> None:
    """List runs, newest last."""
    from rich.console import Console
    from rich.table import Table

    from shared.tracking.listing import find_runs

    table = Table("run", "track", "status", "step", "checkpoints", "created")
    for r in find_runs(runs_root):
        if track and r.track != track:
            continue
        table.add_row(str(r.path), r.track, r.status, str(r.last_step), str(r.checkpoints), str(r.created))
    Console().print(table)


@runs_app.command("show")
def runs_show(run: str, runs_root: Annotated[Path, typer.Option(help="Where runs live")] = RUNS_ROOT) -> None:
    """Config highlights, environment, last metrics, checkpoints of one run."""
    from shared.tracking.listing import show_run

    typer.echo(show_run(_resolve([run], runs_root)[0]))


@runs_app.command("compare")
def runs_compare(
    runs: Annotated[list[str], typer.Argument(help="Two or more runs")],
    metric: Annotated[list[str] | None, typer.Option(help="Metrics to compare (default: all shared)")] = None,
    runs_root: Annotated[Path, typer.Option(help="Where runs live")] = RUNS_ROOT,
) -> None:
    """The config keys that differ between runs, and their final metrics side by side."""
    from rich.console import Console

    from shared.tracking.listing import compare_runs

    Console().print(compare_runs(_resolve(runs, runs_root), metric or None))


@runs_app.command("plot")
def runs_plot(
    runs: Annotated[list[str], typer.Argument(help="One or more runs (overlaid)")],
    metric: Annotated[str, typer.Option(help="Metric key in metrics.jsonl, e.g. reward")] = "reward",
    out: Annotated[Path | None, typer.Option(help="PNG path (default: <first run>/plots/<metric>.png)")] = None,
    smooth: Annotated[int, typer.Option(help="Moving-average window (0: none)")] = 0,
    runs_root: Annotated[Path, typer.Option(help="Where runs live")] = RUNS_ROOT,
) -> None:
    """Plot one metric against step for one or more runs; prints the PNG path."""
    from shared.gallery.curves import plot_metric

    paths = _resolve(runs, runs_root)
    out = out or paths[0] / "plots" / f"{metric.replace('/', '_')}.png"
    try:
        png = plot_metric(paths, metric, out, smooth=smooth)
    except ValueError as err:
        raise _fail(str(err), EXIT_USAGE) from None
    typer.echo(str(Path(png).resolve()))


# ----------------------------------------------------------------------------------------- models


@models_app.command("tiny-lm")
def models_tiny_lm(
    out: Annotated[Path, typer.Option(help="Folder to write (save_pretrained format)")] = Path("models/tiny-lm"),
    task: Annotated[str, typer.Option(help="Digit task whose text trains the tokenizer: add or reverse")] = "add",
    hidden_size: Annotated[int, typer.Option(help="Transformer width")] = 64,
    layers: Annotated[int, typer.Option(help="Decoder layers")] = 2,
    seed: Annotated[int, typer.Option(help="Initialisation seed")] = 0,
) -> None:
    """Build the diag track's tiny Qwen2 + locally trained tokenizer and save it."""
    from shared.diag.model import TinyLMConfig, build_tiny_lm, save_model, train_tokenizer
    from shared.diag.task import DigitTask
    from shared.diag.track import _corpus

    if task not in ("add", "reverse"):
        raise _fail("--task must be add or reverse", EXIT_USAGE)
    cfg = TinyLMConfig(hidden_size=hidden_size, num_layers=layers)
    tokenizer = train_tokenizer(_corpus(DigitTask(task)), cfg.vocab_size)
    model = build_tiny_lm(cfg, tokenizer, seed)
    save_model(model, tokenizer, out)
    n = sum(p.numel() for p in model.parameters())
    typer.echo(f"{out} ({n / 1e6:.2f}M parameters, vocabulary {len(tokenizer)})")


# ------------------------------------------------------------------------------------------- demo


@app.command()
def demo(
    runs_root: Annotated[Path, typer.Option(help="Where the demo's runs go")] = Path("runs/demo"),
    quick: Annotated[bool, typer.Option(help="A much shorter run (for smoke tests)")] = False,
) -> None:
    """Run the main job on the embedded defaults and print the path of its gallery."""
    from shared.demo import run_demo

    _setup_logging()
    index = run_demo(runs_root, quick=quick)
    typer.echo("")
    typer.echo(f"gallery: {index.resolve()}")


def _register_track_commands() -> None:
    """Commands that tracks add through entry points, so none exists before it does something:

    - group ``rlab.commands``: a typer app added as a top-level command (``rlab export ...``);
    - group ``rlab.models``: a function added as ``rlab models NAME`` (e.g. ``tiny-vlm``);
    - group ``rlab.data``: a function added as ``rlab data NAME`` (e.g. ``vlm``, ``svg``).

    The modules they live in must import torch and friends inside the functions (fast --help).
    """
    from importlib.metadata import entry_points

    for ep in entry_points(group=COMMANDS_GROUP):
        app.add_typer(ep.load(), name=ep.name)
    for ep in entry_points(group=MODELS_GROUP):
        models_app.command(ep.name)(ep.load())
    data_eps = list(entry_points(group=DATA_GROUP))
    if data_eps:
        data_app = typer.Typer(help="Generate or import task datasets in the lab's standard format.",
                               no_args_is_help=True)
        for ep in data_eps:
            data_app.command(ep.name)(ep.load())
        app.add_typer(data_app, name="data")


def main() -> None:
    _register_track_commands()
    app(prog_name="rlab")


if __name__ == "__main__":
    sys.exit(main())
