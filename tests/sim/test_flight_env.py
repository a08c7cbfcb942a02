"""rlab/IndoorFlight-v0: the checker, determinism, the image/yaw sign, collisions, worlds, bad input."""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np
import pytest

import sim  # noqa: F401  (registers the environments)
from sim import textures
from sim.flight import IndoorFlightEnv, grid_angles
from sim.indoor import WorldConfig, make_layout
from tests.sim.flight_worlds import box_obj, pillar_world


@pytest.fixture
def env():
    e = IndoorFlightEnv()
    yield e
    e.close()


def test_gymnasium_checker_passes() -> None:
    from gymnasium.utils.env_checker import check_env

    e = gym.make("rlab/IndoorFlight-v0")
    check_env(e.unwrapped, skip_render_check=True)
    e.close()


def test_same_seed_same_episode_and_another_seed_another_world(env) -> None:
    def episode(seed: int) -> tuple[list[np.ndarray], list[dict]]:
        obs, info = env.reset(seed=seed)
        frames, infos = [obs], [info]
        for a in [4, 3, 5, 4, 1, 7] * 3:
            obs, _, term, trunc, info = env.step(a)
            frames.append(obs)
            infos.append(info)
            if term or trunc:
                break
        return frames, infos

    f1, i1 = episode(11)
    f2, i2 = episode(11)
    f3, i3 = episode(12)
    assert len(f1) == len(f2) and all(np.array_equal(a, b) for a, b in zip(f1, f2, strict=True))
    assert [i["pos"] for i in i1] == [i["pos"] for i in i2]
    assert i3[0]["world_seed"] != i1[0]["world_seed"]
    assert not np.array_equal(f1[0], f3[0])


def test_left_image_columns_turn_left_and_see_what_is_on_the_left(tmp_path) -> None:
    # A red-free world with one box to the left (+y) of the start, facing +x.
    world = box_obj(tmp_path / "w.obj", [(-5, -20, -0.2, 40, 20, 0.0), (3, 1.5, 0.0, 4, 2.5, 3.0)])
    e = IndoorFlightEnv(world=world, start=(0, 0, 1.2, 0), image_size=32)
    obs, _ = e.reset(seed=0)
    depth = e.depth
    left, right = depth[:, :16], depth[:, 16:]
    assert np.median(left) < np.median(right), "the box on the +y side must appear in the left half of the image"
    yaw, pitch = grid_angles(3, 90.0)
    assert yaw[0] > 0 > yaw[2] and yaw[4] == 0 and pitch[1] > 0 > pitch[7]
    nxt, hit, _ = e.advance(e.snapshot(), 3)  # middle row, left column
    assert hit is None and nxt.yaw_deg > 0 and nxt.pos[1] > 0, "left column -> heading turns towards +y"
    nxt, _, _ = e.advance(e.snapshot(), 1)  # top row, centre column: climb
    assert nxt.pos[2] > 1.2 and nxt.yaw_deg == 0
    e.close()


def test_straight_into_a_pillar_is_a_collision_and_turning_misses_it(tmp_path) -> None:
    e = IndoorFlightEnv(world=pillar_world(tmp_path), start=(0, 0, 1.2, 0), max_distance_m=8.0)
    e.reset(seed=0)
    steps, terminated = 0, False
    while not terminated:
        _, reward, terminated, truncated, info = e.step(e.straight_action)
        steps += 1
        assert not truncated
    assert info["collision"] == "world" and steps <= 5
    assert info["distance_m"] == pytest.approx(0.5 * (steps - 1))
    assert reward == 0.0
    # A left turn then straight on: never hits and is truncated at the distance cap.
    e.reset(seed=0)
    e.step(3)
    while True:
        _, reward, terminated, truncated, info = e.step(e.straight_action)
        if terminated or truncated:
            break
    assert truncated and not terminated and info["distance_m"] == pytest.approx(8.0)
    e.close()


def test_generated_flights_end_on_walls_and_furniture_with_their_kind(env) -> None:
    kinds = set()
    for seed in range(40):
        env.reset(seed=seed)
        for _ in range(200):
            _, _, term, trunc, info = env.step(env.straight_action)
            if term or trunc:
                break
        assert term, "flying straight in a maze must end in a collision"
        kinds.add(info["collision"])
    assert {"wall", "furniture"} <= kinds <= {"wall", "furniture", "floor", "ceiling"}


def test_heldout_texture_worlds_use_only_heldout_families() -> None:
    for split, fams in (("heldout_textures", textures.HELDOUT_FAMILIES), ("train", textures.TRAIN_FAMILIES)):
        e = IndoorFlightEnv(split=split)
        for seed in range(3):
            e.reset(seed=seed)
            used = {f for f, _ in e.world.textures["walls"]} | {e.world.textures["floor"][0],
                                                                e.world.textures["ceiling"][0]}
            assert used <= set(fams), (split, used)
        e.close()


def test_splits_draw_disjoint_world_seeds() -> None:
    seen = {}
    for split in ("train", "heldout", "val"):
        e = IndoorFlightEnv(split=split)
        seen[split] = {e.reset(seed=s)[1]["world_seed"] for s in range(5)}
        e.close()
    assert all(s < 1_000_000 for s in seen["train"])
    assert all(1_000_000 <= s < 2_000_000 for s in seen["heldout"])
    assert all(2_000_000 <= s < 3_000_000 for s in seen["val"])


