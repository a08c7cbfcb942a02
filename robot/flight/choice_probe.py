"""Choice probe: how the rule that turns a value map into a move changes flight distance, for trained runs.

    OMP_NUM_THREADS=1 python -m robot.flight.choice_probe runs/flight-table/cad2rl_teacher-seed{0,1,2} \\
        --tie-tols 0 0.01 0.02 0.05 [--mirror 0 1] [--flights 60] [--worlds val] [--ensemble]

The policy flies the best cell of its map, preferring the cell nearest straight among those within
`tie_tol` of the best (`model.choose_action`). With teacher labels nearly every cell is worth 1 in open
space and straight's value falls only as a wall comes near, so `tie_tol` decides how far the value of
straight may fall below a turn's before the policy turns: a small tolerance turns earlier. Each run's final
network flies `--flights` worlds of the chosen split (seeds 0..flights-1, the same for every setting) with
each tolerance, and optionally with the map averaged over the image and its mirror (`--mirror 1`: the
network trains on mirrored images, so this halves independent errors for one more forward pass); nothing is
retrained. A probe for choosing the rule on validation worlds, not the results
table (``python -m robot.flight.experiment``, whose evaluations fly the run's own `mc.tie_tol`).

With `--ensemble`, the runs' final networks fly together instead, as one `ValueEnsemble` (the mean of their
maps), after each run alone; the question is whether their errors are independent enough for the mean to fly
farther (what `fit.members` then trains within one run).

Prints one line per run and setting, then a table of the mean over runs.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path


def probe(run_dir: Path, tie_tols: list[float], flights: int, worlds: str, mirrors: list[bool],
          ensemble_of: list[Path] | None = None) -> list[dict]:
    """Fly `run_dir`'s final network (or, with `ensemble_of`, the ensemble of those runs' networks, flown in
    `run_dir`'s configuration) with every tolerance and mirror setting; one row each."""
    from robot.flight.controllers import policy_controller
    from robot.flight.mc import fly, summarise
    from robot.flight.model import ValueEnsemble
    from robot.flight.track import CONFIGS_DIR, FlightConfig, load_policy
    from shared.config import load_config

    cfg = load_config(FlightConfig, run_dir / "config.yaml", [], CONFIGS_DIR)
    if ensemble_of:
        net, name = ValueEnsemble.of([load_policy(r)[0] for r in ensemble_of]), f"ensemble of {len(ensemble_of)}"
    else:
        net, name = load_policy(run_dir)[0], run_dir.name
    env = cfg.env.make(worlds)
    rows = []
    try:
        for mirror in mirrors:
            for tol in tie_tols:
                r = summarise([fly(env, policy_controller(net, tol, mirror), s) for s in range(flights)],
                              cfg.eval.success_m)
                rows.append({"run": name, "tie_tol": tol, "mirror": mirror, **r})
                print(f"{name} tie_tol={tol:g} mirror={int(mirror)}: {r['distance_m']:.2f} ± "
                      f"{r['distance_se']:.2f} m (new ground {r['new_ground_m']:.2f} m)", flush=True)
    finally:
        env.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m robot.flight.choice_probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="finished flight runs")
    parser.add_argument("--tie-tols", type=float, nargs="+", default=[0.0, 0.01, 0.02, 0.05],
                        help="tolerances to compare (values within this of the best count as tied)")
    parser.add_argument("--mirror", type=int, nargs="+", default=[0], choices=[0, 1],
                        help="1: average each map with the mirrored map of the flipped image (test-time augmentation)")
    parser.add_argument("--flights", type=int, default=60, help="flights per run and setting")
    parser.add_argument("--worlds", default="val", help="world split to fly (val, heldout, heldout_textures)")
    parser.add_argument("--ensemble", action="store_true",
                        help="then fly all the runs' networks as one ensemble (the mean of their maps)")
    args = parser.parse_args(argv)
    if args.flights < 1 or min(args.tie_tols) < 0:
        parser.error("--flights must be >= 1 and --tie-tols >= 0")
    if args.ensemble and len(args.runs) < 2:
        parser.error("--ensemble needs at least 2 runs")
    mirrors = [bool(m) for m in args.mirror]
    rows = [row for run in args.runs for row in probe(run, args.tie_tols, args.flights, args.worlds, mirrors)]
    if args.ensemble:
        together = probe(args.runs[0], args.tie_tols, args.flights, args.worlds, mirrors, ensemble_of=args.runs)
        print(f"\n| mirror | tie_tol | {args.worlds} distance (m): the ensemble | each run alone, mean | runs |\n"
              "|---|---|---|---|---|")
        for row in together:
            alone = [r["distance_m"] for r in rows if r["tie_tol"] == row["tie_tol"] and r["mirror"] == row["mirror"]]
            print(f"| {int(row['mirror'])} | {row['tie_tol']:g} | {row['distance_m']:.2f} ± {row['distance_se']:.2f} | "
                  f"{statistics.mean(alone):.2f} | {len(alone)} |")
        return
    print(f"\n| mirror | tie_tol | {args.worlds} distance (m), mean over runs | new ground (m) | runs |\n"
          "|---|---|---|---|---|")
    for mirror in mirrors:
        for tol in args.tie_tols:
            mine = [r for r in rows if r["tie_tol"] == tol and r["mirror"] == mirror]
            print(f"| {int(mirror)} | {tol:g} | {statistics.mean(r['distance_m'] for r in mine):.2f} | "
                  f"{statistics.mean(r['new_ground_m'] for r in mine):.2f} | {len(mine)} |")


if __name__ == "__main__":
    main()
