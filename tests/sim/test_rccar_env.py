"""`rlab/RCCar-v0` (sim/rccar.py) as a learner sees it: Gymnasium conformance, seeding, lap timing and
progress, crashes and the two reset modes, stuck truncation, checkpoints and the reward, the action rate
limit, image observations, domain randomisation and input errors.

Every test builds its environments once and drives short episodes on generated:1 (a 55 m loop); the
whole file takes under 10 s on one core. The assertions are on measured behaviour (positions, speeds,
rewards recomputed from the poses), so a regression in the environment makes them fail.
"""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim  # noqa: F401  (registers rlab/RCCar-v0)
from robot.rccar.pursuit import PurePursuit
from sim.racetrack import TrackError, load_track

ENV_ID = "rlab/RCCar-v0"
# The state observation is unbounded by design (speeds, accelerations); gymnasium warns about that.
pytestmark = pytest.mark.filterwarnings("ignore:.*observation space m.* value is -?infinity")
# Straight at full throttle from s = 3 m on generated:1: the car passes the checkpoint at s = 5 m and hits
# the right-hand wall after 1.4 s, at a shallow angle (a single recovery manoeuvre gets it out).
CRASH_START_S = 3.0


@pytest.fixture(scope="module")
def track():
    return load_track("generated:1")


@pytest.fixture
def make_env(track):
    """Factory for envs on generated:1 (``gym.make`` with its wrappers); all are closed after the test."""
    made = []

    def make(**kwargs):
        env = gym.make(ENV_ID, **{"track": track, **kwargs})
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()


def wall_contacts(env) -> int:
    u = env.unwrapped
    return sum(len(u._p.getContactPoints(u._car, wall)) for wall in u._walls)


def expected_reward(env, before: dict, after: dict, crash_cost: float = 0.0) -> float:
    """FastRLAP's reward from the poses in `info`: velocity toward the checkpoint that was next before
    the step, minus `crash_cost`."""
    u = env.unwrapped
    p0, p1 = np.array([before["x"], before["y"]]), np.array([after["x"], after["y"]])
    to_cp = u.checkpoints[before["checkpoint"], :2] - p0
    return float((p1 - p0) / u.dt @ (to_cp / np.linalg.norm(to_cp))) - crash_cost


def crash_straight(env, start_s: float = CRASH_START_S, max_steps: int = 60):
    """Fresh episode at `start_s`, then straight ahead at full throttle until the episode ends:
    (info before the last step, reward, terminated, truncated, info)."""
    _, info = env.reset(seed=0, options={"start_s": start_s})
    for _ in range(max_steps):
        before = info
        _, reward, terminated, truncated, info = env.step(np.array([0.0, 1.0], dtype=np.float32))
        if terminated or truncated:
            return before, reward, terminated, truncated, info
    pytest.fail(f"driving straight from s={start_s} m did not end the episode in {max_steps} steps")


# ------------------------------------------------------------------------------------------ API


def test_check_env_passes():
    assert gym.spec(ENV_ID).entry_point == "sim.rccar:RCCarEnv"
    env = gym.make(ENV_ID, track="generated:1")
    try:
        assert env.spec.id == ENV_ID
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any other checker warning fails the test
            warnings.filterwarnings("ignore", message=r".*observation space m.* value is -?infinity")
            check_env(env.unwrapped)
    finally:
        env.close()


def test_same_seed_same_episode_and_random_start_follows_seed(make_env):
    env = make_env(random_start=True)
    # Gentle random steering at 20-60 % wheel speed: the car moves but stays on the track for 3 s.
    actions = np.random.default_rng(0).uniform([-0.3, -0.6], [0.3, 0.2], size=(30, 2)).astype(np.float32)
    full_ahead = np.tile(np.array([0.0, 1.0], dtype=np.float32), (60, 1))

    def episode(seed, actions):
        obs, info = env.reset(seed=seed)
        observations, rewards = [obs], []
        for a in actions:
            obs, reward, terminated, truncated, _ = env.step(a)
            observations.append(obs)
            rewards.append(reward)
            if terminated or truncated:
                break
        return info, np.array(observations), np.array(rewards)

    info_a, obs_a, rew_a = episode(7, actions)
    # In between, another start and a wall crash: contacts and solver warm starts that must not carry over.
    info_c, _, rew_c = episode(8, full_ahead)
    info_b, obs_b, rew_b = episode(7, actions)
    assert len(rew_a) == 30 and len(rew_c) < 60
    assert np.array_equal(obs_a, obs_b)
    assert np.array_equal(rew_a, rew_b)
    assert np.ptp(obs_a[:, 0]) > 0.5  # the car did move: the comparison is not of 31 resting states
    trk = env.unwrapped.track
    assert abs(trk.wrap_delta(info_c["s"] - info_a["s"])) > 1.0
    assert math.hypot(info_c["x"] - info_a["x"], info_c["y"] - info_a["y"]) > 1.0


