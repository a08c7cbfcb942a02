"""The rccar track end to end: checkpoints from a driven path, demonstrations on disk, the pure-pursuit
drivers, config validation, a short SAC practice run (train -> final policy, summary, metrics, media),
evaluation, resuming (also past a corrupted checkpoint), the `demo=FOLDER` check and `rlab rccar`.

Everything drives generated:1 with tiny budgets: one module-scoped practice run (0.3 simulated minutes,
a [32, 32] SAC) is shared by the training, evaluation and resume tests, which work on copies of it.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pybullet")
pytest.importorskip("stable_baselines3")

from robot.rccar.pursuit import (  # noqa: E402
    KEYS,
    Demo,
    DriveLog,
    extract_checkpoints,
    keyboard_action,
    record_demo,
    tune_pursuit,
)
from robot.rccar.track import CONFIGS_DIR, RCCarConfig, evaluate_run, train  # noqa: E402
from shared.config import ConfigError, load_config, to_yaml  # noqa: E402
from shared.tracking.checkpoint import (  # noqa: E402
    CheckpointWarning,
    list_checkpoints,
    load_checkpoint,
    verify_checkpoint,
)
from shared.tracking.run import Run  # noqa: E402
from shared.tracks import EvalRequest  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*observation space m.* value is -?infinity"),
]

TRAIN_OVERRIDES = [
    "env.track=generated:1", "practice.minutes=0.3", "practice.eval_every_min=0.15",
    "practice.checkpoint_every_min=0.1", "practice.eval_laps=1", "practice.eval_max_s=3", "eval.baseline=false",
    "sac.learning_starts=50", "sac.batch_size=32", "sac.net_arch=[32,32]",
    "demo_driver.throttle=0.5",  # a 34 s demonstration lap instead of 55 s: same path, less wall time
]
# eval_max_s also bounds the final chase-camera video (rendering is ~0.1 s a frame on one core): 3 s, not 10.
# RCCarEnv's own defaults (and `rlab rccar demo`'s with these options): a 55 m loop, 1.6 m wide, as drawn.
SMALL_LOOP = ["--length-m", "55", "--width-m", "1.6", "--smooth-m", "0"]


def _cfg(*extra: str) -> RCCarConfig:
    return load_config(RCCarConfig, "fastrlap", [*TRAIN_OVERRIDES, *extra], CONFIGS_DIR)


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def _circle(n: int = 400, radius: float = 5.0, closed: bool = True) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n + 1 if closed else n, endpoint=closed)
    return radius * np.column_stack([np.cos(t), np.sin(t)])


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 0.3-simulated-minute practice run on generated:1: (run folder, pristine copy, stdout)."""
    base = tmp_path_factory.mktemp("rccar-train")
    run_dir = base / "run"
    cfg = _cfg()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), Run.create("rccar", cfg.name, to_yaml(cfg), cfg.train.seed,
                                                     run_dir=run_dir) as run:
        train(cfg, run, False)
    pristine = base / "pristine"
    shutil.copytree(run_dir, pristine)
    return run_dir, pristine, out.getvalue()


@pytest.fixture
def run_copy(trained, tmp_path):
    """A private copy of the trained run (for tests that write into it)."""
    dst = tmp_path / "run"
    shutil.copytree(trained[1], dst)
    return dst


def _resume(src: Path, dst: Path, corrupt: bool) -> dict:
    """Copy the run, optionally flip a byte of the newest checkpoint's policy, resume it to 0.4 minutes."""
    shutil.copytree(src, dst)
    before = list_checkpoints(dst / "checkpoints")
    latest = before[-1][1]
    if corrupt:
        f = latest / "policy.safetensors"
        data = bytearray(f.read_bytes())
        data[-5] ^= 0xFF  # same size: only the full sha256 check catches it
        f.write_bytes(bytes(data))
    old = {"summary": json.loads((dst / "summary.json").read_text()), "metrics": _lines(dst / "metrics.jsonl"),
           "manifest": _lines(dst / "media" / "manifest.jsonl"), "checkpoints": before}
    out = io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = Run.open(dst)
        with contextlib.redirect_stdout(out), run:
            train(_cfg("practice.minutes=0.4"), run, True)
    return {"dir": dst, "old": old, "stdout": out.getvalue(), "warnings": [w for w in caught
                                                                          if issubclass(w.category,
                                                                                        CheckpointWarning)]}


