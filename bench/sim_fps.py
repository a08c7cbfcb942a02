"""Indoor-flight environment steps per second against bare pybullet camera renders of the same scenes.

    OMP_NUM_THREADS=1 python bench/sim_fps.py [--worlds 20] [--steps 60] [--size 64] [--repeats 3]

Work: `--worlds` generated training worlds (``rlab/IndoorFlight-v0``, 64 x 64 RGB observations, the
default 3 x 3 action grid). In each world the environment flies `--steps` steps of a fixed action pattern
(restarting the same world after a collision); each ``env.step`` moves the body, sweeps it with ray tests
for collisions and renders the observation (TinyRenderer, no shadows).

Peer: ``pybullet.getCameraImage`` alone, in the same world from the same poses, with the same size,
matrices, lighting and renderer: the floor on the cost of a step that includes a rendered image.

World generation: the time of ``env.reset`` (remove the last world, build a new one: textures, walls,
floor and ceiling tiles, furniture), per episode. Target (issue 5): environment steps at least 0.8x the
bare render rate (overhead at most 20%) and world generation under 1 s. Each figure is the best of
`--repeats` interleaved runs. The last line is ``ratio: <env steps/s> / <bare renders/s>``.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from sim.flight import IndoorFlightEnv

    env = IndoorFlightEnv(image_size=args.size)
    pattern = [4, 4, 3, 4, 5, 4, 1, 7]
    env_rates, bare_rates, resets = [], [], []
    for _ in range(args.repeats):
        env_time = bare_time = 0.0
        steps = renders = 0
        for w in range(args.worlds):
            t0 = time.perf_counter()
            env.reset(seed=w)
            resets.append(time.perf_counter() - t0)
            poses = []
            t0 = time.perf_counter()
            for i in range(args.steps):
                _, _, term, trunc, _ = env.step(pattern[i % len(pattern)])
                poses.append(env.state)
                if term or trunc:
                    env.restore(_start_state(env))
            env_time += time.perf_counter() - t0
            steps += args.steps
            # The peer: the same renders with nothing else.
            p, light = env._p, env.world.lighting
            matrices = [env.camera_matrices(s) for s in poses]
            t0 = time.perf_counter()
            for view, proj in matrices:
                p.getCameraImage(args.size, args.size, view, proj, lightDirection=light.direction,
                                 lightColor=light.colour, lightAmbientCoeff=light.ambient,
                                 lightDiffuseCoeff=light.diffuse, lightSpecularCoeff=light.specular, shadow=0,
                                 renderer=p.ER_TINY_RENDERER, flags=p.ER_NO_SEGMENTATION_MASK)
            bare_time += time.perf_counter() - t0
            renders += len(matrices)
        env_rates.append(steps / env_time)
        bare_rates.append(renders / bare_time)
    env.close()
    env_rate, bare_rate = max(env_rates), max(bare_rates)
    print(f"worlds: {args.worlds} x {args.repeats}, {args.steps} steps each, {args.size} x {args.size} RGB")
    print(f"env.step (move + ray-test sweep + render): {env_rate:8.1f} steps/s")
    print(f"bare getCameraImage, same scenes and poses: {bare_rate:8.1f} renders/s")
    print(f"world generation (env.reset): mean {statistics.mean(resets) * 1000:.0f} ms, "
          f"max {max(resets) * 1000:.0f} ms over {len(resets)} episodes (target < 1000 ms)")
    print(f"ratio: {env_rate / bare_rate:.3f} (env steps/s over bare getCameraImage renders/s)")


def _start_state(env):
    from sim.flight import FlightState

    x, y, z, yaw = env.world.start
    return FlightState((x, y, z), yaw, 0.0, 0)


if __name__ == "__main__":
    main()