# --------------------------------------------------------------------------------- laps, progress


@pytest.fixture(scope="module")
def pursuit_lap(track):
    """One pure-pursuit lap at throttle 0.5 from s = 30 m (so that the start line is crossed mid-lap)."""
    env = gym.make(ENV_ID, track=track, start_s=30.0)
    try:
        obs, info = env.reset(seed=0)
        pursuit = PurePursuit(throttle=0.5)
        infos, ended = [info], []
        for _ in range(600):
            obs, _, terminated, truncated, info = env.step(pursuit.act(env, info))
            infos.append(info)
            if terminated or truncated:
                ended.append(info)
                obs, info = env.reset()
            if info.get("lap_completed"):
                break
        return {"infos": infos, "ended": ended, "length": env.unwrapped.track.length}
    finally:
        env.close()


def test_pure_pursuit_lap_time_matches_distance(pursuit_lap):
    infos, length = pursuit_lap["infos"], pursuit_lap["length"]
    assert pursuit_lap["ended"] == [], "the pure-pursuit lap should be clean"
    last = infos[-1]
    assert last.get("lap_completed"), f"no lap in {len(infos) - 1} steps (progress {last['progress_m']:.1f} m)"
    assert last["laps"] == 1
    lap_time = last["lap_time_s"]
    assert lap_time == pytest.approx(last["sim_time_s"], abs=1e-6)  # first lap from a fresh reset
    assert 15.0 < lap_time < 60.0
    mean_speed = float(np.mean([i["speed"] for i in infos[1:]]))
    assert length / lap_time == pytest.approx(mean_speed, rel=0.3)
    xy = np.array([[i["x"], i["y"]] for i in infos])
    driven = float(np.sum(np.linalg.norm(np.diff(xy, axis=0), axis=1)))
    assert driven == pytest.approx(length, rel=0.15)


def test_progress_never_jumps(pursuit_lap):
    infos, length = pursuit_lap["infos"], pursuit_lap["length"]
    progress = np.array([i["progress_m"] for i in infos])
    s = np.array([i["s"] for i in infos])
    assert np.any(np.diff(s) < -length / 2), "the lap should cross the start line (s wraps to 0)"
    steps = np.diff(progress)
    assert np.abs(steps).max() < 1.0
    assert steps.min() > -0.2  # a car driving forward does not lose progress
    assert length <= progress[-1] < length + 1.0


# ----------------------------------------------------------------------------- crashes and resets


def test_wall_crash_terminates_with_crash_cost(make_env):
    env = make_env(crash_cost=7.5)
    before, reward, terminated, truncated, info = crash_straight(env)
    assert terminated and not truncated
    assert info["crash"] == "wall"
    assert info["sim_time_s"] < 4.0
    assert wall_contacts(env) > 0
    assert reward == pytest.approx(expected_reward(env, before, info, crash_cost=7.5), abs=1e-6)
    assert reward < -7.5 + 3.0


def test_recover_reset_does_not_teleport(make_env):
    env = make_env(reset_mode="recover")
    _, _, terminated, _, crash = crash_straight(env)
    assert terminated and crash["crash"] == "wall"
    _, info = env.reset()
    width = env.unwrapped.track.width
    moved = math.hypot(info["x"] - crash["x"], info["y"] - crash["y"])
    assert 0.2 < moved < 2.5, f"the recovery moved the car {moved:.2f} m from the crash"
    assert abs(info["lateral"]) < width / 2
    assert abs(info["lateral"]) > 0.05  # not put back on the centre line
    assert wall_contacts(env) == 0
    assert info["recoveries"] > crash["recoveries"]
    assert info["interventions"] == crash["interventions"] == 0
    assert info["sim_time_s"] > crash["sim_time_s"] + 0.5  # the manoeuvre's time counts
    assert abs(env.unwrapped.track.wrap_delta(info["progress_m"] - crash["progress_m"])) < 2.0


