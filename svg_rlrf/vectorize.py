"""A classic, non-learned image -> SVG vectorizer: the baseline that puts a learned policy on a familiar scale.

In the spirit of tracing tools such as Potrace and VTracer (no code from them): quantise the colours, trace
each colour's regions with OpenCV, simplify the outlines, write one ``<path>`` per colour layer.

1. Palette: a weighted k-means over the image's distinct colours (deterministic: no random seeding, the
   next initial centre is the colour with the largest ``count x squared distance`` to the centres so far),
   with the background colour held fixed as an extra centre. Centres closer than ``MERGE_TOL`` merge.
2. Antialiasing: a cluster whose pixels are thin (few have all four neighbours in it) and whose colour lies
   on the segment between two larger clusters (or one and the background) is a blend of them and is
   dissolved into the nearer of the two. Every colour then takes the nearest remaining centre, except that
   one far from all of them but on the segment between two takes the nearer of those two (a grey rim of a
   black line stays black or white, never a pink nearby); edges land at half coverage. Each colour becomes
   the median of its pixels, so flat fills come back exactly.
3. Cleanup: connected specks under ``min_area_px`` (of any colour, background included, so small holes
   close too) take the colour of the nearest larger region.
4. Layers: colours are drawn largest first. A layer also covers the parts of its holes that only colours
   drawn after it fill, so its outline stays simple and no seam opens between it and what lies on top.
5. Outlines: ``cv2.findContours`` with the two-level hierarchy (outer outlines and their holes) and
   ``cv2.approxPolyDP(epsilon_px)`` (less on thin outlines, so lines keep their width). Traced outlines run
   through boundary pixel centres, so each polygon is pushed out by half a pixel (holes shrink by as much)
   to sit on the region's true edge. With ``curves`` the polygon becomes a quadratic B-spline (``Q``, and
   two-number ``T`` chains when the rounding is fine enough) through the middles of its edges, its smooth
   vertices pushed out a little so it keeps the area, with straight lines into sharp corners.
6. Output: one ``<path fill-rule="evenodd">`` per colour (holes stay holes, islands in holes stay filled),
   coordinates mapped into the requested viewBox and rounded to ``decimals``.

``python -m svg_rlrf.vectorize IMAGE.png [--colours K] [--curves] [--viewbox "0 0 64 64"] [--out FILE.svg]``
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MERGE_TOL = 24.0
"""Palette centres closer than this (RGB distance, 0..255 scale) are one colour."""
BLEND_TOL = 10.0
"""A cluster within this (plus 6% of the segment's length) of the segment between two colours may be a blend."""
THIN_SHARE = 0.25
"""A cluster is thin when under this share of its pixels have all four neighbours in it."""
CORNER_DEG = 50.0
"""With ``curves``: an outline turning by more than this many degrees at a vertex keeps a sharp corner there."""
KMEANS_ITERS = 25
"""Most Lloyd iterations of the palette's k-means."""
CURVE_PUSH = 1.0 / 3.0
"""With ``curves``: smooth vertices move out by this share of the distance the spline would pass inside them
(measured: a third keeps the traced area of circles and rings, 0 shrinks them, 1 swells them)."""

_NAMED = {"white": (255, 255, 255), "black": (0, 0, 0)}


@dataclass
class VectorizeConfig:
    colours: int = 8
    """Colours k of the quantisation (the background not counted); antialiasing blends among them are dropped."""
    min_area_px: float = 4.0
    """Connected regions (and holes) of fewer pixels are absorbed by their neighbours."""
    epsilon_px: float = 1.0
    """Polygon simplification tolerance (``cv2.approxPolyDP``), in image pixels; 0 keeps every outline corner."""
    curves: bool = False
    """Smooth outlines (quadratic Beziers along the simplified polygon, sharp at its corners) instead of polygons."""
    decimals: int = 0
    """Decimals of the output coordinates (in viewBox units)."""
    background: str = "white"
    """Colour not drawn: ``white``, ``black``, ``#rrggbb``, ``auto`` (the most common border colour) or ``none``
    (draw every colour, the largest first)."""

    def __post_init__(self) -> None:
        if self.colours < 1 or self.min_area_px < 0 or self.epsilon_px < 0 or not 0 <= self.decimals <= 6:
            raise ValueError(f"VectorizeConfig needs colours >= 1, non-negative min_area_px and epsilon_px and "
                             f"decimals in 0..6 (got {self.colours}, {self.min_area_px}, {self.epsilon_px}, "
                             f"{self.decimals})")
        if self.background not in ("auto", "none"):
            _parse_colour(self.background)


def _parse_colour(text: str) -> tuple[int, int, int]:
    key = text.strip().lower()
    if key in _NAMED:
        return _NAMED[key]
    digits = key[1:] if key.startswith("#") else ""
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    if len(digits) != 6 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"background must be white, black, #rrggbb, auto or none, got {text!r}")
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def _check_image(image: Any) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"vectorize needs a uint8 image, got dtype {arr.dtype}")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"vectorize needs an H x W x 3 RGB image, got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"vectorize needs a non-empty H x W x 3 RGB image, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _background(arr: np.ndarray, spec: str) -> np.ndarray | None:
    """The background colour as float RGB, or None (``none``)."""
    if spec == "none":
        return None
    if spec != "auto":
        return np.array(_parse_colour(spec), np.float64)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]]).reshape(-1, 3)
    colours, counts = np.unique(border, axis=0, return_counts=True)
    return colours[int(np.argmax(counts))].astype(np.float64)  # ties: the first colour in sorted order


