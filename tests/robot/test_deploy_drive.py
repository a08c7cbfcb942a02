"""`rlab drive` (robot.cli_drive) with the sim vehicle (robot.rccar.hil.SimVehicle) and a serial one, and
`rlab logs to-minari` (robot.cli_logs).

A tiny SAC trained 100 steps on generated:1 (the 55 m loop) is saved as a run folder and exported to ONNX
(as in test_deploy_export.py). It then drives the pybullet car through the CLI for 3 s at 20 Hz (the drive
log, its summary, the car moving); the same policy against a ``ReferenceController`` on a pty pair is
refused at start-up, naming the observation fields a real car cannot provide (rays, checkpoints, v_lat);
the sim drive's log becomes a Minari dataset that ``minari.load_dataset`` reads back. Rates and
durations are small and timing assertions loose: the CI machine's cores are busy.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pybullet")
pytest.importorskip("stable_baselines3")
pytest.importorskip("onnxruntime")
minari = pytest.importorskip("minari")

import typer  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from robot.cli_drive import app as drive_app  # noqa: E402
from robot.cli_logs import LogError, episodes_from_log, read_drive_log, to_minari  # noqa: E402
from robot.cli_logs import app as logs_app  # noqa: E402
from robot.deploy.controller import PtyMasterSerial, ReferenceController  # noqa: E402
from robot.deploy.drivelog import read_log  # noqa: E402
from robot.deploy.parts import ObservationBuilder, PolicyMetadata, VehicleError  # noqa: E402
from robot.rccar.hil import SimVehicle, state_layout_names  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*observation space m.* value is -?infinity"),
]

ENV_KW = {"track": "generated:1", "length_m": 55.0, "width_m": 1.6, "smooth_m": 0.0}
RATE_HZ, DURATION_S = 20.0, 3.0
DATASET = "rlab/car-logs-v0"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(run folder laid out as robot.rccar.track.train leaves it, car.onnx); the metadata is car.onnx.json."""
    from stable_baselines3 import SAC

    from robot.deploy.export import export_onnx
    from robot.rccar.track import EnvConfig
    from sim.rccar import RCCarEnv

    env = RCCarEnv(**ENV_KW, reset_mode="teleport")
    model = SAC("MlpPolicy", env, learning_starts=20, batch_size=32, buffer_size=1000,
                policy_kwargs={"net_arch": [32, 32]}, seed=0, device="cpu", verbose=0)
    model.learn(100)
    checkpoints = env.checkpoints[:, :2].copy() + np.array([0.01, 0.0])  # tell them from the centre line's
    env.close()
    run_dir = tmp_path_factory.mktemp("runs") / "rccar" / "tiny-drive"
    final = run_dir / "final"
    final.mkdir(parents=True)
    model.save(final / "policy.zip")
    cfg = EnvConfig(**ENV_KW, reset_mode="teleport")
    meta = {"track": cfg.track, "env": cfg.__dict__, "observation": "state", "action": ["steer", "throttle"],
            "action_low": [-1, -1], "action_high": [1, 1], "control_hz": cfg.control_hz, "run": str(run_dir)}
    (final / "policy.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    np.save(final / "checkpoints.npy", checkpoints)
    onnx_path, _ = export_onnx(run_dir, tmp_path_factory.mktemp("export") / "car.onnx")
    return run_dir, onnx_path


def _rlab() -> typer.Typer:
    """A root app that registers the commands the way shared.cli does (``add_typer(app, name=...)``)."""
    root = typer.Typer()

    @root.command()
    def version() -> None:  # a second command, so the root is a group as `rlab` is
        typer.echo("0")

    root.add_typer(drive_app, name="drive")
    root.add_typer(logs_app, name="logs")
    return root


def _invoke(*args: str):
    return CliRunner().invoke(_rlab(), list(args))


@pytest.fixture(scope="module")
def sim_drive(exported, tmp_path_factory):
    """`rlab drive --vehicle sim` for 3 s at 20 Hz: (CLI result, log folder)."""
    _, onnx_path = exported
    log_dir = tmp_path_factory.mktemp("drives") / "sim"
    res = _invoke("drive", "--policy", str(onnx_path), "--vehicle", "sim", "--rate-hz", str(RATE_HZ),
                  "--duration-s", str(DURATION_S), "--log-dir", str(log_dir), "--no-estop-key")
    return res, log_dir


# ------------------------------------------------------------------------------------------ SimVehicle


def test_sim_vehicle_provides_the_exported_layout_and_maps_commands(exported):
    from robot.deploy.export import observation_layout

    run_dir, onnx_path = exported
    meta = PolicyMetadata.load(onnx_path)
    assert list(meta.observation_names) == state_layout_names() == [e["name"] for e in observation_layout(3, 9)]
    car = SimVehicle.from_metadata(onnx_path)
    sources = ObservationBuilder(meta).check(car.provides)
    assert {"wheel_speed", "gyro", "accel", "laps", "lap_time_s", "crash", "x", "y"} <= car.provides
    # every entry is the env's own value (applied_* the runtime's, as on the car)
    assert [(s.key, s.index, s.scale) for s in sources[:7]] == [
        ("v_fwd", None, 1.0), ("v_lat", None, 1.0), ("yaw_rate", None, 1.0), ("acc_x_div10", None, 1.0),
        ("acc_y_div10", None, 1.0), ("applied_action", 0, 1.0), ("applied_action", 1, 1.0)]
    assert all(s.key == s.name for s in sources[7:])
    # [steer_rad, throttle_fraction] -> the env's normalised action (max_steer 0.5, min_throttle 0)
    np.testing.assert_allclose(car.to_action([0.5, 1.0]), [1.0, 1.0])
    np.testing.assert_allclose(car.to_action([-0.25, 0.0]), [-0.5, -1.0])
    np.testing.assert_allclose(car.to_action([0.0, 0.3]), [0.0, -0.4])
    np.testing.assert_allclose(car.to_action([9.0, 7.0]), [1.0, 1.0])
    with pytest.raises(VehicleError, match="non-finite"):
        car.to_action([np.nan, 0.0])
    with pytest.raises(VehicleError, match="not started"):
        car.read()
    car.start()
    try:
        assert car.checkpoints_source == str(run_dir / "final" / "checkpoints.npy")
        np.testing.assert_allclose(car.env.unwrapped.checkpoints[:, :2], np.load(car.checkpoints_source))
        first = car.read()
        for _ in range(15):
            car.write([0.0, 0.3])
        after = car.read()
        assert after["sim_time_s"] == pytest.approx(first["sim_time_s"] + 15 / 10.0)  # lock-step: 1/control_hz
        assert np.hypot(after["x"] - first["x"], after["y"] - first["y"]) > 0.3
        assert after["v_fwd"] > 0.2 and after["wheel_speed"] > 0.2
        assert after["gyro"][2] == after["yaw_rate"] and after["accel"][0] == pytest.approx(10 * after["acc_x_div10"])
        obs = car.env.unwrapped._obs()
        np.testing.assert_allclose([after[n] for n in meta.observation_names], obs, atol=1e-6)
    finally:
        car.close()
    assert car.stats()["sim_steps"] == 15
    car.close()  # idempotent
    # another circuit: the run's checkpoints do not apply there
    other = SimVehicle.from_metadata(onnx_path, track="generated:2")
    other.start()
    try:
        assert other.checkpoints_source.startswith("centre line")
        assert other.stats()["track"] == "generated:2"
    finally:
        other.close()


def test_sim_vehicle_refuses_a_layout_that_is_not_the_env_state():
    with pytest.raises(VehicleError, match="not RCCarEnv's state vector"):
        SimVehicle(ENV_KW, layout=["v_fwd", "yaw_rate"])


# ------------------------------------------------------------------------------------------ rlab drive


def test_drive_sim_through_the_cli(sim_drive):
    res, log_dir = sim_drive
    assert res.exit_code == 0, res.output
    summary = json.loads((log_dir / "summary.json").read_text())
    assert summary["exit_reason"] == "duration" and summary["error"] is None and summary["neutral_sent"]
    lines = read_log(log_dir)
    ticks = [r for r in lines if r["kind"] == "tick"]
    assert len(ticks) == summary["ticks"] >= 0.5 * RATE_HZ * DURATION_S
    assert [t["tick"] for t in ticks] == list(range(len(ticks)))
    assert len((log_dir / "drive.jsonl").read_text().splitlines()) == len(lines)
    for key in ("period_s", "jitter_s", "policy_latency_s", "e2e_latency_s"):
        assert summary[key]["p50"] is not None and summary[key]["p99"] is not None
    assert summary["period_s"]["p50"] == pytest.approx(1 / RATE_HZ, rel=0.5)
    # the sim car moved, in lock-step with the ticks
    xy = np.array([[t["readings"]["x"], t["readings"]["y"]] for t in ticks])
    assert np.max(np.hypot(*(xy - xy[0]).T)) > 0.1
    vehicle = summary["vehicle"]
    assert vehicle["sim_steps"] == len(ticks) and vehicle["track"] == "generated:1"
    # simulated time = ticks / control_hz, plus 12 physics steps (0.05 s) settling the car after each teleport
    teleports = vehicle["crashes"] + vehicle["stuck_resets"]
    assert vehicle["sim_time_s"] == pytest.approx(len(ticks) / 10.0 + 0.05 * teleports, abs=1e-3)
    assert all(t["command"][1] <= 0.3 + 1e-9 for t in ticks)  # the default throttle cap
    assert len(ticks[0]["observation"]) == 7 + 2 * 3 + 9
    # the summary as printed
    for text in ("ticks: ", "period: p50", "jitter: p50", "policy latency: p50", "end-to-end latency: p50",
                 "safety events: ", "laps: ", "exit: duration", f"log: {log_dir}"):
        assert text in res.output, res.output


def test_drive_usage_errors(exported, tmp_path):
    _, onnx_path = exported
    res = _invoke("drive", "--policy", str(tmp_path / "none.onnx"), "--vehicle", "sim")
    assert res.exit_code == 2 and "none.onnx: no such file" in res.output
    res = _invoke("drive", "--policy", str(onnx_path), "--vehicle", "lorry", "--log-dir", str(tmp_path / "l"))
    assert res.exit_code == 2 and "unknown vehicle 'lorry'" in res.output and "serial:PORT" in res.output
    res = _invoke("drive", "--policy", str(onnx_path), "--vehicle", "serial:/dev/null", "--track", "generated:2")
    assert res.exit_code == 2 and "--track applies to --vehicle sim only" in res.output
    res = _invoke("drive", "--policy", str(onnx_path), "--vehicle", "sim", "--throttle-cap", "2")
    assert res.exit_code == 2 and "throttle_cap" in res.output



def test_drive_serial_refuses_a_policy_needing_sim_only_fields(exported, tmp_path):
    """The sim-trained state policy observes rays, checkpoints and v_lat: no real car provides them."""
    _, onnx_path = exported
    master_fd, slave_fd = os.openpty()
    port = PtyMasterSerial(master_fd, baudrate=115200, timeout=0)
    ctrl = ReferenceController(port)
    ctrl.start()
    try:
        res = _invoke("drive", "--policy", str(onnx_path), "--vehicle", f"serial:{os.ttyname(slave_fd)}",
                      "--duration-s", "2", "--log-dir", str(tmp_path / "serial"), "--no-estop-key")
    finally:
        ctrl.stop()
        port.close()
        os.close(slave_fd)
    assert res.exit_code == 1, res.output
    missing = ["v_lat", *[f"checkpoint{k}_{a}_div5" for k in range(3) for a in "xy"], *[f"ray{k}" for k in range(9)]]
    assert f"needs {len(missing)} field(s) the vehicle cannot provide: {', '.join(missing)}" in res.output
    assert "part 'observation' failed in start()" in res.output
    assert all(throttle == 0.0 for _, _, throttle in ctrl.actuator.history)  # nothing ever drove
    summary = json.loads((tmp_path / "serial" / "summary.json").read_text())
    assert summary["ticks"] == 0 and summary["exit_reason"] == "error" and "ray8" in summary["error"]
    assert f"log: {tmp_path / 'serial'}" in res.output


# ------------------------------------------------------------------------------------------ rlab logs


def test_logs_to_minari(sim_drive, tmp_path, monkeypatch):
    _, log_dir = sim_drive
    ticks = [r for r in read_log(log_dir) if r["kind"] == "tick"]
    out = tmp_path / "datasets" / "car-logs"
    monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # nothing may go to ~/.minari
    res = _invoke("logs", "to-minari", str(log_dir), "--out", str(out))
    assert res.exit_code == 0, res.output
    assert f"{len(ticks) - 1} steps" in res.output and "MINARI_DATASETS_PATH" in res.output
    assert "MINARI_DATASETS_PATH" not in os.environ and not (tmp_path / "home" / ".minari").exists()
    sidecar = json.loads((out / DATASET / "rlab-drive-logs.json").read_text())
    assert sidecar["observation_names"] == state_layout_names() and sidecar["data_format"] == "arrow"

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(out))
    ds = minari.load_dataset(DATASET)
    assert ds.total_steps == len(ticks) - 1
    assert ds.observation_space.shape == (len(ticks[0]["observation"]),)
    assert ds.action_space.shape == (2,) and ds.action_space.contains(np.zeros(2, np.float32))
    episodes = list(ds.iterate_episodes())
    assert len(episodes) == ds.total_episodes == 1 + sum(bool(t["readings"]["crash"]) for t in ticks[1:])
    assert sum(len(e.actions) for e in episodes) == len(ticks) - 1
    first = episodes[0]
    assert first.actions.shape == (len(first.actions), 2) and first.observations.shape[0] == len(first.actions) + 1
    np.testing.assert_allclose(first.actions, [t["command"] for t in ticks[:len(first.actions)]], atol=1e-6)
    np.testing.assert_allclose(first.observations[0], ticks[0]["observation"], atol=1e-6)
    np.testing.assert_allclose(first.rewards, [t["readings"]["reward"] for t in ticks[1:len(first.actions) + 1]],
                               atol=1e-6)
    assert episodes[-1].truncations[-1] and not episodes[-1].terminations[-1]

    again = _invoke("logs", "to-minari", str(log_dir), "--out", str(out))
    assert again.exit_code == 1 and "exists" in again.output and "--overwrite" in again.output


