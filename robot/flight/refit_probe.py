"""Refit probe: how a fitting choice changes flight distance, on labels a run already collected.

    OMP_NUM_THREADS=1 python -m robot.flight.refit_probe runs/flight-table/cad2rl-seed{0,1,2} \\
        --augment 0 1 [--widths 16 32] [--choices 0 1] [--epochs 24] [--every 6] [--flights 60] [--fit-seeds 0]

Monte Carlo labels are the expensive part of training (minutes per round); a fitting choice (here the
photometric augmentation strength `fit.augment`, the network width `fit.width`, or the weight of the choice
loss `fit.choice`) can be judged on a finished run's labels alone. For each run, augmentation strength, width
(by default the run's own), choice weight and fit seed, a fresh network is fitted on all the run's labels
(its last checkpoint) for `--epochs`, and every `--every` epochs it flies `--flights` validation worlds and
as many held-out-texture worlds (seeds 0..flights-1 of each split, the same for every fit).
The labels were collected by the run's own policy, so this isolates fitting from collection: it is a
probe, not the results table (``python -m robot.flight.experiment``).

Prints one line per evaluation, then a table: per strength, width and choice weight, the mean distance over the
evaluations from the second on (the first comes after a few epochs from scratch; with one evaluation, that
one) and over runs and fit seeds.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path


def refit(run_dir: Path, augment: float, fit_seed: int, epochs: int, every: int, flights: int,
          width: int | None = None, choice: float = 0.0) -> list[dict]:
    import numpy as np
    import torch

    from robot.flight.controllers import policy_controller
    from robot.flight.mc import Batch, fit, fly, summarise
    from robot.flight.model import ValueNet
    from robot.flight.track import CONFIGS_DIR, FlightConfig
    from shared.config import load_config
    from shared.tracking.checkpoint import latest_checkpoint, load_checkpoint

    cfg = load_config(FlightConfig, run_dir / "config.yaml", [], CONFIGS_DIR)
    found = latest_checkpoint(run_dir / "checkpoints")
    if found is None:
        raise SystemExit(f"{run_dir}: no checkpoint with labels (train the run first)")
    tensors, _ = load_checkpoint(found[1])
    data = Batch.from_tensors(tensors["data"])
    width = cfg.fit.width if width is None else width
    torch.manual_seed(fit_seed)
    net = ValueNet(cfg.env.grid, cfg.env.image_size, width, frames=cfg.fit.frames)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.fit.lr)
    rng = np.random.default_rng(fit_seed)
    envs = {"val": cfg.env.make("val"), "heldout_textures": cfg.env.make("heldout_textures")}
    rows = []
    try:
        for done in range(every, epochs + 1, every):
            stats = fit(net, optimizer, data, rng, epochs=every, batch_size=cfg.fit.batch_size,
                        mirror=cfg.fit.mirror, augment=augment, choice_weight=choice, tie_tol=cfg.mc.tie_tol)
            row = {"run": run_dir.name, "augment": augment, "width": width, "choice": choice, "fit_seed": fit_seed,
                   "epochs": done, "loss": stats["fit/loss"]}
            for name, env in envs.items():
                r = summarise([fly(env, policy_controller(net, cfg.mc.tie_tol), s) for s in range(flights)],
                              cfg.eval.success_m)
                row[name], row[name + "_se"] = r["distance_m"], r["distance_se"]
            print(f"{run_dir.name} augment={augment:g} width={width} choice={choice:g} fit_seed={fit_seed} "
                  f"epochs={done}: "
                  f"loss {row['loss']:.4f}, "
                  f"val {row['val']:.2f} ± {row['val_se']:.2f} m, held-out textures "
                  f"{row['heldout_textures']:.2f} ± {row['heldout_textures_se']:.2f} m", flush=True)
            rows.append(row)
    finally:
        for env in envs.values():
            env.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m robot.flight.refit_probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="finished or checkpointed flight runs")
    parser.add_argument("--augment", type=float, nargs="+", default=[0.0, 1.0], help="strengths to compare")
    parser.add_argument("--widths", type=int, nargs="+", default=[None],
                        help="network widths to compare (default: each run's own fit.width)")
    parser.add_argument("--choices", type=float, nargs="+", default=[0.0],
                        help="weights of the choice loss (fit.choice) to compare")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--every", type=int, default=6, help="epochs between evaluations")
    parser.add_argument("--flights", type=int, default=60, help="flights per world set and evaluation")
    parser.add_argument("--fit-seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args(argv)
    if args.every < 1 or args.epochs < args.every:
        parser.error("need 1 <= --every <= --epochs")
    if any(w is not None and w < 1 for w in args.widths):
        parser.error("--widths must be positive")
    if any(c < 0 for c in args.choices):
        parser.error("--choices must be >= 0")
    rows = [row for run in args.runs for seed in args.fit_seeds for a in args.augment for w in args.widths
            for c in args.choices for row in refit(run, a, seed, args.epochs, args.every, args.flights, w, c)]
    print("\n| augment | width | choice | validation (m) | held-out textures (m) | fits |\n|---|---|---|---|---|---|")
    skip = args.every if args.epochs > args.every else 0
    for a in args.augment:
        for w in sorted({r["width"] for r in rows}):
            for c in args.choices:
                late = [r for r in rows if r["augment"] == a and r["width"] == w and r["choice"] == c
                        and r["epochs"] > skip]
                fits = len({(r["run"], r["fit_seed"]) for r in late})
                print(f"| {a:g} | {w} | {c:g} | {statistics.mean(r['val'] for r in late):.2f} | "
                      f"{statistics.mean(r['heldout_textures'] for r in late):.2f} | {fits} |")


if __name__ == "__main__":
    main()
