"""Synthetic SVG targets at graded complexity levels, and the writer of the svg datasets' standard format.

Every item is one SVG in the canonical frame ``viewBox="0 0 C C"`` (C = `canvas`, 64 by default), on a
white background (no background shape), with coordinates on a grid of ``10**-decimals`` (integers by
default: coarse coordinates help a tiny model place shapes), colours from `PALETTE`, and every shape
inside the canvas (stroke included) and at least ``C / 8`` across:

=====  ==================================================================================================
level  what an item holds
=====  ==================================================================================================
1      one filled rect, circle or ellipse
2      2-3 filled rects, circles, ellipses and polygons (at least one polygon: triangle, quadrilateral,
       pentagon/hexagon or star), each outlined with a stroke with probability 0.3
3      3-5 shapes: a group with a transform (translate plus rotate and/or scale) holding 1-2 of them, at
       least one path of quadratic or cubic Bezier segments (a closed filled blob or an open stroked
       curve), the rest from rect, circle, ellipse, polygon, path, line; fills and strokes
=====  ==================================================================================================

Filled shapes are drawn largest first and stroke-only ones (lines, open curves) last, so little is
hidden; colours within an item are distinct. The code is compact and canonical: attributes in the fixed
order of `ATTR_ORDER`, numbers without trailing zeros, path data with a command letter before every
segment and single spaces, no whitespace between elements::

    <svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><circle cx="20" cy="30" r="9" fill="#e6194b"/></svg>

An item is a pure function of ``(seed, split, index, attempt)`` (`synthetic_item`): each split draws
from its own seed stream, so splits never share a random stream, and a shorter split is a prefix of a
longer one. `write_synthetic` writes test, then val, then train; an item whose code already appears
(in any split) or whose target renders blank or fails is drawn again with the next attempt, and counted.

>>> item = synthetic_item(0, "test", 0, levels=(1,))
>>> item.code.startswith('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><')
True
>>> item.meta["complexity"], item.meta["n_shapes"], item.code == synthetic_item(0, "test", 0, levels=(1,)).code
(1, 1, True)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlm_rl.data.writer import staged_folder, write_rows

SVG_NS = "http://www.w3.org/2000/svg"
TASK = "svg"
QUESTION = "Write SVG code that draws this image."
FORMAT = "rlab-vlm-dataset/1"
"""The rows follow the vlm track's standard format (`vlm_rl.data.writer`), so its loader reads them."""

PALETTE: dict[str, str] = {
    "red": "#e6194b",
    "green": "#3cb44b",
    "yellow": "#ffe119",
    "blue": "#4363d8",
    "orange": "#f58231",
    "purple": "#911eb4",
    "cyan": "#42d4f4",
    "magenta": "#f032e6",
    "teal": "#469990",
    "brown": "#9a6324",
    "navy": "#000075",
    "black": "#000000",
}
"""Name -> ``#rrggbb``: twelve colours far apart from each other and from the white background."""

LEVELS: dict[int, str] = {
    1: "one filled rect, circle or ellipse",
    2: "2-3 filled rects, circles, ellipses and polygons (>= 1 polygon), some outlined with a stroke",
    3: "3-5 shapes: a transformed group (translate + rotate/scale) of 1-2, >= 1 quadratic/cubic Bezier path "
       "(filled blob or stroked curve), rects, circles, ellipses, polygons, lines; fills and strokes",
}
"""Complexity level -> what its items hold."""

ATTR_ORDER: tuple[str, ...] = (
    "id", "class", "href", "xlink:href", "transform", "x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "fx", "fy",
    "width", "height", "r", "rx", "ry", "points", "d", "fill", "fill-opacity", "fill-rule", "stroke", "stroke-width",
    "stroke-opacity", "stroke-linecap", "stroke-linejoin", "stroke-miterlimit", "stroke-dasharray",
    "stroke-dashoffset", "opacity",
)
"""Canonical attribute order: these first in this order, any others after them alphabetically."""
_ORDER = {name: i for i, name in enumerate(ATTR_ORDER)}

