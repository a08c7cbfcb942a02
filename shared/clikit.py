"""Small pieces shared by `rlab`'s command modules (typer only, so any of them can import it cheaply).

- `fail`: print ``error: ...`` to stderr and return the `typer.Exit` to raise (code 1, or 2 for usage).
- `SingleCommandGroup`: for a command that a track adds through the ``rlab.commands`` entry points
  (``rlab export RUN --format onnx``, ``rlab drive --policy ...``). ``add_typer`` makes every app a group,
  and a group stops parsing options at its first positional (it would be a subcommand's name); an app
  built with ``typer.Typer(cls=SingleCommandGroup)`` whose callback is the command parses like a plain
  command, and an extra argument is an error.
- `run_rlab`: run ``rlab ARGS`` in a subprocess with its output appended to a log file (the results-table
  scripts, ``python -m vlm_rl.experiment`` and ``python -m robot.rccar.experiment``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


class SingleCommandGroup(TyperGroup):
    allow_interspersed_args = True
    allow_extra_args = False

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super(TyperGroup, self).parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:  # without TyperGroup's "COMMAND [ARGS]..."
        return super(TyperGroup, self).collect_usage_pieces(ctx)


def run_rlab(args: list[str], log: Path) -> None:
    """``rlab ARGS`` (this interpreter's ``shared.cli``) with stdout and stderr appended to `log`, after a
    ``$ rlab ...`` line; raises RuntimeError naming the command and the log when it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(f"$ rlab {' '.join(args)}\n")
        fh.flush()
        done = subprocess.run([sys.executable, "-m", "shared.cli", *args], stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"`rlab {' '.join(args)}` failed with exit code {done.returncode}; see {log}")


def train_run(track: str, config: str, run_dir: Path, overrides: list[str], log: Path) -> None:
    """``rlab train TRACK`` of one results-table run: resumed when `run_dir` holds a config already (a killed
    run), else started with ``--config CONFIG --run-dir RUN_DIR --set ...``. The caller skips finished runs."""
    if (run_dir / "config.yaml").exists():
        run_rlab(["train", track, "--resume", str(run_dir)], log)
    else:
        run_rlab(["train", track, "--config", config, "--run-dir", str(run_dir),
                  *(a for s in overrides for a in ("--set", s))], log)
