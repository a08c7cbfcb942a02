"""Learning curves from `metrics.jsonl`: one small PNG per metric, several runs overlaid.

Used by the gallery and by ``rlab runs plot RUN --metric reward``. matplotlib is imported inside
the functions (the CLI starts without it) and drawn through the Agg canvas, never pyplot, so
nothing here touches global figure state or needs a display.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from shared.tracking.metrics import read_metrics

# One colour per run, the same in the run headers and in every plot (matplotlib's tab10).
RUN_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip

# Left out of the default selection: the x axis and clock readings.
NOT_CURVES = frozenset({"step", "time", "time_s", "wall_time", "wall_time_s", "timestamp", "elapsed_s"})

# Default relevance, most relevant first: what the run optimises, then losses, then diagnostics.
_RELEVANCE = (
    ("reward", "return", "accuracy", "acc", "pass@", "success", "score", "lap_time", "collision"),
    ("loss",),
    ("kl", "entropy", "clip"),
)

_DIAGNOSTICS = ("failures", "nonfinite", "time/", "warmup", "_total", "items")

RunMetrics = tuple[str, list[dict]]
"""(label shown in legends, records of metrics.jsonl)."""


def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """Folder names of the runs, as ``track/name`` where two runs share a folder name."""
    names = [Path(d).name for d in run_dirs]
    return [
        f"{Path(d).parent.name}/{Path(d).name}" if names.count(Path(d).name) > 1 else Path(d).name
        for d in run_dirs
    ]


def load_runs(run_dirs: Sequence[Path]) -> list[RunMetrics]:
    """(label, metrics records) of each run, read once."""
    return list(zip(run_labels(run_dirs), [read_metrics(d) for d in run_dirs], strict=True))


def available_metrics(run_dirs: Sequence[Path]) -> list[str]:
    """Names of numeric metrics logged by any of the runs, in order of first appearance ("step" excluded)."""
    return metric_names(load_runs(run_dirs))


def metric_names(runs: Sequence[RunMetrics]) -> list[str]:
    seen: dict[str, None] = {}
    for _, records in runs:
        for rec in records:
            for key, value in rec.items():
                if key != "step" and _is_number(value):
                    seen.setdefault(key, None)
    return list(seen)


def default_metrics(names: Sequence[str], cap: int = 12) -> list[str]:
    """The `cap` most relevant of `names`: rewards and accuracies, then losses, then KL/entropy, then rest.

    >>> default_metrics(["lr", "time", "loss", "eval/reward", "kl"])
    ['eval/reward', 'loss', 'kl', 'lr']
    """

    def rank(name: str) -> int:
        low = name.lower()
        if any(w in low for w in _DIAGNOSTICS):  # counters and timings: shown only if room is left
            return len(_RELEVANCE) + 1
        for i, words in enumerate(_RELEVANCE):
            if any(w in low for w in words):
                return i
        return len(_RELEVANCE)

    kept = [n for n in names if n not in NOT_CURVES]
    return sorted(kept, key=rank)[:cap]  # sorted() is stable: first-appearance order within a rank


def plot_metric(run_dirs: Sequence[Path], metric: str, out_png: str | Path, smooth: int = 0) -> Path:
    """Plot `metric` against step for each run (overlaid, with a legend when several) into `out_png`.

    `smooth` > 1 draws a trailing moving average over that many points over the faint raw curve.
    Raises ValueError naming the metric and the available ones when no run logged it.
    """
    return plot_loaded(load_runs([Path(d) for d in run_dirs]), metric, Path(out_png), smooth=smooth)


def plot_loaded(
    runs: Sequence[RunMetrics],
    metric: str,
    out_png: Path,
    smooth: int = 0,
    colours: Sequence[str] = RUN_COLOURS,
) -> Path:
    """`plot_metric` over already-read records; run i is drawn in ``colours[i % len(colours)]``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = [(i, label, *_finite_series(records, metric)) for i, (label, records) in enumerate(runs)]
    series = [s for s in series if s[2]]
    if not series:
        available = ", ".join(metric_names(runs)) or "none"
        raise ValueError(f"no run logged metric {metric!r}; available metrics: {available}")

    fig = Figure(figsize=(4.2, 2.7), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, label, steps, values in series:
        colour = colours[i % len(colours)]
        marker = "o" if len(steps) == 1 else None
        if smooth > 1 and len(values) > 1:
            ax.plot(steps, values, color=colour, alpha=0.25, linewidth=1)
            ax.plot(steps, moving_average(values, smooth), color=colour, linewidth=1.6, label=label)
        else:
            ax.plot(steps, values, color=colour, linewidth=1.6, marker=marker, label=label)
    ax.set_title(metric, fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if len(runs) > 1:
        ax.legend(fontsize=7, frameon=False)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    return out_png


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over up to `window` points (fewer at the start).

    >>> moving_average([1, 2, 3, 4], 2)
    [1.0, 1.5, 2.5, 3.5]
    """
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _finite_series(records: list[dict], metric: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `metric`, sorted by step, NaN/inf dropped (matplotlib cannot scale an inf)."""
    pairs = sorted(
        (int(rec["step"]), float(rec[metric]))
        for rec in records
        if _is_number(rec.get(metric)) and math.isfinite(rec[metric])
    )
    return [s for s, _ in pairs], [v for _, v in pairs]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
