"""robot.deploy.protocol (serial protocol v1) and robot.deploy.controller (the reference controller).

The controller tests run over a real pseudo-terminal pair: the controller opens the slave end by name
with ``serial.Serial(os.ttyname(slave_fd))`` like a USB-serial device, and the test (the "host") holds
the master end. The master has no openable name (``os.ttyname(master_fd)`` is /dev/ptmx, and opening
that makes a new pty), so ``PtyMasterSerial`` adopts the master fd into a ``serial.Serial`` (pyserial
3.5's POSIX backend: fd + abort pipes, then the normal termios set-up, which on Linux configures the
pair). Timing-sensitive rules use ``step(now)`` with a fake clock; two tests run the real thread.
"""

from __future__ import annotations

import os
import random
import struct
import time
from pathlib import Path

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from robot.deploy.controller import Limits, PtyMasterSerial, RecordingActuator, ReferenceController
from robot.deploy.protocol import (
    HEADER,
    MAX_FRAME,
    PAYLOAD_SIZES,
    PROTOCOL_VERSION,
    SYNC,
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
    MsgType,
    ProtocolError,
    SequenceTracker,
    Telemetry,
    crc16_ccitt_false,
    crc16_ccitt_false_bitwise,
    encode,
    quantize,
    seq_is_newer,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

SAMPLES = [
    Command(0.5, -0.25, seq=1),
    Command(-1.0, 1.0, CommandFlags.ESTOP_RESET, seq=65535),
    Heartbeat(4_000_000_000, seq=2),
    Telemetry(1.5, (0.25, -0.5, 9.75), (0.0, 0.125, -2.0), 7.375, ControllerState.NEUTRAL_TIMEOUT, 513, 3, 2, 1, seq=3),
    Estop(EstopReason.OPERATOR, seq=4),
    Ack(MsgType.ESTOP, 4, seq=5),
    Error(ErrorCode.RESET_REFUSED, MsgType.COMMAND, 77, seq=6),
]


def _frame_with(mtype: int, payload: bytes, *, version: int = PROTOCOL_VERSION, seq: int = 0,
                length: int | None = None) -> bytes:
    """A frame with a correct CRC but whatever header fields the test wants."""
    body = HEADER.pack(SYNC, version, mtype, seq, len(payload) if length is None else length) + payload
    return body + struct.pack("<H", crc16_ccitt_false(body))


# ------------------------------------------------------------------------------------------ CRC, codec


def test_crc_check_value_and_bitwise_reference():
    assert crc16_ccitt_false(b"123456789") == 0x29B1
    assert crc16_ccitt_false_bitwise(b"123456789") == 0x29B1
    rng = random.Random(0)
    for n in (0, 1, 7, 73, 300):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert crc16_ccitt_false(data) == crc16_ccitt_false_bitwise(data)


def test_round_trip_every_message_type():
    assert {type(m) for m in SAMPLES} == {Command, Heartbeat, Telemetry, Estop, Ack, Error}
    assert {int(t) for t in MsgType} == set(PAYLOAD_SIZES)
    frames = [encode(m) for m in SAMPLES]
    for frame, msg in zip(frames, SAMPLES, strict=True):
        assert len(frame) == 7 + PAYLOAD_SIZES[frame[3]] + 2
        (got,) = FrameDecoder().feed(frame)
        assert got == quantize(msg)
        if isinstance(msg, Command):  # int16 setpoints: within half a step of 1/32767
            assert (got.steer, got.throttle) == pytest.approx((msg.steer, msg.throttle), abs=0.5 / 32767)
            assert got.flags == msg.flags
        else:  # the other samples are exactly representable (float32 / integers)
            assert got == msg
    dec = FrameDecoder()
    assert dec.feed(b"".join(frames)) == [quantize(m) for m in SAMPLES]
    assert dec.stats.frames == len(SAMPLES) and dec.stats.dropped == 0 and dec.pending == 0


def test_command_setpoint_scaling():
    def wire(steer, throttle):
        return struct.unpack_from("<hh", encode(Command(steer, throttle)), 7)

    assert wire(0.0, 1.0) == (0, 32767) and wire(-1.0, 0.5) == (-32767, 16384)
    assert wire(3.0, -7.0) == (32767, -32767)  # encode saturates at +-1
    assert quantize(Command(0.3, -0.3)).steer == pytest.approx(0.3, abs=0.5 / 32767)
    (msg,) = FrameDecoder().feed(_frame_with(MsgType.COMMAND, struct.pack("<hhB", -32768, 0, 0)))
    assert msg.steer == -1.0  # -32768 reads as -1.0
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ProtocolError):
            encode(Command(bad, 0.0))
    with pytest.raises(ProtocolError):
        encode(Command(0.0, 0.0, seq=65536))