def _write_log(folder: Path, records: list[dict], tail: str = "\n") -> Path:
    folder.mkdir(parents=True)
    (folder / "drive.jsonl").write_text("\n".join(json.dumps(r) for r in records) + tail)
    return folder


def _tick(i: int, crash: float = 0.0) -> dict:
    return {"kind": "tick", "tick": i, "t": i * 0.1, "observation": [float(i), 1.0, None], "command": [0.1, 0.2],
            "readings": {"crash": crash, "reward": 1.0}}


def test_logs_split_at_crashes_and_tolerate_a_cut_short_last_line(tmp_path):
    records = [{"kind": "event", "event": "start"}, *[_tick(i, crash=1.0 if i == 3 else 0.0) for i in range(6)]]
    log = read_drive_log(_write_log(tmp_path / "a", records, tail='\n{"kind": "tick", "ti'))
    assert len(log.ticks) == 6 and "line 8: skipped a last line cut short" in log.warnings[0]
    episodes, info = episodes_from_log(log)
    assert [len(e.rewards) for e in episodes] == [3, 2] and info["crashes"] == 1 and info["steps"] == 5
    assert episodes[0].terminations[-1] and not episodes[0].truncations[-1]
    assert episodes[1].truncations[-1] and not episodes[1].terminations[-1]
    assert np.isnan(episodes[0].observations[0][2])  # null (non-finite) -> NaN
    assert info["reward"].startswith("readings.reward")
    # without a summary.json naming the policy metadata: generic names, an unbounded action space
    result = to_minari([tmp_path / "a"], tmp_path / "ds", "test/synthetic-v1")
    assert (result["episodes"], result["steps"]) == (2, 5) and result["layout_source"] == "none (unbounded)"
    sidecar = json.loads((result["path"] / "rlab-drive-logs.json").read_text())
    assert sidecar["observation_names"] == ["obs0", "obs1", "obs2"] and sidecar["policy_command_low"] == [None, None]
    ds = minari.MinariDataset(result["path"] / "data")
    assert [e.terminations[-1] for e in ds.iterate_episodes()] == [True, False]


