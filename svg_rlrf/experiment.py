"""The svg results table: warm-up vs RLRF (with and without the shapes term) vs continued SFT for the same
compute vs the classic vectorizer vs the blank canvas, on held-out generated shapes and on Font Awesome icons.
One command:

    OMP_NUM_THREADS=1 python -m svg_rlrf.experiment --seeds 0 1 2 --out runs/svg-table --jobs 2

Per seed: ``rlab train svg --config warmup_long`` (``--warmup`` picks another warm-up config), then
``--config rlrf``, ``--config rlrf_shapes`` and ``--config sft_more`` with ``--set model.path=<warm-up>/final``,
all on the same generated dataset (``data.cache_dir=<out>/data``); then ``rlab eval`` of every final model on ``test``
(held-out shapes) and ``icons`` (greedy). Each eval also scores the vectorizer and the blank canvas on the
same items. Finished runs are reused and killed ones resumed; each job's output goes to ``<out>/logs/``;
the tables (markdown: per split, per complexity level of the held-out shapes, and the outputs that did
not render by kind) go to stdout and ``<out>/table.md``; a gallery of the first seed's RLRF run
(target | warm-up | RLRF | vectorizer) and the learning curves to ``<out>/gallery``.

Columns per split: MSE and SSIM (lower / higher is better), edge L2, render success, tokens per output and
the reference's, and the hedging checks against the targets: area drawn / target's, colour accuracy
(target pixels drawn in their colour, in place), colour precision (the output's fills in one of the target's
colours, anywhere), shapes per output / target's, the output's primitives of the target's kind (matched by
centre, `svg_rlrf.placement`; evals from before 2026-11-28 show "-"), distinct outputs. Per level also the
matched primitives' centre error in canvas units.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shared.clikit import run_rlab, train_run
from shared.tracking import read_metrics

WARMUP = "warmup_long"  # the default warm-up config (4500 SFT steps); --warmup warmup for the 1500-step one
DEFAULT_CONFIGS = ("rlrf", "rlrf_shapes", "sft_more")
SPLITS = ("test", "icons")
COLUMNS = ("mse", "ssim", "edge_l2", "render_success", "tokens", "ref_tokens", "area_ratio", "colour_accuracy",
           "colour_precision", "shapes_ratio", "kind_right", "distinct_outputs")
CURVES = ["reward", "reward/svg/rendered", "reward/svg/colour_iou", "reward/svg/pixel", "reward/svg/shapes",
          "reward/svg/length", "completion_len", "sampled_entropy", "eval/test/mean@1"]


def run_job(out: Path, config: str, seed: int, overrides: list[str], warmup: str = WARMUP) -> Path:
    """Train (or resume, or reuse) one run and evaluate its final model on every split; its folder. Every
    config but the `warmup` one starts from that seed's warm-up model."""
    name = f"{config}-seed{seed}"
    run_dir, log = out / name, out / "logs" / f"{name}.log"
    sets = [f"train.seed={seed}", f"data.cache_dir={out / 'data'}", *overrides]
    if config != warmup:
        sets.append(f"model.path={out / f'{warmup}-seed{seed}' / 'final'}")
    start = time.time()
    if not (run_dir / "final").exists():
        train_run("svg", config, run_dir, sets, log)
    for split in SPLITS:
        if not (run_dir / "eval" / f"{split}.json").exists():
            run_rlab(["eval", str(run_dir), "--split", split], log)
    print(f"[{time.strftime('%H:%M:%S')}] {name} done ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    return run_dir


LEVEL_COLUMNS = ("mse", "ssim", "shapes_ratio", "colour_accuracy", "colour_precision", "centre_error", "kind_right",
                 "tokens", "ref_tokens")
"""Per complexity level of the held-out shapes (level 1: one primitive, 2: two or three)."""


def _eval_record(run_dir: Path, split: str) -> dict:
    return json.loads((run_dir / "eval" / f"{split}.json").read_text())


def run_metrics(run_dir: Path, split: str) -> dict[str, float]:
    return _eval_record(run_dir, split)["metrics"]


def run_failures(run_dir: Path, split: str) -> dict[str, int]:
    """Outputs that did not render, by kind (empty for evals written before they were counted)."""
    return _eval_record(run_dir, split).get("failures") or {}


def _mean(values: list[float]) -> str:
    values = [v for v in values if v == v]
    return f"{statistics.mean(values):.3f}" if values else "-"


def level_table(out: Path, configs: list[str], seeds: list[int], warmup: str = WARMUP, split: str = "test") -> str:
    """Markdown: each model's and the blank canvas's metrics per complexity level (mean over seeds)."""
    base = run_metrics(out / f"{warmup}-seed{seeds[0]}", split)
    levels = sorted({k.split("/")[1] for k in base if k.startswith("model/level")})
    if not levels:
        return ""
    head = [f"{lv} {c}" for lv in levels for c in LEVEL_COLUMNS]
    lines = [f"**{split} per level** (mean over seeds {', '.join(map(str, seeds))})", "",
             "| | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, prefix in [*((c, "model") for c in [warmup, *configs]), (warmup, "blank")]:
        metrics = [run_metrics(out / f"{name}-seed{s}", split) for s in seeds]
        cells = [_mean([m.get(f"{prefix}/{lv}/{c}", float("nan")) for m in metrics]) for lv in levels
                 for c in LEVEL_COLUMNS]
        lines.append(f"| {name if prefix == 'model' else 'blank'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def failure_lines(out: Path, configs: list[str], seeds: list[int], warmup: str = WARMUP) -> str:
    """Per split and model: outputs that did not render, by kind, summed over seeds."""
    lines = []
    for split in SPLITS:
        for config in [warmup, *configs]:
            total: dict[str, int] = {}
            for s in seeds:
                for kind, n in run_failures(out / f"{config}-seed{s}", split).items():
                    total[kind] = total.get(kind, 0) + n
            if total:
                kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(total.items(), key=lambda kv: -kv[1]))
                lines.append(f"- {split}, {config}: {kinds}")
    if not lines:
        return ""
    return "\n".join([f"**Outputs that did not render** (summed over seeds {', '.join(map(str, seeds))})", "",
                      *lines]) + "\n"


def _fmt(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"


def tables(out: Path, configs: list[str], seeds: list[int], warmup: str = WARMUP) -> str:
    """Markdown per split: mean ± std over seeds of each model, the vectorizer and the blank canvas (both from
    the warm-up's eval: they do not depend on the model), then every seed's row."""
    lines = []
    for split in SPLITS:
        rows: dict[str, list[dict[str, float]]] = {}
        for config in [warmup, *configs]:
            rows[config] = [{k[6:]: v for k, v in run_metrics(out / f"{config}-seed{s}", split).items()
                             if k.startswith("model/")} for s in seeds]
        base = [run_metrics(out / f"{warmup}-seed{s}", split) for s in seeds]
        for ref in ("vectorizer", "blank"):
            rows[ref] = [{k[len(ref) + 1:]: v for k, v in b.items() if k.startswith(f"{ref}/")} for b in base]
        items = int(base[0].get("model/items", 0))
        lines += [f"**{split}** ({items} items; mean ± std over seeds {', '.join(map(str, seeds))}; greedy)", "",
                  "| | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
        for name, per_seed in rows.items():
            lines.append(f"| {name} | " + " | ".join(_fmt([r.get(c, float("nan")) for r in per_seed])
                                                     for c in COLUMNS) + " |")
        lines += ["", "| | seed | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
        for name in [warmup, *configs]:
            for s, r in zip(seeds, rows[name], strict=True):
                lines.append(f"| {name} | {s} | " + " | ".join(f"{r.get(c, float('nan')):.3f}" for c in COLUMNS) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m svg_rlrf.experiment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS),
                        help="svg configs trained from each seed's warm-up")
    parser.add_argument("--warmup", default=WARMUP,
                        help="the svg config of each seed's warm-up run, which the --configs start from")
    parser.add_argument("--out", type=Path, default=Path("runs/svg-table"))
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at the same time (one per core)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra override for every run, e.g. --set data.levels=[1,2]")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        def seed_runs(seed: int) -> None:  # a seed's runs start as soon as its warm-up is done
            pool.submit(run_job, out, args.warmup, seed, args.overrides, args.warmup).result()
            for future in [pool.submit(run_job, out, c, seed, args.overrides, args.warmup) for c in args.configs]:
                future.result()

        with ThreadPoolExecutor(max_workers=len(args.seeds)) as seeds:
            for future in [seeds.submit(seed_runs, s) for s in args.seeds]:
                future.result()
    text = "\n".join(part for part in (tables(out, args.configs, args.seeds, args.warmup),
                                       level_table(out, args.configs, args.seeds, args.warmup),
                                       failure_lines(out, args.configs, args.seeds, args.warmup)) if part)
    (out / "table.md").write_text(text + "\n")
    print(text)
    print(f"gallery: {gallery(out, args.configs, args.seeds[0], args.warmup)}")


def gallery(out: Path, configs: list[str], seed: int, warmup: str = WARMUP) -> Path:
    """One seed's warm-up and runs: comparisons and learning curves."""
    from shared.gallery import build_gallery

    runs = [out / f"{c}-seed{seed}" for c in [warmup, *configs]]
    logged = {k for run in runs for r in read_metrics(run) for k in r}
    return build_gallery(runs, out / "gallery", metrics=[m for m in CURVES if m in logged],
                         title=f"svg results table: warm-up, RLRF and continued SFT from seed {seed}")


if __name__ == "__main__":
    main()
