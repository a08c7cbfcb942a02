"""The host <-> motor-controller serial protocol, version 1 (specification: docs/protocol.md).

A frame is length-delimited and starts with the two sync bytes 0xAA 0x55; all multi-byte fields are
little-endian::

    AA 55 | version u8 | type u8 | seq u16 | length u8 | payload (length bytes) | crc16 u16

The CRC is CRC-16/CCITT-FALSE over every byte before it (sync bytes included). Every payload of
version 1 has a fixed size per message type, so a receiver checks the header (version, type, length)
before it waits for the rest of a frame, and after any rejection it drops one byte and hunts for the
next sync pair: garbage, truncated and corrupted frames cost only themselves.

Only the standard library is used here (the on-vehicle import rule of ``robot.deploy``).
"""

from __future__ import annotations

import binascii
import math
import struct
from dataclasses import dataclass, field, fields, replace
from enum import IntEnum, IntFlag
from typing import Union

PROTOCOL_VERSION = 1

SYNC = b"\xaa\x55"
HEADER = struct.Struct("<2sBBHB")  # sync, version, type, seq, payload length
HEADER_SIZE = HEADER.size  # 7
CRC_SIZE = 2
MAX_PAYLOAD = 64
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE  # 73
SEQ_MOD = 1 << 16
SEQ_WINDOW = SEQ_MOD // 2 - 1  # 32767: seq is newer than last when (seq - last) mod 65536 is in 1..32767
INT16_SCALE = 32767  # COMMAND setpoints: value = raw / 32767, raw in -32767..32767 (-32768 reads as -1.0)


class MsgType(IntEnum):
    COMMAND = 0x01  # host -> controller
    HEARTBEAT = 0x02  # both directions
    TELEMETRY = 0x03  # controller -> host
    ESTOP = 0x04  # both directions, latching
    ACK = 0x05  # controller -> host
    ERROR = 0x06  # controller -> host


class ControllerState(IntEnum):
    IDLE = 0  # powered, neutral, no command applied yet (or just reset from ESTOP)
    DRIVING = 1  # the last valid COMMAND is applied and is younger than the watchdog timeout
    NEUTRAL_TIMEOUT = 2  # watchdog expired: neutral until the next valid COMMAND
    ESTOP = 3  # latched e-stop: neutral until reset (COMMAND with ESTOP_RESET + a fresh HEARTBEAT)


class CommandFlags(IntFlag):
    NONE = 0
    ESTOP_RESET = 0x01  # bits 1..7 are reserved: sent as 0, ignored by receivers


class EstopReason(IntEnum):
    UNSPECIFIED = 0
    OPERATOR = 1  # a person pressed a stop button (host UI, gamepad)
    HOST_FAULT = 2  # host software detected a fault (policy crash, camera lost, ...)
    LOCAL_INPUT = 3  # the controller's own e-stop input
    # Any other value is still an e-stop: receivers never reject an ESTOP for its reason code.


class ErrorCode(IntEnum):
    RESET_REFUSED = 1  # a COMMAND with ESTOP_RESET arrived without a fresh HEARTBEAT
    ESTOP_LATCHED = 2  # a COMMAND arrived while the e-stop is latched (sent at most once a second)


# ---------------------------------------------------------------------------------------------------
# messages


@dataclass(frozen=True)
class _Message:
    seq: int = field(default=0, kw_only=True, compare=True)


@dataclass(frozen=True)
class Command(_Message):
    """Setpoints in [-1, 1] (steer: -1 full left .. +1 full right; throttle: -1 full reverse .. +1 full
    forward), sent as int16 scaled by 32767. ``flags`` is a ``CommandFlags`` value."""

    steer: float
    throttle: float
    flags: int = 0


@dataclass(frozen=True)
class Heartbeat(_Message):
    """Liveness; ``time_ms`` is the sender's monotonic clock in milliseconds mod 2**32 (diagnostics)."""

    time_ms: int = 0