def test_documented_example_frames_match_the_encoder():
    doc = DOC.read_text()
    examples = {
        Command(0.5, 0.25, seq=0x0102): "aa 55 01 01 02 01 05 00 40 00 20 00 86 5d",
        Estop(EstopReason.OPERATOR, seq=0x0103): "aa 55 01 04 03 01 01 01 c1 f6",
    }
    for msg, hexstr in examples.items():
        assert encode(msg).hex(" ") == hexstr
        assert hexstr.upper() in doc
    assert "0x29B1" in doc


def test_header_rejections_are_counted_by_reason():
    good = encode(Heartbeat(1, seq=9))
    cases = {
        "bad_version": _frame_with(MsgType.HEARTBEAT, b"\0" * 4, version=2),
        "bad_type": _frame_with(0x7F, b"\0" * 4),
        "bad_length": _frame_with(MsgType.HEARTBEAT, b"\0" * 5),
        "bad_payload": _frame_with(MsgType.TELEMETRY, struct.pack("<8fBHIII", *[0.0] * 8, 9, 0, 0, 0, 0)),  # state 9
    }
    for reason, frame in cases.items():
        dec = FrameDecoder()
        assert dec.feed(frame + good) == [Heartbeat(1, seq=9)]
        counts = dec.stats.as_dict()
        assert counts[reason] == 1 and counts["dropped"] == 1, (reason, counts)
    dec = FrameDecoder()  # a length field beyond MAX_PAYLOAD never makes the decoder wait for it
    assert dec.feed(HEADER.pack(SYNC, 1, MsgType.COMMAND, 0, 255) + good) == [Heartbeat(1, seq=9)]
    assert dec.stats.bad_length == 1


# ------------------------------------------------------------------------------------------ hostile input


def _message_strategy():
    f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
    u8, u16, u32 = (st.integers(0, (1 << b) - 1) for b in (8, 16, 32))
    seq = {"seq": u16}
    return st.one_of(
        st.builds(Command, st.floats(-1, 1), st.floats(-1, 1), u8, **seq),
        st.builds(Heartbeat, u32, **seq),
        st.builds(Telemetry, f32, st.tuples(f32, f32, f32), st.tuples(f32, f32, f32), f32,
                  st.sampled_from(ControllerState), u16, u32, u32, u32, **seq),
        st.builds(Estop, u8, **seq),
        st.builds(Ack, u8, u16, **seq),
        st.builds(Error, u8, u8, u16, **seq),
    )


@st.composite
def _garbage(draw):
    """Random bytes, a truncated frame, or a frame with one byte changed: never a valid frame."""
    kind = draw(st.sampled_from(["random", "truncated", "corrupted", "sync"]))
    if kind == "random":
        return draw(st.binary(max_size=40))
    if kind == "sync":
        return draw(st.sampled_from([b"\xaa", SYNC, SYNC + b"\x01", SYNC + b"\x01\x03"]))
    frame = encode(draw(_message_strategy()))
    if kind == "truncated":
        return frame[: draw(st.integers(0, len(frame) - 1))]
    i = draw(st.integers(0, len(frame) - 1))
    return frame[:i] + bytes([frame[i] ^ draw(st.integers(1, 255))]) + frame[i + 1:]


@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(st.tuples(_garbage(), _message_strategy()), max_size=8), tail=_garbage(),
       chunking=st.randoms(use_true_random=False))
def test_garbage_interleaved_with_frames_yields_exactly_the_frames(pieces, tail, chunking):
    """Exactly the valid frames come out, each from the ``feed`` call that delivers its last byte."""
    dec, out = FrameDecoder(), []

    def feed(data: bytes) -> None:
        i = 0
        while i < len(data):  # random chunk sizes, including single bytes
            n = chunking.randint(1, 20)
            out.extend(dec.feed(data[i:i + n]))
            i += n
            assert dec.pending <= MAX_FRAME

    for k, (garbage, msg) in enumerate(pieces):
        feed(garbage)
        feed(encode(msg))
        assert out == [quantize(m) for _, m in pieces[:k + 1]]
    feed(tail)
    assert out == [quantize(m) for _, m in pieces] and dec.stats.frames == len(pieces)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=600))
