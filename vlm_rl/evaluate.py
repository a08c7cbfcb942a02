"""Evaluation of a vlm run: per-task accuracy (mean@k), pass@k, format errors and the vision probe.

The vision-dependence probe asks the same questions twice, with the real image and with a blank
one of the same size at the processor's mean colour (so the prompt tokens, visual placeholders
included, are identical and only the pixels differ), sampling under the same seed. A model that
reads the image loses accuracy on the blank one; the gap (``vision/dependence``) is near 0 for a
model that answers from the text, as it should be on the control task.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.lm.evaluate import evaluate, summarise
from shared.tracks import EvalRequest
from vlm_rl.data.drawing import PROCESSOR_MEAN_RGB

BLANK_COLOUR = PROCESSOR_MEAN_RGB
"""Colour of the probe's blank images: the processor's mean colour, which normalises to zero (no
visual information at all; also the counting scenes' background)."""


def blank_items(items: list[dict], folder: Path) -> list[dict]:
    """`items` with every image replaced by a blank one of the same size (one file per size, in `folder`)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for item in items:
        images = []
        for path in item.get("images") or []:
            with Image.open(path) as im:
                size = im.size
            blank = folder / f"blank-{size[0]}x{size[1]}.png"
            if not blank.exists():
                Image.new("RGB", size, BLANK_COLOUR).save(blank)
            images.append(str(blank.resolve()))
        out.append({**item, "images": images})
    return out


def format_error_rate(traces: list[dict]) -> float:
    """Share of sampled completions that are not ``<think>...</think><answer>...</answer>``."""
    from vlm_rl.rewards import format_problem

    completions = [c for t in traces for c in t["completions"]]
    return sum(format_problem(c) is not None for c in completions) / max(1, len(completions))


def per_task(traces: list[dict], ks: Sequence[int], prefix: str = "") -> dict[str, float]:
    """``task/<task>/<metric>`` (mean@n, accuracy, pass@k, ...) of each task among the traces' items."""
    tasks: dict[str, list[dict]] = {}
    for trace in traces:
        tasks.setdefault(str(trace["item"].get("task", "unknown")), []).append(trace)
    out = {}
    for task, group in sorted(tasks.items()):
        for key, value in summarise(group, ks).items():
            if key != "completion_len":
                out[f"task/{task}/{prefix}{key}"] = value
    return out


def evaluate_vlm(setup: Any, items: list[dict], ks: Sequence[int], max_new_tokens: int, temperature: float,
                 greedy: bool, seed: int, probe_dir: Path | None = None, progress: Any = None,
                 ) -> tuple[dict[str, float], list[dict]]:
    """Metrics and traces of `items`; with `probe_dir`, also the blank-image probe (blank files go there).

    Metrics: mean@n, accuracy, pass@k, completion_len, items (all items), format_error_rate, the same per
    task (``task/<task>/...``), and with the probe ``vision/real_accuracy``, ``vision/blank_accuracy``,
    ``vision/dependence`` (their difference) and ``task/<task>/blank_accuracy``.
    """
    result = evaluate(setup, items, ks, max_new_tokens, temperature, greedy=greedy, seed=seed, progress=progress)
    metrics = dict(result.metrics)
    metrics["format_error_rate"] = format_error_rate(result.traces)
    metrics.update(per_task(result.traces, ks))
    if probe_dir is not None and items:
        blank = evaluate(setup, blank_items(items, probe_dir), ks, max_new_tokens, temperature, greedy=greedy,
                         seed=seed, progress=progress)
        metrics["vision/real_accuracy"] = result.metrics["accuracy"]
        metrics["vision/blank_accuracy"] = blank.metrics["accuracy"]
        metrics["vision/dependence"] = result.metrics["accuracy"] - blank.metrics["accuracy"]
        metrics["vision/blank_format_error_rate"] = format_error_rate(blank.traces)
        metrics.update({k: v for k, v in per_task(blank.traces, ks, "blank_").items() if k.endswith("blank_accuracy")})
    return metrics, result.traces


def run_config(run_dir: Path, schema: Any = None) -> Any:
    """The run's config (`schema`, default the vlm track's), pointed at its final model and at the dataset it
    trained on; also the svg track's."""
    import json

    from shared.config import load_config
    from vlm_rl.track import DATA_REPORT, VLMConfig

    cfg = load_config(schema or VLMConfig, run_dir / "config.yaml")
    final = run_dir / "final"
    if not final.exists():
        raise FileNotFoundError(f"{final} does not exist: the run has not finished (resume it first)")
    cfg.model.path = str(final)
    cfg.model.lora.r = 0  # final/ has the adapters merged in
    cfg.system.device = "auto"  # wherever this evaluation runs
    report = run_dir / DATA_REPORT
    if not cfg.data.path and report.exists():  # a generated dataset: its cache may be relative to another cwd
        dataset = Path(json.loads(report.read_text())["dataset"])
        if dataset.exists():
            cfg.data.cache_dir = str(dataset.parent)
    return cfg


def evaluate_run(req: EvalRequest) -> dict[str, float]:
    """Sample max(k) completions per held-out item from the run's final model (greedy when k = 1), with
    the blank-image probe unless ``req.options["vision_probe"]`` is False; log ``final_eval/<split>/...``
    into the run's metrics and write gallery traces of the first eval.media_items items."""
    from tqdm.auto import tqdm

    from shared.lm.trainer import write_traces
    from shared.tracking import read_metrics
    from shared.tracking.run import Run
    from vlm_rl.track import build_setup

    cfg = run_config(req.run_dir)
    setup = build_setup(cfg)
    items = setup.eval_items(req.split)[: req.limit]
    probe = bool(req.options.get("vision_probe", True))
    probe_dir = req.run_dir / "media" / "probe" if probe else None
    with tqdm(total=len(items) * (2 if probe else 1), desc=f"eval {req.split}", unit="item", file=sys.stderr) as bar:
        result, traces = evaluate_vlm(setup, items, req.ks, cfg.rl.max_new_tokens, cfg.eval.temperature,
                                      cfg.eval.greedy, cfg.eval.seed, probe_dir, progress=bar.update)
    step = max((r["step"] for r in read_metrics(req.run_dir)), default=0)
    metrics = {f"final_eval/{req.split}/{k}": v for k, v in result.items()}
    with Run.open(req.run_dir, resume=False) as run:
        run.log(step, metrics)
    write_traces(req.run_dir, setup, traces[: cfg.eval.media_items], step, f"final_eval/{req.split}")
    return metrics
