"""Evaluation of an svg run: reconstruction, code and hedging metrics, beside two non-learned references.

For each held-out item the run's final model writes one SVG (greedy by default); it is rendered in the
item's canonical frame at the target's size. A render that fails counts as a white canvas in the image
metrics (and in ``render_success``), so failing is never cheaper than drawing. Metrics, overall and
per complexity level (``level<k>/...``):

- reconstruction: ``mse`` (on [0, 1] RGB), ``ssim``, ``edge_l2``, ``colour_iou``;
- code: ``tokens`` (policy tokens per output), ``ref_tokens``, ``code_efficiency`` (the negated mean
  difference from the reference's token count: 0 is the reference's length, negative is longer),
  ``render_success``;
- hedging (is a gain real reconstruction?): ``area_ratio`` (canvas drawn over the target's),
  ``colour_accuracy`` (target pixels whose colour the output gets right, in place), ``colour_precision``
  (the output's flat fills in one of the target's colours, wherever they are), ``shapes_ratio`` (primitives
  per output over the target's), ``distinct_outputs`` (share of different SVGs among the outputs);
- placement (`svg_rlrf.placement`: the output's primitives matched to the reference's by centre): ``same_count``,
  ``centre_error`` (canvas units), ``kind_right`` (a rectangle drawn for an ellipse is wrong), ``fill_right``.

Outputs that did not render are counted by kind of failure (``failures`` in ``eval/<split>.json``, e.g.
``{"malformed XML": 12, "blank render": 3, "no <svg> element": 1}``; `failure_kinds`); every output, with its
failure reason, MSE and SSIM, is kept in ``eval/<split>.outputs.jsonl``.

The same metrics are computed for the blank canvas (``blank/...``: a white image, what a model that
draws nothing scores) and the classic vectorizer (``vectorizer/...``, `svg_rlrf.vectorize`). The gallery
gets, for the first eval.media_items items, one image per item: target | initial model (the model the
run started from, when model.path names one, e.g. the warm-up) | this run | vectorizer, with code lengths.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.tracks import EvalRequest

IMAGE_METRICS = ("mse", "ssim", "edge_l2", "colour_iou", "area_ratio", "colour_accuracy", "colour_precision")


def output_metrics(compared: dict[str, float], svg: str | None, ref_svg: str, ok: bool,
                   count_tokens: Callable[[str], int]) -> dict[str, float]:
    """One output's metrics from `svg_rlrf.metrics.compare` of its render (a white canvas when it failed)."""
    from svg_rlrf.metrics import count_shapes

    tokens, ref_tokens = count_tokens(svg or ""), count_tokens(ref_svg)
    return {
        **{key: compared[key] for key in IMAGE_METRICS}, "render_success": float(ok),
        "tokens": float(tokens), "ref_tokens": float(ref_tokens), "code_efficiency": -float(tokens - ref_tokens),
        "shapes_ratio": count_shapes(svg or "") / max(1, count_shapes(ref_svg)),
    }


def _mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    import math

    keys = rows[0].keys() if rows else []
    out = {}
    for key in keys:
        values = [r[key] for r in rows if math.isfinite(r[key])]
        out[key] = sum(values) / len(values) if values else float("nan")
    return out


def summarise(rows: list[dict[str, float]], levels: list[Any], svgs: list[str | None]) -> dict[str, float]:
    """Means overall and per level, plus distinct_outputs."""
    out = _mean_rows(rows)
    texts = [s or "" for s in svgs]
    out["distinct_outputs"] = len(set(texts)) / max(1, len(texts))
    out["items"] = float(len(rows))
    for level in sorted({lv for lv in levels if lv is not None}, key=str):
        sub = [r for r, lv in zip(rows, levels, strict=True) if lv == level]
        out.update({f"level{level}/{k}": v for k, v in _mean_rows(sub).items()})
    return out


def render_outputs(svgs: list[str | None], items: list[dict], targets: list[Any]) -> list[Any]:
    """RenderResults of outputs in their items' frames, compared with their targets by the render workers
    (`svg_rlrf.metrics.compare`); None where there was no SVG."""
    from svg_rlrf.metrics import compare
    from svg_rlrf.render import render_many
    from svg_rlrf.rewards import SCORE_PRELOAD, canvas_of

    results: list[Any] = [None] * len(svgs)
    groups: dict[tuple, list[int]] = {}
    for i, (svg, item, target) in enumerate(zip(svgs, items, targets, strict=True)):
        if svg is not None:
            groups.setdefault((canvas_of(item), target.shape[0]), []).append(i)
    for (frame, size), rows in groups.items():
        results_of = render_many([svgs[i] for i in rows], size, viewbox=frame, score=compare,
                                 targets=[targets[i] for i in rows], preload=SCORE_PRELOAD)
        for i, res in zip(rows, results_of, strict=True):
            results[i] = res
    return results


