"""Label ceiling: how far a controller flies that acts on *exact* Monte Carlo labels, for each kind of label.

    OMP_NUM_THREADS=1 python -m robot.flight.label_ceiling [--horizons 5 7 10 16] [--flights 30]

The value network can at best learn its labels, so a controller that computes the labels exactly in the
simulator (every first move, then the follow-up policy for the rest of the horizon; the move that survives
longest, ties towards straight) shows what a label definition is worth before any learning:

- ``straight``: branches fly straight after their first move, the labels of CAD2RL's first round;
- ``heuristic``: branches fly the privileged depth heuristic's rule on ray tests (`mc.follow: heuristic`,
  config ``cad2rl_teacher``; with horizon 30 this is the ``oracle`` baseline).

Flights in validation worlds (seeds 0..flights-1, the same for every controller), with flying straight as
the reference. Prints one line per controller, then a markdown table.
"""

from __future__ import annotations

import argparse
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m robot.flight.label_ceiling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--horizons", type=int, nargs="+", default=[5, 7, 10, 16], help="label horizons, in steps")
    parser.add_argument("--follow", nargs="+", default=["straight", "heuristic"], choices=["straight", "heuristic"])
    parser.add_argument("--flights", type=int, default=30, help="validation flights per controller")
    parser.add_argument("--config", default="cad2rl", help="flight config whose env settings to fly with")
    args = parser.parse_args(argv)
    if args.flights < 1 or min(args.horizons) < 1:
        parser.error("--flights and --horizons must be >= 1")

    from robot.flight.controllers import oracle_controller, straight
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
                t0 = time.time()
                r = summarise([fly(env, oracle_controller(h, follow=follow), s) for s in seeds], cfg.eval.success_m)
                rows.append((follow, h, r))
                print(f"follow {follow}, horizon {h}: {r['distance_m']:.2f} ± {r['distance_se']:.2f} m "
                      f"({r['distance_m'] / ref['distance_m']:.2f}x straight; {time.time() - t0:.0f} s)", flush=True)
    finally:
        env.close()
    print(f"\n{args.flights} validation flights each; flying straight: {ref['distance_m']:.2f} ± "
          f"{ref['distance_se']:.2f} m\n")
    success = f"{cfg.eval.success_m:g}"
    print(f"| follow-up | horizon (steps) | distance (m) | x straight | new ground (m) | beyond {success} m |")
    print("|---|---|---|---|---|---|")
    for follow, h, r in rows:
        print(f"| {follow} | {h} | {r['distance_m']:.2f} ± {r['distance_se']:.2f} | "
              f"{r['distance_m'] / ref['distance_m']:.2f} | {r['new_ground_m']:.2f} | "
              f"{r[f'beyond_{success}m']:.2f} |")


if __name__ == "__main__":
    main()