def test_hostile_bytes_never_raise_and_never_pile_up(data):
    dec = FrameDecoder()
    for chunk in (data[: len(data) // 3], data[len(data) // 3:], SYNC, data):
        assert isinstance(dec.feed(chunk), list)
        assert dec.pending <= MAX_FRAME


def test_truncated_frames_are_dropped_and_the_next_frame_survives():
    frame, nxt = encode(Command(0.5, 0.25, seq=0x0102)), encode(Heartbeat(7, seq=0x0103))
    for k in range(1, len(frame)):
        dec = FrameDecoder()
        assert dec.feed(frame[:k]) == [] and dec.stats.dropped == 0  # incomplete: waits, drops nothing yet
        assert dec.feed(nxt) == [Heartbeat(7, seq=0x0103)], k
        assert dec.stats.dropped == (0 if k == 1 else 1), (k, dec.stats)  # k == 1: a lone 0xAA is skipped


@pytest.mark.parametrize("chunk", [None, 1])
def test_every_corrupted_byte_drops_the_frame_and_is_counted(chunk):
    frame, nxt = encode(Command(0.5, 0.25, seq=0x0102)), encode(Heartbeat(7, seq=0x0103))
    for i in range(len(frame)):
        for mask in (0x01, 0x80, 0xFF):
            bad = frame[:i] + bytes([frame[i] ^ mask]) + frame[i + 1:]
            dec, stream = FrameDecoder(), bad + nxt
            parts = [stream] if chunk is None else [stream[j:j + 1] for j in range(len(stream))]
            out = [m for p in parts for m in dec.feed(p)]
            assert out == [Heartbeat(7, seq=0x0103)], (i, mask)
            s = dec.stats
            if i < 2:  # a broken sync pair: the whole frame is skipped as garbage
                assert s.dropped == 0 and s.skipped_bytes == len(frame), (i, mask, s)
            else:
                expected = {2: "bad_version", 3: "bad_type", 6: "bad_length"}.get(i, "bad_crc")
                assert s.dropped == 1 and getattr(s, expected) == 1, (i, mask, s)


# ------------------------------------------------------------------------------------------ sequence numbers


def test_replayed_frame_is_rejected_and_counted():
    frame = encode(Command(0.1, 0.2, seq=40))
    msgs = FrameDecoder().feed(frame + frame + encode(Command(0.1, 0.2, seq=39)) + encode(Heartbeat(0, seq=41)))
    tracker = SequenceTracker()
    assert [tracker.accept(m.seq) for m in msgs] == [True, False, False, True]
    assert tracker.rejected == 2 and tracker.accepted == 2 and tracker.last == 41


def test_sequence_wraps_around():
    tracker = SequenceTracker()
    assert tracker.accept(65534) and tracker.accept(65535) and tracker.accept(0) and tracker.accept(2)
    assert tracker.missed == 1  # seq 1 was lost
    assert not tracker.accept(65535) and not tracker.accept(0) and tracker.rejected == 2
    enc = FrameEncoder(start_seq=65535)
    dec = FrameDecoder()
    assert [m.seq for m in dec.feed(b"".join(enc.encode(Heartbeat(i)) for i in range(3)))] == [65535, 0, 1]
    # half window: 32767 ahead is newer, 32768 ahead is older
    assert seq_is_newer(32767, 0) and not seq_is_newer(32768, 0) and not seq_is_newer(5, 5)
    tracker.reset()
    assert tracker.accept(100)  # after a reset (host restart) the next frame is accepted


@given(a=st.integers(0, 65535), b=st.integers(0, 65535))
def test_newer_is_antisymmetric(a, b):
    assert not (seq_is_newer(a, b) and seq_is_newer(b, a))
    assert seq_is_newer(a, b) == (1 <= (a - b) % 65536 <= 32767)


# ------------------------------------------------------------------------------------------ the controller



class FakeClock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Host:
    """The test's end of the link: sends frames with its own sequence counter and collects replies."""

    def __init__(self, port: serial.Serial):
        self.port, self.enc, self.dec = port, FrameEncoder(start_seq=1000), FrameDecoder()
        self.received: list = []

    def send(self, msg) -> bytes:
        frame = self.enc.encode(msg)
        self.port.write(frame)
        return frame

    def send_raw(self, data: bytes) -> None:
        self.port.write(data)

    def poll(self) -> list:
        n = self.port.in_waiting
        new = self.dec.feed(self.port.read(n)) if n else []
        self.received += new
        return new

    def of(self, cls) -> list:
        self.poll()
        return [m for m in self.received if isinstance(m, cls)]

    def last_telemetry(self) -> Telemetry:
        return self.of(Telemetry)[-1]

    def wait_until(self, condition, timeout: float = 2.0) -> bool:
        """Poll the port until ``condition()`` holds (pty delivery is asynchronous, usually microseconds)."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            try:
                if condition():
                    return True
            except IndexError:  # nothing of that kind received yet
                pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.0005)


@pytest.fixture
def pty_link():
    """(controller port, host port): the two ends of a fresh pseudo-terminal, both pyserial objects."""
    master_fd, slave_fd = os.openpty()
    ctrl_port = serial.Serial(os.ttyname(slave_fd), baudrate=115200, timeout=0)
    host_port = PtyMasterSerial(master_fd, baudrate=115200, timeout=0)
    yield ctrl_port, host_port
    ctrl_port.close()
    host_port.close()  # closes master_fd
    os.close(slave_fd)


@pytest.fixture
def bench(pty_link):
    """A controller driven by ``step`` with a fake clock, and the host end."""
    ctrl_port, host_port = pty_link
    clock = FakeClock()
    ctrl = ReferenceController(ctrl_port, clock=clock, limits=Limits(throttle_min=-0.5, throttle_max=0.8))
    host = Host(host_port)
    yield ctrl, host, clock
    ctrl.stop()


def _deliver(ctrl: ReferenceController, clock: FakeClock, at: float | None = None, expect: int = 0):
    """Wait (real time, microseconds on a pty) until the controller's port holds ``expect`` bytes, then
    run one controller step at fake time ``at``."""
    deadline = time.monotonic() + 2.0
    while ctrl.port.in_waiting < expect and time.monotonic() < deadline:
        time.sleep(0.0002)
    if at is not None:
        clock.t = at
    return ctrl.step()


def _send(ctrl, host, clock, *msgs, at=None, raw: bytes = b""):
    """Send ``msgs`` (or ``raw`` bytes) from the host, then step the controller at fake time ``at``."""
    if raw:
        host.send_raw(raw)
        n = len(raw)
    else:
        n = sum(len(host.send(m)) for m in msgs)
    return _deliver(ctrl, clock, at, n)


def test_commands_flow_and_are_clamped(bench):
    ctrl, host, clock = bench
    assert ctrl.actuator.last == (0.0, 0.0) and ctrl.state == ControllerState.IDLE
    _send(ctrl, host, clock, Command(0.5, 0.25), at=100.0)
    assert ctrl.actuator.last == pytest.approx((0.5, 0.25), abs=1e-4) and ctrl.state == ControllerState.DRIVING
    _send(ctrl, host, clock, Command(-1.0, 1.0), at=100.02)
    assert ctrl.actuator.last == pytest.approx((-1.0, 0.8))  # throttle clamped to the limit
    assert ctrl.stats.commands_applied == 2 and ctrl.stats.commands_clamped == 1
    assert host.wait_until(lambda: host.of(Telemetry) and host.last_telemetry().last_command_seq == 1001)
    tel = host.last_telemetry()
    assert tel.state == ControllerState.DRIVING and tel.last_command_seq == 1001 and tel.battery_v == pytest.approx(7.4)
    assert tel.wheel_speed > 0.0  # the lagged speed of the first command
    assert len(host.of(Heartbeat)) >= 1


def test_watchdog_goes_neutral_after_timeout_then_recovers(bench):
    ctrl, host, clock = bench
    _send(ctrl, host, clock, Command(0.2, 0.5), at=100.0)
    for t in (100.05, 100.0999):
        _deliver(ctrl, clock, t)
        assert ctrl.state == ControllerState.DRIVING and ctrl.actuator.last != (0.0, 0.0)
    _deliver(ctrl, clock, 100.1001)
    assert ctrl.state == ControllerState.NEUTRAL_TIMEOUT and ctrl.actuator.last == (0.0, 0.0)
    assert ctrl.stats.watchdog_trips == 1
    _deliver(ctrl, clock, 100.12)  # the next telemetry slot reports it
    assert host.wait_until(lambda: host.last_telemetry().state == ControllerState.NEUTRAL_TIMEOUT)
    assert host.last_telemetry().watchdog_trips == 1
    _deliver(ctrl, clock, 100.5)
    assert ctrl.state == ControllerState.NEUTRAL_TIMEOUT  # heartbeats do not feed the command watchdog
    _send(ctrl, host, clock, Heartbeat(0), at=100.55)
    assert ctrl.state == ControllerState.NEUTRAL_TIMEOUT
    _send(ctrl, host, clock, Command(0.0, 0.3), at=100.6)
    assert ctrl.state == ControllerState.DRIVING and ctrl.actuator.last[1] == pytest.approx(0.3, abs=1e-4)


def test_corrupted_truncated_and_replayed_frames_are_not_acted_on(bench):
    ctrl, host, clock = bench
    first = host.send(Command(0.1, 0.1))
    _deliver(ctrl, clock, 100.0, len(first))
    applied = ctrl.actuator.last
    full = host.enc.encode(Command(1.0, 0.8))  # not sent as is
    corrupted = full[:8] + bytes([full[8] ^ 0x40]) + full[9:]
    for raw in (corrupted, full[:-3], first, encode(Command(-1.0, 0.8, seq=999))):  # ..., replay, stale seq
        _send(ctrl, host, clock, raw=raw, at=clock.t + 0.01)
        assert ctrl.actuator.last == applied
    assert ctrl.stats.commands_applied == 1
    assert ctrl.tracker.rejected == 2  # the replay and the stale one
    assert ctrl.decoder.stats.bad_crc >= 1
    rng = random.Random(1)  # hostile bytes on the wire: counted, nothing acted on, the link keeps working
    _send(ctrl, host, clock, raw=bytes(rng.randrange(256) for _ in range(3000)), at=clock.t + 0.01)
    assert ctrl.actuator.last == applied
    _send(ctrl, host, clock, Command(-0.5, 0.5), at=clock.t + 0.01)  # the truncated one is gone, not pending
    assert ctrl.actuator.last == pytest.approx((-0.5, 0.5), abs=1e-4)
    _deliver(ctrl, clock, clock.t + 0.03)
    assert host.wait_until(lambda: host.last_telemetry().rx_rejected == 2)
    tel = host.last_telemetry()
    assert tel.rx_rejected == 2 and tel.rx_dropped == ctrl.decoder.stats.dropped >= 2


def test_estop_latches_until_reset_with_fresh_heartbeat(bench):
    ctrl, host, clock = bench
    _send(ctrl, host, clock, Heartbeat(0), Command(0.3, 0.6), at=100.0)
    estop_frame = host.send(Estop(EstopReason.OPERATOR))
    _deliver(ctrl, clock, 100.01, len(estop_frame))
    assert ctrl.state == ControllerState.ESTOP and ctrl.actuator.last == (0.0, 0.0)
    assert host.wait_until(lambda: any(a.ref_type == MsgType.ESTOP for a in host.of(Ack)))
    _send(ctrl, host, clock, Command(0.3, 0.6), at=100.02)  # ignored while latched
    _deliver(ctrl, clock, 100.5)  # and the watchdog does not un-latch it
    assert ctrl.state == ControllerState.ESTOP and ctrl.actuator.last == (0.0, 0.0)
    _send(ctrl, host, clock, Command(0.0, 0.0, CommandFlags.ESTOP_RESET), at=100.6)  # heartbeat predates e-stop
    assert ctrl.state == ControllerState.ESTOP and ctrl.stats.resets_refused == 1
    _send(ctrl, host, clock, Heartbeat(1), at=100.7)
    _send(ctrl, host, clock, Command(0.0, 0.0, CommandFlags.ESTOP_RESET), at=101.3)  # heartbeat now 0.6 s old
    assert ctrl.state == ControllerState.ESTOP and ctrl.stats.resets_refused == 2
    assert host.wait_until(lambda: [e.code for e in host.of(Error)].count(ErrorCode.RESET_REFUSED) == 2)
    errors = host.of(Error)
    assert ErrorCode.ESTOP_LATCHED in [e.code for e in errors]
    _send(ctrl, host, clock, Heartbeat(2), at=101.4)
    _send(ctrl, host, clock, Command(0.4, 0.4, CommandFlags.ESTOP_RESET), at=101.45)
    assert ctrl.state == ControllerState.IDLE and ctrl.actuator.last == (0.0, 0.0)  # reset; setpoints not applied
    _send(ctrl, host, clock, Command(0.4, 0.4), at=101.46)
    assert ctrl.state == ControllerState.DRIVING and ctrl.actuator.last == pytest.approx((0.4, 0.4), abs=1e-4)
    assert ctrl.stats.estops == 1 and ctrl.stats.resets == 1


def test_local_estop_and_stale_estop_frames_still_stop(bench):
    ctrl, host, clock = bench
    _send(ctrl, host, clock, Command(0.3, 0.6), at=100.0)
    ctrl.trigger_estop()
    assert ctrl.state == ControllerState.ESTOP and ctrl.actuator.last == (0.0, 0.0)
    assert host.wait_until(lambda: host.of(Estop))
    assert host.of(Estop)[-1].reason == EstopReason.LOCAL_INPUT
    _send(ctrl, host, clock, Heartbeat(0), at=100.1)
    _send(ctrl, host, clock, Command(0.0, 0.0, CommandFlags.ESTOP_RESET), at=100.12)
    _send(ctrl, host, clock, Command(0.3, 0.6), at=100.13)
    assert ctrl.state == ControllerState.DRIVING
    # an ESTOP with a stale sequence number is counted as rejected but still stops (stopping is always safe)
    _send(ctrl, host, clock, raw=encode(Estop(seq=5)), at=100.14)
    assert ctrl.state == ControllerState.ESTOP and ctrl.tracker.rejected == 1


def test_host_restart_resyncs_after_link_lost(bench):
    ctrl, host, clock = bench
    _send(ctrl, host, clock, Command(0.3, 0.3), at=100.0)
    host.enc = FrameEncoder(start_seq=0)  # restarted host: its counter is "older" than 1000
    _send(ctrl, host, clock, Command(0.5, 0.5), at=100.05)
    assert ctrl.actuator.last == pytest.approx((0.3, 0.3), abs=1e-4) and ctrl.tracker.rejected == 1
    _send(ctrl, host, clock, Command(0.5, 0.5), at=101.1)  # > link_lost_s without an accepted frame
    assert ctrl.actuator.last == pytest.approx((0.5, 0.5), abs=1e-4) and ctrl.stats.link_resyncs == 1


# ------------------------------------------------------------------------------------------ real thread


def test_threaded_command_stream_stop_goes_neutral_in_time_and_stop_leaves_neutral(pty_link):
    ctrl_port, host_port = pty_link
    host = Host(host_port)
    ctrl = ReferenceController(ctrl_port)  # real clock, defaults: timeout 0.100 s, telemetry 50 Hz
    actuator: RecordingActuator = ctrl.actuator
    with ctrl:
        last_send = 0.0
        for i in range(10):  # 50 Hz command stream for 0.2 s
            last_send = time.monotonic()  # taken before the write: the controller cannot have it earlier
            host.send(Command(0.1, 0.3 + 0.01 * i))
            time.sleep(0.02)
            host.poll()
        assert ctrl.state == ControllerState.DRIVING and actuator.last[1] == pytest.approx(0.39, abs=1e-3)
        deadline = last_send + 1.0
        while time.monotonic() < deadline and not any(
                m.state == ControllerState.NEUTRAL_TIMEOUT for m in host.of(Telemetry)):
            time.sleep(0.002)
        seen_at = time.monotonic()
        neutral_at = next(t for t, s, th in reversed(actuator.history) if (s, th) == (0.0, 0.0))
        period = ctrl.telemetry_period
        delay = neutral_at - last_send
        print(f"stream stop -> neutral output {delay * 1e3:.1f} ms, "
              f"seen in telemetry {(seen_at - last_send) * 1e3:.1f} ms")
        assert ctrl.timeout_s <= delay <= ctrl.timeout_s + period
        assert seen_at - last_send <= ctrl.timeout_s + 3 * period
        host.send(Command(0.2, 0.2))  # drive again, then stop() while driving
        t0 = time.monotonic()
        while ctrl.state != ControllerState.DRIVING and time.monotonic() - t0 < 1.0:
            time.sleep(0.001)
        assert actuator.last != (0.0, 0.0)
    assert not ctrl.running and actuator.last == (0.0, 0.0) and actuator.history[-1][1:] == (0.0, 0.0)
    assert ctrl.stats.errors == []


def test_thread_fails_safe_when_the_port_dies(pty_link):
    ctrl_port, host_port = pty_link
    host = Host(host_port)
    ctrl = ReferenceController(ctrl_port)
    ctrl.start()
    try:
        host.send(Command(0.2, 0.5))
        t0 = time.monotonic()
        while ctrl.actuator.last == (0.0, 0.0) and time.monotonic() - t0 < 1.0:
            time.sleep(0.001)
        ctrl_port.close()
        t0 = time.monotonic()
        while ctrl.running and time.monotonic() - t0 < 1.0:
            time.sleep(0.001)
        assert not ctrl.running and ctrl.stats.errors and ctrl.actuator.last == (0.0, 0.0)
    finally:
        ctrl.stop()