@dataclass(frozen=True)
class Telemetry(_Message):
    wheel_speed: float  # m/s, signed (negative = reversing)
    accel: tuple[float, float, float]  # m/s^2, vehicle frame (x forward, y left, z up)
    gyro: tuple[float, float, float]  # rad/s, same frame
    battery_v: float  # volts
    state: ControllerState
    last_command_seq: int  # seq of the last COMMAND applied (0 before the first)
    rx_dropped: int  # frames the controller's decoder dropped (bad CRC/length/version/type/payload)
    rx_rejected: int  # frames rejected by the sequence check (replayed / stale)
    watchdog_trips: int  # times the command watchdog expired


@dataclass(frozen=True)
class Estop(_Message):
    reason: int = EstopReason.UNSPECIFIED


@dataclass(frozen=True)
class Ack(_Message):
    ref_type: int
    ref_seq: int


@dataclass(frozen=True)
class Error(_Message):
    code: int
    ref_type: int
    ref_seq: int


Message = Union[Command, Heartbeat, Telemetry, Estop, Ack, Error]

_PAYLOAD = {
    MsgType.COMMAND: struct.Struct("<hhB"),  # steer, throttle, flags: 5 bytes
    MsgType.HEARTBEAT: struct.Struct("<I"),  # time_ms: 4 bytes
    MsgType.TELEMETRY: struct.Struct("<f3f3ffBHIII"),  # 47 bytes
    MsgType.ESTOP: struct.Struct("<B"),  # reason: 1 byte
    MsgType.ACK: struct.Struct("<BH"),  # ref_type, ref_seq: 3 bytes
    MsgType.ERROR: struct.Struct("<BBH"),  # code, ref_type, ref_seq: 4 bytes
}
PAYLOAD_SIZES: dict[int, int] = {int(t): s.size for t, s in _PAYLOAD.items()}
_TYPE_OF = {Command: MsgType.COMMAND, Heartbeat: MsgType.HEARTBEAT, Telemetry: MsgType.TELEMETRY,
            Estop: MsgType.ESTOP, Ack: MsgType.ACK, Error: MsgType.ERROR}
assert max(PAYLOAD_SIZES.values()) <= MAX_PAYLOAD


class ProtocolError(ValueError):
    """A message that cannot be encoded (the *sender's* bug; received bytes never raise)."""


# ---------------------------------------------------------------------------------------------------
# CRC


