"""The on-vehicle runtime: an exported ONNX policy driving a vehicle at a fixed rate, safely, with a log.

``drive(policy_path, vehicle, rate_hz=..., duration_s=..., camera=..., log_dir=...)`` is what
``rlab drive --policy car.onnx --vehicle sim|serial:PORT --rate-hz 20 --duration-s 60 --camera 0
--log-dir DIR`` calls (``build`` returns the ``DriveLoop`` without running it). The loop's parts are in
``robot.deploy.parts`` (Sensors, ObservationBuilder, OnnxPolicy, Actuators), ``robot.deploy.safety``
(Safety) and ``robot.deploy.vehicles`` (Vehicle, SerialVehicle); the log in ``robot.deploy.drivelog``.

``DriveLoop.run()``:

* starts the log, checks the observation layout against what the vehicle provides (an error naming
  every missing field) and, for a policy that sees the camera (an ``image`` input, exported with an image
  encoder), that a camera or a vehicle "image" reading feeds it (the vehicle's takes precedence, see
  ``Sensors``); starts the parts (the vehicle connects; the policy warms up);
* ticks on a fixed schedule ``t0 + k / rate_hz`` (``perf_counter``; sleeps to the next slot; a tick late
  by more than a period skips the missed slots instead of bursting, so the schedule never drifts);
  records per tick the period, jitter (period - nominal), policy latency and end-to-end latency (from
  the sensor read to the command written);
* stops after ``duration_s`` / ``max_ticks``, on ``request_stop()``, SIGINT (Ctrl-C; a second Ctrl-C
  raises KeyboardInterrupt to break out of a hung part) or SIGTERM;
* on an exception in any part: stops, sends neutral, and raises ``PartError`` naming the part, the
  tick and the exception (``raise_on_error=False``: returns it in ``DriveResult.error``);
* always -- after an error, an e-stop, Ctrl-C or a KeyboardInterrupt -- sends neutral and calls every
  part's ``shutdown()``, then writes ``summary.json``.

E-stop: SIGUSR1 (``kill -USR1 <pid>``), a key (``drive(..., estop_key=True)``: space/e/s on the
terminal), ``DriveLoop.trigger_estop()``, or the controller's own e-stop; cleared by
``DriveLoop.reset_estop()`` only.

Only numpy, onnxruntime, pyserial, OpenCV and the standard library are imported (the on-vehicle rule).
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot.deploy.drivelog import DriveLog, DriveStats
from robot.deploy.parts import (
    Actuators,
    Camera,
    DeployError,
    ObservationBuilder,
    OnnxPolicy,
    PartError,
    PolicyMetadata,
    Sensors,
)
from robot.deploy.safety import KeyEstop, Safety, SafetyConfig
from robot.deploy.vehicles import SerialVehicle, Vehicle

OnTick = Callable[["DriveLoop", dict], None]


@dataclass
class DriveResult:
    exit_reason: str  # duration | max_ticks | stopped | sigint | sigterm | keyboard_interrupt | error
    ticks: int
    summary: dict[str, Any]
    error: PartError | None = None
    neutral_sent: bool = False
    shutdown_errors: list[str] = field(default_factory=list)
    log_dir: Path | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.shutdown_errors


class DriveLoop:
    """See the module docstring. ``on_tick(loop, record)`` runs after each tick (display, tests); an
    exception in it stops the loop like one in a part."""

    def __init__(self, sensors: Sensors, observer: ObservationBuilder, policy: OnnxPolicy, safety: Safety,
                 actuators: Actuators, rate_hz: float, *, log: DriveLog | None = None,
                 duration_s: float | None = None, max_ticks: int | None = None, on_tick: OnTick | None = None,
                 handle_signals: bool = True, estop_signal: int = signal.SIGUSR1, raise_on_error: bool = True,
                 config: Mapping[str, Any] | None = None):
        if not (rate_hz > 0 and math.isfinite(rate_hz)):
            raise ValueError(f"rate_hz must be a positive number, got {rate_hz}")
        self.sensors, self.observer, self.policy, self.safety, self.actuators = (
            sensors, observer, policy, safety, actuators)
        self.parts = [sensors, observer, policy, safety, actuators]
        self.rate_hz, self.period = float(rate_hz), 1.0 / float(rate_hz)
        self.log, self.duration_s, self.max_ticks, self.on_tick = log, duration_s, max_ticks, on_tick
        self.handle_signals, self.estop_signal, self.raise_on_error = handle_signals, estop_signal, raise_on_error
        self.config = dict(config or {})
        self.stats = DriveStats(self.rate_hz)
        self.tick = 0
        self._stop_reason: str | None = None
        self._shutting_down = False
        self._ran = False
        self._log_errors: list[str] = []
        self._started: list[Any] = []
        self._applied = np.zeros(2)

    # ------------------------------------------------------------------ control (any thread)

    def request_stop(self, reason: str = "stopped") -> None:
        if self._stop_reason is None:
            self._stop_reason = reason

    def trigger_estop(self, source: str = "api") -> None:
        self.safety.trigger_estop(source)

    def reset_estop(self) -> None:
        self.safety.reset_estop()

    # ------------------------------------------------------------------ run

    def run(self) -> DriveResult:
        if self._ran:
            raise DeployError("a DriveLoop runs once; build a new one")
        self._ran = True
        error: PartError | None = None
        reraise: BaseException | None = None
        exit_reason = "error"
        neutral_sent = False
        restore = self._install_signal_handlers()
        try:
            try:
                self._startup()
                exit_reason = self._loop()
            except PartError as err:
                error = err
            except KeyboardInterrupt:
                exit_reason = "keyboard_interrupt"
            except Exception as err:  # a bug in the loop itself: still reported, never swallowed
                error = PartError("loop", "run", err, self.tick)
                error.__cause__ = err
            except BaseException as err:  # SystemExit & co: clean up, then let it go on
                reraise, exit_reason = err, type(err).__name__
            self._shutting_down = True
            if error is not None:
                self._event("error", part=error.part, phase=error.phase, tick=error.tick, message=str(error))
            neutral_sent = self._send_neutral()
        finally:
            self._shutting_down = True
            shutdown_errors = self._shutdown_all()
            restore()
            self._event("stop", exit_reason=exit_reason, neutral_sent=neutral_sent,
                        error=None if error is None else str(error))
            shutdown_errors += self._log_errors
            summary = self._summary(exit_reason, error, neutral_sent, shutdown_errors)
            if self.log is not None:
                try:
                    self.log.close(summary)  # joins the frame writer: the counts are final only now
                    summary["frames"] = self.log.frame_counts()
                except Exception as err:
                    shutdown_errors.append(f"log: {type(err).__name__}: {err}")
                    summary["shutdown_errors"] = list(shutdown_errors)
        result = DriveResult(exit_reason, self.stats.ticks, summary, error, neutral_sent, shutdown_errors,
                             self.log.directory if self.log is not None else None)
        if reraise is not None:
            raise reraise
        if self.raise_on_error and error is not None:
            error.result = result  # the summary, for a caller that catches the error
            raise error
        if self.raise_on_error and shutdown_errors:
            failed = DeployError(f"shutdown failed: {'; '.join(shutdown_errors)}")
            failed.result = result  # type: ignore[attr-defined]
            raise failed
        return result

    def _startup(self) -> None:
        if self.log is not None:
            self._call(self.log, self.log.start, "start", None, self._config())
            self._event("start", rate_hz=self.rate_hz, duration_s=self.duration_s, max_ticks=self.max_ticks)
        self._call(self.observer, self.observer.check, "start", None, self.sensors.provides)
        n_obs = getattr(self.policy, "n_obs", None)
        if n_obs is not None and n_obs != self.observer.metadata.n_obs:
            raise PartError("policy", "start", DeployError(
                f"the ONNX input has {n_obs} observation entries but the metadata layout has "
                f"{self.observer.metadata.n_obs} ({self.observer.metadata.source})"))
        self._check_image_source()
        for part in self.parts:
            self._started.append(part)  # attempted: a part that failed half-way (camera after vehicle) counts
            self._call(part, getattr(part, "start", _noop), "start", None)

    def _check_image_source(self) -> None:
        """A policy with an image input needs a frame source; tell it whether frames are OpenCV's BGR."""
        meta_image = self.observer.metadata.image
        image_input = getattr(self.policy, "image_input", None)
        if meta_image is None and image_input is None:
            return
        if (meta_image is None) != (image_input is None) and hasattr(self.policy, "image_input"):
            which = "has an 'image' input but the metadata no image entry" if image_input else \
                "has no 'image' input but the metadata has an image entry"
            raise PartError("policy", "start", DeployError(
                f"the ONNX policy {which} ({self.observer.metadata.source}): re-export the policy"))
        source = self.sensors.image_source
        if source is None:
            size = f"{meta_image.height}x{meta_image.width} " if meta_image is not None else ""
            raise PartError("sensors", "start", DeployError(
                f"the policy sees the camera ({size}RGB image input) but nothing provides an image: give a camera "
                "(camera=... / --camera 0) or a vehicle that provides 'image'"))
        configure = getattr(self.policy, "configure_image", None)
        if configure is not None:
            self._call(self.policy, lambda: configure(bgr=source == "camera", spec=meta_image), "start", None)

    def _loop(self) -> str:
        period = self.period
        t0 = time.perf_counter()
        self._t0 = t0
        self.stats.started_at = time.time()
        next_t, prev_start = t0, None
        try:
            while True:
                reason = self._should_stop(next_t - t0)
                if reason is not None:
                    return reason
                delay = next_t - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                start = time.perf_counter()
                self._tick(start, prev_start)
                prev_start = start
                self.tick += 1
                next_t += period
                late = time.perf_counter() - next_t
                if late >= period:  # overran by more than a whole period: skip the missed slots
                    skipped = int(late // period)
                    next_t += skipped * period
                    self.stats.skipped_slots += skipped
        finally:
            self.stats.duration_s = time.perf_counter() - t0

    def _should_stop(self, elapsed_slot: float) -> str | None:
        if self._stop_reason is not None:
            return self._stop_reason
        if self.max_ticks is not None and self.tick >= self.max_ticks:
            return "max_ticks"
        if self.duration_s is not None and elapsed_slot >= self.duration_s - 1e-9:
            return "duration"
        return None

    def _tick(self, start: float, prev_start: float | None) -> None:
        tick = self.tick
        t_read = time.perf_counter()
        readings = self._call(self.sensors, self.sensors.run, "run", tick, tick)
        readings["applied_command"] = self._applied.copy()
        obs = self._call(self.observer, self.observer.run, "run", tick, readings)
        t_policy = time.perf_counter()
        if getattr(self.policy, "image_input", None):
            out = self._call(self.policy, self.policy.run, "run", tick, obs, readings.get("image"))
        else:
            out = self._call(self.policy, self.policy.run, "run", tick, obs)
        policy_latency = time.perf_counter() - t_policy
        decision = self._call(self.safety, self.safety.run, "run", tick, tick, obs, out, readings, policy_latency)
        self._call(self.actuators, self.actuators.run, "run", tick, decision)
        t_written = time.perf_counter()
        self._applied = np.asarray(decision.command, dtype=np.float64).copy()
        period = None if prev_start is None else start - prev_start
        timing = {"period_s": period, "jitter_s": None if period is None else period - self.period,
                  "policy_latency_s": policy_latency, "inference_s": getattr(out, "inference_s", None),
                  "e2e_latency_s": t_written - t_read}
        self.stats.add(timing, decision.events, decision.neutral_reason)
        record = {"tick": tick, "t": start - self._t0, "observation": obs, "action": out.action,
                  "policy_command": out.command, "command": decision.command,
                  "neutral_reason": decision.neutral_reason,
                  "readings": {k: v for k, v in readings.items() if k != "image"},
                  "timing": timing, "events": decision.events}
        if self.log is not None:
            log = self.log
            self._call(log, log.write_tick, "run", tick, record, readings.get("image"))
            self._call(log, log.maybe_write_summary, "run", tick, lambda: self._summary("running"))
        if self.on_tick is not None:
            self._call(_Named("on_tick"), self.on_tick, "run", tick, self, record)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _call(part: Any, fn: Callable[..., Any], phase: str, tick: int | None, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as err:
            raise PartError(getattr(part, "name", type(part).__name__), phase, err, tick) from err

    def _send_neutral(self) -> bool:
        if self.sensors not in self._started:  # the vehicle was never started: nothing can be moving
            return False
        try:
            self.actuators.neutral()
        except Exception as err:
            self._event("neutral_failed", message=f"{type(err).__name__}: {err}")
            return False
        self._event("neutral_sent")
        return True

    def _shutdown_all(self) -> list[str]:
        """Every part's shutdown(), actuators first (neutral, close the vehicle); errors collected."""
        errors = []
        for part in (self.actuators, self.policy, self.observer, self.safety, self.sensors):
            try:
                part.shutdown()
            except Exception as err:
                errors.append(f"{getattr(part, 'name', type(part).__name__)}: {type(err).__name__}: {err}")
        for message in errors:
            self._event("shutdown_failed", message=message)
        return errors

    def _event(self, event: str, **details: Any) -> None:
        """A non-tick line in the log; a failure to write it is reported in the summary's shutdown_errors."""
        if self.log is None or self.log._file is None:
            return
        details.setdefault("tick", self.tick)
        try:
            self.log.write_event(event, **details)
        except Exception as err:
            self._log_errors.append(f"log: writing event {event!r}: {type(err).__name__}: {err}")

    def _config(self) -> dict[str, Any]:
        meta = self.observer.metadata
        return {**self.config, "rate_hz": self.rate_hz, "duration_s": self.duration_s, "max_ticks": self.max_ticks,
                "policy_control_hz": meta.control_hz, "metadata": meta.source,
                "safety": self.safety.describe() if hasattr(self.safety, "describe") else None,
                "vehicle": type(self.sensors.vehicle).__name__}

    def _summary(self, exit_reason: str, error: PartError | None = None, neutral_sent: bool | None = None,
                 shutdown_errors: list[str] | None = None) -> dict[str, Any]:
        vehicle = self.sensors.vehicle
        try:
            vstats = vehicle.stats() if hasattr(vehicle, "stats") else {}
        except Exception as err:
            vstats = {"error": f"{type(err).__name__}: {err}"}
        observation_sources = [s.describe() for s in getattr(self.observer, "sources", [])]
        return self.stats.summary(
            exit_reason=exit_reason, error=None if error is None else str(error),
            error_part=None if error is None else error.part, neutral_sent=neutral_sent,
            shutdown_errors=shutdown_errors or [], estop_latched=getattr(self.safety, "latched", None),
            vehicle=vstats, observation_sources=observation_sources,
            frames=self.log.frame_counts() if self.log is not None else None)

    def _install_signal_handlers(self) -> Callable[[], None]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return _noop

        def on_sigint(signum: int, frame: Any) -> None:
            if self._shutting_down:
                return
            if self._stop_reason is not None:
                raise KeyboardInterrupt  # the second Ctrl-C: break out of whatever hangs
            self._stop_reason = "sigint"

        def on_sigterm(signum: int, frame: Any) -> None:
            self.request_stop("sigterm")

        def on_estop(signum: int, frame: Any) -> None:
            self.safety.trigger_estop("signal")

        previous = {sig: signal.signal(sig, handler) for sig, handler in
                    ((signal.SIGINT, on_sigint), (signal.SIGTERM, on_sigterm), (self.estop_signal, on_estop))}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore


class _Named:
    def __init__(self, name: str):
        self.name = name


def _noop(*args: Any) -> None:
    pass


# ---------------------------------------------------------------------------------------------------
# assembly


def build(policy_path: str | Path, vehicle: Vehicle, *, rate_hz: float | None = None, duration_s: float | None = None,
          max_ticks: int | None = None, camera: int | str | Camera | None = None, log_dir: str | Path | None = None,
          safety: SafetyConfig = SafetyConfig(), aliases: Mapping[str, str] | None = None,
          metadata: PolicyMetadata | None = None, policy: OnnxPolicy | None = None, on_tick: OnTick | None = None,
          frame_every: int = 1, handle_signals: bool = True, raise_on_error: bool = True) -> DriveLoop:
    """A ``DriveLoop`` for the policy at ``policy_path`` (metadata from ``<policy>.json`` unless given)
    driving ``vehicle``. ``rate_hz`` defaults to the policy's ``control_hz``. A ``SerialVehicle``'s
    command keep-alive is held for 1.5 periods (0.03 .. 0.15 s). ``policy`` replaces the ONNX part
    (tests, wrappers)."""
    meta = metadata if metadata is not None else PolicyMetadata.load(policy_path)
    rate = rate_hz if rate_hz is not None else meta.control_hz
    if rate is None:
        raise DeployError(f"no rate given and the metadata {meta.source} has no control_hz")
    if isinstance(vehicle, SerialVehicle):
        vehicle.command_hold_s = min(0.15, max(0.03, 1.5 / rate))
    sensors = Sensors(vehicle, camera)
    observer = ObservationBuilder(meta, aliases)
    pol = policy if policy is not None else OnnxPolicy(policy_path)
    safe = Safety.from_metadata(meta, 1.0 / rate, safety)
    actuators = Actuators(vehicle)
    log = DriveLog(log_dir, frame_every=frame_every) if log_dir is not None else None
    config = {"policy": str(policy_path), "camera": None if camera is None else str(getattr(camera, "source", camera)),
              "safety_config": dataclasses.asdict(safety), "aliases": observer.aliases}
    return DriveLoop(sensors, observer, pol, safe, actuators, rate, log=log, duration_s=duration_s,
                     max_ticks=max_ticks, on_tick=on_tick, handle_signals=handle_signals,
                     raise_on_error=raise_on_error, config=config)


def drive(policy_path: str | Path, vehicle: Vehicle, *, estop_key: bool = False, **kwargs: Any) -> DriveResult:
    """``build(policy_path, vehicle, **kwargs).run()``; ``estop_key``: space/e/s on the terminal
    (stdin) latches the e-stop while driving."""
    loop = build(policy_path, vehicle, **kwargs)
    key = KeyEstop(loop.trigger_estop).start() if estop_key else None
    try:
        return loop.run()
    finally:
        if key is not None:
            key.stop()
