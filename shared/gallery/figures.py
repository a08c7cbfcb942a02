"""Matplotlib figures for run media without pyplot: `new_figure` (a bare Figure on the Agg canvas: no
global state, no display) and `save_png` (written to a temporary name in the target folder, then
renamed, so a crash never leaves half a PNG behind). matplotlib is imported inside the functions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A constrained-layout Figure of `figsize` inches at 100 dpi with an Agg canvas attached."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, out: str | Path, tight: bool = False) -> Path:
    """Write `fig` as PNG to `out` (folders created) through a temporary name and a rename; `tight` crops
    to the drawn content (``bbox_inches="tight"``). Returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", bbox_inches="tight" if tight else None)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
