"""`rlab/RCCar-v0` step throughput against the bare physics it wraps: what the environment adds per step.

    OMP_NUM_THREADS=1 python bench/rccar_env_speed.py [--steps 2000] [--repeats 1] [--resets 10]

Env: ``env.step`` with state observations (9 range rays, the track projection, checkpoint, lap and stuck
bookkeeping, the wall-contact checks) while pure pursuit drives laps at throttle 0.5. Only the time
inside ``step`` counts; the controller's own time is printed apart.

Peer: the same pybullet client and scene (car with its differential gears, the two wall meshes, the
ground), rebuilt by a fresh seeded reset, replaying the commands the env applied: per control step the
four motor commands and ``env.unwrapped.substeps`` calls of ``stepSimulation``; no observation, no rays,
no bookkeeping. From the same state with the same commands the replay drives the same trajectory (the
table prints how far apart the two end points are), so both sides do the same physics, wall contacts
included, and the difference is the environment's own cost.

Also the cost of ``reset``: constructing the env and its first reset, a seeded reset (the world is
rebuilt for determinism), and a reset after a wall crash in each reset mode ("teleport"; "recover", whose
wall time includes the simulated manoeuvre).

The last line is ``ratio: <env steps/s> / <bare-physics control steps/s>``. The target for the
environment's overhead is at most 30 % of the step time, i.e. a ratio of at least 0.77. Timings are wall
clock on a possibly shared machine: ``--repeats 3`` keeps the best of three runs of each side.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np

ENV_ID = "rlab/RCCar-v0"


def _register() -> None:
    """`import sim` registers the env (run from the repository root, `sim` is the package itself)."""
    import sim  # noqa: F401

    if ENV_ID not in gym.registry:  # a shadowing namespace package named sim (e.g. tests/sim on sys.path)
        gym.register(id=ENV_ID, entry_point="sim.rccar:RCCarEnv")


def run_env(env, steps: int, throttle: float) -> dict:
    """Pure pursuit for `steps` control steps from a fresh seeded reset; the applied commands for the replay."""
    from robot.rccar.pursuit import PurePursuit

    u = env.unwrapped
    pursuit = PurePursuit(throttle=throttle)
    _, info = env.reset(seed=0)
    commands, step_s, control_s, resets = [], 0.0, 0.0, 0
    for _ in range(steps):
        t0 = time.perf_counter()
        action = pursuit.act(env, info)
        t1 = time.perf_counter()
        _, _, terminated, truncated, info = env.step(action)
        t2 = time.perf_counter()
        control_s += t1 - t0
        step_s += t2 - t1
        commands.append((float(u._applied[0]), u._throttle(float(u._applied[1]))))
        if terminated or truncated:
            resets += 1
            _, info = env.reset()
    end = np.array(u._p.getBasePositionAndOrientation(u._car)[0][:2])
    return {"step_s": step_s, "control_s": control_s, "commands": commands, "resets": resets, "end": end,
            "laps": info["laps"]}


def run_bare(env, commands: list[tuple[float, float]]) -> dict:
    """The same scene rebuilt by a seeded reset, then the commands replayed with nothing but physics."""
    import pybullet as pb

    from sim.rccar import DRIVE_JOINTS, STEER_JOINTS

    u = env.unwrapped
    env.reset(seed=0)
    p, car, substeps = u._p, u._car, u.substeps
    set_motor, step_simulation = p.setJointMotorControl2, p.stepSimulation
    force = u.motor_force * u._motor_scale
    targets = [(steer * u.max_steer, wheel * u.max_wheel_speed) for steer, wheel in commands]
    t0 = time.perf_counter()
    for steer_rad, wheel_rad_s in targets:
        for joint in STEER_JOINTS:
            set_motor(car, joint, pb.POSITION_CONTROL, targetPosition=steer_rad)
        for joint in DRIVE_JOINTS:
            set_motor(car, joint, pb.VELOCITY_CONTROL, targetVelocity=wheel_rad_s, force=force)
        for _ in range(substeps):
            step_simulation()
    elapsed = time.perf_counter() - t0
    end = np.array(p.getBasePositionAndOrientation(car)[0][:2])
    return {"step_s": elapsed, "end": end}


def reset_costs(track: str, n: int) -> dict[str, tuple[float, float]]:
    """Mean wall seconds (and mean simulated seconds) of each kind of reset."""
    out: dict[str, tuple[float, float]] = {}
    t0 = time.perf_counter()
    env = gym.make(ENV_ID, track=track)
    env.reset(seed=0)
    out["construct + first reset"] = (time.perf_counter() - t0, 0.0)
    walls = []
    for seed in range(1, n + 1):
        t0 = time.perf_counter()
        env.reset(seed=seed)
        walls.append(time.perf_counter() - t0)
    out["seeded reset (world rebuilt)"] = (statistics.mean(walls), 0.0)
    env.close()
    for mode in ("teleport", "recover"):
        env = gym.make(ENV_ID, track=track, reset_mode=mode)
        length = env.unwrapped.track.length
        walls, sims = [], []
        for k in range(n):
            _, info = env.reset(seed=0, options={"start_s": k * length / n})
            for _ in range(100):  # straight ahead at full throttle into a wall
                _, _, terminated, truncated, info = env.step(np.array([0.0, 1.0], dtype=np.float32))
                if terminated or truncated:
                    break
            sim_before = info["sim_time_s"]
            t0 = time.perf_counter()
            _, info = env.reset()
            walls.append(time.perf_counter() - t0)
            sims.append(info["sim_time_s"] - sim_before)
        out[f"{mode} reset after a crash"] = (statistics.mean(walls), statistics.mean(sims))
        env.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--track", default="generated:1")
    parser.add_argument("--steps", type=int, default=2000, help="control steps per run (10 Hz: 2000 = 200 s)")
    parser.add_argument("--throttle", type=float, default=0.5, help="pure pursuit's fraction of top wheel speed")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side; the best one counts")
    parser.add_argument("--resets", type=int, default=10, help="resets of each kind to average")
    args = parser.parse_args()
    _register()

    env = gym.make(ENV_ID, track=args.track)
    u = env.unwrapped
    env_runs, bare_runs = [], []
    for _ in range(args.repeats):  # alternate, so that a busy moment on the machine hits both sides
        env_runs.append(run_env(env, args.steps, args.throttle))
        bare_runs.append(run_bare(env, env_runs[-1]["commands"]))
    env.close()
    env_run = min(env_runs, key=lambda r: r["step_s"])
    bare_run = min(bare_runs, key=lambda r: r["step_s"])
    env_sps, bare_sps = args.steps / env_run["step_s"], args.steps / bare_run["step_s"]
    resets = reset_costs(args.track, args.resets)

    print(f"{ENV_ID} on {args.track} ({u.track.length:.0f} m): {args.steps} control steps of "
          f"{u.substeps} physics steps, pure pursuit at throttle {args.throttle}, best of {args.repeats}")
    print(f"{'':34}{'steps/s':>10}{'ms/step':>10}")
    print(f"{'env.step, state observation':34}{env_sps:>10.1f}{1e3 / env_sps:>10.2f}")
    print(f"{'bare physics, same scene':34}{bare_sps:>10.1f}{1e3 / bare_sps:>10.2f}")
    print(f"{'  env overhead':34}{'':>10}{1e3 / env_sps - 1e3 / bare_sps:>10.2f}")
    print(f"{'  pure pursuit (not in env.step)':34}{'':>10}{1e3 * env_run['control_s'] / args.steps:>10.2f}")
    gap = float(np.linalg.norm(env_run["end"] - bare_run["end"]))
    note = "" if env_run["resets"] == 0 else f", but the env reset {env_run['resets']} times: trajectories differ"
    print(f"replay check: {env_run['laps']} laps driven; bare end point {gap:.3f} m from the env's{note}")
    print(f"{'reset (mean of ' + str(args.resets) + ')':34}{'ms':>10}{'sim s':>10}")
    for name, (wall_s, sim_s) in resets.items():
        print(f"{name:34}{1e3 * wall_s:>10.1f}{f'{sim_s:.2f}' if sim_s else '-':>10}")
    print(f"ratio: {env_sps / bare_sps:.3f} (env steps/s over bare-physics control steps/s)")


if __name__ == "__main__":
    main()
