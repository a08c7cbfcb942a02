"""Rendering rewards of the svg track: render the policy's SVG, compare it with the target image.

One configured reward object (`RenderReward`) scores a batch: it pulls the SVG out of each completion,
renders every one through the safe renderer pool (`svg_rlrf.render.render_many`, in the item's
canonical frame, at the target's size) and combines named components, each with its own weight
(`RewardWeights`):

- ``pixel``: RLRF's image reward, ``clip(1 - L2, -1, 1)`` on per-image z-normalised images
  (= 2 x correlation - 1);
- ``edge``: the same score on Canny edge maps;
- ``ssim``: structural similarity (a blank canvas already scores ~0.8 on sparse targets, so it is
  off by default, and then not computed: it costs more than the other terms together);
- ``colour_iou``: area-weighted IoU of each target colour's pixels with the prediction's pixels of
  that colour, mapped to [-1, 1]. It pays for the right colour in the right place and nothing for
  covering the canvas (the hedge that z-normalised L2 pays for) or drawing half the shape (the hedge
  that plain MSE pays for);
- ``mse``: ``1 - mse_scale x MSE`` on [0, 1] RGB, clipped to [-1, 1];
- ``shapes``: the number of primitives in the code against the reference's
  (`svg_rlrf.metrics.shape_count_score`): off by default; it pays for keeping every target shape, which
  the image terms alone let RLRF drop when it cannot place one (docs/results.md);
- ``semantic``: cosine similarity of a local perceptual model's embeddings of the render and the target
  (`svg_rlrf.semantic`; RLRF's DreamSim / CLIP term), computed only when ``semantic_model`` names a folder;
- ``length``: RLRF's code-length term (no penalty up to half the reference's token count, quadratic
  beyond); its weight ramps from ``length_start`` to ``length`` over ``length_ramp_steps`` RL steps
  (a low start avoids the length collapse RLRF's authors saw).

A completion without an ``<svg>`` element, one the renderer refuses or cannot render, and a blank
render score -1 with the reason (`RewardScore.reason`); nothing raises for a bad sample.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.config import require
from shared.lm.rewards import RewardScore

FAIL_SCORE = -1.0
SVG_PATTERN = re.compile(r"<svg\b.*?</svg>", re.DOTALL | re.IGNORECASE)
OPEN_SVG = re.compile(r"<svg\b", re.IGNORECASE)
VIEWBOX = re.compile(r"""viewBox\s*=\s*["']\s*([-\d.eE+]+)[\s,]+([-\d.eE+]+)[\s,]+([-\d.eE+]+)[\s,]+([-\d.eE+]+)""")


@dataclass
class RewardWeights:
    """Weights of the rendering reward's components (0 turns one off; each is logged either way)."""

    pixel: float = 0.5
    """RLRF's z-normalised pixel L2 score."""
    edge: float = 0.25
    """z-normalised L2 score on Canny edge maps."""
    ssim: float = 0.0
    """SSIM (off by default: a blank canvas scores ~0.8 on sparse targets)."""
    colour_iou: float = 1.0
    """Colour-aware overlap with the target, mapped to [-1, 1] (the hedging-resistant term)."""
    colour_per_colour: bool = False
    """Average the colour overlap over the target's colours (each colour counts the same) instead of weighting
    each colour by its area: then drawing only the largest shape no longer earns most of the term."""
    mse: float = 0.0
    """1 - mse_scale x pixel MSE."""
    mse_scale: float = 10.0
    """Scale of the MSE term."""
    shapes: float = 0.0
    """Primitives drawn against the reference's (1 for the same count, 0.5 for one missing of two)."""
    semantic: float = 0.0
    """Cosine similarity of the semantic_model's image embeddings of render and target."""
    semantic_model: str = ""
    """A local folder with a transformers image model and its processor (CLIP, SigLIP, DINOv2 ...) for the
    semantic term; empty: no semantic term (nothing is downloaded)."""
    length: float = 0.1
    """Weight of the code-length term after the ramp."""
    length_start: float = 0.0
    """Weight of the code-length term at the first RL step."""
    length_ramp_steps: int = 100
    """RL steps over which the length weight grows linearly from length_start to length."""
    render_timeout_s: float = 2.0
    """Wall-clock limit of one render."""

    def __post_init__(self) -> None:
        for key in ("pixel", "edge", "ssim", "colour_iou", "mse", "shapes", "semantic", "length", "length_start"):
            require(getattr(self, key) >= 0, f"reward.{key}", "must be >= 0")
        require(self.mse_scale > 0, "reward.mse_scale", "must be > 0")
        require(self.semantic == 0 or bool(self.semantic_model), "reward.semantic_model",
                "is empty but reward.semantic > 0: name a local image model folder (CLIP, SigLIP, DINOv2 ...)")
        require(not self.semantic_model or Path(self.semantic_model).expanduser().is_dir(), "reward.semantic_model",
                f"{self.semantic_model} is not a folder (a local transformers image model; nothing is downloaded)")
        require(self.length_ramp_steps >= 0, "reward.length_ramp_steps", "must be >= 0")
        require(self.render_timeout_s > 0, "reward.render_timeout_s", "must be > 0")

    def length_weight(self, rl_step: int | None) -> float:
        """The length term's weight at an RL step (the final weight when the step is unknown, e.g. evals)."""
        if rl_step is None or self.length_ramp_steps == 0:
            return self.length
        frac = min(1.0, max(0.0, rl_step / self.length_ramp_steps))
        return self.length_start + (self.length - self.length_start) * frac


