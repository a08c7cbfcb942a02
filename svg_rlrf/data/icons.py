"""The svg track's real icon set: Font Awesome Free icons, from the ``fontawesomefree`` pip package.

The package ships about 2,000 single-colour icons as SVG files (``svgs/solid``, ``svgs/regular``,
``svgs/brands``); `write_icons` normalises a seeded sample of them (`svg_rlrf.data.folder`) into a
dataset whose rows are all in the test split by default, for evaluating a model trained on the
synthetic shapes on real drawings. Nothing is downloaded: the package must be installed.

Font Awesome Free's icons are licensed CC BY 4.0 (`LICENCE`); every written dataset records the
licence and attribution in its ``dataset.json`` and ``README.md``.
"""

from __future__ import annotations

from pathlib import Path

STYLES: tuple[str, ...] = ("solid", "regular", "brands")
PACKAGE = "fontawesomefree"
LICENCE: dict[str, str] = {
    "name": "CC BY 4.0",
    "url": "https://creativecommons.org/licenses/by/4.0/",
    "attribution": "Icons: Font Awesome Free by Fonticons, Inc. (https://fontawesome.com), licensed CC BY 4.0 "
                   "(https://fontawesome.com/license/free); read from the fontawesomefree pip package and "
                   "normalised (rescaled, numbers rounded, metadata removed) by svg_rlrf.data.folder.",
}
"""Licence and attribution written into every icon dataset."""


def icon_dir(style: str = "solid") -> Path:
    """The folder of Font Awesome Free SVGs of `style` (solid, regular or brands) in the installed package.

    Raises ``ModuleNotFoundError`` naming the pip package when it is not installed, ``ValueError`` for
    an unknown style and ``FileNotFoundError`` when the package has no such folder.
    """
    import importlib.util

    if style not in STYLES:
        raise ValueError(f"unknown Font Awesome style {style!r} (styles: {', '.join(STYLES)})")
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the Font Awesome icons come from the {PACKAGE!r} pip package, which is not "
                                  f"installed (pip install {PACKAGE})", name=PACKAGE)
    for base in spec.submodule_search_locations:
        folder = Path(base) / "static" / PACKAGE / "svgs" / style
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"the {PACKAGE} package has no svgs/{style} folder (looked in "
                            f"{', '.join(spec.submodule_search_locations)})")


def write_icons(
    out: Path, *, n: int = 300, seed: int = 0, style: str = "solid", canvas: int = 64, image_size: int = 112,
    val_frac: float = 0.0, test_frac: float = 1.0, decimals: int = 0, progress: bool = True,
) -> Path:
    """Write `n` Font Awesome icons of `style`, a seeded sample, as a dataset in `out` (all in test by default).

    `write_from_dir` on `icon_dir` (`style`) with ``limit=n``: icons are taken in a seeded order until
    `n` are accepted (fewer when the style has fewer usable icons); rejects are counted in
    ``dataset.json``. The licence and attribution (`LICENCE`) are recorded there and in ``README.md``.
    """
    from svg_rlrf.data.folder import write_from_dir

    return write_from_dir(icon_dir(style), out, canvas=canvas, image_size=image_size, val_frac=val_frac,
                          test_frac=test_frac, seed=seed, limit=n, decimals=decimals, progress=progress,
                          source=f"fontawesome-{style}", licence=LICENCE)