@pytest.fixture(scope="module")
def resumed(trained, tmp_path_factory):
    return _resume(trained[1], tmp_path_factory.mktemp("rccar-resume") / "run", corrupt=False)


@pytest.fixture(scope="module")
def resumed_corrupt(trained, tmp_path_factory):
    return _resume(trained[1], tmp_path_factory.mktemp("rccar-corrupt") / "run", corrupt=True)


@pytest.fixture(scope="module")
def demo55():
    """A pure-pursuit lap at throttle 0.5 on generated:1 (55 m, 1.6 m, as drawn): (demo, track)."""
    from sim.rccar import RCCarEnv

    env = RCCarEnv("generated:1")
    try:
        return record_demo(env, throttle=0.5), env.track
    finally:
        env.close()


@pytest.fixture(scope="module")
def cli_demo(tmp_path_factory):
    """`rlab rccar demo --track generated:1 ... --throttle 0.5 --out DIR`: (result, DIR)."""
    from typer.testing import CliRunner

    from robot.rccar.cli import app

    out = tmp_path_factory.mktemp("cli-demo") / "demo"
    result = CliRunner().invoke(app, ["demo", "--track", "generated:1", *SMALL_LOOP, "--throttle", "0.5",
                                      "--out", str(out)])
    return result, out


# ------------------------------------------------------------------------------------- checkpoints


def test_checkpoints_on_a_straight_line_are_spaced_and_skip_the_start():
    path = np.column_stack([np.linspace(0.0, 20.0, 201), np.zeros(201)])
    cps = extract_checkpoints(path, 2.5)
    # every 2.5 m from 2.5 m; the end (20 m, within half a spacing of the lap's closing point) is left out
    np.testing.assert_allclose(cps, np.column_stack([np.arange(1, 8) * 2.5, np.zeros(7)]), atol=1e-9)
    np.testing.assert_allclose(extract_checkpoints(path, 4.0)[:, 0], [4.0, 8.0, 12.0, 16.0], atol=1e-9)


