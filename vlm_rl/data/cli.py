"""``rlab data vlm``: write a vlm task dataset (entry point ``rlab.data: vlm = "vlm_rl.data.cli:vlm"``).

Only typer is imported here; PIL, numpy and the generators load when the command runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

TASK_NAMES = ("counting", "comparison", "arithmetic", "control")
"""Kept in step with `vlm_rl.data.tasks.TASKS` (a test checks), so that --help loads no generator."""
TASK_ALIASES = {"shapes": "counting"}
"""Other names accepted by --task (``shapes``: the counting scenes of coloured shapes)."""


def vlm(
    task: Annotated[str, typer.Option(help=f"Task to generate: {', '.join(TASK_NAMES)} ("
                                           f"{', '.join(f'{a} = {t}' for a, t in TASK_ALIASES.items())}).")
                    ] = "counting",
    out: Annotated[Path | None, typer.Option(help="Folder to write; must not exist or be empty. "
                                                  "Default: data/<task>.")] = None,
    n_train: Annotated[int, typer.Option(help="Training items.")] = 20000,
    n_test: Annotated[int, typer.Option(help="In-distribution test items (1000 gives a ~1.5-point standard "
                                             "error).")] = 1000,
    n_ood: Annotated[int, typer.Option(help="Out-of-distribution test items (split test_ood).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed; the same seed, sizes and fonts give the same dataset.")] = 0,
    image_size: Annotated[int, typer.Option(help="Image side in pixels (112 gives the tiny model 16 visual "
                                                 "tokens).")] = 112,
) -> None:
    """Generate a vlm task dataset (train, test and test_ood splits) in the standard format.

    Writes train.jsonl, test.jsonl, test_ood.jsonl, images/, dataset.json and README.md.
    """
    from vlm_rl.data.writer import write_dataset

    out = out if out is not None else Path("data") / task
    start = time.perf_counter()
    try:
        path = write_dataset(out, TASK_ALIASES.get(task, task), n_train, n_test, n_ood, seed, image_size, progress=True)
    except (ValueError, FileExistsError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    total = n_train + n_test + n_ood
    typer.echo(f"wrote {total} items in {time.perf_counter() - start:.1f} s")
    typer.echo(str(path))
