"""``rlab data svg``: write an svg dataset (entry point ``rlab.data: svg = "svg_rlrf.data.cli:svg"``).

Exactly one source::

    rlab data svg --synthetic --n 5000 --out data/svg-shapes          # generated shapes, levels 1-3
    rlab data svg --from-dir ~/icons --out data/my-icons              # a folder of .svg files
    rlab data svg --icons fontawesome --n 300 --out data/fa-icons     # Font Awesome Free (pip fontawesomefree)

Only typer is imported here; numpy, PIL and the renderer load when the command runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer

ICON_SETS = ("fontawesome",)
"""Values of --icons."""
FOLDER_FRACS = (0.05, 0.1)
"""Default (val, test) fractions of --from-dir; --icons puts everything in test by default."""


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        levels = ()
    if not levels or any(lv not in (1, 2, 3) for lv in levels):
        _fail(f"--levels must be a comma-separated list of 1, 2, 3 (got {text!r})")
    return levels


def _summary(path: Path, seconds: float) -> None:
    card = json.loads((path / "dataset.json").read_text(encoding="utf-8"))
    splits = ", ".join(f"{name} {info['count']}" for name, info in card["splits"].items())
    total = sum(info["count"] for info in card["splits"].values())
    typer.echo(f"wrote {total} items ({splits}) in {seconds:.1f} s")
    if "rejects" in card:
        rejects = card["rejects"]
        counts = ", ".join(f"{reason} {n}" for reason, n in rejects["counts"].items()) or "none"
        typer.echo(f"rejected {rejects['rejected']} of {rejects['files_seen']} files: {counts}")
    if card.get("redrawn"):
        typer.echo(f"items drawn again: {', '.join(f'{k} {v}' for k, v in card['redrawn'].items())}")
    typer.echo(str(path))


def svg(
    synthetic: Annotated[bool, typer.Option("--synthetic", help="Generate shapes at complexity --levels.")] = False,
    from_dir: Annotated[Path | None, typer.Option("--from-dir", help="Normalise every .svg file under this "
                                                                     "folder.")] = None,
    icons: Annotated[str | None, typer.Option(help=f"Icon set to normalise: {', '.join(ICON_SETS)} (Font Awesome "
                                                   "Free, from the fontawesomefree pip package).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder to write; must not exist or be empty. Default: "
                                                  "data/svg-shapes, data/<folder name> or data/fa-icons-<style>.")
                   ] = None,
    n: Annotated[int | None, typer.Option(help="--synthetic: training items (default 5000); --from-dir: at most "
                                               "this many files (default all); --icons: icons (default 300).")
                 ] = None,
    n_val: Annotated[int, typer.Option(help="--synthetic: val items.")] = 200,
    n_test: Annotated[int, typer.Option(help="--synthetic: test items.")] = 300,
    val_frac: Annotated[float | None, typer.Option(help="--from-dir/--icons: fraction of items in val (default "
                                                        f"{FOLDER_FRACS[0]}; icons 0).")] = None,
    test_frac: Annotated[float | None, typer.Option(help="--from-dir/--icons: fraction of items in test (default "
                                                         f"{FOLDER_FRACS[1]}; icons 1).")] = None,
    levels: Annotated[str, typer.Option(help="--synthetic: complexity levels, e.g. 1,2,3.")] = "1,2,3",
    style: Annotated[str, typer.Option(help="--icons fontawesome: solid, regular or brands.")] = "solid",
    seed: Annotated[int, typer.Option(help="Seed; the same seed and options give the same dataset.")] = 0,
    canvas: Annotated[int, typer.Option(help="Side C of the canonical frame viewBox 0 0 C C.")] = 64,
    decimals: Annotated[int, typer.Option(help="Decimal places of coordinates in the canonical frame.")] = 0,
    image_size: Annotated[int, typer.Option(help="Rendered image side in pixels.")] = 112,
) -> None:
    """Write an svg dataset (SVG code + rendered image per row) in the standard format.

    Writes {train,val,test}.jsonl, images/, dataset.json and README.md; answers are SVG code in the
    frame viewBox="0 0 C C" with coordinates rounded to --decimals places.
    """
    sources = [name for name, given in (("--synthetic", synthetic), ("--from-dir", from_dir is not None),
                                        ("--icons", icons is not None)) if given]
    if len(sources) != 1:
        _fail(f"give exactly one source: --synthetic, --from-dir DIR or --icons fontawesome (got "
              f"{', '.join(sources) or 'none'})")
    if icons is not None and icons not in ICON_SETS:
        _fail(f"unknown icon set {icons!r} (icon sets: {', '.join(ICON_SETS)})")
    if n is not None and n < 1:
        _fail(f"--n must be >= 1 (got {n})")
    start = time.perf_counter()
    try:
        if synthetic:
            from svg_rlrf.data.synthetic import write_synthetic

            path = write_synthetic(out or Path("data/svg-shapes"), 5000 if n is None else n, n_val, n_test,
                                   seed=seed, canvas=canvas, image_size=image_size, levels=_levels(levels),
                                   decimals=decimals, progress=True)
        elif from_dir is not None:
            from svg_rlrf.data.folder import write_from_dir

            src = from_dir.expanduser()
            if not src.is_dir():
                _fail(f"{from_dir} is not a folder" if src.exists() else f"folder {from_dir} does not exist")
            path = write_from_dir(src, out or Path("data") / src.resolve().name, canvas=canvas,
                                  image_size=image_size, decimals=decimals, seed=seed, limit=n,
                                  val_frac=FOLDER_FRACS[0] if val_frac is None else val_frac,
                                  test_frac=FOLDER_FRACS[1] if test_frac is None else test_frac, progress=True)
        else:
            from svg_rlrf.data.icons import write_icons

            path = write_icons(out or Path(f"data/fa-icons-{style}"), n=300 if n is None else n, seed=seed,
                               style=style, canvas=canvas, image_size=image_size, decimals=decimals,
                               val_frac=0.0 if val_frac is None else val_frac,
                               test_frac=1.0 if test_frac is None else test_frac, progress=True)
    except (ValueError, FileExistsError, FileNotFoundError, ModuleNotFoundError) as err:
        _fail(str(err))
    _summary(path, time.perf_counter() - start)