def crc16_ccitt_false(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no xorout; check("123456789") = 0x29B1.

    ``binascii.crc_hqx`` is exactly this CRC (MSB-first, poly 0x1021) with the initial value passed in.
    """
    return binascii.crc_hqx(data, crc)


def crc16_ccitt_false_bitwise(data: bytes, crc: int = 0xFFFF) -> int:
    """The same CRC, bit by bit, as firmware would write it without a table."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


# ---------------------------------------------------------------------------------------------------
# encoding


def _to_int16(value: float, name: str) -> int:
    if not math.isfinite(value):
        raise ProtocolError(f"{name} must be finite, got {value!r}")
    return int(round(max(-1.0, min(1.0, float(value))) * INT16_SCALE))


def _u(value: int, bits: int, name: str) -> int:
    value = int(value)
    if not 0 <= value < (1 << bits):
        raise ProtocolError(f"{name}={value} does not fit in uint{bits}")
    return value


def _payload(msg: Message) -> tuple[MsgType, bytes]:
    mtype = _TYPE_OF.get(type(msg))
    if mtype is None:
        raise ProtocolError(f"not a protocol message: {type(msg).__name__}")
    st = _PAYLOAD[mtype]
    if isinstance(msg, Command):
        return mtype, st.pack(_to_int16(msg.steer, "steer"), _to_int16(msg.throttle, "throttle"),
                              _u(msg.flags, 8, "flags"))
    if isinstance(msg, Heartbeat):
        return mtype, st.pack(int(msg.time_ms) % (1 << 32))
    if isinstance(msg, Telemetry):
        return mtype, st.pack(msg.wheel_speed, *msg.accel, *msg.gyro, msg.battery_v, _u(msg.state, 8, "state"),
                              _u(msg.last_command_seq, 16, "last_command_seq"),
                              *(int(c) % (1 << 32) for c in (msg.rx_dropped, msg.rx_rejected, msg.watchdog_trips)))
    if isinstance(msg, Estop):
        return mtype, st.pack(_u(msg.reason, 8, "reason"))
    if isinstance(msg, Ack):
        return mtype, st.pack(_u(msg.ref_type, 8, "ref_type"), _u(msg.ref_seq, 16, "ref_seq"))
    return mtype, st.pack(_u(msg.code, 8, "code"), _u(msg.ref_type, 8, "ref_type"), _u(msg.ref_seq, 16, "ref_seq"))


def encode(msg: Message) -> bytes:
    """One complete frame for ``msg`` (its ``seq`` field is the frame's sequence number)."""
    mtype, payload = _payload(msg)
    head = HEADER.pack(SYNC, PROTOCOL_VERSION, mtype, _u(msg.seq, 16, "seq"), len(payload))
    body = head + payload
    return body + struct.pack("<H", crc16_ccitt_false(body))


class FrameEncoder:
    """Stamps consecutive sequence numbers (one counter per sender, shared by all its message types)."""

    def __init__(self, start_seq: int = 0):
        self.next_seq = start_seq % SEQ_MOD

    def encode(self, msg: Message) -> bytes:
        frame = encode(replace(msg, seq=self.next_seq))
        self.next_seq = (self.next_seq + 1) % SEQ_MOD
        return frame


def quantize(msg: Message) -> Message:
    """``msg`` as the receiver will see it (int16 setpoints, float32 telemetry)."""
    return decode_payload(_TYPE_OF[type(msg)], _payload(msg)[1], msg.seq)


# ---------------------------------------------------------------------------------------------------
# decoding


def decode_payload(mtype: int, payload: bytes, seq: int = 0) -> Message:
    """Parse a payload whose size is already checked; raises ValueError for an invalid field value."""
    v = _PAYLOAD[MsgType(mtype)].unpack(payload)
    if mtype == MsgType.COMMAND:
        steer, throttle = (max(-1.0, raw / INT16_SCALE) for raw in v[:2])
        return Command(steer, throttle, v[2], seq=seq)
    if mtype == MsgType.HEARTBEAT:
        return Heartbeat(v[0], seq=seq)
    if mtype == MsgType.TELEMETRY:
        return Telemetry(v[0], tuple(v[1:4]), tuple(v[4:7]), v[7], ControllerState(v[8]), v[9], v[10], v[11],
                         v[12], seq=seq)
    if mtype == MsgType.ESTOP:
        return Estop(v[0], seq=seq)
    if mtype == MsgType.ACK:
        return Ack(v[0], v[1], seq=seq)
    return Error(v[0], v[1], v[2], seq=seq)


@dataclass
class DecoderStats:
    frames: int = 0  # valid frames returned
    bad_crc: int = 0
    bad_length: int = 0  # length field not the fixed payload size of the (known) type
    bad_version: int = 0
    bad_type: int = 0
    bad_payload: int = 0  # CRC fine but a field value is invalid (e.g. an unknown controller state)
    truncated: int = 0  # an incomplete frame abandoned because a later complete frame arrived
    skipped_bytes: int = 0  # bytes discarded while hunting for a sync pair

    @property
    def dropped(self) -> int:
        """Frames (or frame candidates) dropped for any reason."""
        return self.bad_crc + self.bad_length + self.bad_version + self.bad_type + self.bad_payload + self.truncated

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"dropped": self.dropped}