SPLIT_STREAMS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
"""Split -> the seed-stream number it draws from (``np.random.default_rng([seed, stream, index, attempt])``)."""
WRITE_ORDER = ("test", "val", "train")
"""Held-out splits first: their items do not depend on the size of train, and train skips their codes."""

BLANK_INK = 0.002
"""A render with fewer than this fraction of non-white pixels counts as blank."""
MAX_ATTEMPTS = 200
"""Draws per item before `write_synthetic` gives up (only a tiny canvas with many items gets there)."""
CHUNK = 256
"""Items rendered per `render_many` call."""


# -------------------------------------------------------------------------------- canonical code


def fmt_num(x: float, decimals: int = 0) -> str:
    """`x` rounded to `decimals` places, without trailing zeros or a negative zero.

    >>> fmt_num(3.0), fmt_num(-0.2), fmt_num(1.26, 1), fmt_num(7.0, 2), fmt_num(0.125, 3)
    ('3', '0', '1.3', '7', '0.125')
    """
    if decimals <= 0:
        text = str(int(round(x)))
    else:
        text = f"{round(x, decimals):.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def escape_attr(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def element(tag: str, attrs: dict[str, str], inner: str = "") -> str:
    """One element's compact code, attributes in canonical order (`ATTR_ORDER`).

    >>> element("circle", {"fill": "#000000", "r": "3", "cx": "4", "cy": "5"})
    '<circle cx="4" cy="5" r="3" fill="#000000"/>'
    """
    names = sorted(attrs, key=lambda name: (_ORDER.get(name, len(_ORDER)), name))
    head = "".join(f' {name}="{escape_attr(attrs[name])}"' for name in names)
    return f"<{tag}{head}>{inner}</{tag}>" if inner else f"<{tag}{head}/>"


def svg_document(inner: str, canvas: int, attrs: dict[str, str] | None = None) -> str:
    """The canonical root around `inner`: ``<svg xmlns=... viewBox="0 0 C C" [attrs]>inner</svg>``."""
    extra = dict(attrs or {})
    xlink = ' xmlns:xlink="http://www.w3.org/1999/xlink"' if "xlink:href=" in inner else ""
    head = element("svg", extra)[len("<svg"):-2]
    return f'<svg xmlns="{SVG_NS}"{xlink} viewBox="0 0 {canvas} {canvas}"{head}>{inner}</svg>'


# ------------------------------------------------------------------------------------ generation


class _NoRoom(Exception):
    """A shape does not fit where it was asked to go (the generator draws it again)."""


Box = tuple[float, float, float, float]


@dataclass
class Shape:
    """One element of a generated item, with its extent (stroke included) in its parent's frame."""

    tag: str
    attrs: dict[str, str]
    box: Box
    children: list[Shape] = field(default_factory=list)

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])

    @property
    def stroke_only(self) -> bool:
        return self.attrs.get("fill") == "none" or self.tag == "line"

    def code(self) -> str:
        return element(self.tag, self.attrs, "".join(child.code() for child in self.children))

    def primitives(self) -> list[Shape]:
        return [p for child in self.children for p in child.primitives()] if self.tag == "g" else [self]


@dataclass
class SyntheticSVG:
    """A generated target: its canonical code and the generator's description of it (``meta``)."""

    code: str
    meta: dict[str, Any]