# ----------------------------------------------------------------------------------------------- palette


def _sq_dist(colours: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return ((colours[:, None, :] - centres[None, :, :]) ** 2).sum(-1)


def _kmeans(colours: np.ndarray, weights: np.ndarray, k: int, fixed: np.ndarray | None) -> np.ndarray:
    """Weighted k-means centres over distinct colours; `fixed` (the background) is an extra centre kept in place.

    Deterministic: the first centre is `fixed` (else the most common colour), each next one the colour with
    the largest ``weight x squared distance`` to the centres so far.
    """
    centres = [fixed] if fixed is not None else [colours[int(np.argmax(weights))]]
    n_fixed = 1 if fixed is not None else 0
    while len(centres) < k + n_fixed:
        score = weights * _sq_dist(colours, np.array(centres)).min(axis=1)
        if score.max() <= 0:
            break  # every distinct colour is a centre already
        centres.append(colours[int(np.argmax(score))])
    cen = np.array(centres, np.float64)
    assign = None
    for _ in range(KMEANS_ITERS):
        new = _sq_dist(colours, cen).argmin(axis=1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        mass = np.bincount(assign, weights=weights, minlength=len(cen))
        for c in range(n_fixed, len(cen)):
            if mass[c] > 0:
                cen[c] = (colours[assign == c] * weights[assign == c, None]).sum(0) / mass[c]
    return cen


def _merge_close(cen: np.ndarray, mass: np.ndarray, n_fixed: int) -> list[int]:
    """Indices of the centres left after merging pairs closer than MERGE_TOL (the lighter one goes)."""
    alive = [c for c in range(len(cen)) if mass[c] > 0 or c < n_fixed]
    while len(alive) > 1:
        pairs = [(float(np.linalg.norm(cen[a] - cen[b])), a, b) for i, a in enumerate(alive) for b in alive[i + 1:]]
        dist, a, b = min(pairs)
        if dist >= MERGE_TOL:
            break
        heavy_a = a < n_fixed or (b >= n_fixed and mass[a] >= mass[b])
        keep, drop = (a, b) if heavy_a else (b, a)
        mass[keep] += mass[drop]
        alive.remove(drop)
    return alive


def _blend_pair(colour: np.ndarray, cen: np.ndarray, anchors: list[int]) -> tuple[int, int] | None:
    """The two `anchors` whose segment `colour` lies (nearly) on, the closest such pair; None when none does."""
    best, pair = np.inf, None
    for i, a in enumerate(anchors):
        for b in anchors[i + 1:]:
            span = cen[b] - cen[a]
            length2 = float(span @ span)
            if length2 <= 0:
                continue
            t = float(np.clip((colour - cen[a]) @ span / length2, 0.0, 1.0))
            off = float(np.linalg.norm(cen[a] + t * span - colour))
            if off <= BLEND_TOL + 0.06 * np.sqrt(length2) and off < best:
                best, pair = off, (a, b)
    return pair


def _thin(mask: np.ndarray) -> bool:
    import cv2

    inner = cv2.erode(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)),
                      borderType=cv2.BORDER_REPLICATE)
    return int(inner.sum()) < THIN_SHARE * int(mask.sum())