def extract_svg(text: str) -> str | None:
    """The first complete ``<svg ...>...</svg>`` element of a completion, or an unterminated one up to the
    end (the renderer then reports the XML error); None when the text has no ``<svg``."""
    match = SVG_PATTERN.search(text)
    if match:
        return match.group(0)
    start = OPEN_SVG.search(text)
    return text[start.start():] if start else None


def canvas_of(item: dict) -> tuple[float, float, float, float] | None:
    """The item's canonical frame: ``meta.canvas`` (a side C: 0 0 C C), else the reference SVG's viewBox."""
    meta = item.get("meta") or {}
    canvas = meta.get("canvas")
    if isinstance(canvas, (int, float)) and canvas > 0:
        return (0.0, 0.0, float(canvas), float(canvas))
    match = VIEWBOX.search(str(item.get("answer", "")))
    return tuple(float(v) for v in match.groups()) if match else None  # type: ignore[return-value]


class TargetCache:
    """Target images by path (RGB uint8 on white), the most recent `capacity` kept in memory."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._images: OrderedDict[str, Any] = OrderedDict()

    def get(self, path: str | Path) -> Any:
        import numpy as np
        from PIL import Image

        key = str(path)
        if key in self._images:
            self._images.move_to_end(key)
            return self._images[key]
        with Image.open(key) as im:
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                white = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, im)
            image = np.asarray(im.convert("RGB"), dtype=np.uint8)
        self._images[key] = image
        if len(self._images) > self.capacity:
            self._images.popitem(last=False)
        return image


SCORE_PRELOAD = ("svg_rlrf.metrics", "skimage.metrics")
"""Modules the render workers import at start to run `svg_rlrf.metrics.compare` beside each render."""


def image_components(compared: dict[str, float], weights: RewardWeights) -> dict[str, float]:
    """The reward's image components from `svg_rlrf.metrics.compare`'s output (all logged, weighted or not;
    ``ssim`` only where it was computed)."""
    parts = {
        "pixel": compared["pixel"], "edge": compared["edge"],
        "colour_iou": 2.0 * compared["colour_iou_per_colour" if weights.colour_per_colour else "colour_iou"] - 1.0,
        "mse": max(-1.0, min(1.0, 1.0 - weights.mse_scale * compared["mse"])),
    }
    if "ssim" in compared:
        parts["ssim"] = compared["ssim"]
    return parts


class RenderReward:
    """The svg track's reward: a callable over (completions, items) returning one `RewardScore` each.

    Items carry the target image (``images[0]``, an absolute path), the reference code (``answer``), the
    canonical frame (``meta.canvas``) and, on the training stream, ``rl_step`` (for the length ramp).
    `count_tokens` measures code length (the policy's tokenizer; characters when None). The semantic model
    (``weights.semantic_model``) is loaded here, on `device`, so a bad folder stops a run before it starts.
    """

    name = "svg"

    def __init__(self, weights: RewardWeights | None = None, count_tokens: Callable[[str], int] | None = None,
                 workers: int | None = None, device: str = "cpu") -> None:
        self.weights = weights or RewardWeights()
        self.count_tokens = count_tokens or len
        self.workers = workers
        self.targets = TargetCache()
        self.semantic = None
        if self.weights.semantic_model:
            from svg_rlrf.semantic import SemanticSimilarity

            self.semantic = SemanticSimilarity(self.weights.semantic_model, device=device)

    def __call__(self, completions: list[str], items: list[dict]) -> list[RewardScore]:
        from svg_rlrf.render import render_many

        compare = self._compare()
        svgs = [extract_svg(c) for c in completions]
        out: list[RewardScore | None] = [None] * len(completions)
        groups: dict[tuple, list[int]] = {}  # one render call per (frame, size)
        for i, (svg, item) in enumerate(zip(svgs, items, strict=True)):
            if svg is None:
                out[i] = RewardScore(FAIL_SCORE, {"rendered": 0.0}, reason="no <svg> element in the completion")
                continue
            target = self.targets.get(item["images"][0])
            if target.shape[0] != target.shape[1]:
                out[i] = RewardScore(FAIL_SCORE, {"rendered": 0.0}, reason=f"target image is not square "
                                     f"({target.shape[1]}x{target.shape[0]}): {item['images'][0]}")
                continue
            groups.setdefault((canvas_of(item), target.shape[0]), []).append(i)
        rendered: dict[int, tuple[Any, Any]] = {}  # index -> (render result, target)
        for (frame, size), rows in groups.items():
            targets = [self.targets.get(items[i]["images"][0]) for i in rows]
            results = render_many([svgs[i] for i in rows], size, viewbox=frame, workers=self.workers,
                                  timeout_s=self.weights.render_timeout_s, score=compare, targets=targets,
                                  preload=SCORE_PRELOAD)
            rendered.update({i: (result, target) for i, result, target in zip(rows, results, targets, strict=True)})
        semantic: dict[int, float] = {}
        ok = [i for i, (result, _) in rendered.items() if result.ok]
        if self.semantic is not None and ok:
            scores = self.semantic([rendered[i][0].image for i in ok], [rendered[i][1] for i in ok],
                                   keys=[str(items[i]["images"][0]) for i in ok])
            semantic = dict(zip(ok, scores, strict=True))
        for i, (result, target) in rendered.items():
            out[i] = self._score(result, svgs[i] or "", items[i], target, semantic.get(i))
        return [s if s is not None else RewardScore(FAIL_SCORE, reason="not scored") for s in out]

    def _compare(self) -> Callable[[Any, Any], dict[str, float]]:
        from svg_rlrf.metrics import compare, compare_without_ssim

        return compare if self.weights.ssim > 0 else compare_without_ssim

    def _score(self, result: Any, svg: str, item: dict, target: Any, semantic: float | None = None) -> RewardScore:
        from svg_rlrf.metrics import count_shapes, length_score, shape_count_score

        if not result.ok:
            return RewardScore(FAIL_SCORE, {"rendered": 0.0}, reason=f"render failed: {result.reason}")
        compared = result.scores if result.scores is not None else self._compare()(result.image, target)
        parts = image_components(compared, self.weights)
        reference = str(item.get("answer", ""))
        parts["length"] = length_score(self.count_tokens(svg), self.count_tokens(reference))
        parts["shapes"] = shape_count_score(count_shapes(svg), count_shapes(reference))
        w = self.weights
        weights = {"pixel": w.pixel, "edge": w.edge, "colour_iou": w.colour_iou, "mse": w.mse, "shapes": w.shapes,
                   "length": w.length_weight(item.get("rl_step"))}
        if w.ssim > 0:
            weights["ssim"] = w.ssim
        if semantic is not None:
            parts["semantic"] = semantic
            weights["semantic"] = w.semantic
        total = sum(weights.values())
        overall = sum(weights[k] * parts[k] for k in weights) / total if total > 0 else 0.0
        return RewardScore(overall, {**parts, "rendered": 1.0})