def test_logs_errors_name_the_file_and_line(sim_drive, tmp_path):
    _, log_dir = sim_drive
    lines = (log_dir / "drive.jsonl").read_text().splitlines()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "drive.jsonl").write_text("\n".join(lines[:4] + ['{"kind": "tick", "tick": 3, oops'] + lines[5:]) + "\n")
    out = str(tmp_path / "ds")
    res = _invoke("logs", "to-minari", str(corrupt), "--out", out)
    assert res.exit_code == 1
    assert f"{corrupt / 'drive.jsonl'}, line 5: not valid JSON" in res.output and "corrupt" in res.output

    res = _invoke("logs", "to-minari", str(tmp_path / "nowhere"), "--out", out)
    assert res.exit_code == 1 and "nowhere is not a drive log folder (no drive.jsonl)" in res.output
    empty = _write_log(tmp_path / "empty", [], tail="")
    res = _invoke("logs", "to-minari", str(empty), "--out", out)
    assert res.exit_code == 1 and f"{empty / 'drive.jsonl'}: empty" in res.output
    failed = _write_log(tmp_path / "failed", [{"kind": "event", "event": "start"},
                                              {"kind": "event", "event": "stop", "error": "part 'observation' failed"}])
    res = _invoke("logs", "to-minari", str(failed), "--out", out)
    assert res.exit_code == 1 and "0 tick record(s)" in res.output and "part 'observation' failed" in res.output
    bad_tick = _write_log(tmp_path / "bad", [_tick(0), {**_tick(1), "command": [0.1]}])
    with pytest.raises(LogError, match=r"line 2: command must be a list of 2 numbers"):
        read_drive_log(bad_tick)
    res = _invoke("logs", "to-minari", str(log_dir), "--out", out, "--dataset-id", "../escape-v0")
    assert res.exit_code == 1 and "--dataset-id '../escape-v0': must be (namespace/)name-vN" in res.output
    if importlib.util.find_spec("h5py") is None:  # the lab does not install it
        res = _invoke("logs", "to-minari", str(log_dir), "--out", out, "--data-format", "hdf5")
        assert res.exit_code == 1 and "--data-format hdf5 needs h5py" in res.output
    assert not (tmp_path / "ds" / DATASET).exists()
