"""The diag learning table: warm-up -> GRPO vs warm-up -> more SFT, over seeds, one command.

    python -m shared.diag.experiment --seeds 0 1 2 --out runs/diag-table

Prints a markdown table of held-out test accuracy (greedy, 1000 items) at the end of the warm-up
(which every config shares: same seed, data and warm-up), at the end of each run, and the best
evaluation after the warm-up (a run that ends far below its best has collapsed), as measured;
docs/results.md holds the output.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from shared.tracking import read_metrics

KEY = "eval/test/accuracy"


def _train(config: str, seed: int, out: Path, extra: list[str]) -> Path:
    run_dir = out / f"{config}-seed{seed}"
    if not (run_dir / "final").exists():
        args = [sys.executable, "-m", "shared.cli", "train", "diag", "--config", config, "--run-dir", str(run_dir),
                "--set", f"train.seed={seed}"]
        for o in extra:
            args += ["--set", o]
        subprocess.run(args, check=True)
    return run_dir


def _accuracies(run_dir: Path) -> tuple[float, float, float]:
    """(accuracy at the end of the warm-up, at the end of the run, best during RL)."""
    records = read_metrics(run_dir)
    sft_end = max(r["step"] for r in records if r.get("warmup") == 1)
    evals = {r["step"]: r[KEY] for r in records if KEY in r}
    last = max(evals)
    return evals[sft_end], evals[last], max(v for s, v in evals.items() if s >= sft_end)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/diag-table"))
    parser.add_argument("--configs", nargs="+", default=["default", "sft_only"],
                        help="diag configs to compare (each shares the default warm-up)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra override for every run")
    args = parser.parse_args(argv)
    rows = []
    for seed in args.seeds:
        row = {"seed": seed}
        for config in args.configs:
            run_dir = _train(config, seed, args.out, args.overrides)
            row["warm-up"], row[config], row[f"{config} best"] = _accuracies(run_dir)
        rows.append(row)
    cols = ["seed", "warm-up", *args.configs, *(f"{c} best" for c in args.configs)]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row[c]) if c == "seed" else f"{row[c]:.3f}" for c in cols) + " |")
    stats = {c: (statistics.mean(r[c] for r in rows), statistics.pstdev(r[c] for r in rows)) for c in cols[1:]}
    print("| mean (std) | " + " | ".join(f"{m:.3f} ({s:.3f})" for m, s in stats.values()) + " |")


if __name__ == "__main__":
    main()
