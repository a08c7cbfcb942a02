"""``ReferenceController``: the motor-controller side of the serial protocol, in Python.

It is a bench fake for the host code (run it on one end of a pseudo-terminal or a USB-serial loop)
and the executable specification for the firmware: everything the firmware must do is here --
command watchdog, limits, latching e-stop, sequence checks, telemetry -- in a single ``step(now)``
that a firmware main loop would call. See docs/protocol.md for the rules it implements.

Only the standard library and pyserial are used (the on-vehicle import rule of ``robot.deploy``).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import serial

from robot.deploy.protocol import (
    Ack,
    Command,
    CommandFlags,
    ControllerState,
    Error,
    ErrorCode,
    Estop,
    EstopReason,
    FrameDecoder,
    FrameEncoder,
    Heartbeat,
    Message,
    MsgType,
    SequenceTracker,
    Telemetry,
)

NEUTRAL = (0.0, 0.0)


class Actuator(Protocol):
    def set(self, steer: float, throttle: float) -> None: ...


class RecordingActuator:
    """The default actuator: remembers the last output and a (bounded) history of (time, steer, throttle)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, maxlen: int = 100_000):
        self.clock = clock
        self.last: tuple[float, float] = NEUTRAL
        self.history: collections.deque[tuple[float, float, float]] = collections.deque(maxlen=maxlen)

    def set(self, steer: float, throttle: float) -> None:
        self.last = (steer, throttle)
        self.history.append((self.clock(), steer, throttle))


@dataclass(frozen=True)
class SensorReading:
    wheel_speed: float = 0.0  # m/s
    accel: tuple[float, float, float] = (0.0, 0.0, 0.0)  # m/s^2
    gyro: tuple[float, float, float] = (0.0, 0.0, 0.0)  # rad/s
    battery_v: float = 7.4


class SensorSource(Protocol):
    def read(self, now: float, steer: float, throttle: float) -> SensorReading: ...


class LagSensors:
    """Default sensors: wheel speed follows ``throttle * max_speed_mps`` with a first-order lag of time
    constant ``tau_s``; IMU zero; a constant battery voltage."""

    def __init__(self, max_speed_mps: float = 5.0, tau_s: float = 0.2, battery_v: float = 7.4):
        self.max_speed_mps, self.tau_s, self.battery_v = max_speed_mps, tau_s, battery_v
        self.speed = 0.0
        self._t: float | None = None

    def read(self, now: float, steer: float, throttle: float) -> SensorReading:
        dt = 0.0 if self._t is None else max(0.0, now - self._t)
        self._t = now
        alpha = 1.0 - math.exp(-dt / self.tau_s) if self.tau_s > 0 else 1.0
        self.speed += alpha * (throttle * self.max_speed_mps - self.speed)
        return SensorReading(wheel_speed=self.speed, battery_v=self.battery_v)


@dataclass(frozen=True)
class Limits:
    """Output limits: commands are clamped into [min, max] (normalised units)."""

    steer_min: float = -1.0
    steer_max: float = 1.0
    throttle_min: float = -1.0
    throttle_max: float = 1.0

    def clamp(self, steer: float, throttle: float) -> tuple[float, float]:
        return (min(self.steer_max, max(self.steer_min, steer)),
                min(self.throttle_max, max(self.throttle_min, throttle)))


@dataclass
class ControllerStats:
    commands_applied: int = 0
    commands_clamped: int = 0
    commands_ignored_estop: int = 0  # valid COMMANDs that arrived while the e-stop was latched
    watchdog_trips: int = 0
    estops: int = 0  # times the e-stop latched (remote or local)
    estop_messages: int = 0  # ESTOP frames received (including repeats while latched)
    resets: int = 0
    resets_refused: int = 0
    unexpected: int = 0  # valid frames of a type the host must not send (TELEMETRY, ACK, ERROR)
    link_resyncs: int = 0  # sequence tracker cleared after link_lost_s without an accepted frame
    tx_frames: int = 0
    tx_dropped: int = 0  # frames that could not be queued within the write timeout
    errors: list[str] = field(default_factory=list)