def _drop_blends(colours: np.ndarray, assign: np.ndarray, pixels: np.ndarray, cen: np.ndarray, mass: np.ndarray,
                 alive: list[int], n_fixed: int) -> list[int]:
    """`alive` less the clusters that are antialiasing blends of two heavier ones (thin, and between them).

    A blend's colours go to the nearer of its two colours (`assign` and `mass` are updated in place), not to
    the nearest colour overall: grey rims of a black line on white must not turn into a pink nearby.
    `pixels` is the H x W map of each pixel's distinct-colour index.
    """
    kept = list(alive)
    for c in sorted(alive, key=lambda i: (mass[i], i)):
        if c < n_fixed:
            continue
        pair = _blend_pair(cen[c], cen, [a for a in kept if a != c and (a < n_fixed or mass[a] > mass[c])])
        if pair is None or not _thin((assign == c)[pixels]):
            continue
        members = np.flatnonzero(assign == c)
        a, b = pair
        to_a = _sq_dist(colours[members], cen[[a]])[:, 0] <= _sq_dist(colours[members], cen[[b]])[:, 0]
        assign[members] = np.where(to_a, a, b)
        share = float(to_a.mean())  # of distinct colours, not pixels: the masses only rank the clusters
        mass[a], mass[b], mass[c] = mass[a] + mass[c] * share, mass[b] + mass[c] * (1.0 - share), 0.0
        kept.remove(c)
    return kept


def _assign(colours: np.ndarray, cen: np.ndarray) -> np.ndarray:
    """Each colour's centre: the nearest, except that a colour far from every centre but on the segment between
    two (an antialiasing blend, also one the k-means lumped in with a third colour) takes the nearer of those two.
    """
    d2 = _sq_dist(colours, cen)
    out = d2.argmin(axis=1)
    far = np.flatnonzero(d2.min(axis=1) > (MERGE_TOL / 2) ** 2)
    if len(far) == 0 or len(cen) < 2:
        return out
    x, best, best_off = colours[far], out[far], np.full(len(far), np.inf)
    for a in range(len(cen)):
        for b in range(a + 1, len(cen)):
            span = cen[b] - cen[a]
            length2 = float(span @ span)
            t = np.clip((x - cen[a]) @ span / max(length2, 1e-9), 0.0, 1.0)
            off = np.linalg.norm(cen[a] + t[:, None] * span - x, axis=1)
            ok = (off <= BLEND_TOL + 0.06 * np.sqrt(length2)) & (off < best_off)
            best = np.where(ok, np.where(t < 0.5, a, b), best)
            best_off = np.where(ok, off, best_off)
    out[far] = best
    return out


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    out = np.empty(values.shape[1])
    for ch in range(values.shape[1]):
        order = np.argsort(values[:, ch], kind="stable")
        cum = np.cumsum(weights[order])
        out[ch] = values[order[int(np.searchsorted(cum, cum[-1] / 2.0))], ch]
    return out