class _Drawer:
    """Draws shapes on the coordinate grid from one item's generator; sizes scale by `unit` in groups."""

    def __init__(self, rng: np.random.Generator, canvas: int, decimals: int) -> None:
        self.rng, self.canvas, self.decimals = rng, canvas, decimals
        self.step = 10.0 ** -decimals
        self.min_size = max(canvas / 8, 2 * self.step)
        self.colours = [str(c) for c in rng.permutation(list(PALETTE.values()))]
        self.stroke_range = (max(self.step, canvas / 32), max(self.step, canvas / 16))

    def num(self, x: float) -> str:
        return fmt_num(x, self.decimals)

    def pick(self, lo: float, hi: float) -> float:
        """A grid value in [lo, hi] (`_NoRoom` when there is none)."""
        a, b = math.ceil(lo / self.step - 1e-9), math.floor(hi / self.step + 1e-9)
        if a > b:
            raise _NoRoom
        return int(self.rng.integers(a, b + 1)) * self.step

    def snap(self, x: float) -> float:
        return round(x / self.step) * self.step

    def colour(self) -> str:
        return self.colours.pop()

    def paint(self, attrs: dict[str, str], outline: bool, unit: float) -> float:
        """Fill (and stroke, when `outline`) colours into `attrs`; returns the stroke width (0 without)."""
        attrs["fill"] = self.colour()
        if not outline:
            return 0.0
        width = self.pick(self.stroke_range[0] * unit, self.stroke_range[1] * unit)
        attrs["stroke"], attrs["stroke-width"] = self.colour(), self.num(width)
        return width

    def place(self, lo: float, hi: float, max_size: float, unit: float, pad: float, *, min_scale: float = 1.0,
              oblong: bool = False) -> tuple[float, float, float, float]:
        """(x, y, w, h) of a box at least ``min_scale x min_size`` across, inside [lo + pad, hi - pad] squared;
        `oblong`: w and h differ by at least a quarter of min_size (an ellipse that does not look round)."""
        low, high = self.min_size * unit * min_scale, min(max_size, hi - lo - 2 * pad)
        w = self.pick(low, high)
        h = self.pick(low, high)
        for _ in range(8):
            if not oblong or abs(w - h) >= self.min_size * unit / 4:
                break
            h = self.pick(low, high)
        else:
            raise _NoRoom
        return self.pick(lo + pad, hi - pad - w), self.pick(lo + pad, hi - pad - h), w, h

    # ---- primitives; each takes its region [lo, hi] squared, a size cap, the unit and whether to outline

    def rect(self, lo: float, hi: float, max_size: float, unit: float, outline: bool) -> Shape:
        attrs: dict[str, str] = {}
        sw = self.paint(attrs, outline, unit)
        x, y, w, h = self.place(lo, hi, max_size, unit, sw / 2)
        attrs.update(x=self.num(x), y=self.num(y), width=self.num(w), height=self.num(h))
        if self.rng.random() < 0.25:
            attrs["rx"] = self.num(self.pick(self.step, min(w, h) / 4))
        return Shape("rect", attrs, (x - sw / 2, y - sw / 2, x + w + sw / 2, y + h + sw / 2))

    def circle(self, lo: float, hi: float, max_size: float, unit: float, outline: bool) -> Shape:
        attrs: dict[str, str] = {}
        pad = self.paint(attrs, outline, unit) / 2
        r = self.pick(self.min_size * unit / 2, min(max_size, hi - lo - 2 * pad) / 2)
        cx, cy = self.pick(lo + pad + r, hi - pad - r), self.pick(lo + pad + r, hi - pad - r)
        attrs.update(cx=self.num(cx), cy=self.num(cy), r=self.num(r))
        return Shape("circle", attrs, (cx - r - pad, cy - r - pad, cx + r + pad, cy + r + pad))

    def ellipse(self, lo: float, hi: float, max_size: float, unit: float, outline: bool) -> Shape:
        attrs: dict[str, str] = {}
        pad = self.paint(attrs, outline, unit) / 2
        x, y, w, h = self.place(lo, hi, max_size, unit, pad, oblong=True)
        rx, ry = self.snap(w / 2), self.snap(h / 2)
        cx, cy = x + rx, y + ry
        attrs.update(cx=self.num(cx), cy=self.num(cy), rx=self.num(rx), ry=self.num(ry))
        return Shape("ellipse", attrs, (cx - rx - pad, cy - ry - pad, cx + rx + pad, cy + ry + pad))

    def polygon(self, lo: float, hi: float, max_size: float, unit: float, outline: bool) -> Shape:
        attrs: dict[str, str] = {}
        pad = 2 * self.paint(attrs, outline, unit)  # a sharp miter join reaches up to 2 stroke widths out
        rng = self.rng
        kind = str(rng.choice(["triangle", "quad", "regular", "star"]))
        x, y, w, h = self.place(lo, hi, max_size, unit, pad, min_scale=1.0 if kind in ("triangle", "quad") else 1.5)
        if kind == "triangle":
            a = rng.random()
            unit_pts = [(a, 0.0), (1.0, 1.0), (0.0, 1.0)]
            turn = int(rng.integers(4))  # apex at the top, right, bottom or left
            for _ in range(turn):
                unit_pts = [(1.0 - v, u) for u, v in unit_pts]
        elif kind == "quad":
            j = rng.uniform(-0.2, 0.2, size=4)
            unit_pts = [(0.5 + j[0], 0.0), (1.0, 0.5 + j[1]), (0.5 + j[2], 1.0), (0.0, 0.5 + j[3])]
        else:
            n = int(rng.integers(5, 7)) if kind == "regular" else 10
            base = rng.uniform(0, 2 * math.pi)
            radii = [0.5 if kind == "regular" or i % 2 == 0 else 0.22 for i in range(n)]
            unit_pts = [(0.5 + r * math.cos(base + 2 * math.pi * i / n), 0.5 + r * math.sin(base + 2 * math.pi * i / n))
                        for i, r in enumerate(radii)]
        pts = [(self.snap(x + u * w), self.snap(y + v * h)) for u, v in unit_pts]
        attrs["points"] = " ".join(f"{self.num(px)},{self.num(py)}" for px, py in pts)
        return Shape("polygon", attrs, _bounds(pts, pad))

    def _curve_points(self, x: float, y: float, w: float, h: float, cubic: bool) -> tuple[list[list], list]:
        """Anchors on a wobbly ellipse inside the box and control points bulging out, clamped to the box."""
        rng = self.rng
        n = int(rng.integers(3, 5))
        cx, cy, base = x + w / 2, y + h / 2, rng.uniform(0, 2 * math.pi)
        angles = [base + 2 * math.pi * (i + rng.uniform(-0.15, 0.15)) / n for i in range(n)]

        def at(angle: float, radius: float) -> tuple[float, float]:
            px = min(x + w, max(x, cx + radius * w / 2 * math.cos(angle)))
            py = min(y + h, max(y, cy + radius * h / 2 * math.sin(angle)))
            return self.snap(px), self.snap(py)

        anchors = [at(a, rng.uniform(0.6, 1.0)) for a in angles]
        segments = []
        for i in range(n):
            a0, a1 = angles[i], angles[(i + 1) % n] + (2 * math.pi if i == n - 1 else 0)
            fractions = (1 / 3, 2 / 3) if cubic else (1 / 2,)
            controls = [at(a0 + f * (a1 - a0), rng.uniform(0.9, 1.4)) for f in fractions]
            segments.append([*controls, anchors[(i + 1) % n]])
        return segments, anchors

    def path(self, lo: float, hi: float, max_size: float, unit: float, outline: bool, open_curve: bool = False,
             ) -> Shape:
        attrs: dict[str, str] = {}
        cubic = bool(self.rng.random() < 0.5)
        letter = "C" if cubic else "Q"
        if open_curve:
            sw = self.pick(self.stroke_range[0] * unit, self.stroke_range[1] * unit)
            attrs.update(fill="none", stroke=self.colour(), **{"stroke-width": self.num(sw)})
            x, y, w, h = self.place(lo, hi, max_size, unit, sw / 2)
            if self.rng.random() < 0.5:  # left to right, else top to bottom
                p0, p1 = (x, self.snap(y + self.rng.random() * h)), (x + w, self.snap(y + self.rng.random() * h))
            else:
                p0, p1 = (self.snap(x + self.rng.random() * w), y), (self.snap(x + self.rng.random() * w), y + h)
            controls = [(self.snap(x + self.rng.random() * w), self.snap(y + self.rng.random() * h))
                        for _ in range(2 if cubic else 1)]
            pts = [p0, *controls, p1]
            attrs["d"] = f"M{self._pair(p0)}{letter}{' '.join(self._pair(p) for p in [*controls, p1])}"
            return Shape("path", attrs, _bounds(pts, sw / 2))
        pad = 2 * self.paint(attrs, outline, unit)
        x, y, w, h = self.place(lo, hi, max_size, unit, pad)
        segments, anchors = self._curve_points(x, y, w, h, cubic)
        body = "".join(f"{letter}{' '.join(self._pair(p) for p in seg)}" for seg in segments)
        attrs["d"] = f"M{self._pair(anchors[0])}{body}Z"
        return Shape("path", attrs, _bounds([p for seg in segments for p in seg], pad))

    def line(self, lo: float, hi: float, max_size: float, unit: float, outline: bool) -> Shape:
        sw = self.pick(self.stroke_range[0] * unit, self.stroke_range[1] * unit)
        x, y, w, h = self.place(lo, hi, max_size, unit, sw / 2)
        x1, x2 = (x, x + w) if self.rng.random() < 0.5 else (x + w, x)
        attrs = {"x1": self.num(x1), "y1": self.num(y), "x2": self.num(x2), "y2": self.num(y + h),
                 "stroke": self.colour(), "stroke-width": self.num(sw)}
        return Shape("line", attrs, (x - sw / 2, y - sw / 2, x + w + sw / 2, y + h + sw / 2))

    def _pair(self, p: tuple[float, float]) -> str:
        return f"{self.num(p[0])} {self.num(p[1])}"

    def group(self, max_size: float, n_children: int) -> Shape:
        """A ``<g transform="translate(..) [rotate(..)] [scale(..)]">`` of closed shapes, kept on the canvas."""
        rng = self.rng
        kind = str(rng.choice(["translate", "rotate", "scale", "rotate_scale"]))
        angle = int(rng.choice([-60, -45, -30, -15, 15, 30, 45, 60, 90])) if "rotate" in kind else 0
        scale = float(rng.choice([0.5, 1.5])) if "scale" in kind else 1.0
        unit, half = 1.0 / scale, max_size / 2 / scale
        makers = [self.rect, self.ellipse, self.polygon, self.path]
        children = [makers[int(rng.integers(len(makers)))](-half, half, 2 * half, unit, rng.random() < 0.3)
                    for _ in range(n_children)]
        children.sort(key=lambda s: -s.area)
        cos, sin = math.cos(math.radians(angle)) * scale, math.sin(math.radians(angle)) * scale
        corners = [(bx, by) for c in children for bx in (c.box[0], c.box[2]) for by in (c.box[1], c.box[3])]
        moved = [(cos * px - sin * py, sin * px + cos * py) for px, py in corners]
        ex0, ey0, ex1, ey1 = _bounds(moved, 0.0)
        tx, ty = self.pick(-ex0, self.canvas - ex1), self.pick(-ey0, self.canvas - ey1)
        transform = f"translate({self.num(tx)} {self.num(ty)})"
        transform += f" rotate({angle})" if angle else ""
        transform += f" scale({scale:g})" if scale != 1.0 else ""
        return Shape("g", {"transform": transform}, (ex0 + tx, ey0 + ty, ex1 + tx, ey1 + ty), children)


