"""The rccar learner's wall time per simulated minute of practice, against stable-baselines3's bare SAC loop.

    OMP_NUM_THREADS=1 python bench/rccar_learner_speed.py [--sim-s 120] [--track generated:1]

Ours: `robot.rccar.practice.practise` as `rlab train rccar --config fastrlap` runs it (SB3's SAC with
[256, 256] networks, update-to-data 2, batch 256; the practice callback that counts laps, crashes and
practice time; atomic checkpoints with the replay buffer every `--ckpt-every-s`), with autonomous
recovery, but without the periodic evaluation drives (they are evaluation, not practice; their cost is
printed apart, per evaluation).

Peer: ``SAC.learn`` of stable-baselines3 on the same environment with the same hyper-parameters and the
same number of environment steps, no callback and no checkpoints.

Both start from the same seed; random actions fill the first 100 steps (`sac.learning_starts`, 500 in
the configs, lowered here so that a short bench is mostly learning), then every step does 2 gradient
updates, so the learner's cost dominates both. The last line is
``ratio: <ours wall s per sim min> / <SB3 wall s per sim min>`` (1.0 would be no overhead).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _cfg(track: str, sim_s: float, ckpt_every_s: float):
    from robot.rccar.track import CONFIGS_DIR, RCCarConfig
    from shared.config import load_config

    return load_config(RCCarConfig, "fastrlap", [
        f"env.track={track}", "env.length_m=55", "env.width_m=1.6", "env.smooth_m=0",
        f"practice.minutes={sim_s / 60}", f"practice.eval_every_min={1e6}",
        f"practice.checkpoint_every_min={ckpt_every_s / 60}", "sac.learning_starts=100"], CONFIGS_DIR)


def run_ours(cfg) -> tuple[float, int, float]:
    from robot.rccar.practice import PracticeState, make_sac, practise
    from shared.tracking.run import Run

    with tempfile.TemporaryDirectory() as tmp:
        run = Run.create("rccar", "bench", "name: bench\n", 0, root=Path(tmp), tensorboard=False)
        env = cfg.env.make()
        model = make_sac(env, cfg.sac, 0)
        evals: list[float] = []

        def make_eval_env():
            evals.append(time.perf_counter())
            return cfg.env.make(reset_mode="teleport")

        state = PracticeState(next_eval_min=1e6)  # no evaluation during practice ...
        start = time.perf_counter()
        state = practise(model, state, cfg, run, make_eval_env, demo_lap_s=1e9)
        total = time.perf_counter() - start
        # ... but practise() evaluates once at the end (deterministic + stochastic): time it apart.
        eval_s = total - (evals[0] - start) if evals else 0.0
        run.close()
        env.close()
        return total - eval_s, int(model.num_timesteps), state.sim_time_s


def run_sb3(cfg, steps: int) -> tuple[float, float]:
    from robot.rccar.practice import make_sac

    env = cfg.env.make()
    model = make_sac(env, cfg.sac, 0)
    start = time.perf_counter()
    model.learn(total_timesteps=steps, progress_bar=False)
    wall = time.perf_counter() - start
    sim_s = env.sim_time
    env.close()
    return wall, sim_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--track", default="generated:1")
    parser.add_argument("--sim-s", type=float, default=120.0, help="simulated seconds of practice")
    parser.add_argument("--ckpt-every-s", type=float, default=30.0, help="checkpoint interval (simulated s)")
    args = parser.parse_args()
    cfg = _cfg(args.track, args.sim_s, args.ckpt_every_s)
    ours_wall, steps, ours_sim = run_ours(cfg)
    sb3_wall, sb3_sim = run_sb3(cfg, steps)
    ours_rate, sb3_rate = ours_wall / (ours_sim / 60), sb3_wall / (sb3_sim / 60)
    print(f"{'':34}{'env steps':>10}{'sim s':>9}{'wall s':>9}{'wall s / sim min':>18}")
    print(f"{'rlab practice (SAC, UTD 2)':34}{steps:>10}{ours_sim:>9.1f}{ours_wall:>9.1f}{ours_rate:>18.1f}")
    print(f"{'SB3 SAC.learn, same settings':34}{steps:>10}{sb3_sim:>9.1f}{sb3_wall:>9.1f}{sb3_rate:>18.1f}")
    print(f"ratio: {ours_rate / sb3_rate:.3f} (rlab practice wall s per simulated minute over SB3's bare SAC.learn)")


if __name__ == "__main__":
    main()