def _quantise(arr: np.ndarray, cfg: VectorizeConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """(palette K x 3 uint8, label map H x W into it, index of the background colour or -1)."""
    flat = arr.reshape(-1, 3).astype(np.int32)
    codes = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    uniq, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    colours = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1).astype(np.float64)
    weights = counts.astype(np.float64)
    bg = _background(arr, cfg.background)
    n_fixed = 0 if bg is None else 1
    cen = _kmeans(colours, weights, cfg.colours, bg)
    assign = _sq_dist(colours, cen).argmin(axis=1)
    mass = np.bincount(assign, weights=weights, minlength=len(cen))
    alive = _merge_close(cen, mass, n_fixed)
    assign = np.array(alive)[_sq_dist(colours, cen[alive]).argmin(axis=1)]
    mass = np.bincount(assign, weights=weights, minlength=len(cen))
    pixels = inverse.reshape(arr.shape[:2])
    alive = _drop_blends(colours, assign, pixels, cen, mass, alive, n_fixed)
    palette = cen[alive]
    assign = _assign(colours, palette)
    for c in range(n_fixed, len(palette)):
        if (assign == c).any():
            palette[c] = _weighted_median(colours[assign == c], weights[assign == c])
    labels = assign[pixels].astype(np.int32)
    return np.clip(np.rint(palette), 0, 255).astype(np.uint8), labels, n_fixed - 1


