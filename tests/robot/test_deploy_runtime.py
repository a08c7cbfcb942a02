"""robot.deploy.runtime: the drive loop, its parts, the safety layer, SerialVehicle and the drive log.

The end-to-end tests run the runtime against ``ReferenceController`` over a real pseudo-terminal pair:
the controller (real clock, its own thread) holds the master end through ``PtyMasterSerial`` (see
tests/robot/test_deploy_protocol.py), and ``SerialVehicle`` opens the slave end *by name* with
``serial.serial_for_url``, as it opens /dev/ttyUSB0 on the car. Faults are injected "on the line"
through extra file descriptors of the same pty (a second open of the slave writes toward the
controller, a dup of the master writes toward the runtime). Policies are tiny ONNX graphs built with
onnx.helper (MatMul + Add + Tanh -> ``action``, x scale -> ``command``) with metadata in the exporter's
format. Rates are 50 Hz for 1-2 s; timing assertions are loose (the CI machine's cores are busy).
"""

from __future__ import annotations

import collections
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from robot.deploy.controller import PtyMasterSerial, ReferenceController
from robot.deploy.drivelog import read_log, summarize_log
from robot.deploy.parts import (
    Camera,
    CameraError,
    ObservationLayoutError,
    OnnxPolicy,
    PartError,
    PolicyMetadata,
    VehicleLinkError,
)
from robot.deploy.protocol import (
    Command,
    ControllerState,
    Telemetry,
    encode,
)
from robot.deploy.runtime import build, drive
from robot.deploy.safety import KeyEstop, SafetyConfig
from robot.deploy.vehicles import SerialVehicle, Vehicle, vehicle_from_spec

RATE = 50.0
OBS = ["v_fwd", "yaw_rate", "acc_x_div10", "applied_steer", "applied_throttle", "battery_v"]
EPS = 1e-3


# ------------------------------------------------------------------------------------------ helpers