def _bounds(points: Sequence[tuple[float, float]], pad: float) -> Box:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad


def _level_shapes(drawer: _Drawer, level: int) -> list[Shape]:
    rng, c = drawer.rng, drawer.canvas
    d = drawer
    if level == 1:
        maker = [d.rect, d.circle, d.ellipse][int(rng.integers(3))]
        return [maker(0, c, 0.8 * c, 1.0, False)]
    if level == 2:
        n = int(rng.integers(2, 4))
        makers = [d.polygon] + [[d.rect, d.circle, d.ellipse, d.polygon][int(rng.integers(4))] for _ in range(n - 1)]
        return [m(0, c, 0.6 * c, 1.0, rng.random() < 0.3) for m in makers]
    n = int(rng.integers(3, 6))
    in_group = 1 if n == 3 else int(rng.integers(1, 3))
    shapes = [d.group(0.5 * c, in_group)]
    open_curve = bool(rng.random() < 0.5)
    shapes.append(d.path(0, c, 0.5 * c, 1.0, not open_curve and rng.random() < 0.3, open_curve=open_curve))
    others = [d.rect, d.circle, d.ellipse, d.polygon, d.line]
    for _ in range(n - in_group - 1):
        kind = int(rng.integers(len(others) + 1))  # the last one: another path
        if kind == len(others):
            shapes.append(d.path(0, c, 0.5 * c, 1.0, rng.random() < 0.3, open_curve=bool(rng.random() < 0.5)))
        else:
            shapes.append(others[kind](0, c, 0.5 * c, 1.0, rng.random() < 0.3))
    return shapes


