"""Where an evaluated run puts its shapes: each output's primitives matched to the reference's, per level.

The image metrics say how far a render is from its target; they do not say why. Here each output of
``rlab eval`` (``eval/<split>.outputs.jsonl``) is parsed and its primitives are matched to the reference's
by their centres (the assignment with the least total distance, so drawing the right shapes in another
order is not counted as misplacing them). Per complexity level:

- ``same_count``: outputs with as many primitives as the reference;
- ``centre_error``: mean ``|dx| + |dy|`` between matched primitives' bounding-box centres, in canvas units
  (``centre_median`` its median);
- ``kind_right`` / ``fill_right``: matched primitives with the reference's tag / fill;
- ``order_kept``: outputs with the reference's count whose best matching keeps the reference's order;
- ``first_error`` / ``first_to_ink`` (references of two or more primitives): the distance from the output's
  first primitive to the reference's first (generated shapes are drawn largest first) / to the centre of all
  the reference's ink (its primitives' centres weighted by their bounding-box areas); ``reference_to_ink``
  is the reference's own first primitive's distance to that centre, what ``first_to_ink`` is when the first
  shape is in its place. A model that reads where the ink is, not each object, has ``first_to_ink`` well
  below ``reference_to_ink``.

    python -m svg_rlrf.placement runs/svg-table/rlrf_shapes-seed0 [RUN ...] [--split test] [--chance]

Bounding boxes come from the primitives' geometry attributes (a path's from all the numbers in its ``d``,
control points included); transforms are not applied (levels 1 and 2 have none). Outputs that are not
well-formed or fail the renderer's checks count as having no primitives.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
COLUMNS = ("items", "same_count", "centre_error", "centre_median", "kind_right", "fill_right", "order_kept",
           "first_error", "first_to_ink", "reference_to_ink")
EVAL_METRICS = ("same_count", "centre_error", "kind_right", "fill_right")
"""The columns `rlab eval` adds to a run's metrics (``model/kind_right``, ``model/level2/centre_error`` ...)."""


@dataclass(frozen=True)
class Primitive:
    tag: str
    centre: tuple[float, float]
    fill: str | None
    area: float = 0.0
    """Of the bounding box, in square canvas units (0 for a line)."""


def _num(attrs: dict[str, str], key: str) -> float:
    match = _NUMBER.match(attrs.get(key, "0").strip())
    return float(match.group()) if match else 0.0


def _box(tag: str, a: dict[str, str]) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) of a primitive from its geometry attributes; None for what has none."""
    if tag == "rect":
        x, y = _num(a, "x"), _num(a, "y")
        return x, y, x + _num(a, "width"), y + _num(a, "height")
    if tag in ("circle", "ellipse"):
        rx, ry = (_num(a, "r"), _num(a, "r")) if tag == "circle" else (_num(a, "rx"), _num(a, "ry"))
        return _num(a, "cx") - rx, _num(a, "cy") - ry, _num(a, "cx") + rx, _num(a, "cy") + ry
    if tag == "line":
        xs, ys = (_num(a, "x1"), _num(a, "x2")), (_num(a, "y1"), _num(a, "y2"))
        return min(xs), min(ys), max(xs), max(ys)
    if tag in ("polygon", "polyline", "path"):
        values = [float(v) for v in _NUMBER.findall(a.get("points" if tag != "path" else "d", ""))]
        xs, ys = values[0::2], values[1::2]
        if not ys:
            return None
        return min(xs), min(ys), max(xs), max(ys)
    return None


def primitives(code: str | None, canvas: int = 64) -> list[Primitive]:
    """The drawing primitives of `code` in document order; none where it is not a well-formed, safe SVG."""
    from svg_rlrf.render import SvgError, sanitize_svg

    if not isinstance(code, str):
        return []
    try:
        root = ET.fromstring(sanitize_svg(code, size=canvas, viewbox=(0, 0, canvas, canvas)))
    except (SvgError, ET.ParseError, ValueError):
        return []
    out = []
    for el in root.iter():
        tag = str(el.tag).rsplit("}", 1)[-1].lower()
        box = _box(tag, el.attrib)
        if box is not None:
            x0, y0, x1, y1 = box
            area = 0.0 if tag == "line" else abs(x1 - x0) * abs(y1 - y0)
            out.append(Primitive(tag, ((x0 + x1) / 2, (y0 + y1) / 2), el.attrib.get("fill"), area))
    return out


def match(out: Sequence[Primitive], ref: Sequence[Primitive]) -> list[tuple[int, int]]:
    """Pairs (output index, reference index) with the least total centre distance (min of the two counts)."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    if not out or not ref:
        return []
    cost = np.array([[abs(o.centre[0] - r.centre[0]) + abs(o.centre[1] - r.centre[1]) for r in ref] for o in out])
    rows, cols = linear_sum_assignment(cost)
    return [(int(i), int(j)) for i, j in zip(rows, cols, strict=True)]