def score_outputs(svgs: list[str | None], items: list[dict], targets: list[Any],
                  count_tokens: Callable[[str], int]) -> tuple[list[dict[str, float]], list[Any], dict[str, int],
                                                            list[str | None]]:
    """Per-item metrics of a list of outputs, the images they were scored on, the failures by kind, and each
    output's failure reason (None where it rendered)."""
    import numpy as np

    from svg_rlrf.metrics import compare

    results = render_outputs(svgs, items, targets)
    rows, images = [], []
    for svg, item, target, res in zip(svgs, items, targets, results, strict=True):
        ok = res is not None and res.ok
        image = res.image if ok else np.full_like(target, 255)
        compared = res.scores if ok and res.scores is not None else compare(image, target)
        rows.append(output_metrics(compared, svg, str(item["answer"]), ok, count_tokens))
        images.append(res.image if res is not None and res.image is not None else image)
    reasons = [failure_reason(res) for res in results]
    return rows, images, failure_kinds(reasons), reasons


def failure_kind(reason: str | None) -> str:
    """A failure reason without its particulars (positions, values): ``malformed XML: unclosed token: line 1,
    column 40`` -> ``malformed XML: unclosed token``; ``number out of range (r='1e999')`` -> ``number out of
    range``; ``root <svg> is in namespace 'http://x', not ...`` -> ``root <svg> is in namespace`` (a quoted value
    is a particular, and its colons must not split the kind)."""
    import re

    text = re.sub(r"\s*[('\"].*$", "", str(reason or "unknown").strip())  # from a bracket or a quote on
    text = re.sub(r":\s*line \d+.*$", "", text)
    parts = [p.strip() for p in text.split(":") if p.strip()]
    return ": ".join(parts[:2]) if parts else "unknown"


def failure_reason(result: Any) -> str | None:
    """Why an output did not render (`render_outputs`' result; None: there was no SVG), None if it did."""
    if result is None:
        return "no <svg> element"
    return None if result.ok else result.reason


def failure_kinds(reasons: list[str | None]) -> dict[str, int]:
    """Outputs that did not render (`failure_reason`, None where one did), by `failure_kind`, most frequent
    first."""
    from collections import Counter

    return dict(Counter(failure_kind(r) for r in reasons if r is not None).most_common())


def vectorizer_outputs(targets: list[Any], items: list[dict]) -> list[str]:
    """The classic vectorizer's SVG of each target, in the item's frame."""
    from svg_rlrf.rewards import canvas_of
    from svg_rlrf.vectorize import vectorize

    return [vectorize(target, viewbox=canvas_of(item)) for target, item in zip(targets, items, strict=True)]


def model_outputs(setup: Any, items: list[dict], cfg: Any, progress: Any = None) -> list[str | None]:
    """One SVG per item from the setup's model (greedy unless eval.greedy is off)."""
    from shared.lm.evaluate import evaluate
    from svg_rlrf.rewards import extract_svg

    result = evaluate(setup, items, (1,), cfg.rl.max_new_tokens, cfg.eval.temperature, greedy=cfg.eval.greedy,
                      seed=cfg.eval.seed, progress=progress)
    return [extract_svg(t["completions"][0]) for t in result.traces]


def _run_config(run_dir: Path) -> Any:
    from svg_rlrf.track import SVGConfig
    from vlm_rl.evaluate import run_config

    return run_config(run_dir, SVGConfig)


def _initial_model(run_dir: Path) -> str | None:
    """The model folder the run started from (its config's model.path), if it still exists."""
    import yaml

    raw = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    path = ((raw.get("model") or {}).get("path")) or ""
    return path if path and Path(path).is_dir() else None


