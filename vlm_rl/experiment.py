"""The vlm results table: one warm-up per seed, then every RL config (and the SFT control) from it,
each evaluated in and out of distribution with the vision probe. One command:

    OMP_NUM_THREADS=1 python -m vlm_rl.experiment --seeds 0 1 2 --out runs/vlm-table --jobs 2

Per seed: ``rlab train vlm --config warmup`` (adaptive warm-up to the default's target accuracy),
then ``--config C --set model.path=<warm-up>/final --set sft.steps=0`` for each config C, all on the
same generated dataset (``data.cache_dir=<out>/data``) and seed; then ``rlab eval`` of every final
model on ``test`` and ``test_ood`` (greedy, whole split, blank-image probe). Runs that finished are
reused and killed ones resumed, so the command can be re-run after an interruption. Each job's
output goes to ``<out>/logs/``; the tables (markdown) go to stdout and ``<out>/table.md``.

Columns: greedy accuracy on the test split (in distribution) and on test_ood, the change over the
seed's warm-up, accuracy with blank images (the vision probe) and the gap, and for RL runs the end
of the run against its best in-training evaluation (a run far below its best has collapsed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shared.clikit import run_rlab, train_run
from shared.tracking import read_metrics

WARMUP = "warmup"
DEFAULT_CONFIGS = ("grpo", "dapo", "papo", "papo_dapo", "sft_control")
SPLITS = ("test", "test_ood")
TRAIN_KEY = "eval/test/accuracy"
CURVES = ["eval/test/accuracy", "reward", "sampled_entropy", "papo/kl", "completion_len", "no_signal_frac"]
"""Learning curves in the table's gallery (every RL config of the first seed, overlaid)."""



def _final_evals(records: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for record in records:
        out.update({k: v for k, v in record.items() if k.startswith("final_eval/")})
    return out


def run_job(out: Path, config: str, seed: int, overrides: list[str]) -> Path:
    """Train (or resume, or reuse) one run and evaluate its final model on every split; its folder."""
    name = f"{config}-seed{seed}"
    run_dir, log = out / name, out / "logs" / f"{name}.log"
    sets = [f"train.seed={seed}", f"data.cache_dir={out / 'data'}", *overrides]
    if config != WARMUP:
        sets += [f"model.path={out / f'{WARMUP}-seed{seed}' / 'final'}", "sft.steps=0"]
    start = time.time()
    if not (run_dir / "final").exists():
        train_run("vlm", config, run_dir, sets, log)
    done = _final_evals(read_metrics(run_dir))
    for split in SPLITS:
        if f"final_eval/{split}/accuracy" not in done:
            run_rlab(["eval", str(run_dir), "--split", split], log)
    print(f"[{time.strftime('%H:%M:%S')}] {name} done ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    return run_dir


def run_summary(run_dir: Path) -> dict[str, float]:
    """The table's numbers of one finished, evaluated run."""
    records = read_metrics(run_dir)
    finals = _final_evals(records)
    row = {}
    for split in SPLITS:
        row[f"{split}"] = finals[f"final_eval/{split}/accuracy"]
        row[f"{split} blank"] = finals.get(f"final_eval/{split}/vision/blank_accuracy", float("nan"))
    evals = [(r["step"], r[TRAIN_KEY]) for r in records if TRAIN_KEY in r]
    if evals:
        row["end - best"] = max(evals)[1] - max(v for _, v in evals)
    return row


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"


def tables(rows: dict[str, dict[int, dict[str, float]]]) -> str:
    """Markdown: mean ± std over seeds per config, then every seed's numbers."""
    seeds = sorted(rows[WARMUP])
    cols = ["test", "Δ test", "test_ood", "Δ test_ood", "test blank", "vision gap", "end - best"]

    def cell(config: str, seed: int, col: str) -> float:
        r, w = rows[config][seed], rows[WARMUP][seed]
        if col.startswith("Δ "):
            return r[col[2:]] - w[col[2:]]
        if col == "vision gap":
            return r["test"] - r["test blank"]
        return r.get(col, float("nan"))

    title = f"Mean ± std over seeds {', '.join(map(str, seeds))} (greedy accuracy; Δ = change over the seed's warm-up)"
    lines = [title, "", "| config | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for config in rows:
        cells = []
        for col in cols:
            values = [cell(config, s, col) for s in seeds]
            cells.append("" if config == WARMUP and col in ("Δ test", "Δ test_ood", "end - best") else _fmt(values))
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    lines += ["", "| config | seed | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for config in rows:
        for s in seeds:
            lines.append(f"| {config} | {s} | " + " | ".join(f"{cell(config, s, c):.3f}" for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vlm_rl.experiment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS),
                        help="vlm configs trained from each seed's warm-up")
    parser.add_argument("--out", type=Path, default=Path("runs/vlm-table"))
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at the same time (one per core)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra override for every run, e.g. --set train.steps=100")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        warmups = {s: pool.submit(run_job, out, WARMUP, s, args.overrides) for s in args.seeds}
        for future in warmups.values():
            future.result()
        jobs = {(c, s): pool.submit(run_job, out, c, s, args.overrides) for s in args.seeds for c in args.configs}
        for future in jobs.values():
            future.result()
    rows: dict[str, dict[int, dict[str, float]]] = {WARMUP: {}}
    for config in args.configs:
        rows[config] = {}
    for config in rows:
        for seed in args.seeds:
            rows[config][seed] = run_summary(out / f"{config}-seed{seed}")
    text = tables(rows)
    (out / "table.md").write_text(text + "\n")
    print(text)
    print(f"gallery: {curves_gallery(out, args.configs, args.seeds[0])}")


def curves_gallery(out: Path, configs: list[str], seed: int) -> Path:
    """A gallery of one seed's RL runs: the `CURVES` overlaid, and each run's evaluation traces."""
    from shared.gallery import build_gallery

    runs = [out / f"{c}-seed{seed}" for c in configs]
    logged = {k for run in runs for r in read_metrics(run) for k in r}
    return build_gallery(runs, out / "gallery", metrics=[m for m in CURVES if m in logged],
                         title=f"vlm results table: RL configs from seed {seed}'s warm-up")


if __name__ == "__main__":
    main()