@dataclass(frozen=True)
class _Scored:
    """One output against its reference: the matched pairs' centre errors, kinds and fills right."""

    errors: list[float]
    kinds: list[bool]
    fills: list[bool]
    same_count: bool
    order_kept: bool
    first_error: float | None = None
    first_to_ink: float | None = None
    reference_to_ink: float | None = None


def _distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    return abs(a[0] - b[0]) + abs(a[1] - b[1])


def ink_centre(prims: Sequence[Primitive]) -> tuple[float, float]:
    """The centre of `prims`' ink: their centres weighted by area (equally where no primitive has an area)."""
    weights = [p.area for p in prims] if any(p.area > 0 for p in prims) else [1.0] * len(prims)
    total = sum(weights)
    return (sum(w * p.centre[0] for w, p in zip(weights, prims, strict=True)) / total,
            sum(w * p.centre[1] for w, p in zip(weights, prims, strict=True)) / total)


def _score(out: Sequence[Primitive], ref: Sequence[Primitive]) -> _Scored:
    pairs = match(out, ref)
    first = bool(out) and len(ref) > 1
    return _Scored([_distance(out[i].centre, ref[j].centre) for i, j in pairs],
                   [out[i].tag == ref[j].tag for i, j in pairs], [out[i].fill == ref[j].fill for i, j in pairs],
                   len(out) == len(ref), all(i == j for i, j in pairs),
                   _distance(out[0].centre, ref[0].centre) if first else None,
                   _distance(out[0].centre, ink_centre(ref)) if first else None,
                   _distance(ref[0].centre, ink_centre(ref)) if first else None)


def _summary(scored: Sequence[_Scored]) -> dict[str, float]:
    def mean(values: list) -> float:
        return statistics.fmean(values) if values else float("nan")

    errors = [e for s in scored for e in s.errors]
    return {
        "items": float(len(scored)), "same_count": sum(s.same_count for s in scored) / len(scored),
        "centre_error": mean(errors), "centre_median": statistics.median(errors) if errors else float("nan"),
        "kind_right": mean([k for s in scored for k in s.kinds]),
        "fill_right": mean([f for s in scored for f in s.fills]),
        "order_kept": mean([s.order_kept for s in scored if s.same_count]),
        "first_error": mean([s.first_error for s in scored if s.first_error is not None]),
        "first_to_ink": mean([s.first_to_ink for s in scored if s.first_to_ink is not None]),
        "reference_to_ink": mean([s.reference_to_ink for s in scored if s.reference_to_ink is not None]),
    }


def _table(outputs: Sequence[list[Primitive]], references: Sequence[list[Primitive]],
           levels: Sequence[int | None]) -> dict[str, dict[str, float]]:
    scored = [_score(out, ref) for out, ref in zip(outputs, references, strict=True)]
    groups: dict[str, list[_Scored]] = {"all": scored}
    for item, level in zip(scored, levels, strict=True):
        if level is not None:
            groups.setdefault(f"level{level}", []).append(item)
    return {name: _summary(items) for name, items in sorted(groups.items())}