def evaluate_run(req: EvalRequest) -> dict[str, float]:
    """Metrics of the run's final model on a held-out split (test, val, or icons: the Font Awesome set), beside
    the blank canvas and the vectorizer; logged as ``final_eval/<split>/...`` and written to
    ``eval/<split>.json``; gallery comparisons of the first eval.media_items items."""
    from tqdm.auto import tqdm

    from shared.tracking import read_metrics
    from shared.tracking.run import Run
    from svg_rlrf.placement import EVAL_METRICS as PLACEMENT_METRICS
    from svg_rlrf.placement import item_level, placement
    from svg_rlrf.render import require_renderer
    from svg_rlrf.rewards import TargetCache
    from svg_rlrf.track import build_setup, load_data, token_counter

    require_renderer("rlab eval")
    cfg = _run_config(req.run_dir)
    data = load_data(cfg.data)
    setup = build_setup(cfg, data)
    items = setup.eval_items(req.split)[: req.limit]
    if not items:
        raise ValueError(f"split {req.split!r} of {req.run_dir} has no items")
    cache = TargetCache()
    targets = [cache.get(item["images"][0]) for item in items]
    count = token_counter(setup.tokenizer)
    with tqdm(total=len(items), desc=f"eval {req.split}", unit="item", file=sys.stderr) as bar:
        svgs = model_outputs(setup, items, cfg, progress=bar.update)
    rows, images, failures, reasons = score_outputs(svgs, items, targets, count)
    levels = [item_level(item) for item in items]
    result = {f"model/{k}": v for k, v in summarise(rows, levels, svgs).items()}
    for group, row in placement(svgs, [str(it["answer"]) for it in items], levels, cfg.data.canvas).items():
        prefix = "model/" if group == "all" else f"model/{group}/"
        result.update({prefix + key: row[key] for key in PLACEMENT_METRICS})
    vec_svgs = vectorizer_outputs(targets, items)
    vec_rows, vec_images, _, _ = score_outputs(list(vec_svgs), items, targets, count)
    result.update({f"vectorizer/{k}": v for k, v in summarise(vec_rows, levels, list(vec_svgs)).items()})
    from svg_rlrf.metrics import blank_like, compare

    blank = [output_metrics(compare(blank_like(t), t), "", str(it["answer"]), False, count)
             for t, it in zip(targets, items, strict=True)]
    result.update({f"blank/{k}": v for k, v in summarise(blank, levels, [""] * len(items)).items()})

    step = max((r["step"] for r in read_metrics(req.run_dir)), default=0)
    metrics = {f"final_eval/{req.split}/{k}": v for k, v in result.items()}
    with Run.open(req.run_dir, resume=False) as run:
        run.log(step, metrics)
    out = req.run_dir / "eval" / f"{req.split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"split": req.split, "items": len(items), "metrics": result, "failures": failures},
                              indent=1) + "\n")
    with (out.parent / f"{req.split}.outputs.jsonl").open("w") as f:
        for item, svg, reason, row in zip(items, svgs, reasons, rows, strict=True):
            f.write(json.dumps({"id": item.get("id"), "svg": svg, "failure": reason, "mse": row["mse"],
                                "ssim": row["ssim"]}) + "\n")
    if failures:
        print(f"outputs that did not render ({sum(failures.values())} of {len(items)}): "
              + ", ".join(f"{kind} {n}" for kind, n in failures.items()), file=sys.stderr)
    n_media = min(cfg.eval.media_items, len(items))
    columns = [("target", targets[:n_media], [str(it["answer"]) for it in items[:n_media]])]
    initial = _initial_model(req.run_dir)
    if initial:
        init_cfg = copy.deepcopy(cfg)
        init_cfg.model.path = initial
        init_setup = build_setup(init_cfg, data)
        init_svgs = model_outputs(init_setup, items[:n_media], init_cfg)
        _, init_images, _, _ = score_outputs(init_svgs, items[:n_media], targets[:n_media], count)
        columns.append(("initial", init_images, init_svgs))
    columns += [("this run", images[:n_media], svgs[:n_media]),
                ("vectorizer", vec_images[:n_media], vec_svgs[:n_media])]
    write_comparisons(req.run_dir, items[:n_media], columns, count, step, f"final_eval/{req.split}")
    return metrics


def write_comparisons(run_dir: Path, items: list[dict], columns: list[tuple[str, list, list]],
                      count_tokens: Callable[[str], int], step: int, group: str) -> None:
    """One image per item: the columns' renders side by side, each captioned with its code length."""
    import numpy as np
    from PIL import Image, ImageDraw

    from shared.tracking.media import MediaRecord, append_media

    folder = run_dir / "media" / "svg"
    folder.mkdir(parents=True, exist_ok=True)
    for i, item in enumerate(items):
        tiles = []
        for title, images, codes in columns:
            image = images[i] if images[i] is not None else np.full((112, 112, 3), 255, np.uint8)
            tile = Image.new("RGB", (image.shape[1] + 8, image.shape[0] + 30), "white")
            tile.paste(Image.fromarray(image), (4, 4))
            draw = ImageDraw.Draw(tile)
            code = codes[i]
            label = f"{title}: {count_tokens(code)} tok" if code else f"{title}: no svg"
            draw.text((4, image.shape[0] + 8), label, fill=(0, 0, 0))
            tiles.append(tile)
        strip = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), "white")
        x = 0
        for tile in tiles:
            strip.paste(tile, (x, 0))
            x += tile.width
        name = f"{str(item.get('id')).replace('/', '_')}-{group.replace('/', '_')}.png"
        strip.save(folder / name)
        append_media(run_dir, MediaRecord(kind="image", path=f"media/svg/{name}", step=step, item=str(item.get("id")),
                                          group=group, caption=" | ".join(c[0] for c in columns)))