def test_checkpoints_on_a_circle_follow_the_arc():
    path = _circle()
    length = float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())
    cps = extract_checkpoints(path, 2.5)
    assert len(cps) == int((length - 1.25) // 2.5) == 12
    np.testing.assert_allclose(np.linalg.norm(cps, axis=1), 5.0, atol=1e-3)  # on the path
    chords = np.linalg.norm(np.diff(cps, axis=0), axis=1)
    np.testing.assert_allclose(chords, 2 * 5.0 * np.sin(2.5 / (2 * 5.0)), rtol=1e-3)  # 2.5 m of arc apart
    angles = np.unwrap(np.arctan2(cps[:, 1], cps[:, 0]))
    np.testing.assert_allclose(angles, np.arange(1, 13) * 2.5 / 5.0, atol=1e-3)  # in driving order
    # nothing within half a spacing of the start (= the lap's end): the last mark is 30 m of a 31.4 m loop
    assert np.linalg.norm(cps - path[0], axis=1).min() > 1.25


@pytest.mark.parametrize("path,spacing,match", [
    (np.column_stack([np.linspace(0, 10, 50), np.zeros(50)]), 2.5, "fewer than 4"),  # 3 marks only
    (np.zeros((2, 2)), 1.0, "fewer than 4"),
    (np.column_stack([np.linspace(0, 20, 50), np.zeros(50)]), 0.0, "positive"),
    (np.column_stack([np.linspace(0, 20, 50), np.zeros(50)]), -2.5, "positive"),
])
def test_checkpoints_refuse_short_paths_and_bad_spacing(path, spacing, match):
    with pytest.raises(ValueError, match=match):
        extract_checkpoints(path, spacing)


# ------------------------------------------------------------------------------------ demonstrations


def _fake_demo(**changes) -> Demo:
    path = _circle(60, closed=False)
    fields = dict(track="generated:1", length_m=80.0, width_m=1.4, lap_time_s=20.0, driver="test",
                  path=path, speed=np.linspace(0.0, 2.0, len(path)), smooth_m=2.0)
    return Demo(**{**fields, **changes})


def test_demo_round_trip(tmp_path):
    demo = _fake_demo(smooth_m=0.5)
    folder = demo.save(tmp_path / "a" / "b")
    assert folder == tmp_path / "a" / "b" and {p.name for p in folder.iterdir()} == {"demo.json", "demo.npz"}
    back = Demo.load(str(folder))
    for name in ("track", "length_m", "width_m", "lap_time_s", "driver", "smooth_m"):
        assert getattr(back, name) == getattr(demo, name)
    np.testing.assert_array_equal(back.path, demo.path)
    np.testing.assert_array_equal(back.speed, demo.speed)


def test_demo_load_without_demo_json_names_the_folder(tmp_path):
    folder = _fake_demo().save(tmp_path / "demo")
    (folder / "demo.json").unlink()
    with pytest.raises(FileNotFoundError, match="demo.json is missing") as err:
        Demo.load(folder)
    assert str(folder) in str(err.value)
    with pytest.raises(FileNotFoundError, match="not a demonstration folder"):
        Demo.load(tmp_path / "nowhere")


@pytest.mark.parametrize("damage", ["garbage npz", "npz without speed", "bad json", "unknown json key"])
def test_demo_load_of_damaged_files_names_the_folder(tmp_path, damage):
    folder = _fake_demo().save(tmp_path / "demo")
    if damage == "garbage npz":
        (folder / "demo.npz").write_bytes(b"this is not an npz file" * 20)
    elif damage == "npz without speed":
        np.savez(folder / "demo.npz", path=_circle(60))
    elif damage == "bad json":
        (folder / "demo.json").write_text("{not json")
    else:
        meta = json.loads((folder / "demo.json").read_text())
        (folder / "demo.json").write_text(json.dumps({**meta, "colour": "red"}))
    with pytest.raises(ValueError, match="unreadable demonstration") as err:
        Demo.load(folder)
    assert str(folder) in str(err.value)


@pytest.mark.parametrize("how", ["truncated", "bit flip"])
def test_demo_load_of_a_truncated_npz_names_the_folder(tmp_path, how):
    folder = _fake_demo().save(tmp_path / "demo")
    raw = (folder / "demo.npz").read_bytes()
    data = raw[: len(raw) // 2] if how == "truncated" else raw[:120] + bytes([raw[120] ^ 0xFF]) + raw[121:]
    (folder / "demo.npz").write_bytes(data)
    try:
        Demo.load(folder)
    except ValueError as err:
        assert str(folder) in str(err)
    except Exception as err:  # noqa: BLE001
        raise AssertionError(f"{type(err).__name__}: {err}") from None
    else:
        raise AssertionError("a damaged demo.npz loaded")


@pytest.mark.parametrize("path", [np.full((50, 2), np.nan), np.zeros((5, 2)), np.zeros((50, 3))])
def test_demo_load_refuses_bad_paths(tmp_path, path):
    folder = _fake_demo(path=path, speed=np.ones(len(path))).save(tmp_path / "demo")
    with pytest.raises(ValueError, match="finite") as err:
        Demo.load(folder)
    assert str(folder) in str(err.value)


# -------------------------------------------------------------------------------------------- drivers


def test_record_demo_drives_one_clean_lap(demo55):
    demo, track = demo55
    assert (demo.track, demo.length_m, demo.width_m, demo.smooth_m) == ("generated:1", 55.0, 1.6, 0.0)
    assert "throttle 0.5" in demo.driver
    assert demo.path.shape == (len(demo.speed), 2) and len(demo.path) == pytest.approx(demo.lap_time_s * 10, abs=2)
    assert 15.0 < demo.lap_time_s < 40.0
    assert demo.lap_time_s == pytest.approx(track.length / float(np.mean(demo.speed)), rel=0.05)
    driven = float(np.linalg.norm(np.diff(demo.path, axis=0), axis=1).sum())
    assert driven == pytest.approx(track.length, rel=0.1)
    assert np.linalg.norm(demo.path[-1] - demo.path[0]) < 2.0  # a closed lap
    assert np.abs([track.project(p).lateral for p in demo.path[::10]]).max() < track.width / 2  # never off the road
    assert len(extract_checkpoints(demo.path, 2.5)) == pytest.approx(track.length / 2.5, abs=2)


def test_record_demo_without_a_lap_raises():
    from sim.rccar import RCCarEnv

    env = RCCarEnv("generated:1")
    try:
        with pytest.raises(RuntimeError, match="did not complete a clean lap"):
            record_demo(env, throttle=0.5, max_s=2.0)
    finally:
        env.close()


def test_tune_pursuit_returns_the_fastest_clean_setting():
    from sim.rccar import RCCarEnv

    result = tune_pursuit(lambda: RCCarEnv("generated:1", reset_mode="teleport"), throttles=(0.5, 0.7),
                          lookaheads=(1.0,), laps=1)
    tried = {t["throttle"]: t for t in result["tried"]}
    assert set(tried) == {0.5, 0.7} and all(t["lookahead_m"] == 1.0 for t in tried.values())
    clean = [t for t in tried.values() if t["ok"]]
    assert clean and all(t["crashes"] == 0 and len(t["laps"]) == 1 for t in clean)
    best = min(clean, key=lambda t: t["laps"][0])
    assert (result["throttle"], result["lookahead_m"]) == (best["throttle"], 1.0)
    assert result["best_lap_s"] == result["mean_lap_s"] == best["laps"][0]
    assert 15.0 < result["best_lap_s"] < 30.0
    for t in tried.values():  # a faster lap with a crash in it never wins
        if not t["ok"]:
            assert t["crashes"] > 0 or len(t["laps"]) < 1


def test_keyboard_action_steers_and_changes_throttle():
    import pybullet as pb

    down, released = pb.KEY_IS_DOWN, pb.KEY_WAS_RELEASED
    prev = np.array([0.3, 0.2], dtype=np.float32)
    np.testing.assert_allclose(keyboard_action({}, prev), [0.0, 0.2], atol=1e-6)  # steering springs back
    np.testing.assert_allclose(keyboard_action({KEYS["left"]: down}, prev), [1.0, 0.2], atol=1e-6)
    np.testing.assert_allclose(keyboard_action({KEYS["right"]: down | pb.KEY_WAS_TRIGGERED}, prev), [-1.0, 0.2],
                               atol=1e-6)
    np.testing.assert_allclose(keyboard_action({KEYS["left"]: down, KEYS["right"]: down}, prev), [0.0, 0.2], atol=1e-6)
    np.testing.assert_allclose(keyboard_action({KEYS["up"]: down}, prev), [0.0, 0.3], atol=1e-6)
    np.testing.assert_allclose(keyboard_action({KEYS["down"]: down, KEYS["left"]: down}, prev, 0.25), [1.0, -0.05],
                               atol=1e-6)
    np.testing.assert_allclose(keyboard_action({KEYS["up"]: released, KEYS["left"]: released}, prev), [0.0, 0.2],
                               atol=1e-6)  # released keys do nothing
    action = np.array([0.0, -1.0], dtype=np.float32)
    for _ in range(25):  # held: the throttle climbs in steps and stops at 1
        action = keyboard_action({KEYS["up"]: down}, action)
    assert action.dtype == np.float32 and action.tolist() == [0.0, 1.0]
    assert keyboard_action({KEYS["down"]: down}, np.array([0.0, -0.95]))[1] == -1.0


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("override,key", [
    ("env.reset_mode=bogus", "env.reset_mode"),
    ("env.length_m=-1", "env.length_m"),
    ("sac.utd=0", "sac.utd"),
    ("env.on_infeasible=ignore", "env.on_infeasible"),
    ("practice.minutes=0", "practice.minutes"),
    ("env.nosuch=1", "env.nosuch"),
])
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(RCCarConfig, "fastrlap", [override], CONFIGS_DIR)
    assert err.value.key == key and key in str(err.value)


def test_bundled_configs_load():
    got = {name: load_config(RCCarConfig, name, [], CONFIGS_DIR) for name in ("fastrlap", "fastrlap_teleport",
                                                                             "default")}
    assert {n: (c.name, c.env.reset_mode) for n, c in got.items()} == {
        "fastrlap": ("fastrlap", "recover"), "fastrlap_teleport": ("fastrlap-teleport", "teleport"),
        "default": ("fastrlap-droq-ens5", "recover")}
    assert _cfg().sac.net_arch == [32, 32] and _cfg().env.track == "generated:1"
    variants = {p.stem: load_config(RCCarConfig, p.stem, [], CONFIGS_DIR) for p in CONFIGS_DIR.glob("*.yaml")}
    assert variants["fastrlap_utd4"].sac.utd == 4 and variants["fastrlap_dr"].env.randomize
    assert variants["fastrlap_droq"].sac.critic_layer_norm and not variants["fastrlap_utd4"].sac.critic_layer_norm
    ens5 = variants["fastrlap_droq_ens5"]
    assert ens5.sac.n_critics == 5 and ens5.sac.critic_layer_norm and ens5.sac.utd == 4
    assert len({c.name for c in variants.values()}) == len(variants) - 1  # default is fastrlap_droq_ens5 itself


@pytest.mark.parametrize("override", ["practice.eval_every_min=0", "practice.checkpoint_every_min=0",
                                      "env.checkpoint_spacing_m=0"])
def test_config_rejects_zero_schedules(override):
    with pytest.raises(ConfigError):
        load_config(RCCarConfig, "fastrlap", [override], CONFIGS_DIR)


# -------------------------------------------------------------------------------------------- training


def test_training_writes_policy_summary_metrics_and_media(trained):
    run_dir, _, stdout = trained
    assert "demonstration:" in stdout and "generated:1" in stdout
    for rel in ("final/policy.zip", "final/policy.json", "final/checkpoints.npy", "checkpoints.npy",
                "demo/demo.json", "demo/demo.npz", "summary.json"):
        assert (run_dir / rel).is_file(), rel
    cps = np.load(run_dir / "final" / "checkpoints.npy")
    demo = Demo.load(run_dir / "demo")
    np.testing.assert_array_equal(cps, extract_checkpoints(demo.path, 2.5))
    assert cps.shape[1] == 2 and len(cps) == pytest.approx(80 / 2.5, abs=2)
    policy = json.loads((run_dir / "final" / "policy.json").read_text())
    assert policy["track"] == "generated:1" and policy["action"] == ["steer", "throttle"]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["practice_min"] >= 0.3 and summary["track"] == "generated:1"
    assert summary["reset_mode"] == "recover" and summary["baseline_lap_s"] is None
    assert summary["demo_lap_s"] == demo.lap_time_s
    evals = summary["evals"]
    # evaluations at 0, 0.15 and 0.3 simulated minutes, each deterministic and stochastic
    assert [e["practice_min"] >= m for e, m in zip(evals, (0.0, 0.15, 0.3), strict=True)] == [True] * 3
    assert all({"det", "stoch"} <= set(e) for e in evals)
    assert [e["step"] for e in evals] == sorted(e["step"] for e in evals)
    assert summary["final_det_crashes"] == evals[-1]["det"]["crashes"]

    records = [json.loads(line) for line in _lines(run_dir / "metrics.jsonl")]
    sim_min = [r["practice/sim_min"] for r in records if "practice/sim_min" in r]
    assert sim_min and max(sim_min) >= 0.3 and any("eval/det_crashes" in r for r in records)

    from shared.tracking.media import read_manifest

    media = read_manifest(run_dir)
    kinds = [m.kind for m in media if m.group == "final"]
    assert kinds.count("video") == 1 and kinds.count("image") >= 3
    for m in media:
        assert (run_dir / m.path).is_file() and (run_dir / m.path).stat().st_size > 0, m.path

    # the final checkpoint holds the whole practice state
    step, path = list_checkpoints(run_dir / "checkpoints")[-1]
    _, objects = load_checkpoint(path)
    practice = objects["trainer"]["practice"]
    assert objects["trainer"]["num_timesteps"] == step == evals[-1]["step"]
    assert practice["sim_time_s"] / 60 == pytest.approx(summary["practice_min"], abs=1e-3)
    assert practice["evals"] == evals


def test_evaluate_run_on_the_training_circuit(run_copy):
    metrics = evaluate_run(EvalRequest(run_copy, "train", (1,), None, {"laps": 1}))
    saved = json.loads((run_copy / "eval" / "generated-1.json").read_text())
    assert saved["track"] == "generated:1" and saved["laps"] == 1
    for mode in ("det", "stoch"):
        assert metrics[f"{mode}_laps"] == len(saved[mode]["laps"]) <= 1
        assert metrics[f"{mode}_crashes"] == saved[mode]["crashes"] >= sum(saved[mode]["lap_crashes"])
        # (this tiny policy may finish a lap only through teleports: no clean lap, no best_lap_s)
        if f"{mode}_best_lap_s" in metrics:
            assert metrics[f"{mode}_best_lap_s"] == saved[mode]["best_lap_s"]
    from shared.tracking.media import read_manifest

    evals = [m for m in read_manifest(run_copy) if m.group == "eval/generated-1"]
    assert len(evals) == 1 and (run_copy / evals[0].path).is_file()


def test_evaluate_run_rejects_bad_requests(trained):
    run_dir = trained[0]
    with pytest.raises(ValueError, match="not k"):
        evaluate_run(EvalRequest(run_dir, "train", (1,), None, {"laps": 1, "k": 3}))
    with pytest.raises(ValueError, match="'validation'"):
        evaluate_run(EvalRequest(run_dir, "validation", (1,), None, {}))


def _fake_policy_laps(seen: list, laps: list[float], lap_crashes: list[int]):
    """Stands in for practice.evaluate_policy_laps: notes the circuit it was given and reports `laps`."""

    def fake(model, make_env, n_laps, max_s, deterministic, seed=0):
        env = make_env()
        seen.append(env.track.name)
        env.close()
        clean = [t for t, c in zip(laps, lap_crashes, strict=True) if c == 0]
        log = DriveLog([0.0, 1.0, 2.0], [0.0, 0.1, 0.0], [1.0, 1.5, 2.0], [0.1, 0.2, 0.3], [[0.0, 0.0]] * 3,
                       list(laps), sum(lap_crashes), 0, lap_crashes=list(lap_crashes))
        return {"laps": list(laps), "lap_crashes": list(lap_crashes), "crashes": sum(lap_crashes),
                "clean_laps": len(clean), "best_lap_s": min(clean) if clean else None,
                "mean_lap_s": float(np.mean(clean)) if clean else None, "interventions": 0, "log": log}

    return fake


def test_evaluate_run_metrics_are_numbers_when_every_lap_crashed(run_copy, monkeypatch):
    seen: list = []
    monkeypatch.setattr("robot.rccar.practice.evaluate_policy_laps", _fake_policy_laps(seen, [30.0], [1]))
    metrics = evaluate_run(EvalRequest(run_copy, "train", (1,), None, {"laps": 1}))
    assert seen == ["generated:1", "generated:1"] and metrics["det_laps"] == 1
    assert all(isinstance(v, (int, float)) for v in metrics.values()), metrics


# ---------------------------------------------------------------------------------------------- resume


def test_resume_continues_from_the_last_checkpoint(resumed):
    old, run_dir = resumed["old"], resumed["dir"]
    old_step, old_path = old["checkpoints"][-1]
    assert f"({old_path.name})" in resumed["stdout"] and not resumed["warnings"]
    new = list_checkpoints(run_dir / "checkpoints")
    assert new and new[-1][0] > old_step
    _, objects = load_checkpoint(new[-1][1])
    assert objects["trainer"]["num_timesteps"] == new[-1][0]
    assert objects["trainer"]["practice"]["sim_time_s"] >= 0.4 * 60
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["practice_min"] >= 0.4
    assert summary["evals"][: len(old["summary"]["evals"])] == old["summary"]["evals"]  # the earlier ones stay
    assert summary["evals"][-1]["step"] == new[-1][0] and summary["evals"][-1]["practice_min"] >= 0.4
    assert summary["crashes"] >= old["summary"]["crashes"]
    assert summary["practice_laps"] >= old["summary"]["practice_laps"]
    from stable_baselines3 import SAC

    assert SAC.load(run_dir / "final" / "policy.zip", device="cpu").num_timesteps == new[-1][0]
    assert json.loads((run_dir / "run.json").read_text())["resumed"]


def test_resume_moves_a_corrupt_checkpoint_aside_and_uses_the_previous(resumed_corrupt):
    old, run_dir = resumed_corrupt["old"], resumed_corrupt["dir"]
    (prev_step, prev_path), (_, bad_path) = old["checkpoints"][-2:]
    [warning] = resumed_corrupt["warnings"]
    assert bad_path.name in str(warning.message) and "policy.safetensors" in str(warning.message)
    assert f"({prev_path.name})" in resumed_corrupt["stdout"]
    aside = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(f"{bad_path.name}.corrupt-")]
    assert len(aside) == 1
    new = list_checkpoints(run_dir / "checkpoints")
    assert new[-1][0] > prev_step and all(verify_checkpoint(p) is None for _, p in new)  # (a step may recur)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["practice_min"] >= 0.4
    kept = [e for e in old["summary"]["evals"] if e["step"] <= prev_step]
    assert kept and summary["evals"][: len(kept)] == kept
    assert (run_dir / "final" / "policy.zip").is_file()


def test_resume_forgets_metrics_and_media_past_the_checkpoint(resumed_corrupt):
    old, run_dir = resumed_corrupt["old"], resumed_corrupt["dir"]
    prev_step = old["checkpoints"][-2][0]
    stale_metrics = {line for line in old["metrics"] if json.loads(line)["step"] > prev_step}
    stale_media = {line for line in old["manifest"] if (json.loads(line)["step"] or 0) > prev_step}
    assert stale_metrics and stale_media
    assert not stale_metrics & set(_lines(run_dir / "metrics.jsonl"))
    assert not stale_media & set(_lines(run_dir / "media" / "manifest.jsonl"))


def test_final_checkpoint_holds_the_final_evaluation(tmp_path):
    # 0.1 minutes: checkpoints at 0, 0.05, 0.1 (the budget's end); evaluations at 0 and at the end only
    cfg = _cfg("env.length_m=55", "env.width_m=1.6", "env.smooth_m=0", "practice.minutes=0.1",
               "practice.eval_every_min=0.2", "practice.checkpoint_every_min=0.05", "practice.eval_max_s=2")
    with contextlib.redirect_stdout(io.StringIO()), Run.create("rccar", cfg.name, to_yaml(cfg), 0,
                                                               run_dir=tmp_path / "run") as run:
        train(cfg, run, False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    _, objects = load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1][1])
    assert len(summary["evals"]) == 2
    assert objects["trainer"]["practice"]["evals"] == summary["evals"]


