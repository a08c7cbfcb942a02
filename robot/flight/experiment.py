"""The flight results table: the CAD2RL policy against flying straight, a random direction, the privileged
depth heuristic and the lookahead oracle, on held-out generated worlds, on held-out texture families and on
a mesh the generator never built (pybullet_data's samurai monastery). One command:

    OMP_NUM_THREADS=1 python -m robot.flight.experiment --seeds 0 1 2 --out runs/flight-table --jobs 2

Per seed ``rlab train flight --config cad2rl`` then ``rlab eval`` on each of the three. Every evaluation
flies the same worlds (and the same jittered starts in the mesh) for every seed and controller; the
baselines do not depend on the training seed, so the oracle (the slow one) is flown with the first seed's
evaluations only and the others fly straight, random and depth again (a check that the worlds match).
Finished runs and evaluations are reused and killed runs resumed, so the command can be re-run after an
interruption. Logs go to ``<out>/logs/``; the table (markdown) to stdout and ``<out>/table.md``; the
distances per round of every run to ``<out>/rounds.png``.
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

WORLDS = ("heldout", "heldout_textures", "mesh")
CONTROLLERS = ("cad2rl", "straight", "random", "depth", "depth_farthest", "oracle")


def _eval_args(where: str, episodes: int) -> list[str]:
    from robot.flight.track import MESH_START, MESH_WORLD

    if where == "mesh":
        return ["--world", MESH_WORLD, "--start", ",".join(f"{x:g}" for x in MESH_START), "--episodes", str(episodes)]
    return ["--worlds", where, "--episodes", str(episodes)]


def _eval_file(run_dir: Path, where: str) -> Path:
    from robot.flight.track import MESH_WORLD

    tag = "world-" + Path(MESH_WORLD.split(":", 1)[1]).stem if where == "mesh" else where
    return run_dir / "eval" / f"{tag}.json"


def run_job(out: Path, config: str, seed: int, first: bool, episodes: int, overrides: list[str]) -> Path:
    name = f"{config}-seed{seed}"
    run_dir, log = out / name, out / "logs" / f"{name}.log"
    base = "[straight,random,depth,depth_farthest,oracle]" if first else "[straight,random,depth,depth_farthest]"
    sets = [f"train.seed={seed}", f"eval.baselines={base}", *overrides]
    start = time.time()
    if not (run_dir / "final" / "value_net.safetensors").exists():
        train_run("flight", config, run_dir, sets, log)
    for where in WORLDS:
        if not _eval_file(run_dir, where).exists():
            run_rlab(["eval", str(run_dir), *_eval_args(where, episodes)], log)
    print(f"[{time.strftime('%H:%M:%S')}] {name} done ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    return run_dir


def _mean_se(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) / len(values) ** 0.5:.2f}"


def table(out: Path, config: str, seeds: list[int]) -> str:
    """Markdown: per world set, each controller's mean distance (mean over seeds ± standard error over seeds;
    per seed: mean ± standard error over flights), its ratio to flying straight, the new ground covered (a
    flight circling in a room flies far but covers little) and the fraction past the success distance."""
    evals = {s: {w: json.loads(_eval_file(out / f"{config}-seed{s}", w).read_text()) for w in WORLDS} for s in seeds}
    first = seeds[0]
    lines = []
    for where in WORLDS:
        e0 = evals[first][where]
        success = e0["success_m"]
        lines += [f"**{where}** ({e0['episodes']} flights per controller, the same worlds for every seed)", "",
                  f"| controller | distance (m), mean over seeds | x straight | new ground (m) | beyond {success:g} m "
                  "| per seed (mean ± s.e. over flights) |",
                  "|---|---|---|---|---|---|"]
        for name in CONTROLLERS:
            per_seed = [evals[s][where]["results"][name] for s in seeds if name in evals[s][where]["results"]]
            if not per_seed:
                continue
            d = [r["distance_m"] for r in per_seed]
            straight = [evals[s][where]["results"]["straight"]["distance_m"] for s in seeds
                        if name in evals[s][where]["results"]]
            ratio = [a / b for a, b in zip(d, straight, strict=True)]
            beyond = [r[f"beyond_{success:g}m"] for r in per_seed]
            per = ", ".join(f"{r['distance_m']:.1f} ± {r['distance_se']:.1f}" for r in per_seed)
            ground = [r.get("new_ground_m", float("nan")) for r in per_seed]
            lines.append(f"| {name} | {_mean_se(d)} | {_mean_se(ratio)} | {_mean_se(ground)} | "
                         f"{statistics.mean(beyond):.2f} | {per} |")
        lines.append("")
    return "\n".join(lines)


def rounds_plot(out: Path, config: str, seeds: list[int]) -> Path:
    from shared.gallery.figures import new_figure, save_png

    fig = new_figure((5.5, 3.4))
    ax = fig.add_subplot()
    for s in seeds:
        summary = json.loads((out / f"{config}-seed{s}" / "summary.json").read_text())
        h = summary["history"]
        ax.plot([r["round"] for r in h], [r["val/x_straight"] for r in h], marker="o", label=f"seed {s}")
    ax.axhline(1.0, color="grey", ls="--", label="fly straight")
    ax.set_xlabel("round (0: straight branches, then policy-following)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("validation distance / straight")
    ax.legend(fontsize=7, frameon=False)
    return save_png(fig, out / "rounds.png", tight=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m robot.flight.experiment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", default="cad2rl")
    parser.add_argument("--out", type=Path, default=Path("runs/flight-table"))
    parser.add_argument("--episodes", type=int, default=50, help="flights per controller and world set")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at the same time (one per core)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra override for every run, e.g. --set mc.iterations=2")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        jobs = [pool.submit(run_job, out, args.config, s, i == 0, args.episodes, args.overrides)
                for i, s in enumerate(args.seeds)]
        for job in jobs:
            job.result()
    text = table(out, args.config, args.seeds)
    (out / "table.md").write_text(text + "\n")
    print(text)
    print(f"rounds: {rounds_plot(out, args.config, args.seeds)}")


if __name__ == "__main__":
    main()