class FrameDecoder:
    """Streaming decoder: ``feed`` any bytes, get the complete valid messages; never raises on input.

    A candidate frame is checked in this order -- version, type, length (all from the 7-byte header),
    then CRC, then field values -- and the first failure is counted in ``stats`` under that reason.
    After a failure before the CRC check (or of the CRC check) only the first sync byte is dropped, so a
    real frame hidden behind a false or truncated start is still found. While a candidate is incomplete
    the decoder looks ahead: if a later complete frame with a good CRC is already buffered, the
    candidate was truncated (counted) and is abandoned, so every valid frame is returned by the
    ``feed`` call that delivers its last byte. The buffer never holds more than one frame's bytes
    (``MAX_FRAME``), whatever is fed.
    """

    def __init__(self) -> None:
        self.stats = DecoderStats()
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame (or a possible sync byte)."""
        return len(self._buf)

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[Message]:
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos, n, st = 0, len(buf), self.stats
        while True:
            i = buf.find(SYNC, pos)
            if i < 0:
                keep = n - 1 if n > pos and buf[n - 1] == SYNC[0] else n  # a trailing 0xAA may start a frame
                st.skipped_bytes += keep - pos
                pos = keep
                break
            st.skipped_bytes += i - pos
            pos = i
            if n - pos < HEADER_SIZE:
                break
            _, version, mtype, seq, length = HEADER.unpack_from(buf, pos)
            if version != PROTOCOL_VERSION:
                st.bad_version += 1
            elif mtype not in PAYLOAD_SIZES:
                st.bad_type += 1
            elif length != PAYLOAD_SIZES[mtype]:
                st.bad_length += 1
            else:
                end = pos + HEADER_SIZE + length
                if n < end + CRC_SIZE:  # incomplete: wait for the rest, unless a later frame is already whole
                    later = _first_valid_frame(buf, pos + 1, n)
                    if later is None:
                        break
                    st.truncated += 1
                    st.skipped_bytes += later - pos
                    pos = later
                    continue
                if not _crc_ok(buf, pos, end):
                    st.bad_crc += 1
                else:
                    try:
                        msg = decode_payload(mtype, bytes(buf[pos + HEADER_SIZE:end]), seq)
                    except ValueError:
                        st.bad_payload += 1
                    else:
                        st.frames += 1
                        out.append(msg)
                    pos = end + CRC_SIZE  # the CRC vouches for the frame's extent: skip all of it
                    continue
            pos += 1  # reject this start: drop its first sync byte and hunt again
            st.skipped_bytes += 1
        del buf[:pos]
        return out


def _crc_ok(buf: bytearray, start: int, end: int) -> bool:
    return struct.unpack_from("<H", buf, end)[0] == crc16_ccitt_false(bytes(buf[start:end]))


def _first_valid_frame(buf: bytearray, start: int, n: int) -> int | None:
    """Offset of the first complete frame with a good header and CRC in ``buf[start:n]``, or None."""
    i = buf.find(SYNC, start, n)
    while 0 <= i <= n - HEADER_SIZE:
        _, version, mtype, _, length = HEADER.unpack_from(buf, i)
        end = i + HEADER_SIZE + length
        if (version == PROTOCOL_VERSION and PAYLOAD_SIZES.get(mtype) == length and end + CRC_SIZE <= n
                and _crc_ok(buf, i, end)):
            return i
        i = buf.find(SYNC, i + 1, n)
    return None


# ---------------------------------------------------------------------------------------------------
# sequence numbers


def seq_is_newer(seq: int, last: int) -> bool:
    """True when ``seq`` is after ``last`` in serial-number order: (seq - last) mod 65536 in 1..32767."""
    return 1 <= (seq - last) % SEQ_MOD <= SEQ_WINDOW


class SequenceTracker:
    """Replay / duplicate protection for the frames of one sender.

    The first sequence number after construction or ``reset()`` is accepted; after that only newer ones
    (``seq_is_newer``) are, so duplicates, replays and stale frames are rejected and counted. A gap (lost
    frames) is accepted and the missing count added to ``missed``.
    """

    def __init__(self) -> None:
        self.last: int | None = None
        self.accepted = 0
        self.rejected = 0
        self.missed = 0

    def check(self, seq: int) -> bool:
        """Whether ``seq`` would be accepted (without accepting it)."""
        return self.last is None or seq_is_newer(seq, self.last)

    def accept(self, seq: int) -> bool:
        if not self.check(seq):
            self.rejected += 1
            return False
        if self.last is not None:
            self.missed += (seq - self.last) % SEQ_MOD - 1
        self.last = seq
        self.accepted += 1
        return True

    def reset(self) -> None:
        """Forget the last sequence number (the counters stay): the next frame is accepted."""
        self.last = None