# ------------------------------------------------------------------------------------- demo=FOLDER


def test_demo_folder_from_another_loop_is_refused(cli_demo, tmp_path):
    folder = cli_demo[1]
    assert (folder / "demo.json").is_file()
    cfg = _cfg(f"demo={folder}")  # env: generated:1 at 80 m, 1.4 m, smooth_m 2; the demo: 55 m, 1.6 m, 0
    with Run.create("rccar", cfg.name, to_yaml(cfg), 0, run_dir=tmp_path / "run") as run, \
            pytest.raises(ValueError) as err:
        train(cfg, run, False)
    msg = str(err.value)
    assert str(folder) in msg and "55.0 m" in msg and "80 m" in msg and "1.6 m" in msg and "1.4 m" in msg
    assert not (tmp_path / "run" / "demo").exists()


def test_demo_folder_from_another_track_is_refused(tmp_path):
    folder = _fake_demo(track="generated:2").save(tmp_path / "demo")
    cfg = _cfg(f"demo={folder}")
    with Run.create("rccar", cfg.name, to_yaml(cfg), 0, run_dir=tmp_path / "run") as run, \
            pytest.raises(ValueError, match="generated:2.*generated:1"):
        train(cfg, run, False)


def test_demo_folder_from_the_same_loop_is_used(cli_demo, tmp_path):
    from robot.rccar.track import _demo

    folder = cli_demo[1]
    cfg = _cfg(f"demo={folder}", "env.length_m=55", "env.width_m=1.6", "env.smooth_m=0")
    (tmp_path / "run").mkdir()
    demo = _demo(cfg, tmp_path / "run")
    original = Demo.load(folder)
    assert demo.lap_time_s == original.lap_time_s and (tmp_path / "run" / "demo" / "demo.json").is_file()
    np.testing.assert_array_equal(Demo.load(tmp_path / "run" / "demo").path, original.path)
    with pytest.raises(FileNotFoundError, match="not a demonstration folder"):
        _demo(_cfg(f"demo={tmp_path / 'nowhere'}"), tmp_path / "other")


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_demo_records_a_lap(cli_demo, demo55):
    result, folder = cli_demo
    assert result.exit_code == 0, result.output
    assert "demonstration:" in result.stdout and str(folder) in result.stdout
    demo = Demo.load(folder)
    assert (demo.track, demo.length_m, demo.width_m, demo.smooth_m) == ("generated:1", 55.0, 1.6, 0.0)
    assert demo.lap_time_s == demo55[0].lap_time_s  # the same driver on the same loop, deterministic