def test_layout_is_connected_braided_and_has_doorways() -> None:
    cfg = WorldConfig(rooms=(2, 2))
    doors = 0
    for seed in range(20):
        lay = make_layout(np.random.default_rng(seed), cfg)
        # Openings are symmetric, and every cell is reachable from (0, 0).
        dirs = ((1, 0), (0, 1), (-1, 0), (0, -1))
        seen, todo = {(0, 0)}, deque([(0, 0)])
        while todo:
            i, j = todo.popleft()
            for d, (di, dj) in enumerate(dirs):
                if lay.open[i, j, d]:
                    assert lay.open[i + di, j + dj, (d + 2) % 4]
                    if (i + di, j + dj) not in seen:
                        seen.add((i + di, j + dj))
                        todo.append((i + di, j + dj))
        assert len(seen) == lay.nx * lay.ny
        assert (lay.open.sum(axis=2) >= 2).all(), "braided: no dead ends"
        doors += int(lay.door.sum())
    assert doors > 0


def test_snapshot_restore_branches_reproduce_the_same_future(env) -> None:
    env.reset(seed=5)
    env.step(4)
    root = env.snapshot()
    a = [env.step(3)[0] for _ in range(2)]
    b_first = env.restore(root)
    b = [env.step(3)[0] for _ in range(2)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert b_first.shape == (64, 64, 3)


def test_user_world_from_a_urdf_and_start_jitter(tmp_path) -> None:
    import pybullet_data

    e = IndoorFlightEnv(world=f"{pybullet_data.getDataPath()}/samurai.urdf", start=(5, 5, 1.2, 45),
                        start_jitter_m=0.3, start_jitter_deg=30)
    starts = {e.reset(seed=s)[1]["pos"] for s in range(3)}
    assert len(starts) == 3
    e.close()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"world": "nope/missing.obj", "start": (0, 0, 1, 0)}, FileNotFoundError, "missing.obj does not exist"),
    ({"image_size": 0}, ValueError, "image_size"),
    ({"image_size": 5000}, ValueError, "image_size"),
    ({"image_size": "64"}, ValueError, "image_size"),
    ({"grid": 0}, ValueError, "grid"),
    ({"renderer": "vulkan"}, ValueError, "renderer"),
    ({"split": "test"}, ValueError, "unknown split 'test'"),
    ({"step_m": float("nan")}, ValueError, "step_m"),
])
def test_bad_arguments_fail_before_anything_is_built(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        IndoorFlightEnv(**kwargs)


def test_bad_world_files_and_starts(tmp_path) -> None:
    bad = tmp_path / "bad.urdf"
    bad.write_text("<robot><link name='x'><visual><geometry><mesh filename='nowhere.stl'/>")
    with pytest.raises(ValueError, match="bad.urdf did not load"):
        IndoorFlightEnv(world=bad, start=(0, 0, 1, 0))
    txt = tmp_path / "world.txt"
    txt.write_text("hello")
    with pytest.raises(ValueError, match="expected one of .obj, .urdf, .sdf"):
        IndoorFlightEnv(world=txt, start=(0, 0, 1, 0))
    with pytest.raises(ValueError, match="needs a start pose"):
        IndoorFlightEnv(world=pillar_world(tmp_path))
    with pytest.raises(ValueError, match="inside geometry"):
        IndoorFlightEnv(world=pillar_world(tmp_path), start=(2.2, 0.0, 1.2, 0))
    with pytest.raises(ValueError, match="four finite numbers"):
        IndoorFlightEnv(world=pillar_world(tmp_path), start=(0, 0, float("nan"), 0))


@pytest.mark.parametrize("action", [float("nan"), -1, 9, 1.5, "x", [1, 2], True])
def test_bad_actions_are_refused_with_the_space(env, action) -> None:
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


def test_numpy_and_integral_float_actions_are_accepted(env) -> None:
    env.reset(seed=0)
    env.step(np.int64(4))
    env.step(np.array(4))
    env.step(4.0)


def _in_subprocess(code: str) -> str:
    """Run `code` in a fresh interpreter (the EGL plugin must not load into the test process: see below)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return f"rc={done.returncode}\n{done.stdout}"


def test_egl_renderer_is_a_clear_error_or_works() -> None:
    out = _in_subprocess(
        "from sim.flight import IndoorFlightEnv\n"
        "e = IndoorFlightEnv(renderer='egl')\n"
        "try:\n"
        "    obs, _ = e.reset(seed=0)\n"
        "    print('rendered', obs.shape)\n"
        "except RuntimeError as err:\n"
        "    print('refused', err)\n"
        "e.close()\n")
    assert out.startswith("rc=0")
    assert "rendered (64, 64, 3)" in out or ("refused" in out and "renderer='tiny'" in out), out


def test_the_flight_track_loads_egl_after_torch_so_an_optimizer_can_follow() -> None:
    # Mesa's llvmpipe EGL (no GPU) and triton each bring an LLVM: in the wrong order the process segfaults.
    out = _in_subprocess(
        "from robot.flight.track import EnvConfig\n"
        "e = EnvConfig(renderer='egl').make()\n"
        "try:\n"
        "    e.reset(seed=0)\n"
        "except RuntimeError:\n"
        "    pass\n"
        "e.close()\n"
        "import torch\n"
        "torch.optim.Adam([torch.zeros(2, requires_grad=True)])\n"
        "print('optimizer ok')\n")
    assert out.startswith("rc=0") and "optimizer ok" in out, out