def make_policy(tmp_path: Path, *, names=OBS, bias=(5.0, 5.0), scale=(0.8, 1.0), weights=None,
                control_hz: float = RATE, file: str = "car.onnx") -> Path:
    """A tiny ONNX policy: action = tanh(obs @ W + b), command = action * scale; metadata beside it in the
    exporter's format (command limits steer +-0.5 rad, throttle -1..1; max_delta 0.5/0.3 per step)."""
    n = len(names)
    w = np.zeros((n, 2), np.float32) if weights is None else np.asarray(weights, np.float32)
    nodes = [helper.make_node("MatMul", ["observation", "W"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["pre"]),
             helper.make_node("Tanh", ["pre"], ["action"]),
             helper.make_node("Mul", ["action", "scale"], ["command"])]
    inits = [helper.make_tensor("W", TensorProto.FLOAT, [n, 2], w.ravel().tolist()),
             helper.make_tensor("b", TensorProto.FLOAT, [2], [float(v) for v in bias]),
             helper.make_tensor("scale", TensorProto.FLOAT, [2], [float(v) for v in scale])]
    graph = helper.make_graph(
        nodes, "tiny_policy", [helper.make_tensor_value_info("observation", TensorProto.FLOAT, ["batch", n])],
        [helper.make_tensor_value_info("command", TensorProto.FLOAT, ["batch", 2]),
         helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / file
    onnx.save(model, str(path))
    meta = {
        "format": "rlab-onnx-policy", "format_version": 1,
        "observation": {"size": n, "layout": [{"index": i, "name": nm, "unit": "", "description": ""}
                                              for i, nm in enumerate(names)]},
        "action": {"names": ["steer", "throttle"], "low": [-1.0, -1.0], "high": [1.0, 1.0],
                   "max_delta_per_step": [0.5, 0.3]},
        "command": {"names": ["steer_rad", "throttle_fraction"], "units": ["rad", "fraction of top wheel speed"],
                    "low": [-0.5, -1.0], "high": [0.5, 1.0], "max_steer_rad": 0.5, "min_throttle": -1.0},
        "control_hz": control_hz,
    }
    path.with_name(path.name + ".json").write_text(json.dumps(meta))
    return path



class Bench:
    """ReferenceController on the pty master (running), the slave's name for SerialVehicle, and two
    injection fds: ``to_ctrl`` (bytes arrive at the controller) and ``to_host`` (bytes arrive at the runtime)."""

    def __init__(self):
        self.master_fd, self.slave_fd = os.openpty()
        self.slave_name = os.ttyname(self.slave_fd)
        self.ctrl_port = PtyMasterSerial(self.master_fd, baudrate=115200, timeout=0)
        self.ctrl = ReferenceController(self.ctrl_port)
        self.to_ctrl = os.open(self.slave_name, os.O_RDWR | os.O_NOCTTY)
        self.to_host = os.dup(self.master_fd)
        self.ctrl.start()

    def vehicle(self, **kwargs) -> SerialVehicle:
        return SerialVehicle(self.slave_name, 115200, **kwargs)

    def history(self) -> list[tuple[float, float, float]]:
        return list(self.ctrl.actuator.history)

    def kill_controller(self) -> None:
        """The controller and its end of the link vanish (USB unplugged)."""
        self.ctrl.stop()
        for fd in (self.to_host,):
            os.close(fd)
        self.to_host = None
        self.ctrl_port.close()

    def close(self) -> None:
        self.ctrl.stop()
        if self.to_host is not None:
            os.close(self.to_host)
            self.ctrl_port.close()
        os.close(self.to_ctrl)
        os.close(self.slave_fd)


@pytest.fixture
def bench():
    b = Bench()
    yield b
    b.close()


def spy_shutdowns(loop) -> list[str]:
    called: list[str] = []
    for part in loop.parts:
        original = part.shutdown

        def wrapped(original=original, name=part.name):
            called.append(name)
            return original()

        part.shutdown = wrapped
    return called


class WrappedPolicy:
    """An OnnxPolicy with a hook: ``hook(call_index)`` runs before each inference (raise, sleep, ...)."""

    name = "policy"

    def __init__(self, inner: OnnxPolicy, hook):
        self.inner, self.hook, self.calls = inner, hook, 0
        self.n_obs = inner.n_obs

    def start(self):
        self.inner.start()

    def run(self, obs):
        i = self.calls
        self.calls += 1
        self.hook(i)
        return self.inner.run(obs)

    def shutdown(self):
        self.inner.shutdown()


class FakeVehicle(Vehicle):
    """An in-memory vehicle for the tests that need no serial link."""

    name = "fake"
    provides = frozenset({"wheel_speed", "accel", "gyro", "battery_v", "estop"})

    def __init__(self, fail_read_at: int | None = None, exc: BaseException | None = None):
        self.calls: collections.Counter[str] = collections.Counter()
        self.written: list[np.ndarray] = []
        self.fail_read_at, self.exc = fail_read_at, exc
        self.estop_flag = 0.0

    def start(self):
        self.calls["start"] += 1

    def read(self):
        self.calls["read"] += 1
        if self.fail_read_at is not None and self.calls["read"] > self.fail_read_at:
            raise self.exc or OSError("sensor bus gone")
        return {"wheel_speed": 1.0, "accel": np.zeros(3), "gyro": np.array([0.0, 0.0, 0.1]), "battery_v": 7.4,
                "estop": self.estop_flag}

    def write(self, command):
        self.written.append(np.asarray(command, dtype=float).copy())

    def neutral(self):
        self.calls["neutral"] += 1
        self.written.append(np.zeros(2))

    def estop(self, source):
        self.calls["estop"] += 1
        self.neutral()

    def reset_estop(self):
        self.calls["reset_estop"] += 1

    def close(self):
        self.calls["close"] += 1


def ticks_of(log_dir: Path) -> list[dict]:
    return [r for r in read_log(log_dir) if r["kind"] == "tick"]


# ------------------------------------------------------------------------------------------ end to end, pty


def test_normal_driving_commands_reach_the_controller_clamped_and_capped(bench, tmp_path):
    policy = make_policy(tmp_path)  # command = (0.8 rad, 1.0) -> clamped to 0.5 rad, capped to 0.3
    log_dir = tmp_path / "log"
    result = drive(policy, bench.vehicle(), rate_hz=RATE, duration_s=1.0, log_dir=log_dir)
    end = time.monotonic()
    assert result.ok and result.exit_reason == "duration" and result.ticks == 50 and result.neutral_sent
    hist = bench.history()
    driving = [(s, th) for _, s, th in hist if (s, th) != (0.0, 0.0)]
    assert len(driving) >= 2
    # +0.5 rad (left) is the protocol's -1 (full right is +1); throttle capped at 0.3 of full
    assert max(th for _, th in driving) <= 0.3 + 1e-4 and min(s for s, _ in driving) >= -1.0
    assert driving[-1] == pytest.approx((-1.0, 0.3), abs=1e-4)
    # the runtime stopping: neutral at once (sent on stop), not only after the controller's watchdog
    assert hist[-1][1:] == (0.0, 0.0) and hist[-1][0] <= end + 0.2
    assert bench.ctrl.stats.commands_applied >= 45

    ticks = ticks_of(log_dir)
    assert [t["tick"] for t in ticks] == list(range(50))
    assert ticks[0]["command"] == pytest.approx([0.25, 0.3])  # rate limit: 0.25 rad / tick, 0.3 / tick
    for t in ticks[2:]:
        assert t["command"] == pytest.approx([0.5, 0.3]) and t["policy_command"] == pytest.approx([0.8, 1.0], abs=1e-3)
    names = {e["event"] for t in ticks for e in t["events"]}
    assert {"clamped", "throttle_capped", "rate_limited"} <= names
    # the observation is filled by name: v_fwd <- wheel_speed (the controller's lagged speed),
    # applied_throttle <- the command written last tick in normalised units, battery_v
    obs = np.array([t["observation"] for t in ticks])
    assert obs[-1, 0] > 0.3 and obs[-1, 4] == pytest.approx(0.3, abs=1e-5) and obs[-1, 3] == pytest.approx(1.0)
    assert obs[:, 5] == pytest.approx(7.4, abs=1e-4)

    summary = json.loads((log_dir / "summary.json").read_text())
    assert summary["exit_reason"] == "duration" and summary["ticks"] == 50
    periods = [t["timing"]["period_s"] for t in ticks[1:]]
    assert summary["period_s"]["p50"] == pytest.approx(float(np.percentile(periods, 50)))
    assert summary["period_s"]["p99"] == pytest.approx(float(np.percentile(periods, 99)))
    e2e = [t["timing"]["e2e_latency_s"] for t in ticks]
    assert summary["e2e_latency_s"]["p99"] == pytest.approx(float(np.percentile(e2e, 99)))
    assert summary["jitter_s"]["p50"] == pytest.approx(float(np.percentile(periods, 50)) - 0.02)
    assert abs(summary["period_s"]["p50"] - 0.02) < 0.004  # the fixed-rate schedule holds its period
    assert 0.97 <= summary["duration_s"] <= 1.3
    assert summary["policy_latency_s"]["p50"] < 0.01 and summary["e2e_latency_s"]["p50"] < 0.015
    assert summary["deadline_misses"] == 0 and summary["safety_events"]["throttle_capped"] == 50
    assert summary["vehicle"]["rx_telemetry"] >= 30 and summary["vehicle"]["heartbeats_sent"] >= 8
    assert summary["observation_sources"][:3] == ["wheel_speed", "gyro[2]", "accel[0] * 0.1"]
    recomputed = summarize_log(log_dir)
    assert recomputed["period_s"] == summary["period_s"] and recomputed["ticks"] == 50
    assert not (log_dir / "frames").exists()  # no camera


def test_a_stalled_runtime_lets_the_controller_watchdog_go_neutral(bench, tmp_path):
    policy = make_policy(tmp_path)
    seen: dict[str, float] = {}

    def on_tick(loop, record):
        if record["tick"] == 20:  # the runtime hangs for 0.5 s after writing a driving command
            seen["t"] = time.monotonic()
            time.sleep(0.5)

    result = drive(policy, bench.vehicle(), rate_hz=RATE, duration_s=1.2, on_tick=on_tick)
    assert result.ok and result.exit_reason == "duration"
    hist = bench.history()
    neutral_at = next(t for t, s, th in hist if t > seen["t"] and (s, th) == (0.0, 0.0))
    delay = neutral_at - seen["t"]
    # keep-alive holds the last command 1.5 periods (30 ms), then the 100 ms watchdog: ~0.13 s
    assert 0.1 <= delay <= 0.3, delay
    assert bench.ctrl.stats.watchdog_trips >= 1
    assert result.summary["skipped_slots"] >= 20  # the schedule skipped the stalled slots, no burst
    assert result.summary["safety_events"].get("controller_watchdog_trip", 0) >= 1
    assert any(t > neutral_at and (s, th) != (0.0, 0.0) for t, s, th in hist)  # drives again afterwards
    assert result.ticks < 60


def test_corrupted_truncated_and_replayed_frames_are_dropped_counted_never_acted_on(bench, tmp_path):
    policy = make_policy(tmp_path)
    vehicle = bench.vehicle()
    injected = collections.Counter()

    def on_tick(loop, record):
        k = record["tick"]
        if k in (10, 20, 30):
            # toward the controller: full throttle in a corrupted, a truncated and a replayed (old seq) frame
            bad = encode(Command(1.0, 1.0, seq=(vehicle.encoder.next_seq + 3) % 65536))
            corrupted = bad[:9] + bytes([bad[9] ^ 0x10]) + bad[10:]
            replayed = encode(Command(1.0, 1.0, seq=(vehicle.encoder.next_seq - 20) % 65536))
            os.write(bench.to_ctrl, {10: corrupted, 20: bad[:8], 30: replayed}[k])
            injected["to_ctrl"] += 1
        if k in (15, 25, 35):
            # toward the runtime: an e-stopped, 99 m/s telemetry, corrupted / truncated / replayed
            tel = encode(Telemetry(99.0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 7.4, ControllerState.ESTOP, 0, 0, 0, 0,
                                   seq=(bench.ctrl.encoder.next_seq - 30) % 65536))
            fresh = encode(Telemetry(99.0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 7.4, ControllerState.ESTOP, 0, 0, 0, 0,
                                     seq=(bench.ctrl.encoder.next_seq + 50) % 65536))
            corrupted = fresh[:20] + bytes([fresh[20] ^ 0x01]) + fresh[21:]
            os.write(bench.to_host, {15: corrupted + b"\x00garbage\xaa", 25: fresh[:30], 35: tel}[k])
            injected["to_host"] += 1

    result = drive(policy, vehicle, rate_hz=RATE, duration_s=1.0, on_tick=on_tick)
    assert result.ok and injected == {"to_ctrl": 3, "to_host": 3}
    assert max(th for _, _, th in bench.history()) <= 0.3 + 1e-4  # no full-throttle frame was applied
    assert bench.ctrl.decoder.stats.dropped >= 2 and bench.ctrl.tracker.rejected >= 1
    v = result.summary["vehicle"]
    assert v["rx_dropped"] >= 2 and v["rx_rejected"] >= 1 and v["rx"]["bad_crc"] >= 1
    assert "estop_latched" not in result.summary["safety_events"]  # the fake ESTOP telemetry never counted
    assert result.summary["neutral_ticks"] == {}


def test_policy_raising_stops_sends_neutral_and_shuts_every_part_down(bench, tmp_path):
    path = make_policy(tmp_path)
    log_dir = tmp_path / "log"

    def hook(i):
        if i == 15:
            raise ZeroDivisionError("policy blew up")

    loop = build(path, bench.vehicle(), rate_hz=RATE, duration_s=2.0, log_dir=log_dir,
                 policy=WrappedPolicy(OnnxPolicy(path), hook))
    called = spy_shutdowns(loop)
    t0 = time.monotonic()
    with pytest.raises(PartError) as info:
        loop.run()
    err = info.value
    assert err.part == "policy" and err.tick == 15 and isinstance(err.__cause__, ZeroDivisionError)
    assert "part 'policy' failed in run() at tick 15: ZeroDivisionError: policy blew up" in str(err)
    assert time.monotonic() - t0 < 1.0  # stopped at once, not at the end of the duration
    assert sorted(called) == ["actuators", "observation", "policy", "safety", "sensors"]
    hist = bench.history()
    assert hist[-1][1:] == (0.0, 0.0) and any((s, th) != (0.0, 0.0) for _, s, th in hist)
    summary = json.loads((log_dir / "summary.json").read_text())
    assert summary["exit_reason"] == "error" and summary["error_part"] == "policy" and summary["neutral_sent"]
    assert summary["ticks"] == 15
    events = [r["event"] for r in read_log(log_dir) if r["kind"] == "event"]
    assert events[0] == "start" and {"error", "neutral_sent", "stop"} <= set(events)


def test_slow_policy_misses_its_deadline_and_those_ticks_are_neutral(bench, tmp_path):
    path = make_policy(tmp_path)
    log_dir = tmp_path / "log"
    slow = {10, 11, 12, 25}

    def hook(i):
        if i in slow:
            time.sleep(0.03)  # deadline: 0.8 x 20 ms = 16 ms

    result = drive(path, bench.vehicle(), rate_hz=RATE, duration_s=1.0, log_dir=log_dir,
                   policy=WrappedPolicy(OnnxPolicy(path), hook))
    assert result.ok
    ticks = ticks_of(log_dir)
    missed = {t["tick"] for t in ticks if t["neutral_reason"] == "deadline_miss"}
    assert slow <= missed and len(missed) <= len(slow) + 2  # (+2: a busy CI core may stall a tick)
    for t in ticks:
        if t["tick"] in slow:
            assert t["command"] == [0.0, 0.0] and t["timing"]["policy_latency_s"] > 0.016
            assert any(e["event"] == "deadline_miss" for e in t["events"])
    assert result.summary["deadline_misses"] == len(missed)
    assert result.summary["neutral_ticks"]["deadline_miss"] == len(missed)
    assert ticks[13]["command"] == pytest.approx([0.25, 0.3])  # after a neutral tick the command ramps again
    # the neutral command reached the controller between driving commands
    seq = [(s, th) for _, s, th in bench.history()]
    first_drive = next(i for i, c in enumerate(seq) if c != (0.0, 0.0))
    assert (0.0, 0.0) in seq[first_drive:-1]


def test_nan_action_is_neutral_and_counted(bench, tmp_path):
    path = make_policy(tmp_path, bias=(float("nan"), 5.0))
    result = drive(path, bench.vehicle(), rate_hz=RATE, duration_s=0.6, log_dir=tmp_path / "log")
    assert result.ok and result.ticks == 30
    assert result.summary["safety_events"]["non_finite_action"] == 30
    assert result.summary["neutral_ticks"] == {"non_finite_action": 30}
    assert all(th == 0.0 and s == 0.0 for _, s, th in bench.history())
    first = ticks_of(tmp_path / "log")[0]
    assert first["policy_command"][0] is None and first["command"] == [0.0, 0.0]  # NaN logged as null


def test_estop_latches_until_reset_signal_and_controller(bench, tmp_path):
    path = make_policy(tmp_path)
    log_dir = tmp_path / "log"
    states = {}

    def on_tick(loop, record):
        k = record["tick"]
        if k == 10:
            os.kill(os.getpid(), signal.SIGUSR1)  # e-stop by signal
        elif k == 35:
            states["during"] = bench.ctrl.state
            loop.reset_estop()
        elif k == 55:
            bench.ctrl.trigger_estop()  # the controller's own e-stop input

    result = drive(path, bench.vehicle(), rate_hz=RATE, duration_s=1.5, log_dir=log_dir, on_tick=on_tick)
    assert result.ok and result.exit_reason == "duration"
    ticks = ticks_of(log_dir)
    latched = [e for t in ticks for e in t["events"] if e["event"] == "estop_latched"]
    assert [e["source"] for e in latched] == ["signal", "vehicle"]
    t_sig, t_veh = latched[0]["tick"], latched[1]["tick"]
    assert 10 < t_sig <= 13 and 55 < t_veh <= 62
    resets = [e["tick"] for t in ticks for e in t["events"] if e["event"] == "estop_reset"]
    assert resets == [36]
    for t in ticks:
        k = t["tick"]
        if t_sig <= k <= 36 or k >= t_veh:
            assert t["command"] == [0.0, 0.0] and t["neutral_reason"] == "estop", k
    assert any(t["command"] != [0.0, 0.0] for t in ticks if 40 <= t["tick"] < 55)  # driving again after reset
    assert states["during"] == ControllerState.ESTOP  # the runtime forwarded its e-stop to the controller
    assert bench.ctrl.stats.estops == 2 and bench.ctrl.stats.resets == 1
    assert bench.ctrl.state == ControllerState.ESTOP  # still latched: nobody reset the second one
    assert result.summary["estop_latched"] == "vehicle"
    assert result.summary["safety_events"]["estop_latched"] == 2


def test_serial_link_lost_is_a_clear_error_and_the_loop_stops(bench, tmp_path):
    path = make_policy(tmp_path)
    loop = build(path, bench.vehicle(), rate_hz=RATE, duration_s=2.0, log_dir=tmp_path / "log",
                 on_tick=lambda lp, rec: bench.kill_controller() if rec["tick"] == 10 else None,
                 raise_on_error=False)
    called = spy_shutdowns(loop)
    t0 = time.monotonic()
    result = loop.run()
    assert time.monotonic() - t0 < 1.5
    assert result.exit_reason == "error" and result.error is not None
    assert result.error.part in ("sensors", "actuators")
    assert isinstance(result.error.__cause__, VehicleLinkError)
    assert "lost" in str(result.error) or "no TELEMETRY" in str(result.error)
    assert result.neutral_sent is False  # attempted; the port is gone
    assert sorted(called) == ["actuators", "observation", "policy", "safety", "sensors"]
    events = [r["event"] for r in read_log(tmp_path / "log") if r["kind"] == "event"]
    assert "neutral_failed" in events and "error" in events


def test_serial_vehicle_start_without_a_controller_names_the_problem(tmp_path):
    master_fd, slave_fd = os.openpty()
    try:
        v = SerialVehicle(os.ttyname(slave_fd), connect_timeout_s=0.2)
        with pytest.raises(VehicleLinkError, match="no valid TELEMETRY.*within 0.2 s.*powered"):
            v.start()
        # a controller of another protocol version (pyserial flushes input on open: send once it is open)
        v2 = encode(Command(0.0, 0.0))[:2] + bytes([2]) + encode(Command(0.0, 0.0))[3:]
        timer = threading.Timer(0.05, lambda: os.write(master_fd, v2 * 3))
        timer.start()
        v = SerialVehicle(os.ttyname(slave_fd), connect_timeout_s=0.3)
        with pytest.raises(VehicleLinkError, match="protocol version mismatch") as info:
            v.start()
        timer.join()
        assert "protocol version mismatch" in str(info.value) and "'bad_version': 3" in str(info.value)
        with pytest.raises(VehicleLinkError, match="cannot open serial port"):
            SerialVehicle("/dev/does-not-exist").start()
    finally:
        os.close(master_fd)
        os.close(slave_fd)
    assert isinstance(vehicle_from_spec("serial:/dev/ttyUSB9", baud=57600), SerialVehicle)
    with pytest.raises(ValueError, match="unknown vehicle 'sim'.*serial:PORT"):
        vehicle_from_spec("sim")
    assert vehicle_from_spec("sim", {"sim": FakeVehicle}).name == "fake"


# ------------------------------------------------------------------------------------------ in-memory vehicle


def test_missing_observation_fields_are_named_at_start_up(tmp_path):
    path = make_policy(tmp_path, names=["v_fwd", "v_lat", "yaw_rate", "checkpoint0_x_div5", "ray0", "acc_y_div10"])
    vehicle = FakeVehicle()
    loop = build(path, vehicle, rate_hz=RATE, max_ticks=5)
    called = spy_shutdowns(loop)
    with pytest.raises(PartError) as info:
        loop.run()
    cause = info.value.__cause__
    assert isinstance(cause, ObservationLayoutError) and cause.missing == ["v_lat", "checkpoint0_x_div5", "ray0"]
    assert "v_lat, checkpoint0_x_div5, ray0" in str(info.value) and info.value.phase == "start"
    assert vehicle.calls["start"] == 0  # checked before connecting
    assert sorted(called) == ["actuators", "observation", "policy", "safety", "sensors"]
    assert vehicle.calls["close"] == 1


def test_metadata_in_the_export_format(tmp_path):
    path = make_policy(tmp_path)
    meta = PolicyMetadata.load(path)
    assert meta.observation_names == tuple(OBS) and meta.control_hz == RATE
    assert meta.command_step() == pytest.approx((0.25, 0.3))
    assert meta.to_normalised([0.25, 0.3]) == pytest.approx([0.5, 0.3])
    with pytest.raises(Exception, match="no metadata next to the policy"):
        PolicyMetadata.load(tmp_path / "other.onnx")


def test_part_errors_and_interrupts_always_shut_everything_down(tmp_path):
    path = make_policy(tmp_path)
    # a sensor failure: neutral sent, every part shut down, the error names the part
    vehicle = FakeVehicle(fail_read_at=5)
    loop = build(path, vehicle, rate_hz=100, duration_s=1.0, raise_on_error=False)
    called = spy_shutdowns(loop)
    result = loop.run()
    assert result.exit_reason == "error" and result.error.part == "sensors" and result.error.tick == 5
    assert "OSError: sensor bus gone" in str(result.error)
    assert sorted(called) == ["actuators", "observation", "policy", "safety", "sensors"]
    assert vehicle.calls["neutral"] == 2 and vehicle.calls["close"] == 1  # the attempt + actuators.shutdown
    # KeyboardInterrupt inside a part
    vehicle = FakeVehicle(fail_read_at=3, exc=KeyboardInterrupt())
    loop = build(path, vehicle, rate_hz=100, duration_s=1.0)
    called = spy_shutdowns(loop)
    result = loop.run()
    assert result.exit_reason == "keyboard_interrupt" and result.neutral_sent and len(called) == 5
    assert vehicle.calls["close"] == 1
    # SIGINT (Ctrl-C): a clean stop at the next tick
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under `nohup ... &`
    vehicle = FakeVehicle()
    loop = build(path, vehicle, rate_hz=100, duration_s=2.0, log_dir=tmp_path / "log",
                 on_tick=lambda lp, rec: os.kill(os.getpid(), signal.SIGINT) if rec["tick"] == 7 else None)
    called = spy_shutdowns(loop)
    result = loop.run()
    assert result.exit_reason == "sigint" and 8 <= result.ticks <= 10 and len(called) == 5
    assert vehicle.calls["close"] == 1 and np.all(vehicle.written[-1] == 0.0)
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    assert json.loads((tmp_path / "log" / "summary.json").read_text())["exit_reason"] == "sigint"
    # an exception in a part's shutdown is reported, not swallowed
    vehicle = FakeVehicle()
    loop = build(path, vehicle, rate_hz=100, max_ticks=3)
    loop.policy.shutdown = lambda: (_ for _ in ()).throw(RuntimeError("session leak"))
    with pytest.raises(Exception, match="shutdown failed: policy: RuntimeError: session leak"):
        loop.run()
    assert vehicle.calls["close"] == 1


def test_key_estop_latches_until_reset_and_trigger_estop(tmp_path):
    path = make_policy(tmp_path)
    vehicle = FakeVehicle()
    r, w = os.pipe()
    log_dir = tmp_path / "log"

    def on_tick(loop, record):
        if record["tick"] == 5:
            os.write(w, b" ")  # the e-stop key
            time.sleep(0.06)  # (the key thread polls every 50 ms)
        elif record["tick"] == 20:
            loop.reset_estop()
        elif record["tick"] == 30:
            loop.trigger_estop()

    loop = build(path, vehicle, rate_hz=100, max_ticks=40, log_dir=log_dir, on_tick=on_tick)
    with KeyEstop(loop.trigger_estop, fd=r):
        result = loop.run()
    os.close(r)
    os.close(w)
    assert result.ok
    ticks = ticks_of(log_dir)
    latched = [(e["tick"], e["source"]) for t in ticks for e in t["events"] if e["event"] == "estop_latched"]
    assert [s for _, s in latched] == ["key", "api"] and latched[0][0] in (6, 7) and latched[1][0] == 31
    for t in ticks:
        if latched[0][0] <= t["tick"] <= 20 or t["tick"] >= 31:  # reset after tick 20: tick 21 drives
            assert t["command"] == [0.0, 0.0]
    assert ticks[21]["command"] == pytest.approx([0.25, 0.3])  # ramps up again from neutral
    assert vehicle.calls["estop"] == 2 and vehicle.calls["reset_estop"] == 1
    # the vehicle's own e-stop reading latches on its rising edge and holds after it clears
    vehicle = FakeVehicle()

    def flip(loop, record):
        vehicle.estop_flag = 1.0 if 5 <= record["tick"] < 8 else 0.0

    result = drive(path, vehicle, rate_hz=100, max_ticks=20, on_tick=flip, log_dir=tmp_path / "log2")
    assert all(t["command"] == [0.0, 0.0] for t in ticks_of(tmp_path / "log2")[6:])
    assert result.summary["estop_latched"] == "vehicle"


def test_camera_frames_are_logged_and_a_missing_camera_is_a_clear_error(tmp_path):
    path = make_policy(tmp_path)
    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    assert writer.isOpened()
    for i in range(20):
        writer.write(np.full((48, 64, 3), i * 10, np.uint8))
    writer.release()
    log_dir = tmp_path / "log"
    result = drive(path, FakeVehicle(), rate_hz=100, max_ticks=10, camera=str(video), log_dir=log_dir)
    assert result.ok and result.summary["frames"] == {"saved": 10, "dropped": 0, "error": None}
    frames = sorted((log_dir / "frames").glob("*.png"))
    assert [f.name for f in frames] == [f"{k:06d}.png" for k in range(10)]
    assert cv2.imread(str(frames[3])).shape == (48, 64, 3)
    assert ticks_of(log_dir)[3]["frame"] == "frames/000003.png"

    # the grab thread (a device's path): the loop takes the newest frame, never waits for one
    cam = Camera(str(video), threaded=True, max_failures=10**6)
    result = drive(path, FakeVehicle(), rate_hz=100, max_ticks=10, camera=cam, log_dir=tmp_path / "log2")
    saved = result.summary["frames"]["saved"]
    assert result.ok and 1 <= saved <= 10 and saved <= cam.grabbed <= 20 and cam.cap is None
    assert len(list((tmp_path / "log2" / "frames").glob("*.png"))) == saved

    vehicle = FakeVehicle()
    with pytest.raises(PartError, match=r"part 'sensors' failed in start\(\): CameraError: cannot open camera") as info:
        drive(path, vehicle, rate_hz=100, max_ticks=10, camera=str(tmp_path / "no-such-camera.avi"))
    assert isinstance(info.value.__cause__, CameraError)
    assert vehicle.calls["close"] == 1 and info.value.result.exit_reason == "error"


def test_safety_units_and_config(tmp_path):
    """Throttle cap configurable, deadline default 0.8 of the period, logs are never appended to."""
    path = make_policy(tmp_path, bias=(-5.0, 5.0))
    vehicle = FakeVehicle()
    mid_run = {}

    def peek(loop, record):  # the log is readable while driving (what a crash would leave)
        if record["tick"] == 5:
            mid_run["ticks"] = [r["tick"] for r in ticks_of(tmp_path / "log")]
            mid_run["summary"] = json.loads((tmp_path / "log" / "summary.json").read_text())

    loop = build(path, vehicle, rate_hz=20, max_ticks=8, safety=SafetyConfig(throttle_cap=0.5, max_delta=2.0),
                 log_dir=tmp_path / "log", on_tick=peek)
    assert loop.safety.deadline_s == pytest.approx(0.04)
    result = loop.run()
    assert mid_run["ticks"] == list(range(6)) and mid_run["summary"]["exit_reason"] == "running"
    assert summarize_log(tmp_path / "log")["ticks"] == 8
    assert result.ok and result.exit_reason == "max_ticks"
    assert vehicle.written[0] == pytest.approx([-0.5, 0.5], abs=1e-3)  # max_delta 2: no ramp; steer clamped
    with pytest.raises(PartError, match="FileExistsError.*never appended"):
        drive(path, FakeVehicle(), rate_hz=20, max_ticks=2, log_dir=tmp_path / "log")
    assert math.isclose(json.loads((tmp_path / "log" / "summary.json").read_text())["ticks"], 8)
