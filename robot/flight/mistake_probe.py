"""Mistake probe: where a trained flight policy goes wrong, judged against exact teacher labels.

    OMP_NUM_THREADS=1 python -m robot.flight.mistake_probe runs/flight-margin/cad2rl_teacher-seed1 [--flights 30]

Each run's final network flies `--flights` validation worlds (seeds 0..flights-1). At every step the exact
labels of the state are computed in the simulator (`mc.label_roots` with the privileged teacher's follow-up,
plain labels, the run's horizon), and the network's move is a *mistake* when its exact label is below the best
move's. For every flight that ends in a collision, the decisive mistake is the first of the mistakes in the
last `horizon` steps before it, classified by image column (the move's yaw; rows only pitch):

- ``wrong side``: the network turned to one side while only the other side's column was best;
- ``too straight``: it flew on (centre column) while a turn was best (a late turn);
- ``needless turn``: it turned while straight was best;
- ``none``: no mistake within the horizon (the crash was decided earlier, or the labels missed it).

Prints one line per crash, then the counts per class.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ("wrong side", "too straight", "needless turn", "none")


def classify(chosen: int, labels: np.ndarray, k: int) -> str:
    """The kind of a mistaken move `chosen` given the exact label map (see the module docstring)."""
    cols = np.asarray(labels, dtype=float).reshape(k, k).max(axis=0)
    best = set(np.flatnonzero(cols >= cols.max() - 1e-6).tolist())
    centre, col = k // 2, chosen % k
    if col in best:
        return "none"
    if col == centre:
        return "too straight"
    if centre in best:
        return "needless turn"
    return "wrong side"


def probe(run_dir: Path, flights: int) -> list[dict[str, Any]]:
    from robot.flight.controllers import policy_controller
    from robot.flight.mc import fly, follow_heuristic, label_roots
    from robot.flight.track import CONFIGS_DIR, FlightConfig, load_policy
    from shared.config import load_config

    cfg = load_config(FlightConfig, run_dir / "config.yaml", [], CONFIGS_DIR)
    net, meta = load_policy(run_dir)
    controller = policy_controller(net, meta.get("tie_tol", cfg.mc.tie_tol))
    env = cfg.env.make("val")
    horizon, teacher, out = cfg.mc.horizon, follow_heuristic(), []
    steps: list[tuple[int, np.ndarray, np.ndarray]] = []

    def judged(env: Any, obs: np.ndarray) -> tuple[int, np.ndarray]:
        """The policy's move, with the exact labels of the state it was chosen in recorded beside it."""
        exact = label_roots(env, [env.snapshot()], horizon, teacher)[0]
        action, values = controller(env, obs)
        steps.append((action, exact, values))
        return action, values

    try:
        for seed in range(flights):
            steps.clear()
            flight = fly(env, judged, seed)
            row: dict[str, Any] = {"seed": seed, "distance_m": flight.distance_m, "collision": flight.collision}
            if flight.collision:
                recent = range(max(0, len(steps) - horizon), len(steps))
                wrong = [t for t in recent if steps[t][1][steps[t][0]] < steps[t][1].max() - 1e-6]
                if wrong:
                    t = wrong[0]
                    action, exact, values = steps[t]
                    row.update(kind=classify(action, exact, env.k), before=len(steps) - 1 - t, chosen=action,
                               exact=np.round(exact, 2).tolist(), values=np.round(values, 2).tolist())
                else:
                    row["kind"] = "none"
            out.append(row)
    finally:
        env.close()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m robot.flight.mistake_probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="finished flight runs")
    parser.add_argument("--flights", type=int, default=30, help="validation flights per run")
    args = parser.parse_args(argv)
    if args.flights < 1:
        parser.error("--flights must be >= 1")
    kinds: Counter[str] = Counter()
    distances = []
    for run in args.runs:
        for row in probe(run, args.flights):
            distances.append(row["distance_m"])
            if not row["collision"]:
                continue
            kinds[row["kind"]] += 1
            detail = (f"; {row['before']} steps before: chose {row['chosen']}, network {row['values']}, "
                      f"exact {row['exact']}") if "chosen" in row else ""
            print(f"{run.name} seed {row['seed']}: {row['distance_m']:.1f} m, {row['collision']}, "
                  f"{row['kind']}{detail}", flush=True)
    crashes = sum(kinds.values())
    print(f"\n{len(distances)} flights, mean {np.mean(distances):.2f} m, {crashes} collisions\n")
    print("| decisive mistake | collisions | share |\n|---|---|---|")
    for kind in CLASSES:
        print(f"| {kind} | {kinds[kind]} | {kinds[kind] / max(crashes, 1):.2f} |")


if __name__ == "__main__":
    main()