def _absorb_specks(labels: np.ndarray, min_area: float) -> np.ndarray:
    """`labels` with connected regions under `min_area` pixels given the label of the nearest larger region."""
    import cv2

    if min_area <= 1:
        return labels
    speck = np.zeros(labels.shape, bool)
    for k in np.unique(labels):
        n, comp, stats, _ = cv2.connectedComponentsWithStats((labels == k).astype(np.uint8), connectivity=8)
        small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < min_area) + 1
        if n > 1 and len(small):
            speck |= np.isin(comp, small)
    if not speck.any() or speck.all():
        return labels
    # Each speck pixel takes the label of its nearest non-speck pixel (one Voronoi label per such pixel).
    _, nearest = cv2.distanceTransformWithLabels(speck.astype(np.uint8), cv2.DIST_L2, 3,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
    lut = np.zeros(int(nearest.max()) + 1, np.int32)
    lut[nearest[~speck]] = labels[~speck]
    out = labels.copy()
    out[speck] = lut[nearest[speck]]
    return out


# ---------------------------------------------------------------------------------------------- outlines


def _layer_mask(labels: np.ndarray, k: int, below: np.ndarray) -> np.ndarray:
    """Layer `k`'s pixels plus the parts of its complement that only layers drawn after it fill.

    `below` marks the pixels of the background and of the layers drawn before `k`.
    """
    import cv2

    mask = labels == k
    n, comp = cv2.connectedComponents((~mask).astype(np.uint8), connectivity=4)
    if n <= 1:
        return mask
    blocked = np.zeros(n, bool)
    blocked[np.unique(comp[below & ~mask])] = True
    blocked[0] = True  # the label of `mask` itself
    return mask | ~blocked[comp]


def _grow(points: np.ndarray, d: float) -> np.ndarray:
    """The closed polygon `points` (traced through boundary pixel centres) pushed out from its region by `d`.

    OpenCV traces every outline, outer or hole, with the region on the same side, so the normal (-dy, dx)
    of each edge points away from the region; sharp reversals (one pixel wide lines) get square caps.
    """
    pts = points[np.any(points != np.roll(points, 1, axis=0), axis=1)] if len(points) > 1 else points
    if len(pts) == 1:
        x, y = pts[0]
        return np.array([[x - d, y - d], [x - d, y + d], [x + d, y + d], [x + d, y - d]])
    edges = np.roll(pts, -1, axis=0) - pts
    tangent = edges / np.linalg.norm(edges, axis=1, keepdims=True)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    out = []
    for i, p in enumerate(pts):
        n_in, n_out, t_in, t_out = normal[i - 1], normal[i], tangent[i - 1], tangent[i]
        cos = float(n_in @ n_out)
        if cos > -0.3:
            out.append(p + d * (n_in + n_out) / (1.0 + cos))
        else:
            out.extend([p + d * (n_in + t_in), p + d * (n_out - t_out)])
    return np.array(out)


class _Writer:
    """Path data from points already in viewBox units: rounds them, omits repeated command letters."""

    def __init__(self, decimals: int, chain: bool) -> None:
        self.decimals, self.chain = decimals, chain
        self.parts: list[str] = []
        self.last = ""

    def emit(self, command: str, *points: np.ndarray) -> None:
        nums = " ".join(f"{_fmt(p[0], self.decimals)} {_fmt(p[1], self.decimals)}" for p in points)
        implicit = command == self.last or (command == "L" and self.last == "M")
        self.parts.append((" " if implicit else command) + nums)
        self.last = command

    def close(self) -> None:
        self.parts.append("Z")
        self.last = "Z"

    def text(self) -> str:
        return "".join(self.parts)


def _polygon(out: _Writer, pts: np.ndarray) -> None:
    out.emit("M", pts[0])
    for p in pts[1:]:
        out.emit("L", p)
    out.close()


def _corners(pts: np.ndarray) -> np.ndarray:
    edges = np.roll(pts, -1, axis=0) - pts
    tangent = edges / np.maximum(np.linalg.norm(edges, axis=1, keepdims=True), 1e-9)
    return (np.roll(tangent, 1, axis=0) * tangent).sum(1) < np.cos(np.radians(CORNER_DEG))


def _spline(out: _Writer, pts: np.ndarray) -> None:
    """A closed quadratic B-spline with `pts` as control points: through each edge's middle, tangent to the
    edges there, passing through (sharp) corners with straight lines.

    Each smooth vertex is one ``Q`` (or, following one, a ``T`` of two numbers whose mirrored control point
    is the vertex). The midpoints are placed from the rounded control points actually implied so far, so
    rounding errors do not add up along a chain of ``T``.
    """
    corner = _corners(pts)
    if len(pts) < 3 or corner.all():
        _polygon(out, pts)
        return
    step = 10.0 ** -out.decimals

    def snap(p: np.ndarray) -> np.ndarray:
        return np.round(p / step) * step

    n = len(pts)
    bulge = (2.0 * pts - np.roll(pts, 1, axis=0) - np.roll(pts, -1, axis=0)) / 8.0
    pts = np.where(corner[:, None], pts, pts + CURVE_PUSH * bulge)
    start = int(np.argmax(corner)) if corner.any() else 0
    pts, corner = np.roll(pts, -start, axis=0), np.roll(corner, -start)
    # Without a corner the path starts and ends at the middle of the last edge.
    here = first = snap(pts[0]) if corner[0] else snap((pts[-1] + pts[0]) / 2.0)
    out.emit("M", here)
    control = None  # the control point of the previous quadratic, None after a line
    order = list(range(1, n)) + [0] if corner[0] else list(range(n))
    for j in order:
        if corner[j]:
            here, control = snap(pts[j]), None
            out.emit("L", here)
            continue
        last = j == order[-1]  # only without corners: it ends where the path started
        if control is None or not out.chain:
            control = snap(pts[j])
            here = first if last else snap((pts[j] + pts[(j + 1) % n]) / 2.0)
            out.emit("Q", control, here)
        else:
            control = 2.0 * here - control
            here = first if last else snap((control + pts[(j + 1) % n]) / 2.0)
            out.emit("T", here)
    out.close()


def _path_data(mask: np.ndarray, cfg: VectorizeConfig, scale: np.ndarray, offset: np.ndarray) -> str:
    """Outer outlines and holes of one layer's mask as path data in viewBox units.

    A thin outline is simplified with a smaller tolerance (a sixth of its mean width), so that a line a few
    pixels wide keeps its width.
    """
    import cv2

    out = _Writer(cfg.decimals, 10.0 ** -cfg.decimals <= 0.5 * float(scale.min()))
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    for contour in contours:
        length = cv2.arcLength(contour, True)
        width = 2.0 * abs(cv2.contourArea(contour)) / length + 1.0 if length > 0 else 1.0
        eps = min(cfg.epsilon_px, width / 6.0)
        simple = cv2.approxPolyDP(contour, eps, True) if eps > 0 else contour
        pts = _grow(simple.reshape(-1, 2).astype(np.float64) + 0.5, 0.5)  # pixel centres sit at +0.5
        (_spline if cfg.curves else _polygon)(out, offset + pts * scale)
    return out.text()


def _fmt(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    if decimals:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def vectorize(image: Any, *, viewbox: tuple[float, float, float, float] | None = None,
              config: VectorizeConfig | None = None) -> str:
    """An SVG document drawing `image` (H x W x 3 uint8 RGB), its coordinates in `viewbox` (default ``0 0 W H``).

    Deterministic; an image of only background gives a valid document with no shapes. Raises ValueError for
    an image of another dtype or shape, or a viewbox without positive width and height.
    """
    cfg = config or VectorizeConfig()
    arr = _check_image(image)
    height, width = arr.shape[:2]
    vx, vy, vw, vh = (float(v) for v in viewbox) if viewbox is not None else (0.0, 0.0, float(width), float(height))
    if not (vw > 0 and vh > 0):
        raise ValueError(f"viewbox needs a positive width and height, got {viewbox}")
    palette, labels, bg = _quantise(arr, cfg)
    labels = _absorb_specks(labels, cfg.min_area_px)
    areas = np.bincount(labels.ravel(), minlength=len(palette))
    order = [k for k in sorted(range(len(palette)), key=lambda k: (-areas[k], k)) if k != bg and areas[k] > 0]
    below = labels == bg
    shapes = []
    for k in order:
        mask = _layer_mask(labels, k, below)
        below |= labels == k
        data = _path_data(mask, cfg, np.array([vw / width, vh / height]), np.array([vx, vy]))
        if data:
            colour = "#{:02x}{:02x}{:02x}".format(*(int(c) for c in palette[k]))
            shapes.append(f'<path d="{data}" fill="{colour}" fill-rule="evenodd"/>')
    box = " ".join(_fmt(v, 3) for v in (vx, vy, vw, vh))
    return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{box}">{"".join(shapes)}</svg>'


def _read_image(path: Path) -> np.ndarray:
    """An image file as H x W x 3 uint8 RGB, transparency composited on white."""
    from PIL import Image

    with Image.open(path) as im:
        rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))