def test_cli_track_reports_an_infeasible_circuit():
    from typer.testing import CliRunner

    from robot.rccar.cli import app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = CliRunner().invoke(app, ["track", "Spielberg", "--smooth-m", "0"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["name"] == "Spielberg" and report["feasible"] is False
    assert report["problems"] and any("radius" in p for p in report["problems"])
    assert report["min_radius"] < 0.65 and report["length"] == pytest.approx(80.0)


@pytest.mark.parametrize("args,needle", [
    (["--track", "nosuch.csv"], "nosuch.csv"),
    (["--track", "Spielberg", "--smooth-m", "0"], "infeasible"),
])
def test_cli_demo_errors(tmp_path, args, needle):
    from typer.testing import CliRunner

    from robot.rccar.cli import app

    result = CliRunner().invoke(app, ["demo", *args, "--out", str(tmp_path / "X")])
    assert result.exit_code != 0 and "error:" in result.stderr and needle in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "X").exists()


def test_rlab_eval_rejects_a_bad_split(trained):
    from typer.testing import CliRunner

    from shared.cli import app

    result = CliRunner().invoke(app, ["eval", str(trained[0]), "--split", "validation"])
    assert result.exit_code == 1 and "error:" in result.stderr and "'validation'" in result.stderr


def test_rlab_eval_drives_the_training_circuit(run_copy, monkeypatch):
    from typer.testing import CliRunner

    from shared.cli import app

    seen: list = []
    monkeypatch.setattr("robot.rccar.practice.evaluate_policy_laps", _fake_policy_laps(seen, [21.5], [0]))
    result = CliRunner().invoke(app, ["eval", str(run_copy), "--split", "train", "--laps", "1"])
    assert result.exit_code == 0, result.output
    assert seen == ["generated:1", "generated:1"] and "det_best_lap_s: 21.5000" in result.stdout
