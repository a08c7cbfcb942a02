"""Label ceiling: how far a controller flies that acts on *exact* Monte Carlo labels, for each kind of label.

    OMP_NUM_THREADS=1 python -m robot.flight.label_ceiling [--horizons 5 7 10 16] [--flights 30]
    OMP_NUM_THREADS=1 python -m robot.flight.label_ceiling --follow heuristic --horizons 10 \\
        --margins 0 0.3 --noise 0 0.1 0.2

The value network can at best learn its labels, so a controller that computes the labels exactly in the
simulator (`mc.label_roots` at the current state: every first move, then the follow-up policy for the rest
of the horizon; the best move, ties towards straight, as the learned policy chooses) shows what a label
definition is worth before any learning:

- ``straight``: branches fly straight after their first move, the labels of CAD2RL's first round;
- ``heuristic``: branches fly the privileged depth heuristic's rule on ray tests (`mc.follow: heuristic`,
  config ``cad2rl_teacher``; with horizon 30 this is the ``oracle`` baseline).

``--margins`` blends in cautious labels (`mc.margin_m`, weight `--margin-mix`). ``--noise`` adds Gaussian
noise of that standard deviation to every value of every map before the choice: a learned network's values
are never exact, and a label definition whose best move is only marginally better than a fatal one (turn at
the last possible step) loses more to the same noise than one that leaves room.

Flights in validation worlds (seeds 0..flights-1, the same for every controller), with flying straight as
the reference. Prints one line per controller, then a markdown table.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np


def exact_label_controller(horizon: int, follow: str, margin_m: float = 0.0, margin_mix: float = 0.5,
                           noise: float = 0.0, seed: int = 0, tie_tol: float = 0.02) -> Any:
    """A controller acting on the exact labels of the current state (plus `noise`), as the policy acts on its map."""
    from robot.flight.mc import follow_heuristic, label_roots
    from robot.flight.model import choose_action

    follow_fn = follow_heuristic() if follow == "heuristic" else None
    rng = np.random.default_rng(seed)

    def act(env: Any, obs: np.ndarray) -> tuple[int, np.ndarray]:
        values = label_roots(env, [env.snapshot()], horizon, follow_fn, margin_m, margin_mix)[0]
        if noise > 0:
            values = values + rng.normal(0.0, noise, values.shape)
        return choose_action(values, env.k, tie_tol), values

    return act


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m robot.flight.label_ceiling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--horizons", type=int, nargs="+", default=[5, 7, 10, 16], help="label horizons, in steps")
    parser.add_argument("--follow", nargs="+", default=["straight", "heuristic"], choices=["straight", "heuristic"])
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0],
                        help="extra body radius of the cautious labels, in metres (0: plain labels; mc.margin_m)")
    parser.add_argument("--margin-mix", type=float, default=0.5, help="weight of the cautious label (mc.margin_mix)")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0],
                        help="standard deviation of Gaussian noise added to every value before the choice")
    parser.add_argument("--flights", type=int, default=30, help="validation flights per controller")
    parser.add_argument("--config", default="cad2rl", help="flight config whose env settings to fly with")
    args = parser.parse_args(argv)
    if args.flights < 1 or min(args.horizons) < 1:
        parser.error("--flights and --horizons must be >= 1")
    if min(args.margins) < 0 or min(args.noise) < 0 or not 0 <= args.margin_mix <= 1:
        parser.error("--margins and --noise must be >= 0, --margin-mix in [0, 1]")

    from robot.flight.controllers import straight
    from robot.flight.mc import fly, summarise
    from robot.flight.track import CONFIGS_DIR, FlightConfig
    from shared.config import load_config

    cfg = load_config(FlightConfig, args.config, [], CONFIGS_DIR)
    env = cfg.env.make("val")
    seeds = range(args.flights)
    try:
        ref = summarise([fly(env, straight, s) for s in seeds], cfg.eval.success_m)
        rows = []
        for follow in args.follow:
            for h in args.horizons:
                for margin in args.margins:
                    for noise in args.noise:
                        t0 = time.time()
                        flights = [fly(env, exact_label_controller(h, follow, margin, args.margin_mix, noise, s), s)
                                   for s in seeds]
                        r = summarise(flights, cfg.eval.success_m)
                        rows.append((follow, h, margin, noise, r))
                        print(f"follow {follow}, horizon {h}, margin {margin:g} m, noise {noise:g}: "
                              f"{r['distance_m']:.2f} ± {r['distance_se']:.2f} m "
                              f"({r['distance_m'] / ref['distance_m']:.2f}x straight; {time.time() - t0:.0f} s)",
                              flush=True)
    finally:
        env.close()
    print(f"\n{args.flights} validation flights each; flying straight: {ref['distance_m']:.2f} ± "
          f"{ref['distance_se']:.2f} m; cautious labels weighted {args.margin_mix:g}\n")
    success = f"{cfg.eval.success_m:g}"
    print(f"| follow-up | horizon (steps) | margin (m) | value noise | distance (m) | x straight | new ground (m) "
          f"| beyond {success} m |")
    print("|---|---|---|---|---|---|---|---|")
    for follow, h, margin, noise, r in rows:
        print(f"| {follow} | {h} | {margin:g} | {noise:g} | {r['distance_m']:.2f} ± {r['distance_se']:.2f} | "
              f"{r['distance_m'] / ref['distance_m']:.2f} | {r['new_ground_m']:.2f} | "
              f"{r[f'beyond_{success}m']:.2f} |")


if __name__ == "__main__":
    main()