def main(argv: list[str] | None = None) -> None:
    """``python -m svg_rlrf.vectorize``: trace one image file, print the SVG or write it to ``--out``."""
    defaults = VectorizeConfig()
    parser = argparse.ArgumentParser(prog="python -m svg_rlrf.vectorize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path, help="PNG/JPEG image to trace")
    parser.add_argument("--colours", type=int, default=defaults.colours, help="colours of the quantisation")
    parser.add_argument("--epsilon", type=float, default=defaults.epsilon_px,
                        help="polygon simplification tolerance in pixels")
    parser.add_argument("--curves", action="store_true", help="smooth Bezier outlines instead of polygons")
    parser.add_argument("--decimals", type=int, default=defaults.decimals, help="decimals of the coordinates")
    parser.add_argument("--background", default=defaults.background,
                        help="colour not drawn: white, black, #rrggbb, auto or none")
    parser.add_argument("--viewbox", default=None, help='output frame, e.g. "0 0 64 64" (default: the image size)')
    parser.add_argument("--out", type=Path, default=None, help="write the SVG here (default: stdout)")
    args = parser.parse_args(argv)
    from PIL import UnidentifiedImageError

    try:
        box = tuple(float(v) for v in args.viewbox.replace(",", " ").split()) if args.viewbox else None
        if box is not None and len(box) != 4:
            raise ValueError(f"--viewbox needs four numbers, got {args.viewbox!r}")
        cfg = VectorizeConfig(colours=args.colours, epsilon_px=args.epsilon, curves=args.curves,
                              decimals=args.decimals, background=args.background)
        svg = vectorize(_read_image(args.image), viewbox=box, config=cfg)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.out:
        args.out.write_text(svg + "\n")
        print(args.out)
    else:
        print(svg)


if __name__ == "__main__":
    main()
