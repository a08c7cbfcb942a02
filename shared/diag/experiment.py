"""The diag learning table: warm-up -> GRPO vs warm-up -> more SFT, over seeds, one command.

    python -m shared.diag.experiment --seeds 0 1 2 --out runs/diag-table

Prints a markdown table of held-out accuracy (greedy, 500 test items) at the end of the warm-up
and at the end of each run, as measured; docs/results.md holds the output.
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


def _acc_at(run_dir: Path, step: int) -> float:
    values = [r[KEY] for r in read_metrics(run_dir) if KEY in r and r["step"] == step]
    if not values:
        raise RuntimeError(f"{run_dir} has no {KEY} at step {step}")
    return values[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/diag-table"))
    parser.add_argument("--configs", nargs="+", default=["default", "sft_only"],
                        help="diag configs to compare (each shares the default warm-up)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra override for every run")
    args = parser.parse_args(argv)
    from shared.config import load_config
    from shared.diag.track import CONFIGS_DIR, DiagConfig

    rows = []
    for seed in args.seeds:
        row = {"seed": seed}
        for config in args.configs:
            cfg = load_config(DiagConfig, config, args.overrides, CONFIGS_DIR)
            run_dir = _train(config, seed, args.out, args.overrides)
            warm = 200 if config == "sft_only" else cfg.sft.steps
            row["warm-up"] = _acc_at(run_dir, warm)
            row[config] = _acc_at(run_dir, cfg.train.steps)
        rows.append(row)
    cols = ["seed", "warm-up", *args.configs]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row[c]) if c == "seed" else f"{row[c]:.3f}" for c in cols) + " |")
    means = {c: statistics.mean(r[c] for r in rows) for c in cols[1:]}
    print("| mean | " + " | ".join(f"{means[c]:.3f}" for c in cols[1:]) + " |")


if __name__ == "__main__":
    main()