def generate_svg(rng: np.random.Generator, level: int, canvas: int = 64, decimals: int = 0) -> SyntheticSVG:
    """One item of complexity `level` drawn from `rng` (see the module's table)."""
    if level not in LEVELS:
        raise ValueError(f"unknown complexity level {level} (levels: {', '.join(map(str, LEVELS))})")
    for _ in range(50):
        try:
            shapes = _level_shapes(_Drawer(rng, canvas, decimals), level)
            break
        except _NoRoom:
            continue
    else:
        raise ValueError(f"canvas {canvas} is too small for level-{level} shapes")
    shapes.sort(key=lambda s: (s.stroke_only, -s.area))  # filled shapes largest first, strokes on top
    code = svg_document("".join(s.code() for s in shapes), canvas)
    prims = [p for s in shapes for p in s.primitives()]
    names = {v: k for k, v in PALETTE.items()}
    colours = list(dict.fromkeys(p.attrs[a] for p in prims for a in ("fill", "stroke") if p.attrs.get(a, "none")
                                 != "none"))
    meta = {"complexity": level, "n_shapes": len(prims), "shapes": [p.tag for p in prims], "colours": colours,
            "colour_names": [names[c] for c in colours], "stroke": any("stroke" in p.attrs for p in prims),
            "transform": any(s.tag == "g" for s in shapes), "canvas": canvas, "decimals": decimals,
            "source": "synthetic", "chars": len(code)}
    return SyntheticSVG(code, meta)