def placement(outputs: Sequence[str | None], references: Sequence[str], levels: Sequence[int | None],
              canvas: int = 64) -> dict[str, dict[str, float]]:
    """The columns above per level (``level1`` ...; items without a level count in ``all`` only) and for all
    items (``all``)."""
    return _table([primitives(code, canvas) for code in outputs], [primitives(ref, canvas) for ref in references],
                  levels)


def chance(references: Sequence[str], levels: Sequence[int | None], shuffles: int = 5,
           canvas: int = 64) -> dict[str, dict[str, float]]:
    """The floor: `placement` of each item's answer taken from another item of its level (the mean over
    `shuffles` seeded shuffles), what a model that draws a plausible image unrelated to its input scores."""
    import random

    parsed = [primitives(ref, canvas) for ref in references]
    runs = []
    for seed in range(shuffles):
        rng = random.Random(seed)
        answers = list(parsed)
        for level in set(levels):
            where = [i for i, lv in enumerate(levels) if lv == level]
            moved = [parsed[i] for i in where]
            rng.shuffle(moved)
            for i, prims in zip(where, moved, strict=True):
                answers[i] = prims
        runs.append(_table(answers, parsed, levels))
    return {group: {key: statistics.fmean(run[group][key] for run in runs) for key in COLUMNS} for group in runs[0]}


def _run_items(run_dir: Path, split: str) -> tuple[list[dict], Any]:
    from shared.config import load_config
    from svg_rlrf.track import SVGConfig, load_data

    cfg = load_config(SVGConfig, Path(run_dir) / "config.yaml")
    return load_data(cfg.data).split(split), cfg


def run_placement(run_dir: Path, split: str = "test",
                  loaded: tuple[list[dict], Any] | None = None) -> dict[str, dict[str, float]]:
    """`placement` of an evaluated run's outputs on `split` against that split's references (`loaded`: the
    run's items and config, where the caller has read them already)."""
    path = Path(run_dir) / "eval" / f"{split}.outputs.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `rlab eval {run_dir} --split {split}` first")
    outputs = {row["id"]: row.get("svg") for row in map(json.loads, path.read_text().splitlines())}
    all_items, cfg = loaded if loaded is not None else _run_items(run_dir, split)
    items = [item for item in all_items if item["id"] in outputs]
    if not items:
        raise ValueError(f"none of {path}'s ids is in split {split!r} of the run's data")
    return placement([outputs[item["id"]] for item in items], [str(item["answer"]) for item in items],
                     [item_level(item) for item in items], cfg.data.canvas)


def item_level(item: dict) -> int | None:
    """An item's complexity level (generated shapes: 1, 2, 3), None where its data has none."""
    level = (item.get("meta") or {}).get("complexity")
    return None if level is None else int(level)


def _fmt(column: str, value: float) -> str:
    if value != value:
        return "-"
    if column == "items":
        return f"{value:.0f}"
    return f"{value:.1f}" if column.startswith(("centre", "first", "reference")) else f"{value:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m svg_rlrf.placement", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="evaluated svg run folders")
    parser.add_argument("--split", default="test")
    parser.add_argument("--chance", action="store_true",
                        help="also print the floor: each item's answer scored against another item's of its level")
    args = parser.parse_args(argv)
    print("| run | level | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    first = None
    for run in args.runs:
        loaded = _run_items(run, args.split)
        first = first or loaded
        for level, row in run_placement(run, args.split, loaded).items():
            print(f"| {run} | {level} | " + " | ".join(_fmt(c, row[c]) for c in COLUMNS) + " |")
    if args.chance:
        items, cfg = first
        floor = chance([str(item["answer"]) for item in items], [item_level(item) for item in items],
                       canvas=cfg.data.canvas)
        for level, row in floor.items():
            cells = " | ".join(_fmt(c, row[c]) for c in COLUMNS)
            print(f"| chance (another item's answer) | {level} | {cells} |")


if __name__ == "__main__":
    main()
