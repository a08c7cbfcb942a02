"""Vehicles the drive loop can run: the ``Vehicle`` interface and ``SerialVehicle`` (protocol v1).

The interface (a simulator-backed vehicle, e.g. the pybullet one that lives outside ``robot.deploy``,
subclasses ``Vehicle`` or just has the same methods):

``provides: frozenset[str]``
    the reading names ``read()`` returns (scalars or small arrays), checked against the policy's
    observation layout at start-up (``ObservationBuilder.check``). Array readings are addressed per
    element (``gyro[2]``). Optional names with a meaning to the runtime: ``estop`` (truthy: the
    vehicle is e-stopped; latches the runtime's e-stop on its rising edge), ``watchdog_trips`` (a
    counter; increases are logged), ``image`` (an HxWx3 uint8 BGR frame: saved to the drive log).
``start()``
    connect; raise ``VehicleError``/``VehicleLinkError`` with the reason if that is impossible.
``read() -> dict[str, float | np.ndarray]``
    the latest readings, without blocking for long (the loop calls it once per tick).
``write(command)``
    apply ``[steer_rad, throttle_fraction]``: steer in radians, **positive to the left** (the simulator's
    convention), throttle as a fraction of full throttle (negative: reverse). Called once per tick.
``neutral()``
    steer 0, throttle 0, now. Called on every stop path, also after another part failed.
``close()``
    release everything (idempotent); called after ``neutral()``.
``estop(source)`` / ``reset_estop()``
    optional (the base class: neutral / nothing): forward the runtime's e-stop latch and its reset.
``stats() -> dict``
    optional counters for the drive summary.

A lost link (serial port gone, no telemetry) raises ``VehicleLinkError`` from ``read``/``write``; the
loop then attempts neutral, shuts everything down and reports the error.

Only numpy, pyserial and the standard library are imported here (the on-vehicle import rule).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import serial

from robot.deploy.parts import VehicleError, VehicleLinkError
from robot.deploy.protocol import (
    Ack,
    Command,
    CommandFlags,
    ControllerState,
    Error,
    Estop,
    EstopReason,
    FrameDecoder,
    FrameEncoder,
    Heartbeat,
    MsgType,
    SequenceTracker,
    Telemetry,
)

# The steering angle of a +-1 protocol setpoint: the servo's full lock. RCCarEnv's max_steer default.
STEER_FULL_SCALE_RAD = 0.5


class Vehicle:
    """Base class of vehicles (see the module docstring for the contract)."""

    name = "vehicle"
    provides: frozenset[str] = frozenset()

    def start(self) -> None:
        pass

    def read(self) -> dict[str, float | np.ndarray]:
        raise NotImplementedError

    def write(self, command: Any) -> None:
        raise NotImplementedError

    def neutral(self) -> None:
        self.write(np.zeros(2))

    def estop(self, source: str) -> None:
        self.neutral()

    def reset_estop(self) -> None:
        pass

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}


_ESTOP_REASONS = {"key": EstopReason.OPERATOR, "signal": EstopReason.OPERATOR, "api": EstopReason.OPERATOR,
                  "fault": EstopReason.HOST_FAULT}


class SerialVehicle(Vehicle):
    """The car's motor controller on a serial port, speaking protocol v1 (docs/protocol.md).

    ``port_url`` is anything ``serial.serial_for_url`` opens (``/dev/ttyUSB0``, ``/dev/ttyACM0``,
    ``socket://host:port``, ...); ``port=`` takes an already open pyserial object instead.

    * ``write(command)`` sends a COMMAND at once: ``steer = steer_sign * steer_rad / steer_full_scale_rad``
      (the protocol's +1 is full *right*, the command's positive steer is *left*: ``steer_sign`` -1),
      ``throttle = throttle_fraction``, both saturated to [-1, 1].
    * A link thread (every ``poll_s``) reads the controller's frames, sends HEARTBEAT at
      ``heartbeat_hz`` (also while not driving), repeats an unacknowledged ESTOP every ``estop_repeat_s``,
      and repeats the last COMMAND at ``keepalive_hz`` while it is at most ``command_hold_s`` old: a loop
      slower than the protocol's 20 Hz minimum keeps the controller's 100 ms watchdog fed, and a stalled
      loop still lets the controller go neutral ``command_hold_s`` + 100 ms after its last command.
    * TELEMETRY (sequence-checked: corrupted, truncated, replayed and stale frames are dropped and
      counted, never used) becomes the readings ``wheel_speed``, ``accel``, ``gyro`` (3-vectors, vehicle
      frame), ``battery_v``, ``controller_state`` (0 IDLE, 1 DRIVING, 2 NEUTRAL_TIMEOUT, 3 ESTOP),
      ``estop`` (1.0 while the controller is latched or after it sent an ESTOP), ``watchdog_trips`` and
      ``telemetry_age_s``.
    * ``start()`` waits up to ``connect_timeout_s`` for the first TELEMETRY (and names a version mismatch
      when that is why none came); no TELEMETRY for ``telemetry_timeout_s``, or a serial error, raises
      ``VehicleLinkError``.
    """

    name = "serial"
    provides = frozenset({"wheel_speed", "accel", "gyro", "battery_v", "controller_state", "estop",
                          "watchdog_trips", "telemetry_age_s"})

    def __init__(self, port_url: str | None = None, baud: int = 115200, *, port: Any = None,
                 steer_full_scale_rad: float = STEER_FULL_SCALE_RAD, steer_sign: float = -1.0,
                 heartbeat_hz: float = 10.0, keepalive_hz: float = 50.0, command_hold_s: float = 0.12,
                 connect_timeout_s: float = 1.0, telemetry_timeout_s: float = 0.5, link_lost_s: float = 1.0,
                 estop_repeat_s: float = 0.05, write_timeout_s: float = 0.005, poll_s: float = 0.002,
                 clock: Callable[[], float] = time.monotonic):
        if port_url is None and port is None:
            raise ValueError("SerialVehicle needs port_url or port")
        self.port_url, self.baud, self.port = port_url, baud, port
        self.desc = port_url or getattr(port, "name", None) or getattr(port, "port", None) or repr(port)
        self.steer_full_scale_rad, self.steer_sign = steer_full_scale_rad, steer_sign
        self.heartbeat_period, self.keepalive_period = 1.0 / heartbeat_hz, 1.0 / keepalive_hz
        self.command_hold_s, self.connect_timeout_s = command_hold_s, connect_timeout_s
        self.telemetry_timeout_s, self.link_lost_s = telemetry_timeout_s, link_lost_s
        self.estop_repeat_s, self.write_timeout_s, self.poll_s = estop_repeat_s, write_timeout_s, poll_s
        self.clock = clock

        self.decoder = FrameDecoder()
        self.encoder = FrameEncoder()
        self.tracker = SequenceTracker()
        self.telemetry: Telemetry | None = None
        self.counts: dict[str, int] = {"tx_frames": 0, "tx_dropped": 0, "tx_commands": 0, "keepalive_commands": 0,
                                       "heartbeats_sent": 0, "estops_sent": 0, "resets_sent": 0, "rx_telemetry": 0,
                                       "rx_heartbeats": 0, "rx_estops": 0, "rx_acks": 0, "rx_errors": 0,
                                       "rx_unexpected": 0, "rx_bytes": 0, "resyncs": 0}
        self.error_codes: list[int] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: VehicleLinkError | None = None
        self._opened_here = False
        self._closed = False
        self._telemetry_t: float | None = None
        self._accept_t: float | None = None
        self._heartbeat_t: float | None = None  # last HEARTBEAT sent
        self._cmd: tuple[float, float] | None = None  # last setpoints written (protocol units)
        self._cmd_fresh_t = 0.0  # when write()/neutral() last set them
        self._cmd_sent_t = 0.0  # when a COMMAND last went out (write or keepalive)
        self._estop_pending: int | None = None  # reason code of an ESTOP not yet confirmed
        self._estop_sent_t = 0.0
        self._estop_seen = False  # the controller sent an ESTOP since the last read()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.port is None:
            try:
                self.port = serial.serial_for_url(self.port_url, baudrate=self.baud, timeout=0,
                                                  write_timeout=self.write_timeout_s)
            except (serial.SerialException, OSError, ValueError) as err:
                raise VehicleLinkError(f"cannot open serial port {self.port_url!r} at {self.baud} baud: {err}") from err
            self._opened_here = True
        else:
            self.port.write_timeout = self.write_timeout_s
        deadline = self.clock() + self.connect_timeout_s
        try:
            with self._lock:
                self._guard(self._send_heartbeat, self.clock())
            while True:
                with self._lock:
                    self._guard(self._poll, self.clock())
                    if self.telemetry is not None:
                        break
                if self.clock() > deadline:
                    raise VehicleLinkError(self._no_telemetry_message())
                time.sleep(self.poll_s)
        except VehicleLinkError:
            self._close_port()
            raise
        self._thread = threading.Thread(target=self._link, name=f"SerialVehicle({self.desc})", daemon=True)
        self._thread.start()

    def _no_telemetry_message(self) -> str:
        st = self.decoder.stats
        msg = (f"no valid TELEMETRY from the motor controller on {self.desc} within {self.connect_timeout_s:g} s "
               f"({self.counts['rx_bytes']} bytes received; decoder: {st.as_dict()})")
        if st.bad_version:
            msg += ": protocol version mismatch -- the controller sends frames of another protocol version"
        elif not self.counts["rx_bytes"]:
            msg += ": is the controller powered and on this port, and the baud rate right?"
        return msg

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None
        self._close_port()

    def _close_port(self) -> None:
        if self.port is not None and self._opened_here:
            try:
                self.port.close()
            finally:
                self.port = None

    # ------------------------------------------------------------------ the loop's calls

    def read(self) -> dict[str, float | np.ndarray]:
        self._raise_if_failed()
        with self._lock:
            now = self.clock()
            self._guard(self._poll, now)
            tel = self.telemetry
            age = now - self._telemetry_t if self._telemetry_t is not None else float("inf")
            if tel is None or age > self.telemetry_timeout_s:
                raise VehicleLinkError(f"no TELEMETRY from the motor controller on {self.desc} for {age:.3f} s "
                                       f"(limit {self.telemetry_timeout_s:g} s): link lost or controller reset "
                                       f"(decoder: {self.decoder.stats.as_dict()})")
            estop = tel.state == ControllerState.ESTOP or self._estop_seen
            self._estop_seen = False
            return {"wheel_speed": float(tel.wheel_speed), "accel": np.asarray(tel.accel, dtype=np.float64),
                    "gyro": np.asarray(tel.gyro, dtype=np.float64), "battery_v": float(tel.battery_v),
                    "controller_state": float(int(tel.state)), "estop": 1.0 if estop else 0.0,
                    "watchdog_trips": float(tel.watchdog_trips), "telemetry_age_s": age}

    def write(self, command: Any) -> None:
        self._raise_if_failed()
        steer_rad, throttle = (float(v) for v in np.asarray(command, dtype=np.float64).reshape(-1)[:2])
        if not (np.isfinite(steer_rad) and np.isfinite(throttle)):
            raise VehicleError(f"refusing a non-finite command {command!r} (the safety layer should never pass one)")
        steer = max(-1.0, min(1.0, self.steer_sign * steer_rad / self.steer_full_scale_rad))
        self._set_command((steer, max(-1.0, min(1.0, throttle))))

    def neutral(self) -> None:
        if self.port is None:
            if self._closed or self._thread is not None:
                raise VehicleLinkError(f"cannot send neutral: the serial port {self.desc} is closed")
            return  # never started: nothing is moving
        self._set_command((0.0, 0.0))

    def estop(self, source: str) -> None:
        with self._lock:
            self._estop_pending = int(_ESTOP_REASONS.get(source, EstopReason.UNSPECIFIED))
            self._estop_sent_t = self.clock()
            self._guard(self._send, Estop(self._estop_pending))
            self.counts["estops_sent"] += 1
        self.neutral()

    def reset_estop(self) -> None:
        """HEARTBEAT then COMMAND(neutral, ESTOP_RESET): the controller's reset needs a fresh heartbeat."""
        with self._lock:
            self._estop_pending = None
            self._estop_seen = False
            now = self.clock()
            self._guard(self._send, Heartbeat(int(now * 1000) % (1 << 32)))
            self._heartbeat_t = now
            self._guard(self._send, Command(0.0, 0.0, CommandFlags.ESTOP_RESET))
            self._cmd, self._cmd_fresh_t, self._cmd_sent_t = (0.0, 0.0), now, now
            self.counts["resets_sent"] += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            tel = self.telemetry
            return {
                "port": self.desc, **self.counts, "rx": self.decoder.stats.as_dict(),
                "rx_dropped": self.decoder.stats.dropped, "rx_rejected": self.tracker.rejected,
                "rx_missed": self.tracker.missed, "error_codes": list(self.error_codes),
                "controller": None if tel is None else {
                    "state": ControllerState(tel.state).name, "rx_dropped": tel.rx_dropped,
                    "rx_rejected": tel.rx_rejected, "watchdog_trips": tel.watchdog_trips,
                    "last_command_seq": tel.last_command_seq},
                "link_error": None if self._error is None else str(self._error),
            }

    # ------------------------------------------------------------------ internals

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
        if self.port is None:
            raise VehicleLinkError(f"the serial port {self.desc} is not open (start() not called, or closed)")

    def _guard(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run an I/O call; a serial/OS error becomes (and is remembered as) a ``VehicleLinkError``."""
        try:
            return fn(*args)
        except serial.SerialTimeoutException:
            raise  # handled in _send
        except (serial.SerialException, OSError, TypeError, AttributeError) as err:
            # pyserial raises TypeError/AttributeError from a port closed under it (fd None)
            if self._error is None:
                self._error = VehicleLinkError(f"serial link to the motor controller on {self.desc} lost: "
                                               f"{type(err).__name__}: {err}")
                self._error.__cause__ = err
            raise self._error from err

    def _set_command(self, setpoints: tuple[float, float]) -> None:
        with self._lock:
            now = self.clock()
            self._cmd, self._cmd_fresh_t = setpoints, now
            self._guard(self._send_command, now)
            self.counts["tx_commands"] += 1
            if now - (self._heartbeat_t or -1e9) >= self.heartbeat_period:
                self._guard(self._send_heartbeat, now)

    def _send_command(self, now: float) -> None:
        assert self._cmd is not None
        self._send(Command(*self._cmd))
        self._cmd_sent_t = now

    def _send_heartbeat(self, now: float) -> None:
        self._send(Heartbeat(int(now * 1000) % (1 << 32)))
        self._heartbeat_t = now
        self.counts["heartbeats_sent"] += 1

    def _send(self, msg: Any) -> None:
        frame = self.encoder.encode(msg)
        try:
            written = self.port.write(frame)
        except serial.SerialTimeoutException:
            written = 0
        if written is not None and written < len(frame):
            self.counts["tx_dropped"] += 1
        else:
            self.counts["tx_frames"] += 1

    def _poll(self, now: float) -> None:
        waiting = self.port.in_waiting
        if not waiting:
            return
        data = self.port.read(waiting)
        self.counts["rx_bytes"] += len(data)
        for msg in self.decoder.feed(data):
            self._receive(msg, now)

    def _receive(self, msg: Any, now: float) -> None:
        if self._accept_t is not None and now - self._accept_t >= self.link_lost_s and self.tracker.last is not None:
            self.tracker.reset()  # the controller may have restarted its sequence counter
            self.counts["resyncs"] += 1
        if not self.tracker.accept(msg.seq):
            if isinstance(msg, Estop):  # stopping is always safe: a stale ESTOP still stops
                self._on_estop()
            return
        self._accept_t = now
        if isinstance(msg, Telemetry):
            self.telemetry, self._telemetry_t = msg, now
            self.counts["rx_telemetry"] += 1
            if msg.state == ControllerState.ESTOP:
                self._estop_pending = None  # the controller is latched: stop repeating
        elif isinstance(msg, Heartbeat):
            self.counts["rx_heartbeats"] += 1
        elif isinstance(msg, Estop):
            self._on_estop()
        elif isinstance(msg, Ack):
            self.counts["rx_acks"] += 1
            if msg.ref_type == MsgType.ESTOP:
                self._estop_pending = None
        elif isinstance(msg, Error):
            self.counts["rx_errors"] += 1
            if len(self.error_codes) < 100:
                self.error_codes.append(int(msg.code))
        else:
            self.counts["rx_unexpected"] += 1

    def _on_estop(self) -> None:
        self.counts["rx_estops"] += 1
        self._estop_seen = True

    def _link(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                with self._lock:
                    self._service(self.clock())
            except VehicleLinkError:
                return  # remembered in self._error: the loop's next read()/write() raises it
            except Exception as err:  # a bug here must not vanish either
                self._error = VehicleLinkError(f"serial link thread for {self.desc} failed: "
                                               f"{type(err).__name__}: {err}")
                return

    def _service(self, now: float) -> None:
        if self.port is None:
            return
        self._guard(self._poll, now)
        if now - (self._heartbeat_t or -1e9) >= self.heartbeat_period:
            self._guard(self._send_heartbeat, now)
        if self._estop_pending is not None and now - self._estop_sent_t >= self.estop_repeat_s:
            self._guard(self._send, Estop(self._estop_pending))
            self._estop_sent_t = now
            self.counts["estops_sent"] += 1
        if (self._cmd is not None and now - self._cmd_fresh_t <= self.command_hold_s
                and now - self._cmd_sent_t >= self.keepalive_period):
            self._guard(self._send_command, now)
            self.counts["keepalive_commands"] += 1


def vehicle_from_spec(spec: str, factories: Mapping[str, Callable[..., Vehicle]] | None = None,
                      **kwargs: Any) -> Vehicle:
    """``serial:PORT`` -> ``SerialVehicle(PORT, **kwargs)`` (e.g. ``baud=``); any other name is looked
    up in ``factories`` (the CLI passes ``{"sim": ...}``: the pybullet vehicle lives outside robot.deploy)."""
    if spec.startswith("serial:"):
        port = spec[len("serial:"):]
        if not port:
            raise ValueError("--vehicle serial:PORT needs a port, e.g. serial:/dev/ttyUSB0")
        return SerialVehicle(port, **kwargs)
    factories = dict(factories or {})
    if spec in factories:
        return factories[spec](**kwargs)
    known = ", ".join(["serial:PORT", *sorted(factories)])
    raise ValueError(f"unknown vehicle {spec!r}; known: {known}")
