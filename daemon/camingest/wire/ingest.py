"""The ingest socket: capture DEALER <-> worker ROUTER. Every message's first frame starts
with PREFIX: magic, version, kind."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from camingest.wire.framing import VERSION, ProtocolError, VersionError, pad, unpad
from camingest.wire.pixels import PIXEL_FORMAT_BY_CODE, PIXEL_FORMAT_CODES, PixelFormat, Plane

INGEST_MAGIC = b"CGI1"
PREFIX = struct.Struct("<4sBB")


class Kind(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    REFUSE = 3
    FRAME = 4
    RELEASE = 5
    STATS = 6


class Transport(enum.IntEnum):
    SHM = 0
    INLINE = 1


# HELLO: magic, version, kind, pad, stream name (NUL padded), width, height, pixel format code,
# transport, pad.
HELLO = struct.Struct("<4sBBxx32sIIBB2x")

MAX_PLANES = 4
PLANE = struct.Struct("<IIII")  # offset, stride, rows, row_bytes
# WELCOME: magic, version, kind, plane count, pad, epoch, slot count, pad, first slot offset,
# slot stride, frame size, ring name (NUL padded; empty for inline), then MAX_PLANES x PLANE.
WELCOME_HEAD = struct.Struct("<4sBBBxIIxxxxQQQ96s")
WELCOME = struct.Struct(WELCOME_HEAD.format + "IIII" * MAX_PLANES)

# REFUSE: magic, version, kind, code; frame 2 is the reason in UTF-8.
REFUSE = struct.Struct("<4sBBH")

# FRAME: magic, version, kind, flags, epoch, slot, sequence, capture timestamp (ns, CLOCK_REALTIME
# unless the capture says otherwise). For INLINE the frame bytes follow as frame 2 and slot is
# INLINE_SLOT.
FRAME = struct.Struct("<4sBBHIIQq")
INLINE_SLOT = 0xFFFFFFFF
FLAG_FORCE_KEYFRAME = 0x0001

# RELEASE: magic, version, kind, status, epoch, slot, sequence.
RELEASE = struct.Struct("<4sBBHIIQ")

# STATS: magic, version, kind, pad, epoch, then the frames the capture dropped since it started,
# by reason: no free slot, send queue full (inline), no session (between a worker's death and
# the next WELCOME). Sent now and then by the capture so the daemon can show its drops.
STATS = struct.Struct("<4sBBxxIQQQ")


class RefuseCode(enum.IntEnum):
    MALFORMED = 1
    BAD_VERSION = 2
    UNKNOWN_STREAM = 3
    GEOMETRY = 4
    PIXEL_FORMAT = 5
    TRANSPORT = 6
    STALE_EPOCH = 7  # the worker restarted or another capture took over: send HELLO again
    BUSY = 8  # another capture is sending to this stream right now: try again later


class ReleaseStatus(enum.IntEnum):
    CONSUMED = 0  # handed to the encoder
    ENCODER_ERROR = 1  # the encoder refused the frame
    DROPPED = 2  # dropped by the worker (see its counters)


class DropReason(enum.StrEnum):
    """Counter names for frames that did not reach the encoder."""

    NO_SLOT = "no_slot"  # capture side: no free slot within the wait
    SEND_QUEUE = "send_queue"  # capture side: inline frame hit the socket's high-water mark
    MALFORMED = "malformed"
    STALE_EPOCH = "stale_epoch"
    BAD_SLOT = "bad_slot"
    NOT_OWNED = "not_owned"
    WRONG_SIZE = "wrong_size"
    ENCODER_ERROR = "encoder_error"
    RECONNECTING = "reconnecting"  # capture side: between a worker restart and the new WELCOME


@dataclass(frozen=True, slots=True)
class Hello:
    stream: str
    width: int
    height: int
    pixel_format: PixelFormat
    transport: Transport

    def pack(self) -> bytes:
        return HELLO.pack(
            INGEST_MAGIC,
            VERSION,
            Kind.HELLO,
            pad(self.stream, 32),
            self.width,
            self.height,
            PIXEL_FORMAT_CODES[self.pixel_format],
            self.transport,
        )

    @classmethod
    def unpack(cls, buf: bytes) -> Hello:
        _check_prefix(buf, HELLO, Kind.HELLO)
        _, _, _, name, width, height, fmt, transport = HELLO.unpack(buf)
        if fmt not in PIXEL_FORMAT_BY_CODE:
            raise ProtocolError(f"unknown pixel format code {fmt}")
        if transport not in (0, 1):
            raise ProtocolError(f"unknown transport {transport}")
        return cls(unpad(name), width, height, PIXEL_FORMAT_BY_CODE[fmt], Transport(transport))


@dataclass(frozen=True, slots=True)
class Welcome:
    epoch: int
    slot_count: int
    first_slot_offset: int
    slot_stride: int
    frame_size: int
    ring_name: str
    planes: tuple[Plane, ...]

    def pack(self) -> bytes:
        flat: list[int] = []
        for i in range(MAX_PLANES):
            p = self.planes[i] if i < len(self.planes) else Plane(0, 0, 0, 0)
            flat += [p.offset, p.stride, p.rows, p.row_bytes]
        return WELCOME.pack(
            INGEST_MAGIC,
            VERSION,
            Kind.WELCOME,
            len(self.planes),
            self.epoch,
            self.slot_count,
            self.first_slot_offset,
            self.slot_stride,
            self.frame_size,
            pad(self.ring_name, 96),
            *flat,
        )

    @classmethod
    def unpack(cls, buf: bytes) -> Welcome:
        _check_prefix(buf, WELCOME, Kind.WELCOME)
        v = WELCOME.unpack(buf)
        nplanes = v[3]
        if not 1 <= nplanes <= MAX_PLANES:
            raise ProtocolError(f"bad plane count {nplanes}")
        flat = v[10:]
        planes = tuple(Plane(*flat[4 * i : 4 * i + 4]) for i in range(nplanes))
        return cls(v[4], v[5], v[6], v[7], v[8], unpad(v[9]), planes)


@dataclass(frozen=True, slots=True)
class FrameDesc:
    epoch: int
    slot: int
    seq: int
    timestamp_ns: int
    flags: int = 0

    def pack(self) -> bytes:
        return FRAME.pack(
            INGEST_MAGIC,
            VERSION,
            Kind.FRAME,
            self.flags,
            self.epoch,
            self.slot,
            self.seq,
            self.timestamp_ns,
        )

    @classmethod
    def unpack(cls, buf: bytes) -> FrameDesc:
        _check_prefix(buf, FRAME, Kind.FRAME)
        _, _, _, flags, epoch, slot, seq, ts = FRAME.unpack(buf)
        return cls(epoch, slot, seq, ts, flags)

    @property
    def force_keyframe(self) -> bool:
        return bool(self.flags & FLAG_FORCE_KEYFRAME)


@dataclass(frozen=True, slots=True)
class Release:
    epoch: int
    slot: int
    seq: int
    status: ReleaseStatus

    def pack(self) -> bytes:
        return RELEASE.pack(
            INGEST_MAGIC, VERSION, Kind.RELEASE, self.status, self.epoch, self.slot, self.seq
        )

    @classmethod
    def unpack(cls, buf: bytes) -> Release:
        _check_prefix(buf, RELEASE, Kind.RELEASE)
        _, _, _, status, epoch, slot, seq = RELEASE.unpack(buf)
        return cls(
            epoch, slot, seq, ReleaseStatus(status) if status <= 2 else ReleaseStatus.DROPPED
        )


@dataclass(frozen=True, slots=True)
class CaptureStats:
    epoch: int
    no_slot: int
    send_queue: int
    reconnecting: int

    def pack(self) -> bytes:
        return STATS.pack(
            INGEST_MAGIC,
            VERSION,
            Kind.STATS,
            self.epoch,
            self.no_slot,
            self.send_queue,
            self.reconnecting,
        )

    @classmethod
    def unpack(cls, buf: bytes) -> CaptureStats:
        _check_prefix(buf, STATS, Kind.STATS)
        _, _, _, epoch, no_slot, send_queue, reconnecting = STATS.unpack(buf)
        return cls(epoch, no_slot, send_queue, reconnecting)

    def drops(self) -> dict[str, int]:
        """As drop counters, named apart from the worker's own: capture_<reason>."""
        counts = {
            DropReason.NO_SLOT: self.no_slot,
            DropReason.SEND_QUEUE: self.send_queue,
            DropReason.RECONNECTING: self.reconnecting,
        }
        return {f"capture_{reason.value}": n for reason, n in counts.items() if n}


