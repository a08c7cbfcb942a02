"""Image and code metrics of the svg track: pure functions, used as RL rewards and as evaluation metrics.

Images are ``H x W x 3`` uint8 RGB arrays drawn on a white background; a pair (``pred``, ``target``)
must have the same shape (a `ValueError` names both shapes otherwise). Every function is deterministic
(numpy, OpenCV, scikit-image; no torch, no randomness) and returns python floats.

Image scores, higher is better:

- `pixel_l2_score`: RLRF's image reward, ``clip(1 - mean((znorm(pred) - znorm(target))**2), -1, 1)``,
  which is ``2 x corr - 1`` (Pearson correlation over all pixels and channels); a blank canvas scores 0;
- `edge_l2_score`: the same score on blurred Canny edge maps (`edge_map`);
- `ssim`: structural similarity. A blank canvas already scores ~0.8 on a target with a few small
  shapes (most windows are white in both), so it cannot tell "drew nothing" from "drew something";
- `colour_iou`: per dominant target colour, the IoU of the target's pixels of that colour with the
  prediction's pixels of (nearly) that colour, area-weighted. The right shape in the wrong colour scores 0
  and the canvas covered in the target's colour scores the target's share of the canvas, where
  `edge_l2_score` pays in full for the first (same outline) and `pixel_l2_score` pays much of it for a
  dark or similar-hue colour (a correlation of intensities, e.g. ~0.65 for a black copy of a red shape).

Image errors and hedging checks: `mse`, `edge_l2` (lower is better), `area_ratio` (1 is right: drawn
area over the target's), `colour_accuracy` (share of the target's drawn pixels whose colour the
prediction gets right, where the target has them), `colour_precision` (share of the prediction's flat
fills in one of the target's colours, wherever they are). Code: `length_score` (RLRF's length term),
`count_shapes`, `shape_count_score` (the prediction's primitives against the reference's), `code_efficiency`.
`blank_like` is the blank-canvas baseline: what a model that draws nothing would be scored on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

EPS = 1e-8
"""Standard deviations below this count as a uniform image (z-normalised to all zeros)."""
FOREGROUND_TOL = 16
"""A pixel is drawn when its darkest channel is more than this below 255 (white)."""
COLOUR_TOL = 40.0
"""Two colours match when their Euclidean distance in 0..255 RGB is at most this."""
BLEND_TOL = 12.0
"""An edge-only colour within this RGB distance of a mix of two known colours (or one and white) is
treated as an antialiasing blend, not as a colour of its own."""
MIN_COLOUR_SHARE = 0.005
"""Dominant colours matching less than this share of the target's drawn pixels (and at least 2 pixels) are
dropped; a colour seen only on edges needs this share of pixels of exactly that colour to be considered."""
MAX_COLOURS = 32
"""At most this many dominant colours are kept (synthetic targets have a few)."""
EDGE_BLUR_KSIZE = 7
"""Gaussian blur kernel (pixels, square) applied to the dilated Canny edges."""
EDGE_BLUR_SIGMA = 1.5
"""Standard deviation (pixels) of that blur."""

WHITE = np.array([255.0, 255.0, 255.0])
SHAPE_TAGS = ("rect", "circle", "ellipse", "line", "polyline", "polygon", "path")
_SHAPE_PATTERN = re.compile(r"<\s*(?:[\w.-]+:)?(?:" + "|".join(SHAPE_TAGS) + r")(?=[\s/>]|$)", re.IGNORECASE)
_COMMENT_PATTERN = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)


# ------------------------------------------------------------------------------------------- checks


def _image(img: Any, name: str) -> np.ndarray:
    """`img` as an ``H x W x 3`` uint8 array, or a `ValueError` naming what it is instead."""
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"{name} must be an H x W x 3 RGB image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (0..255), got dtype {arr.dtype}")
    return arr


def _pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both images checked, with the same shape."""
    p, t = _image(pred, "pred"), _image(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape, got pred {p.shape} and target {t.shape}")
    return p, t


# ------------------------------------------------------------------------------- RLRF image rewards


def _z(x: np.ndarray) -> np.ndarray:
    """float64 z-normalisation over every element; all zeros when the input is (nearly) uniform."""
    x = np.asarray(x, dtype=np.float64)
    std = float(x.std())
    if std < EPS:
        return np.zeros_like(x)
    return (x - x.mean()) / std


def znorm(img: Any) -> np.ndarray:
    """Per-image z-normalisation over all pixels and channels, as float32: ``(x - mean(x)) / std(x)``.

    ``std`` is the population standard deviation. A uniform image (``std < EPS``, e.g. a blank canvas)
    becomes all zeros instead of dividing by zero.
    """
    return _z(img).astype(np.float32)


def _z_l2_score(a: np.ndarray, b: np.ndarray) -> float:
    diff = _z(a) - _z(b)
    return float(np.clip(1.0 - np.mean(diff * diff), -1.0, 1.0))


def pixel_l2_score(pred: Any, target: Any) -> float:
    """RLRF's image reward: ``clip(1 - mean((znorm(pred) - znorm(target))**2), -1, 1)``.

    For z-normalised vectors ``mean(a**2) = mean(b**2) = 1``, so ``mean((a - b)**2) = 2 - 2 corr`` and the
    score is ``2 x corr - 1`` (Pearson correlation over all pixels and channels), clipped at -1 for negative
    correlations. A uniform image z-normalises to zeros: a blank canvas scores 0 against a drawn target, and
    two blank canvases score 1. Being a correlation, it ignores which colour a shape has as long as its
    intensities co-vary with the target's (the hedge that `colour_iou` closes).
    """
    p, t = _pair(pred, target)
    return _z_l2_score(p, t)


def edge_map(img: Any) -> np.ndarray:
    """Soft edge map in [0, 1], float32 ``H x W``: grayscale, Canny(50, 150), dilation by a 3x3 square,
    then a Gaussian blur (``EDGE_BLUR_KSIZE`` = 7 pixel kernel, sigma ``EDGE_BLUR_SIGMA`` = 1.5) so that edges
    a pixel or two apart still overlap. A blank image gives all zeros.
    """
    arr = _image(img, "img")
    gray = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(gray, 50, 150)
    edges = cv2.dilate(edges, np.ones((3, 3), np.uint8), iterations=1)
    soft = edges.astype(np.float32) / 255.0
    return cv2.GaussianBlur(soft, (EDGE_BLUR_KSIZE, EDGE_BLUR_KSIZE), EDGE_BLUR_SIGMA)


def edge_l2_score(pred: Any, target: Any) -> float:
    """`pixel_l2_score`'s formula on edge maps: ``clip(1 - mean((znorm(E(pred)) - znorm(E(target)))**2), -1, 1)``
    with ``E`` = `edge_map`; ``2 x corr - 1`` of the two edge maps. No edges at all (a blank canvas) scores 0
    against a target with edges.
    """
    p, t = _pair(pred, target)
    return _z_l2_score(edge_map(p), edge_map(t))


# --------------------------------------------------------------------------------- classic metrics


def edge_l2(pred: Any, target: Any) -> float:
    """Mean squared difference of the two edge maps (`edge_map`, values in [0, 1]): 0 is identical edges."""
    p, t = _pair(pred, target)
    diff = edge_map(p).astype(np.float64) - edge_map(t).astype(np.float64)
    return float(np.mean(diff * diff))


def mse(pred: Any, target: Any) -> float:
    """Mean squared error over all pixels and channels of the images scaled to [0, 1]."""
    p, t = _pair(pred, target)
    diff = (p.astype(np.float64) - t.astype(np.float64)) / 255.0
    return float(np.mean(diff * diff))


def ssim(pred: Any, target: Any) -> float:
    """Structural similarity (scikit-image): ``channel_axis=-1, data_range=255``, an 11x11 Gaussian window of
    sigma 1.5 and population covariances (``use_sample_covariance=False``), i.e. Wang et al.'s settings.

    A blank canvas scores ~0.8 against a target with a few small shapes: SSIM averages over windows and the
    white ones match perfectly. Images need at least 11 pixels per side.
    """
    from skimage.metrics import structural_similarity

    p, t = _pair(pred, target)
    return float(structural_similarity(p, t, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


# ---------------------------------------------------------------------------------- hedging checks


def foreground_mask(img: Any, tol: int = FOREGROUND_TOL) -> np.ndarray:
    """Boolean ``H x W`` mask of the drawn pixels: those whose darkest channel is below ``255 - tol``."""
    arr = _image(img, "img")
    return (255 - arr.min(axis=-1).astype(np.int16)) > tol


def blank_like(target: Any) -> np.ndarray:
    """A white canvas with the target's shape (uint8): the blank-canvas baseline, what drawing nothing scores."""
    return np.full(_image(target, "target").shape, 255, dtype=np.uint8)


def area_ratio(pred: Any, target: Any, tol: int = FOREGROUND_TOL) -> float:
    """Drawn share of pred over drawn share of target (`foreground_mask`): 1 is the right amount of ink, 0 a
    blank prediction, above 1 over-drawing (e.g. covering the canvas).

    A blank target has no drawn area to compare with: the ratio is 1.0 when pred is blank too and ``math.inf``
    when pred draws anything (callers that average skip non-finite values, as `svg_rlrf.evaluate` does).
    """
    p, t = _pair(pred, target)
    drawn_pred = int(foreground_mask(p, tol).sum())
    drawn_target = int(foreground_mask(t, tol).sum())
    if drawn_target == 0:
        return 1.0 if drawn_pred == 0 else math.inf
    return float(drawn_pred / drawn_target)


def _colour_distance(img: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Euclidean RGB distance (0..255 scale) of every pixel of `img` (``... x 3``) to one colour, ``...``."""
    diff = img.astype(np.float32) - colour.astype(np.float32)
    return np.sqrt(np.sum(diff * diff, axis=-1))


def _interior(packed: np.ndarray) -> np.ndarray:
    """Pixels whose four neighbours have exactly their colour (flat fill, never an antialiased edge)."""
    padded = np.pad(packed, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    return ((padded[:-2, 1:-1] == centre) & (padded[2:, 1:-1] == centre)
            & (padded[1:-1, :-2] == centre) & (padded[1:-1, 2:] == centre))


def _is_blend(colour: np.ndarray, centres: np.ndarray, tol: float) -> bool:
    """Whether `colour` lies within `tol` of a segment between two of `centres` + white (an antialiasing mix)."""
    ends = np.vstack([centres, WHITE])
    i, j = np.triu_indices(len(ends), k=1)
    a, b = ends[i], ends[j]
    ab = b - a
    t = np.clip(np.sum((colour - a) * ab, axis=1) / np.maximum(np.sum(ab * ab, axis=1), EPS), 0.0, 1.0)
    nearest = a + t[:, None] * ab
    return bool((np.linalg.norm(nearest - colour, axis=1) <= tol).any())


def _packed(arr: np.ndarray) -> np.ndarray:
    """Each pixel's RGB as one int64 (``r << 16 | g << 8 | b``), ``H x W``."""
    return (arr[..., 0].astype(np.int64) << 16) | (arr[..., 1].astype(np.int64) << 8) | arr[..., 2]


def _candidate_colours(arr: np.ndarray, fg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The drawn pixels' distinct colours (``N x 3`` float), their pixel counts and whether each fills some
    interior pixel, ordered flat fills first, then by pixel count (most first), then by colour value."""
    packed = _packed(arr)
    values, counts = np.unique(packed[fg], return_counts=True)
    inner_values, inner_counts = np.unique(packed[fg & _interior(packed)], return_counts=True)
    inner = np.zeros(len(values), dtype=np.int64)
    inner[np.searchsorted(values, inner_values)] = inner_counts
    order = np.lexsort((values, -counts, -inner))
    values, counts, inner = values[order], counts[order], inner[order]
    rgb = np.stack([(values >> 16) & 255, (values >> 8) & 255, values & 255], axis=1).astype(np.float64)
    return rgb, counts, inner > 0


def dominant_colours(img: Any, tol: float = COLOUR_TOL, fg_tol: int = FOREGROUND_TOL) -> np.ndarray:
    """The image's dominant drawn colours, ``K x 3`` float64 (0..255), largest flat fills first.

    The drawn pixels' distinct colours are visited flat fills first (colours owning a pixel whose four
    neighbours share it), then by pixel count. A colour within `tol` of an already kept one joins it. A
    colour seen only on edges is skipped when it lies on a mix of two kept colours or of one and white (within
    ``BLEND_TOL``: an antialiasing blend) or when fewer than ``MIN_COLOUR_SHARE`` of the drawn pixels have
    exactly it (stray mixes where three colours meet); otherwise it is kept, so thin strokes without interior
    pixels keep their colour, and a flat pink area beside a red one is a colour, not a blend. Kept colours
    that match (within `tol`) less than ``MIN_COLOUR_SHARE`` of the drawn pixels are dropped.
    """
    arr = _image(img, "img")
    fg = foreground_mask(arr, fg_tol)
    if not fg.any():
        return np.zeros((0, 3))
    min_pixels = max(2.0, MIN_COLOUR_SHARE * fg.sum())
    rgb, counts, flat = _candidate_colours(arr, fg)
    kept: list[np.ndarray] = []
    for colour, count, is_flat in zip(rgb, counts, flat, strict=True):
        if not is_flat and count < min_pixels:
            break  # edge-only colours come last, most frequent first: the rest are rarer still
        if kept:
            centres = np.array(kept)
            if np.linalg.norm(centres - colour, axis=1).min() <= tol:
                continue
            if not is_flat and _is_blend(colour, centres, BLEND_TOL):
                continue
        kept.append(colour)
        if len(kept) >= MAX_COLOURS:
            break
    out = [c for c in kept if ((_colour_distance(arr, c) <= tol) & fg).sum() >= min_pixels]
    return np.array(out).reshape(-1, 3)


def _pixelwise_colour_iou(p: np.ndarray, t: np.ndarray, fg_p: np.ndarray, fg_t: np.ndarray, tol: float) -> float:
    diff = p.astype(np.float32) - t.astype(np.float32)
    same = np.sqrt(np.sum(diff * diff, axis=-1)) <= tol
    return float((fg_t & fg_p & same).sum() / (fg_t | fg_p).sum())


def colour_iou(pred: Any, target: Any, tol: float = COLOUR_TOL, per_colour: bool = False) -> float:
    """Colour-aware overlap in [0, 1]: for each dominant target colour ``c`` (`dominant_colours`),

    ``IoU_c = |T_c & P_c| / |T_c | P_c|`` with ``T_c`` the target's drawn pixels within `tol` of ``c`` and ``P_c``
    the prediction's drawn pixels within `tol` of ``c``; the score is ``sum_c |T_c| IoU_c / sum_c |T_c|``, or with
    `per_colour` the plain mean of ``IoU_c`` (every colour counts the same, so leaving out a small shape of its
    own colour costs as much as leaving out a large one).

    1 for identical images, 0 for a blank prediction or the right shape in a different colour, ~0.5 for half
    the shape, the target's share of the canvas for a canvas covered in the target's colour. Drawn pixels in
    colours the target does not use only cost where they cover the target's shapes. A blank target scores 1
    against a blank prediction and 0 against anything drawn; a drawn target without dominant colours (noise,
    gradients) falls back to ``|T & P & same colour| / |T | P|`` over all drawn pixels ``T``, ``P``, where "same
    colour" compares the two images pixel by pixel within `tol`.
    """
    by_area, by_colour = colour_ious(pred, target, tol)
    return by_colour if per_colour else by_area


def colour_ious(pred: Any, target: Any, tol: float = COLOUR_TOL) -> tuple[float, float]:
    """`colour_iou` both ways in one pass: (area-weighted, per-colour mean)."""
    p, t = _pair(pred, target)
    return _colour_ious(p, t, foreground_mask(p), foreground_mask(t), dominant_colours(t, tol), tol)


def _colour_ious(p: np.ndarray, t: np.ndarray, fg_p: np.ndarray, fg_t: np.ndarray, colours: np.ndarray,
                 tol: float) -> tuple[float, float]:
    """`colour_ious` from the drawn masks and the target's `dominant_colours`."""
    if not fg_t.any():
        score = 0.0 if fg_p.any() else 1.0
        return score, score
    if len(colours) == 0:  # drawn, but no flat colour (noise, gradients, a few pixels): compare pixel by pixel
        score = _pixelwise_colour_iou(p, t, fg_p, fg_t, tol)
        return score, score
    total, weighted, ious = 0, 0.0, []
    for colour in colours:
        in_t = fg_t & (_colour_distance(t, colour) <= tol)
        in_p = fg_p & (_colour_distance(p, colour) <= tol)
        area = int(in_t.sum())
        union = int((in_t | in_p).sum())
        iou = int((in_t & in_p).sum()) / union if union else 0.0
        total += area
        weighted += area * iou
        ious.append(iou)
    return (float(weighted / total) if total else 0.0), float(sum(ious) / len(ious))


def colour_accuracy(pred: Any, target: Any, tol: float = COLOUR_TOL) -> float:
    """Share of the target's drawn pixels where the prediction is drawn too (`foreground_mask`) in a colour
    within `tol` (RGB distance) of the target's: 0 for a blank prediction (white never matches, not even a
    faint antialiased target pixel) or a wrong colour, 1 when every drawn target pixel is matched.
    Over-drawing elsewhere is not counted (see `area_ratio`). A blank target scores 1 (nothing to get wrong).
    """
    p, t = _pair(pred, target)
    fg_t = foreground_mask(t)
    if not fg_t.any():
        return 1.0
    diff = p[fg_t].astype(np.float32) - t[fg_t].astype(np.float32)
    same = np.sqrt(np.sum(diff * diff, axis=-1)) <= tol
    return float(np.mean(same & foreground_mask(p)[fg_t]))


def colour_precision(pred: Any, target: Any, tol: float = COLOUR_TOL) -> float:
    """Share of the prediction's flat-filled drawn pixels (those whose four neighbours share their colour, so
    antialiased edges do not count; all its drawn pixels when none is flat) within `tol` of one of the target's
    `dominant_colours`, wherever they are drawn.

    The position-free colour check: 1 when every colour drawn is one of the target's (even in the wrong place,
    which `colour_accuracy` counts against), 0 for a shape in a colour the target does not use (a grey or
    averaged hedge). NaN when the prediction draws nothing (no colour to judge; callers that average skip it)
    or when the drawn target has no flat colours (noise, gradients); 0 for anything drawn on a blank target.
    """
    p, t = _pair(pred, target)
    return _colour_precision(p, foreground_mask(p), foreground_mask(t), dominant_colours(t, tol), tol)


def _colour_precision(p: np.ndarray, fg_p: np.ndarray, fg_t: np.ndarray, colours: np.ndarray, tol: float) -> float:
    """`colour_precision` from the drawn masks and the target's `dominant_colours`."""
    if not fg_p.any():
        return math.nan
    if len(colours) == 0:
        return math.nan if fg_t.any() else 0.0
    judged = fg_p & _interior(_packed(p))
    if not judged.any():
        judged = fg_p
    pixels = p[judged]
    in_colour = np.zeros(len(pixels), dtype=bool)
    for colour in colours:
        in_colour |= _colour_distance(pixels, colour) <= tol
    return float(np.mean(in_colour))


# --------------------------------------------------------------------------------------------- code


def length_score(pred_len: float, ref_len: float) -> float:
    """RLRF's code-length reward, in [-1, 1]: ``clip(1 - (max(0, pred_len - ref_len / 2) / ref_len)**2, -1, 1)``.

    No penalty up to half the reference's length (score 1), then a quadratic one: 0.75 at the reference's
    length, 0 at 1.5x, -1 from ``(0.5 + sqrt(2))`` x ~= 1.91x on (the paper leaves it unbounded below; the
    clip keeps it on the scale of the image rewards). A reference length below 1 counts as 1.
    """
    if pred_len < 0 or ref_len < 0:
        raise ValueError(f"lengths must be >= 0, got pred_len={pred_len} and ref_len={ref_len}")
    ref = max(float(ref_len), 1.0)
    excess = max(0.0, float(pred_len) - ref / 2.0)
    return float(min(1.0, max(-1.0, 1.0 - (excess / ref) ** 2)))


def count_shapes(svg_code: str | None) -> int:
    """Number of drawing primitives (``rect circle ellipse line polyline polygon path`` opening tags, any
    nesting, any case, with or without a namespace prefix) in the code. Comments are skipped; closing tags and
    look-alikes (``linearGradient``) are not counted; shapes inside ``<defs>`` are. Never raises: malformed or
    truncated code counts what is there, anything that is not a string counts 0.
    """
    if not isinstance(svg_code, str):
        return 0
    return len(_SHAPE_PATTERN.findall(_COMMENT_PATTERN.sub("", svg_code)))


def shape_count_score(pred_shapes: int, ref_shapes: int) -> float:
    """How close the prediction's number of primitives is to the reference's, in [-1, 1]:
    ``clip(1 - |pred_shapes - ref_shapes| / ref_shapes, -1, 1)`` (a reference without shapes counts as 1).

    1 for the right count; for a 2-shape target, 0.5 for one shape or three, 0 for none. Leaving out a
    shape the policy cannot place costs as much as adding a spurious one; the image terms judge where
    the shapes go. Negative counts raise `ValueError`.
    """
    if pred_shapes < 0 or ref_shapes < 0:
        raise ValueError(f"shape counts must be >= 0, got pred_shapes={pred_shapes} and ref_shapes={ref_shapes}")
    ref = max(int(ref_shapes), 1)
    return float(min(1.0, max(-1.0, 1.0 - abs(int(pred_shapes) - ref) / ref)))


def code_efficiency(pred_tokens: float | Sequence[float], ref_tokens: float | Sequence[float]) -> float:
    """Negated mean difference from the reference's token count: ``-mean(pred_tokens - ref_tokens)``.

    0 is the reference's length on average, negative is longer than the reference (worse), positive shorter.
    Takes one count each or equally long sequences of per-output counts.
    """
    pred = np.atleast_1d(np.asarray(pred_tokens, dtype=np.float64))
    ref = np.atleast_1d(np.asarray(ref_tokens, dtype=np.float64))
    if pred.shape != ref.shape or pred.size == 0:
        raise ValueError(f"need equally many (>= 1) token counts, got pred {pred.shape} and ref {ref.shape}")
    return -float(np.mean(pred - ref))


def compare_without_ssim(pred: Any, target: Any) -> dict[str, float]:
    """`compare` without SSIM, the costliest term (about 10 ms at 112 px, more than all the others together):
    what the reward computes when SSIM has no weight."""
    p, t = _pair(pred, target)
    fg_p, fg_t, colours = foreground_mask(p), foreground_mask(t), dominant_colours(t)  # shared by the colour checks
    by_area, per_colour = _colour_ious(p, t, fg_p, fg_t, colours, COLOUR_TOL)
    return {
        "pixel": pixel_l2_score(p, t), "edge": edge_l2_score(p, t), "colour_iou": by_area,
        "colour_iou_per_colour": per_colour, "mse": mse(p, t), "edge_l2": edge_l2(p, t),
        "area_ratio": area_ratio(p, t), "colour_accuracy": colour_accuracy(p, t),
        "colour_precision": _colour_precision(p, fg_p, fg_t, colours, COLOUR_TOL),
    }


def compare(pred: Any, target: Any) -> dict[str, float]:
    """Every image comparison of one render against its target, in one call: the rewards' image terms
    (``pixel``, ``edge``, ``ssim``, ``colour_iou`` in [0, 1], ``mse``) and the evaluation's (``edge_l2``,
    ``area_ratio``, ``colour_accuracy``, ``colour_precision``). Render workers run it beside the render
    (`svg_rlrf.render`'s ``score=``), so the comparisons of a batch run in parallel."""
    return {**compare_without_ssim(pred, target), "ssim": ssim(pred, target)}
