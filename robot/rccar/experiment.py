"""The rccar results table: practised lap time against the demonstration and the tuned pure-pursuit
baseline, with autonomous recovery and with teleport resets, on the training circuit and on one never
trained on. One command:

    OMP_NUM_THREADS=1 python -m robot.rccar.experiment --seeds 0 1 2 --out runs/rccar-table --jobs 2

First one slow demonstration lap (``rlab rccar demo``, shared by every run) and the tuned pure-pursuit
baseline (the fastest constant throttle and lookahead that drives two clean laps) on both circuits. Then
per seed and config (``fastrlap``: recovery; ``fastrlap_teleport``: teleports; ``fastrlap_droq_ens5``: recovery
with five normalised critics, the default config) ``rlab train rccar``
from the demonstration, and ``rlab eval`` of the final policy on both circuits (deterministic and
stochastic, `EVAL_LAPS` laps each). Finished runs are reused and killed ones resumed, so the command
can be re-run after an interruption. Logs go to ``<out>/logs/``; the table (markdown) to stdout and
``<out>/table.md``; lap time against practice time of every run to ``<out>/lap_times.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shared.clikit import run_rlab, train_run

DEFAULT_CONFIGS = ("fastrlap", "fastrlap_teleport", "fastrlap_droq_ens5")
EVAL_LAPS = 3



def _tag(track: str) -> str:
    return Path(str(track)).stem.replace(":", "-")


def baselines(out: Path, tracks: list[str], overrides: list[str]) -> dict[str, dict]:
    """Tuned pure pursuit and the slow demonstration driver's lap on each circuit (cached in <out>)."""
    from robot.rccar.pursuit import PurePursuit, drive, pursuit_controller, tune_pursuit
    from robot.rccar.track import CONFIGS_DIR, RCCarConfig
    from shared.config import load_config

    cfg = load_config(RCCarConfig, "fastrlap", overrides, CONFIGS_DIR)
    result = {}
    for track in tracks:
        path = out / f"baseline-{_tag(track)}.json"
        if not path.exists():
            tuned = tune_pursuit(lambda t=track: cfg.env.make(track=t, reset_mode="teleport"))
            env = cfg.env.make(track=track, reset_mode="teleport")
            slow = drive(env, pursuit_controller(env, PurePursuit(cfg.demo_driver.throttle,
                                                                  cfg.demo_driver.lookahead_m)), 1, 300.0)
            env.close()
            tuned["demo_driver_lap_s"] = slow.laps[0] if slow.laps else None
            path.write_text(json.dumps(tuned, indent=1) + "\n")
        result[track] = json.loads(path.read_text())
    return result