def synthetic_item(seed: int, split: str, index: int, *, levels: Sequence[int] = (1, 2, 3), canvas: int = 64,
                   decimals: int = 0, attempt: int = 0) -> SyntheticSVG:
    """Item `index` of `split`: level ``levels[index % len(levels)]``, drawn from its own seed stream."""
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split], index, attempt])
    return generate_svg(rng, levels[index % len(levels)], canvas, decimals)


# ------------------------------------------------------------------------ rendering and writing


def ink_fraction(image: np.ndarray) -> float:
    """Fraction of pixels visibly different from white (any channel more than 16 below 255)."""
    return float((image.astype(np.int16).min(axis=-1) < 239).mean())


def render_targets(codes: Sequence[str], canvas: int, image_size: int) -> list[tuple[np.ndarray | None, str | None]]:
    """(image, None) per code, or (None, reason): ``render_failed: ...`` or ``blank``."""
    from svg_rlrf.render import render_many, require_renderer

    require_renderer("writing the dataset's target images")
    frame = (0.0, 0.0, float(canvas), float(canvas))
    out: list[tuple[np.ndarray | None, str | None]] = []
    for result in render_many(list(codes), image_size, viewbox=frame):
        if not result.ok and str(result.reason).startswith("blank"):
            out.append((None, "blank"))
        elif not result.ok or result.image is None:
            out.append((None, f"render_failed: {result.reason}"))
        elif ink_fraction(result.image) < BLANK_INK:
            out.append((None, "blank"))
        else:
            out.append((result.image, None))
    return out