@pytest.fixture(scope="module")
def recover_sweep(track):
    """(distance from the crash, speed) after a recover-reset, for straight crashes from three starts."""
    env = gym.make(ENV_ID, track=track, reset_mode="recover")
    try:
        out = {}
        for start in (0.0, CRASH_START_S, 30.0):
            crash = crash_straight(env, start_s=start)[-1]
            _, info = env.reset()
            out[start] = (math.hypot(info["x"] - crash["x"], info["y"] - crash["y"]), info["speed"])
        return out
    finally:
        env.close()


def test_recover_reset_leaves_the_car_at_rest(recover_sweep):
    speeds = {start: round(v, 2) for start, (_, v) in recover_sweep.items()}
    assert all(abs(v) < 0.1 for v in speeds.values()), f"speed after recovery, by crash start: {speeds}"


def test_teleport_reset_places_car_at_last_checkpoint(make_env):
    env = make_env(reset_mode="teleport")
    _, _, terminated, _, crash = crash_straight(env)
    assert terminated
    u = env.unwrapped
    trk = u.track
    last_passed = u.checkpoints[crash["checkpoint"] - 1, 2]
    assert trk.wrap_delta(CRASH_START_S - last_passed) < 0  # a checkpoint was passed on the way
    _, info = env.reset()
    assert abs(info["lateral"]) < 0.05
    assert abs(trk.wrap_delta(info["s"] - last_passed)) <= trk.ds
    assert abs(math.remainder(info["yaw"] - trk.point_at(last_passed)[1], 2 * math.pi)) < 0.05
    assert abs(info["speed"]) < 0.05
    lin, ang = u._p.getBaseVelocity(u._car)
    assert np.linalg.norm(lin) < 0.05 and np.linalg.norm(ang) < 0.1
    assert wall_contacts(env) == 0
    assert info["checkpoint"] == crash["checkpoint"]
    # Progress keeps counting: the jump back is progress lost, not a new lap start.
    expected = crash["progress_m"] + trk.wrap_delta(info["s"] - crash["s"])
    assert info["progress_m"] == pytest.approx(expected, abs=0.15)


def test_zero_throttle_is_truncated_as_stuck(make_env):
    env = make_env(stuck_s=1.5)
    env.reset(seed=0)
    stuck_steps = round(1.5 / env.unwrapped.dt)
    for k in range(1, stuck_steps + 1):
        _, _, terminated, truncated, info = env.step(np.array([0.0, -1.0], dtype=np.float32))
        assert not terminated
        assert truncated == (k == stuck_steps), f"step {k}: truncated={truncated}"
    assert info["stuck"] and info["crash"] is None
    assert abs(info["speed"]) < 0.1


# ------------------------------------------------------------------------------ checkpoints, reward


def test_given_checkpoints_drive_the_reward(make_env, track):
    given = track.centre[:: int(round(3.0 / track.ds))]  # the centre line every 3 m
    env = make_env(checkpoints=given)
    u = env.unwrapped
    assert np.allclose(u.checkpoints[:, :2], given)
    assert np.allclose(np.diff(u.checkpoints[:, 2]), 3.0, atol=track.ds)
    _, info = env.reset(seed=0)
    first_cp = info["checkpoint"]
    pursuit = PurePursuit(throttle=0.5)
    rewards, speeds, ahead = [], [], []
    for _ in range(40):
        before = info
        obs, reward, terminated, truncated, info = env.step(pursuit.act(env, info))
        assert not (terminated or truncated)
        assert reward == pytest.approx(expected_reward(env, before, info), abs=1e-6)
        rewards.append(reward)
        speeds.append(info["speed"])
        ahead.append(obs[7])  # the next checkpoint's x in the car's frame (m / 5)
    assert sum(rewards) > 0
    assert np.mean(rewards[10:]) > 0.7 * np.mean(speeds[10:]) > 0.5
    assert (info["checkpoint"] - first_cp) % len(given) >= 2
    assert np.mean(np.array(ahead) > 0) > 0.9