def pack_refuse(code: RefuseCode, reason: str) -> list[bytes]:
    return [REFUSE.pack(INGEST_MAGIC, VERSION, Kind.REFUSE, code), reason.encode()]


def unpack_refuse(frames: list[bytes]) -> tuple[RefuseCode | int, str]:
    _check_prefix(frames[0], REFUSE, Kind.REFUSE)
    code = REFUSE.unpack(frames[0])[3]
    reason = frames[1].decode(errors="replace") if len(frames) > 1 else ""
    return (RefuseCode(code) if code in RefuseCode._value2member_map_ else code), reason


def message_kind(buf: bytes) -> int:
    """The kind of an ingest message, after checking magic and version."""
    if len(buf) < PREFIX.size:
        raise ProtocolError(f"message of {len(buf)} bytes is shorter than the prefix")
    magic, version, kind = PREFIX.unpack_from(buf)
    if magic != INGEST_MAGIC:
        raise ProtocolError(f"bad magic {magic!r}")
    if version != VERSION:
        raise VersionError(f"protocol version {version}, this daemon speaks {VERSION}")
    return int(kind)


def _check_prefix(buf: bytes, layout: struct.Struct, kind: Kind) -> None:
    got = message_kind(buf)
    if got != kind:
        raise ProtocolError(f"expected kind {kind.name}, got {got}")
    if len(buf) != layout.size:
        raise ProtocolError(f"{kind.name} of {len(buf)} bytes, expected {layout.size}")