def run_job(out: Path, config: str, seed: int, tracks: list[str], overrides: list[str]) -> Path:
    """Train (or resume, or reuse) one run and evaluate its final policy on each circuit; its folder."""
    name = f"{config}-seed{seed}"
    run_dir, log = out / name, out / "logs" / f"{name}.log"
    sets = [f"train.seed={seed}", f"demo={out / 'demo'}", "eval.baseline=false", *overrides]
    start = time.time()
    if not (run_dir / "final" / "policy.zip").exists():
        train_run("rccar", config, run_dir, sets, log)
    for track in tracks:
        if not (run_dir / "eval" / f"{_tag(track)}.json").exists():
            run_rlab(["eval", str(run_dir), "--track", track, "--laps", str(EVAL_LAPS)], log)
    print(f"[{time.strftime('%H:%M:%S')}] {name} done ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    return run_dir


def run_row(run_dir: Path, tracks: list[str], base: dict[str, dict]) -> dict[str, float]:
    """The table's numbers of one finished run (NaN where a policy drove no clean lap)."""
    from shared.tracking import read_metrics

    summary = json.loads((run_dir / "summary.json").read_text())
    nan = float("nan")
    # The first clean practice lap faster than the demonstration, from the per-lap metrics.
    laps = [r for r in read_metrics(run_dir) if "practice/lap_s" in r]
    faster = [r["practice/sim_min"] for r in laps
              if r["practice/lap_s"] < summary["demo_lap_s"] and r.get("practice/lap_crashes", 0) == 0]
    # ... and the first evaluation whose deterministic policy drove a clean lap faster than it.
    evals = [e["practice_min"] for e in summary["evals"]
             if e["det"]["best_lap_s"] is not None and e["det"]["best_lap_s"] < summary["demo_lap_s"]]
    row = {"demo lap": summary["demo_lap_s"], "practice lap < demo at (min)": faster[0] if faster else nan,
           "eval lap < demo at (min)": evals[0] if evals else nan,
           "practice crashes": summary["crashes"], "interventions": summary["interventions"]}
    for k, track in enumerate(tracks):
        where = "train" if k == 0 else "unseen"
        ev = json.loads((run_dir / "eval" / f"{_tag(track)}.json").read_text())
        lap = ev["det"]["best_lap_s"]
        pp = base[track]["best_lap_s"]
        row[f"{where} lap (det)"] = lap if lap is not None else nan
        row[f"{where} lap (stoch)"] = ev["stoch"]["best_lap_s"] or nan
        row[f"{where} pursuit lap"] = pp
        row[f"{where} faster than pursuit (%)"] = 100.0 * (pp - lap) / pp if lap is not None else nan
        row[f"{where} eval crashes"] = ev["det"]["crashes"]
    return row


def _fmt(values: list[float]) -> str:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "-"
    missing = f" ({len(values) - len(finite)} none)" if len(finite) < len(values) else ""
    if len(finite) == 1:
        return f"{finite[0]:.1f}{missing}"
    return f"{statistics.mean(finite):.1f} ± {statistics.pstdev(finite):.1f}{missing}"


def tables(rows: dict[str, dict[int, dict[str, float]]], tracks: list[str]) -> str:
    cols = list(next(iter(next(iter(rows.values())).values())))
    seeds = sorted(next(iter(rows.values())))
    lines = [f"Mean ± std over seeds {', '.join(map(str, seeds))}; training circuit {tracks[0]}, unseen "
             f"{tracks[1]}; laps in simulated seconds (best clean lap of {EVAL_LAPS}); 'faster than pursuit' is "
             "relative to the tuned pure-pursuit baseline's best lap on the same circuit.", ""]
    for group in (cols[:5], [c for c in cols if c.startswith("train")], [c for c in cols if c.startswith("unseen")]):
        lines += ["| config | " + " | ".join(group) + " |", "|---" * (len(group) + 1) + "|"]
        for config, per_seed in rows.items():
            lines.append(f"| {config} | " + " | ".join(_fmt([per_seed[s][c] for s in seeds]) for c in group) + " |")
        lines.append("")
    lines += ["| config | seed | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for config, per_seed in rows.items():
        for s in seeds:
            lines.append(f"| {config} | {s} | " + " | ".join(_fmt([per_seed[s][c]]) for c in cols) + " |")
    return "\n".join(lines)


def curves(out: Path, runs: dict[str, Path], base: dict, demo_lap: float, track: str,
           groups: dict[str, str] | None = None) -> Path:
    """Best deterministic evaluation lap against practice time, one line per run (one colour per group)."""
    from robot.rccar.media import lap_curve_plot

    series = {}
    for name, run_dir in runs.items():
        evals = json.loads((run_dir / "summary.json").read_text())["evals"]
        series[name] = [(e["practice_min"], e["det"]["best_lap_s"]) for e in evals if e["det"]["best_lap_s"]]
    return lap_curve_plot([], out / "lap_times.png", demo_lap_s=demo_lap, baseline_lap_s=base[track]["best_lap_s"],
                          series=series, title=f"{track}: deterministic evaluation lap vs simulated practice",
                          groups=groups)


def main(argv: list[str] | None = None) -> None:
    from robot.rccar.track import EnvConfig, EvalConfig

    parser = argparse.ArgumentParser(prog="python -m robot.rccar.experiment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--out", type=Path, default=Path("runs/rccar-table"))
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at the same time (one per core)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra override for every run, e.g. --set practice.minutes=10")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env, unseen = EnvConfig(), EvalConfig().track
    tracks = [env.track, unseen]
    if not (out / "demo" / "demo.json").exists():
        run_rlab(["rccar", "demo", "--track", env.track, "--out", str(out / "demo"), "--length-m", str(env.length_m),
              "--width-m", str(env.width_m), "--smooth-m", str(env.smooth_m)], out / "logs" / "demo.log")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        base_job = pool.submit(baselines, out, tracks, args.overrides)
        jobs = {(c, s): pool.submit(run_job, out, c, s, tracks, args.overrides)
                for c in args.configs for s in args.seeds}
        base = base_job.result()
        for future in jobs.values():
            future.result()
    rows = {c: {s: run_row(out / f"{c}-seed{s}", tracks, base) for s in args.seeds} for c in args.configs}
    text = tables(rows, tracks)
    (out / "table.md").write_text(text + "\n")
    (out / "baselines.json").write_text(json.dumps(base, indent=1) + "\n")
    print(text)
    demo_lap = json.loads((out / "demo" / "demo.json").read_text())["lap_time_s"]
    runs = {(c, s): f"{c} s{s}" for c in args.configs for s in args.seeds}
    plot = curves(out, {name: out / f"{c}-seed{s}" for (c, s), name in runs.items()}, base, demo_lap, tracks[0],
                  groups={name: c for (c, _), name in runs.items()})
    print(f"lap times: {plot}")


if __name__ == "__main__":
    main()
