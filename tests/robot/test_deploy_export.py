"""robot.deploy.export and `rlab export`: a tiny SAC trained on the real RCCarEnv (generated:1, the 55 m loop)
is exported to ONNX and run with onnxruntime.

Checked: the ``action`` output is ``model.predict(obs, deterministic=True)`` and ``command`` its mapping to
physical units (RCCarEnv's: steer x max_steer, throttle min_throttle..1), within 1e-5 on 256 random and some
real observations; extreme and non-finite inputs, and normalisation statistics that blow inputs up, still
give commands inside the limits; the clipping is in the graph (a stub actor that overshoots); the metadata
(layout of n_obs entries, sha256, limits); refusal of encoder runs; the CLI's errors and its happy path.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pybullet")
pytest.importorskip("stable_baselines3")
ort = pytest.importorskip("onnxruntime")

import torch  # noqa: E402
import typer  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from robot.deploy.cli_export import app as export_app  # noqa: E402
from robot.deploy.export import (  # noqa: E402
    ExportError,
    ObsNormalization,
    PolicyGraph,
    export_graph,
    export_onnx,
    metadata_path,
)

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*observation space m.* value is -?infinity"),
]

ENV_KW = {"track": "generated:1", "length_m": 55.0, "width_m": 1.6, "smooth_m": 0.0}
MAX_STEER, MIN_THROTTLE = 0.5, 0.0  # RCCarEnv's defaults (the run's config does not set them)
TOL = 1e-5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder laid out as robot.rccar.track.train leaves it, the SAC, real observations)."""
    from stable_baselines3 import SAC

    from robot.rccar.track import EnvConfig
    from sim.rccar import RCCarEnv

    env = RCCarEnv(**ENV_KW, reset_mode="teleport")
    model = SAC("MlpPolicy", env, learning_starts=20, batch_size=32, buffer_size=1000,
                policy_kwargs={"net_arch": [32, 32]}, seed=0, device="cpu", verbose=0)
    model.learn(100)
    obs, _ = env.reset(seed=1)
    real = [obs]
    for _ in range(30):
        obs, _, terminated, truncated, _ = env.step(model.predict(obs, deterministic=True)[0])
        real.append(obs)
        if terminated or truncated:
            obs, _ = env.reset()
    checkpoints = env.checkpoints[:, :2].copy()
    env.close()

    run_dir = tmp_path_factory.mktemp("runs") / "rccar" / "tiny-export"
    final = run_dir / "final"
    final.mkdir(parents=True)
    model.save(final / "policy.zip")
    cfg = EnvConfig(**ENV_KW, reset_mode="teleport")
    meta = {"track": cfg.track, "env": cfg.__dict__, "observation": "state", "action": ["steer", "throttle"],
            "action_low": [-1, -1], "action_high": [1, 1], "control_hz": cfg.control_hz, "run": str(run_dir)}
    (final / "policy.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    np.save(final / "checkpoints.npy", checkpoints)
    (run_dir / "config.yaml").write_text("name: tiny-export\nenv:\n  track: generated:1\n  length_m: 55.0\n")
    return run_dir, model, np.asarray(real, np.float32)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    run_dir, _, _ = trained
    return export_onnx(run_dir, tmp_path_factory.mktemp("export") / "car.onnx")


def _run(onnx_path: Path, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    command, action = session.run(["command", "action"], {"observation": np.asarray(obs, np.float32)})
    return command, action


def _command(action: np.ndarray) -> np.ndarray:
    a = np.clip(action, -1.0, 1.0)
    steer = np.clip(a[:, 0] * MAX_STEER, -MAX_STEER, MAX_STEER)
    throttle = np.clip(MIN_THROTTLE + (a[:, 1] + 1.0) / 2.0 * (1.0 - MIN_THROTTLE), MIN_THROTTLE, 1.0)
    return np.column_stack([steer, throttle])


def _within_limits(command: np.ndarray, action: np.ndarray) -> None:
    assert np.isfinite(command).all() and np.isfinite(action).all()
    assert (np.abs(action) <= 1.0).all()
    assert (np.abs(command[:, 0]) <= MAX_STEER + 1e-7).all()
    assert ((command[:, 1] >= MIN_THROTTLE) & (command[:, 1] <= 1.0)).all()


def test_onnx_matches_deterministic_predict(trained, exported):
    _, model, real = trained
    onnx_path, _ = exported
    rng = np.random.default_rng(0)
    obs = np.concatenate([rng.normal(0.0, 2.0, size=(256, real.shape[1])).astype(np.float32), real])
    command, action = _run(onnx_path, obs)
    expected = model.predict(obs, deterministic=True)[0]
    assert action.shape == command.shape == (len(obs), 2)
    np.testing.assert_allclose(action, expected, atol=TOL, rtol=0)
    np.testing.assert_allclose(command, _command(expected), atol=TOL, rtol=0)
    # the batch axis is dynamic: one observation at a time, as on the vehicle
    one_command, one_action = _run(onnx_path, obs[:1])
    np.testing.assert_allclose(one_action[0], expected[0], atol=TOL, rtol=0)
    np.testing.assert_allclose(one_command[0], _command(expected[:1])[0], atol=TOL, rtol=0)


def test_extreme_and_non_finite_inputs_give_commands_within_limits(trained, exported):
    _, _, real = trained
    onnx_path, _ = exported
    rng = np.random.default_rng(1)
    n_obs = real.shape[1]
    huge = rng.choice([-1e6, 1e6, -3e38, 3e38], size=(64, n_obs)).astype(np.float32)
    command, action = _run(onnx_path, huge)
    _within_limits(command, action)
    bad = np.tile(real[:1], (3, 1))
    bad[0, 0], bad[1, 5], bad[2, -1] = np.nan, np.inf, -np.inf
    command, action = _run(onnx_path, bad)
    _within_limits(command, action)
    np.testing.assert_array_equal(action, np.tile([0.0, -1.0], (3, 1)))  # RCCarEnv's non-finite fallback
    np.testing.assert_array_equal(command, np.tile([0.0, MIN_THROTTLE], (3, 1)))


def test_normalisation_statistics_are_in_the_graph(trained, tmp_path):
    run_dir, model, real = trained
    n_obs = real.shape[1]
    norm = ObsNormalization(np.full(n_obs, 0.5, np.float32), np.full(n_obs, 1e-3, np.float32), clip=10.0)
    onnx_path, meta_path = export_onnx(run_dir, tmp_path / "norm.onnx", normalization=norm)
    rng = np.random.default_rng(2)
    obs = rng.normal(0.0, 50.0, size=(128, n_obs)).astype(np.float32)  # mostly far outside the clip range
    command, action = _run(onnx_path, obs)
    _within_limits(command, action)
    expected = model.predict(np.clip((obs - norm.mean) / norm.std, -10.0, 10.0), deterministic=True)[0]
    np.testing.assert_allclose(action, expected, atol=TOL, rtol=0)
    meta = json.loads(meta_path.read_text())["observation"]["normalization"]
    assert meta["mean"] == pytest.approx([0.5] * n_obs) and meta["clip"] == 10.0
    with pytest.raises(ExportError, match="std"):
        export_onnx(run_dir, tmp_path / "bad.onnx", normalization=ObsNormalization(norm.mean, np.zeros(n_obs)))


class _OvershootingActor(torch.nn.Module):
    """get_action_dist_params like SB3's actor, with a huge mean: tanh saturates at +-1, and the wide action
    space below unscales that to +-3 -- only the graph's clipping brings it back."""

    def get_action_dist_params(self, obs: torch.Tensor):
        return obs[:, :2] * 100.0, None, {}


def test_graph_clips_actions_and_commands(tmp_path):
    graph = PolicyGraph(_OvershootingActor(), ObsNormalization.identity(4), np.array([-3.0, -3.0]),
                        np.array([3.0, 3.0]), max_steer=0.4, min_throttle=-0.2).eval()
    onnx_path = export_graph(graph, 4, tmp_path / "stub.onnx")
    obs = np.array([[1, 1, 0, 0], [-1, -1, 0, 0], [0, 0, 0, 0], [1, -1, 0, 0]], np.float32)
    command, action = _run(onnx_path, obs)
    np.testing.assert_allclose(action, [[1, 1], [-1, -1], [0, 0], [1, -1]], atol=1e-6)
    np.testing.assert_allclose(command, [[0.4, 1.0], [-0.4, -0.2], [0.0, 0.4], [0.4, -0.2]], atol=1e-6)


def test_metadata(trained, exported):
    run_dir, model, real = trained
    onnx_path, meta_path = exported
    assert meta_path == metadata_path(onnx_path) == onnx_path.with_name("car.onnx.json")
    meta = json.loads(meta_path.read_text())
    n_obs = real.shape[1]
    assert meta["format_version"] == 1
    assert meta["onnx"]["sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert meta["onnx"]["inputs"] == [{"name": "observation", "dtype": "float32", "shape": ["batch", n_obs]}]
    layout = meta["observation"]["layout"]
    assert meta["observation"]["size"] == n_obs == len(layout) == 7 + 2 * 3 + 9
    assert [e["index"] for e in layout] == list(range(n_obs))
    assert len({e["name"] for e in layout}) == n_obs
    names = [e["name"] for e in layout]
    assert names[:7] == ["v_fwd", "v_lat", "yaw_rate", "acc_x_div10", "acc_y_div10", "applied_steer",
                         "applied_throttle"]
    assert names[7:9] == ["checkpoint0_x_div5", "checkpoint0_y_div5"] and names[-1] == "ray8"
    assert layout[-1]["angle_rad"] == pytest.approx(math.pi / 2)
    assert meta["observation"]["normalization"]["mean"] == [0.0] * n_obs
    assert meta["observation"]["normalization"]["std"] == [1.0] * n_obs
    assert meta["command"]["names"] == ["steer_rad", "throttle_fraction"]
    assert meta["command"]["low"] == [-MAX_STEER, MIN_THROTTLE] and meta["command"]["high"] == [MAX_STEER, 1.0]
    assert meta["action"]["names"] == ["steer", "throttle"] and meta["action"]["max_delta_per_step"] == [0.5, 0.3]
    assert meta["control_hz"] == 10.0
    assert meta["run_dir"] == str(run_dir.resolve())
    assert meta["env"]["track"] == "generated:1" and meta["env"]["length_m"] == 55.0
    assert meta["policy"]["sha256"] == hashlib.sha256((run_dir / "final" / "policy.zip").read_bytes()).hexdigest()
    assert meta["policy"]["num_timesteps"] == model.num_timesteps
    assert meta["parity"]["max_abs_diff_action"] <= TOL
    assert set(meta["versions"]) >= {"torch", "stable_baselines3", "onnx"}
    assert meta["exported_at"].endswith("+00:00")


def test_encoder_runs_are_refused(trained, tmp_path):
    run_dir, _, _ = trained
    copy = tmp_path / "encoder-run"
    shutil.copytree(run_dir, copy)
    policy_json = copy / "final" / "policy.json"
    meta = json.loads(policy_json.read_text())
    meta["env"].update(image_size=64, encoder=str(copy / "encoder"))
    policy_json.write_text(json.dumps(meta))
    with pytest.raises(ExportError, match="neither .* nor that folder exists"):
        export_onnx(copy, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


# ------------------------------------------------------------------------------------------ CLI


def _rlab() -> typer.Typer:
    """A root app that registers the export app the way shared.cli does (``add_typer(app, name="export")``)."""
    root = typer.Typer()

    @root.command()
    def version() -> None:  # a second command, so the root is a group as `rlab` is
        typer.echo("0")

    root.add_typer(export_app, name="export")
    return root


def _invoke(*args: str):
    return CliRunner().invoke(_rlab(), ["export", *args])


def test_cli_errors(trained, tmp_path):
    missing = tmp_path / "no-such-run"
    res = _invoke(str(missing), "--format", "onnx", "--runs-root", str(tmp_path))
    assert res.exit_code == 2 and "no-such-run" in res.output and "Traceback" not in res.output
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    res = _invoke(str(unfinished), "--format", "onnx", "--out", str(tmp_path / "u.onnx"))
    assert res.exit_code == 1
    assert f"{unfinished} has no final/policy.zip" in res.output
    run_dir, _, _ = trained
    res = _invoke(str(run_dir), "--format", "tflite", "--out", str(tmp_path / "t.onnx"))
    assert res.exit_code == 2 and "--format must be one of onnx" in res.output and "'tflite'" in res.output
    assert not (tmp_path / "t.onnx").exists()


def test_cli_exports(trained, tmp_path):
    run_dir, model, real = trained
    out = tmp_path / "deploy" / "car.onnx"
    res = _invoke(str(run_dir), "--format", "onnx", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert f"onnx: {out}" in res.output and f"metadata: {out}.json" in res.output
    _, action = _run(out, real)
    np.testing.assert_allclose(action, model.predict(real, deterministic=True)[0], atol=TOL, rtol=0)
    assert json.loads(Path(f"{out}.json").read_text())["onnx"]["file"] == "car.onnx"