def save_image(folder: Path, split: str, index: int, image: np.ndarray) -> str:
    """Write ``images/<split>/<index>.png`` under `folder`; returns that relative path."""
    from PIL import Image

    rel = f"images/{split}/{index:06d}.png"
    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / rel, format="PNG", compress_level=1)
    return rel


def write_card(folder: Path, card: dict[str, Any], readme: list[str]) -> None:
    """``dataset.json`` (the card) and ``README.md`` (the lines)."""
    (folder / "dataset.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (folder / "README.md").write_text("\n".join(readme) + "\n", encoding="utf-8")


def split_table(counts: dict[str, int]) -> list[str]:
    rows = [f"| {split} | {split}.jsonl | {n} |" for split, n in counts.items() if n]
    return ["| split | file | items |", "|---|---|---|", *rows]


@dataclass
class _Generation:
    seed: int
    levels: tuple[int, ...]
    canvas: int
    decimals: int
    image_size: int
    seen: set[str] = field(default_factory=set)
    redrawn: dict[str, int] = field(default_factory=dict)

    def item(self, split: str, index: int, attempt: int) -> SyntheticSVG:
        return synthetic_item(self.seed, split, index, levels=self.levels, canvas=self.canvas,
                              decimals=self.decimals, attempt=attempt)

    def accept(self, split: str, index: int, first: SyntheticSVG, rendered: dict) -> tuple[SyntheticSVG, np.ndarray]:
        """The first draw of item `index` that is new and renders (renders of first draws are in `rendered`)."""
        item = first
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if item.code in self.seen:
                reason = "duplicate"
            else:
                image, reason = rendered.get(item.code) or render_targets([item.code], self.canvas, self.image_size)[0]
                if reason is None and image is not None:
                    self.seen.add(item.code)
                    return item, image
                reason = reason.split(":")[0] if reason else "render_failed"
            self.redrawn[reason] = self.redrawn.get(reason, 0) + 1
            item = self.item(split, index, attempt)
        raise RuntimeError(f"no new renderable {split} item {index} after {MAX_ATTEMPTS} draws (canvas "
                           f"{self.canvas} with decimals {self.decimals} may be too small for this many items)")

    def split(self, folder: Path, split: str, n: int, bar: Any) -> list[dict]:
        rows = []
        for start in range(0, n, CHUNK):
            indices = range(start, min(n, start + CHUNK))
            firsts = [self.item(split, k, 0) for k in indices]
            codes = list(dict.fromkeys(f.code for f in firsts))
            rendered = dict(zip(codes, render_targets(codes, self.canvas, self.image_size), strict=True))
            for k, first in zip(indices, firsts, strict=True):
                item, image = self.accept(split, k, first, rendered)
                rel = save_image(folder, split, k, image)
                rows.append({"id": f"svg-{split}-{k:06d}", "images": [rel], "question": QUESTION,
                             "answer": item.code, "task": TASK, "meta": {**item.meta, "image_size": self.image_size}})
                bar.update()
        return rows


def level_stats(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Items and mean code length (characters) per complexity level."""
    by_level: dict[str, list[int]] = {}
    for row in rows:
        by_level.setdefault(f"level{row['meta'].get('complexity')}", []).append(len(row["answer"]))
    return {k: {"items": len(v), "mean_chars": round(sum(v) / len(v), 1)} for k, v in sorted(by_level.items())}


def write_synthetic(
    out: Path, n_train: int, n_val: int, n_test: int, *, seed: int = 0, canvas: int = 64, image_size: int = 112,
    levels: Sequence[int] = (1, 2, 3), decimals: int = 0, progress: bool = True,
) -> Path:
    """Generate the synthetic shapes' train, val and test splits into the folder `out` and return it.

    Writes ``{train,val,test}.jsonl``, ``images/<split>/<i>.png``, ``dataset.json`` and ``README.md``
    through a temporary sibling folder renamed into place at the end; refuses (``FileExistsError``) a
    non-empty `out`; a split of size 0 is skipped. Item ``k`` of a split has level
    ``levels[k % len(levels)]``. No code appears twice in the dataset; items drawn again (duplicate,
    blank render, failed render) are counted in ``dataset.json`` under ``redrawn``.
    """
    from tqdm import tqdm

    counts = {"train": n_train, "val": n_val, "test": n_test}
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"split sizes must be >= 0 (got {counts})")
    levels = tuple(levels)
    if not levels or any(lv not in LEVELS for lv in levels):
        raise ValueError(f"levels must be a non-empty list of {', '.join(map(str, LEVELS))} (got {list(levels)})")
    if canvas < 8 or image_size < 8 or not 0 <= decimals <= 3:
        raise ValueError(f"need canvas >= 8, image_size >= 8 and 0 <= decimals <= 3 (got {canvas}, {image_size}, "
                         f"{decimals})")
    gen = _Generation(seed, levels, canvas, decimals, image_size)
    rows: dict[str, list[dict]] = {}
    with staged_folder(Path(out)) as tmp, tqdm(total=sum(counts.values()), unit="item", disable=not progress,
                                               dynamic_ncols=True) as bar:
        for split in WRITE_ORDER:
            if counts[split]:
                bar.set_description(f"svg/{split}")
                rows[split] = gen.split(tmp, split, counts[split], bar)
                write_rows(tmp / f"{split}.jsonl", rows[split])
        card, readme = _synthetic_card(gen, counts, rows)
        write_card(tmp, card, readme)
    return Path(out)


def _synthetic_card(gen: _Generation, counts: dict[str, int], rows: dict[str, list[dict]],
                    ) -> tuple[dict[str, Any], list[str]]:
    every = [r for split_rows in rows.values() for r in split_rows]
    levels_arg = ",".join(map(str, gen.levels))
    command = (f"rlab data svg --synthetic --seed {gen.seed} --canvas {gen.canvas} --image-size {gen.image_size} "
               f"--levels {levels_arg} --decimals {gen.decimals}")
    card = {
        "format": FORMAT,
        "task": TASK,
        "source": "synthetic",
        "seed": gen.seed,
        "canvas": gen.canvas,
        "viewbox": [0, 0, gen.canvas, gen.canvas],
        "decimals": gen.decimals,
        "image_size": gen.image_size,
        "question": QUESTION,
        "levels": {str(lv): LEVELS[lv] for lv in dict.fromkeys(gen.levels)},
        "palette": PALETTE,
        "splits": {s: {"file": f"{s}.jsonl", "count": n} for s, n in counts.items() if n},
        "redrawn": dict(sorted(gen.redrawn.items())),
        "stats": level_stats(every),
        "generator": f"svg_rlrf.data.synthetic ({command})",
    }
    readme = [
        f"# svg shapes (synthetic, seed {gen.seed})",
        "",
        f"Generated by `{command}` with the split sizes below. Each row's `answer` is the target SVG code in the "
        f'frame `viewBox="0 0 {gen.canvas} {gen.canvas}"` (coordinates rounded to {gen.decimals} decimals); its '
        f"image is that code rendered at {gen.image_size} x {gen.image_size} pixels on white.",
        "",
        *split_table(counts),
        "",
        *(f"- level {lv}: {LEVELS[lv]}" for lv in dict.fromkeys(gen.levels)),
        "- Rows: `{id, images: [paths relative to this folder], question, answer, task, meta}`; `meta` holds the "
        "level (`complexity`), `n_shapes`, `shapes`, `colours` and the frame (`canvas`). No SVG code appears twice; "
        f"items drawn again: {gen.redrawn or 'none'}.",
        "",
    ]
    return card, readme