class ReferenceController:
    """The controller side of protocol v1 over a pyserial port.

    Rules (docs/protocol.md, "Controller behaviour"):

    * valid COMMANDs (CRC ok, sequence newer than the last accepted frame) are clamped to ``limits``
      and applied; corrupted, truncated, replayed and stale frames are never acted on, only counted;
    * watchdog: ``timeout_s`` after the last applied COMMAND the output goes neutral and the state is
      NEUTRAL_TIMEOUT until the next valid COMMAND;
    * e-stop: an ESTOP frame or ``trigger_estop()`` outputs neutral and latches; it is cleared only by a
      COMMAND with ``ESTOP_RESET`` received while a HEARTBEAT accepted *after* the latch is at most
      ``heartbeat_fresh_s`` old. The resetting COMMAND's setpoints are not applied (state IDLE);
    * TELEMETRY at ``telemetry_hz``, HEARTBEAT at ``heartbeat_hz``; ACK for each ESTOP received and
      for an accepted reset, ERROR for a refused reset / commands while latched.

    ``step(now)`` does one pass of the main loop and is all a deterministic test needs; ``start()`` runs
    it in a background thread every ``poll_s`` seconds and ``stop()`` ends the thread and always leaves
    the output neutral. ``clock`` is the time source of the thread and of ``step()`` without ``now``.
    """

    def __init__(
        self,
        port: Any,
        actuator: Actuator | None = None,
        sensors: SensorSource | None = None,
        *,
        timeout_s: float = 0.100,
        telemetry_hz: float = 50.0,
        heartbeat_hz: float = 10.0,
        heartbeat_fresh_s: float = 0.5,
        link_lost_s: float = 1.0,
        limits: Limits = Limits(),
        clock: Callable[[], float] = time.monotonic,
        poll_s: float = 0.001,
        write_timeout_s: float = 0.002,
        start_seq: int = 0,
    ):
        self.port = port
        self.clock = clock
        self.actuator: Actuator = actuator if actuator is not None else RecordingActuator(clock)
        self.sensors: SensorSource = sensors if sensors is not None else LagSensors()
        self.timeout_s, self.heartbeat_fresh_s, self.link_lost_s = timeout_s, heartbeat_fresh_s, link_lost_s
        self.telemetry_period = 1.0 / telemetry_hz
        self.heartbeat_period = 1.0 / heartbeat_hz
        self.limits, self.poll_s = limits, poll_s
        # Never block the control loop on a full transmit buffer (pyserial's write_timeout=0 busy-waits
        # on EAGAIN in 3.5, so a short timeout is used): an unqueued frame is dropped and counted.
        if hasattr(port, "write_timeout"):
            port.write_timeout = write_timeout_s

        self.decoder = FrameDecoder()
        self.encoder = FrameEncoder(start_seq)
        self.tracker = SequenceTracker()
        self.stats = ControllerStats()
        self.state = ControllerState.IDLE
        self.output: tuple[float, float] = NEUTRAL
        self.last_command_seq = 0
        self.last_reading = SensorReading()

        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_command_t: float | None = None
        self._last_accept_t: float | None = None
        self._estop_t: float | None = None
        self._heartbeat_t: float | None = None
        self._next_telemetry: float | None = None
        self._next_heartbeat: float | None = None
        self._last_latched_error_t: float | None = None
        self._set_output(*NEUTRAL, force=True)  # power-on: neutral

    # ------------------------------------------------------------------ main loop

    def step(self, now: float | None = None) -> list[Message]:
        """One pass: read what the port holds, act on valid frames, run the watchdog, send what is due.

        Returns the valid messages received in this pass (for tests and logging)."""
        with self._lock:
            now = self.clock() if now is None else now
            waiting = self.port.in_waiting
            messages = self.decoder.feed(self.port.read(waiting)) if waiting else []
            for msg in messages:
                self._receive(msg, now)
            self._watchdog(now)
            self._send_periodic(now)
            return messages

    def trigger_estop(self, reason: int = EstopReason.LOCAL_INPUT, now: float | None = None) -> None:
        """The controller's local e-stop input: latch, output neutral, tell the host."""
        with self._lock:
            now = self.clock() if now is None else now
            self._latch_estop(now)
            self._send(Estop(int(reason)))

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("controller already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ReferenceController", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread (if any) and set the output neutral -- always, even after a failure."""
        try:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout)
                self._thread = None
        finally:
            with self._lock:
                self._set_output(*NEUTRAL, force=True)
                if self.state != ControllerState.ESTOP:
                    self.state = ControllerState.IDLE

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> ReferenceController:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.step()
                self._stop.wait(self.poll_s)
        except Exception as exc:  # the port went away, ...: fail safe and say why
            with self._lock:
                self.stats.errors.append(f"{type(exc).__name__}: {exc}")
                self._set_output(*NEUTRAL, force=True)

    # ------------------------------------------------------------------ receiving

    def _receive(self, msg: Message, now: float) -> None:
        if (self._last_accept_t is not None and now - self._last_accept_t >= self.link_lost_s
                and self.tracker.last is not None):
            self.tracker.reset()  # the host may have restarted with a new sequence counter
            self.stats.link_resyncs += 1
        if not self.tracker.accept(msg.seq):
            if isinstance(msg, Estop):  # stopping is always safe: a stale ESTOP still stops
                self._on_estop(msg, now)
            return
        self._last_accept_t = now
        if isinstance(msg, Command):
            self._on_command(msg, now)
        elif isinstance(msg, Heartbeat):
            self._heartbeat_t = now
        elif isinstance(msg, Estop):
            self._on_estop(msg, now)
        else:
            self.stats.unexpected += 1

    def _on_command(self, cmd: Command, now: float) -> None:
        if self.state == ControllerState.ESTOP:
            if cmd.flags & CommandFlags.ESTOP_RESET:
                self._try_reset(cmd, now)
            else:
                self.stats.commands_ignored_estop += 1
                if self._last_latched_error_t is None or now - self._last_latched_error_t >= 1.0:
                    self._last_latched_error_t = now
                    self._send(Error(ErrorCode.ESTOP_LATCHED, MsgType.COMMAND, cmd.seq))
            return
        steer, throttle = self.limits.clamp(cmd.steer, cmd.throttle)
        if (steer, throttle) != (cmd.steer, cmd.throttle):
            self.stats.commands_clamped += 1
        self._set_output(steer, throttle)
        self.state = ControllerState.DRIVING
        self._last_command_t = now
        self.last_command_seq = cmd.seq
        self.stats.commands_applied += 1

    def _try_reset(self, cmd: Command, now: float) -> None:
        fresh = (self._heartbeat_t is not None and self._estop_t is not None and self._heartbeat_t >= self._estop_t
                 and now - self._heartbeat_t <= self.heartbeat_fresh_s)
        if not fresh:
            self.stats.resets_refused += 1
            self._send(Error(ErrorCode.RESET_REFUSED, MsgType.COMMAND, cmd.seq))
            return
        self.stats.resets += 1
        self.state = ControllerState.IDLE
        self._estop_t = None
        self._last_command_t = None
        self.last_command_seq = cmd.seq
        self._set_output(*NEUTRAL)
        self._send(Ack(MsgType.COMMAND, cmd.seq))

    def _on_estop(self, msg: Estop, now: float) -> None:
        self.stats.estop_messages += 1
        self._latch_estop(now)
        self._send(Ack(MsgType.ESTOP, msg.seq))

    def _latch_estop(self, now: float) -> None:
        if self.state != ControllerState.ESTOP:
            self.stats.estops += 1
        self._estop_t = now  # a heartbeat must follow the *latest* e-stop before a reset
        self.state = ControllerState.ESTOP
        self._set_output(*NEUTRAL)

    # ------------------------------------------------------------------ watchdog, sending

    def _watchdog(self, now: float) -> None:
        if (self.state == ControllerState.DRIVING and self._last_command_t is not None
                and now - self._last_command_t >= self.timeout_s):
            self._set_output(*NEUTRAL)
            self.state = ControllerState.NEUTRAL_TIMEOUT
            self.stats.watchdog_trips += 1

    def _send_periodic(self, now: float) -> None:
        if self._next_telemetry is None or now >= self._next_telemetry:
            self.last_reading = r = self.sensors.read(now, *self.output)
            self._send(Telemetry(r.wheel_speed, r.accel, r.gyro, r.battery_v, self.state, self.last_command_seq,
                                 self.decoder.stats.dropped, self.tracker.rejected, self.stats.watchdog_trips))
            self._next_telemetry = _next_deadline(self._next_telemetry, now, self.telemetry_period)
        if self._next_heartbeat is None or now >= self._next_heartbeat:
            self._send(Heartbeat(int(now * 1000)))
            self._next_heartbeat = _next_deadline(self._next_heartbeat, now, self.heartbeat_period)

    def _send(self, msg: Message) -> None:
        frame = self.encoder.encode(msg)
        try:
            written = self.port.write(frame)
        except serial.SerialTimeoutException:
            written = 0
        if written is not None and written < len(frame):
            self.stats.tx_dropped += 1
        else:
            self.stats.tx_frames += 1

    def _set_output(self, steer: float, throttle: float, force: bool = False) -> None:
        """Drive the actuator when the output changes (``force``: even when it does not)."""
        if force or (steer, throttle) != self.output:
            self.output = (steer, throttle)
            self.actuator.set(steer, throttle)


def _next_deadline(previous: float | None, now: float, period: float) -> float:
    """Fixed-rate schedule; after a stall skip the missed slots instead of sending a burst."""
    if previous is None or now - previous >= period:
        return now + period
    return previous + period


class PtyMasterSerial(serial.Serial):
    """A pyserial 3.5 POSIX ``Serial`` that adopts an already open fd, the master end of ``os.openpty()``,
    instead of opening a path (``ttyname`` of a master is ``/dev/ptmx``, and opening that makes a new pty);
    the rest (read/write/in_waiting/close, termios) is pyserial's own code. With it the reference controller
    runs on one end of a pseudo-terminal pair while the host opens the other by name
    (``os.ttyname(slave_fd)``): real pyserial, real bytes, no hardware (tests and benches)."""

    def __init__(self, fd: int, **kwargs: Any) -> None:
        import fcntl
        import os

        super().__init__(**kwargs)  # no port given: nothing opened yet
        self._port = f"pty-master:{fd}"
        self.fd = fd
        self._reconfigure_port(force_update=True)  # raw mode; on Linux this configures the pty pair
        self.pipe_abort_read_r, self.pipe_abort_read_w = os.pipe()
        self.pipe_abort_write_r, self.pipe_abort_write_w = os.pipe()
        for p in (self.pipe_abort_read_r, self.pipe_abort_write_r):
            fcntl.fcntl(p, fcntl.F_SETFL, os.O_NONBLOCK)
        self.is_open = True