@pytest.mark.parametrize(
    "bad",
    [
        np.array([[0.0, 0.0], [1.0, 1.0], [np.nan, 2.0], [3.0, 3.0], [4.0, 4.0]]),
        np.zeros((3, 2)),
        np.zeros(10),
        np.zeros((10, 1)),
    ],
    ids=["nan", "three_rows", "one_dimensional", "one_column"],
)
def test_bad_checkpoints_raise_value_error(track, bad):
    with pytest.raises(ValueError, match="checkpoints"):
        gym.make(ENV_ID, track=track, checkpoints=bad)


# ----------------------------------------------------------------------------------------- actions


def test_action_rate_limit_and_nan_action(make_env):
    env = make_env(max_delta=(0.2, 0.1))
    obs, _ = env.reset(seed=0)
    assert obs[5:7].tolist() == [0.0, -1.0]  # at rest: straight, no throttle
    obs, _, _, _, _ = env.step(np.array([1.0, 1.0], dtype=np.float32))
    assert obs[5:7] == pytest.approx([0.2, -0.9], abs=1e-6)
    obs, _, _, _, _ = env.step(np.array([1.0, 1.0], dtype=np.float32))
    assert obs[5:7] == pytest.approx([0.4, -0.8], abs=1e-6)
    obs, reward, terminated, truncated, info = env.step(np.array([np.nan, np.nan], dtype=np.float32))
    assert np.isfinite(obs).all() and math.isfinite(reward)
    assert obs[5:7] == pytest.approx([0.2, -0.9], abs=1e-6)  # toward neutral, still rate limited
    assert math.isfinite(info["x"]) and math.isfinite(info["progress_m"])


# ------------------------------------------------------------------------------------------ images


def test_image_observation_and_rgb_render(make_env):
    env = make_env(image_size=32, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, dict) and set(obs) == {"state", "image"}
    assert env.observation_space.contains(obs)
    image = obs["image"]
    assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 1
    assert obs["state"].shape == (22,) and obs["state"].dtype == np.float32
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == (240, 320, 3)
    assert frame.std() > 5
    for _ in range(10):
        obs, *_ = env.step(np.array([0.0, 1.0], dtype=np.float32))
    assert not np.array_equal(obs["image"], image)  # the camera moves with the car


# ---------------------------------------------------------------------------- domain randomisation


def test_domain_randomisation_follows_the_seed(make_env):
    env = make_env(randomization={"enabled": True})
    u = env.unwrapped

    def mass_and_friction(seed):
        env.reset(seed=seed)
        return u._p.getDynamicsInfo(u._car, -1)[0], u._p.getDynamicsInfo(u._car, 12)[1]

    m1, f1 = mass_and_friction(1)
    m2, f2 = mass_and_friction(2)
    m1_again, f1_again = mass_and_friction(1)
    assert m1 != m2 and f1 != f2
    assert (m1, f1) == (m1_again, f1_again)
    assert 0.85 * u._base_mass <= min(m1, m2) <= max(m1, m2) <= 1.15 * u._base_mass

    plain = make_env()
    plain.reset(seed=1)
    p = plain.unwrapped
    assert p._p.getDynamicsInfo(p._car, -1)[0] == p._base_mass


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("source", ["NoSuchCircuit", "generated:abc", "/nonexistent/folder/track.csv"])
def test_bad_track_source_is_named_in_the_error(source):
    with pytest.raises(TrackError, match=source):
        gym.make(ENV_ID, track=source)


def test_bad_reset_mode_raises_value_error(track):
    with pytest.raises(ValueError, match="reset_mode"):
        gym.make(ENV_ID, track=track, reset_mode="respawn")


def test_onboard_observation_is_what_a_car_measures(make_env):
    full = make_env(image_size=32)
    onboard = make_env(image_size=32, observation="onboard")
    f, _ = full.reset(seed=0)
    o, _ = onboard.reset(seed=0)
    action = np.array([0.2, 0.8], dtype=np.float32)
    for _ in range(15):
        f, *_ = full.step(action)
        o, *_ = onboard.step(action)
    assert onboard.observation_space.contains(o) and o["state"].shape == (6,)
    # speed, yaw rate, accelerations and the applied action are the full state's entries 0, 2, 3, 4, 5, 6
    np.testing.assert_allclose(o["state"], f["state"][[0, 2, 3, 4, 5, 6]], atol=1e-6)
    np.testing.assert_array_equal(o["image"], f["image"])
    with pytest.raises(ValueError, match="needs image_size"):
        make_env(observation="onboard")
    with pytest.raises(ValueError, match="observation must be"):
        make_env(image_size=32, observation="lidar")
