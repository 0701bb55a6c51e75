"""Everything that crosses a process boundary: byte layouts, codes and the worker spec.

docs/protocol.md documents this module byte for byte; tests/unit/test_protocol_doc.py checks that
the struct sizes printed there match the formats here. All integers are little-endian.
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from camingest.config import StreamConfig

VERSION = 1

# ---------------------------------------------------------------------------------------------
# Pixel formats and their plane geometry (shared by the capture, the ring and the worker)


class PixelFormat(enum.StrEnum):
    NV12 = "nv12"
    NV21 = "nv21"
    I420 = "i420"
    YUYV422 = "yuyv422"
    GRAY = "gray"
    BGR24 = "bgr24"
    RGB24 = "rgb24"
    BGRA = "bgra"
    RGBA = "rgba"


# Codes carried in HELLO, in the order of PixelFormat; stable on the wire.
PIXEL_FORMAT_CODES: dict[PixelFormat, int] = {fmt: i + 1 for i, fmt in enumerate(PixelFormat)}
PIXEL_FORMAT_BY_CODE: dict[int, PixelFormat] = {v: k for k, v in PIXEL_FORMAT_CODES.items()}

# FFmpeg's name for each format (PyAV uses these).
FFMPEG_NAMES: dict[PixelFormat, str] = {
    PixelFormat.NV12: "nv12",
    PixelFormat.NV21: "nv21",
    PixelFormat.I420: "yuv420p",
    PixelFormat.YUYV422: "yuyv422",
    PixelFormat.GRAY: "gray",
    PixelFormat.BGR24: "bgr24",
    PixelFormat.RGB24: "rgb24",
    PixelFormat.BGRA: "bgra",
    PixelFormat.RGBA: "rgba",
}

# Formats whose chroma is subsampled in both directions need even sizes.
EVEN_WIDTH = {PixelFormat.NV12, PixelFormat.NV21, PixelFormat.I420, PixelFormat.YUYV422}
EVEN_HEIGHT = {PixelFormat.NV12, PixelFormat.NV21, PixelFormat.I420}


@dataclass(frozen=True, slots=True)
class Plane:
    """One plane inside a slot: `rows` rows of `row_bytes` bytes, `stride` bytes apart."""

    offset: int
    stride: int
    rows: int
    row_bytes: int

    @property
    def size(self) -> int:
        return self.stride * self.rows


def plane_layout(fmt: PixelFormat, width: int, height: int) -> tuple[Plane, ...]:
    """Tightly packed planes of one frame (stride == row bytes), in FFmpeg plane order."""
    cw, ch = (width + 1) // 2, (height + 1) // 2
    shapes: list[tuple[int, int]]  # (row_bytes, rows)
    if fmt in (PixelFormat.NV12, PixelFormat.NV21):
        shapes = [(width, height), (2 * cw, ch)]
    elif fmt is PixelFormat.I420:
        shapes = [(width, height), (cw, ch), (cw, ch)]
    elif fmt is PixelFormat.GRAY:
        shapes = [(width, height)]
    elif fmt is PixelFormat.YUYV422:
        shapes = [(2 * width, height)]
    elif fmt in (PixelFormat.BGR24, PixelFormat.RGB24):
        shapes = [(3 * width, height)]
    else:  # BGRA, RGBA
        shapes = [(4 * width, height)]
    planes: list[Plane] = []
    offset = 0
    for row_bytes, rows in shapes:
        planes.append(Plane(offset=offset, stride=row_bytes, rows=rows, row_bytes=row_bytes))
        offset += row_bytes * rows
    return tuple(planes)


def frame_size(fmt: PixelFormat, width: int, height: int) -> int:
    return sum(p.size for p in plane_layout(fmt, width, height))


_CHANNELS = {PixelFormat.YUYV422: 2, PixelFormat.BGR24: 3, PixelFormat.RGB24: 3,
             PixelFormat.BGRA: 4, PixelFormat.RGBA: 4}  # fmt: skip


def packed_shape(fmt: PixelFormat, width: int, height: int) -> tuple[int, ...]:
    """The numpy shape of one whole frame in the packed layout (what CaptureClient.send takes):
    (h*3/2, w) for the 4:2:0 formats, (h, w, channels) for packed ones, (h, w) for gray."""
    if fmt in (PixelFormat.NV12, PixelFormat.NV21, PixelFormat.I420):
        if width % 2 or height % 2:
            return (frame_size(fmt, width, height),)  # odd sizes do not fold into rows
        return (height * 3 // 2, width)
    if fmt is PixelFormat.GRAY:
        return (height, width)
    return (height, width, _CHANNELS[fmt])


# ---------------------------------------------------------------------------------------------
# Ingest socket (capture DEALER <-> worker ROUTER). Every message's first frame starts with
# PREFIX: magic, version, kind.

INGEST_MAGIC = b"CGI1"
PREFIX = struct.Struct("<4sBB")


class Kind(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    REFUSE = 3
    FRAME = 4
    RELEASE = 5


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
            INGEST_MAGIC, VERSION, Kind.HELLO, _pad(self.stream, 32), self.width, self.height,
            PIXEL_FORMAT_CODES[self.pixel_format], self.transport,
        )  # fmt: skip

    @classmethod
    def unpack(cls, buf: bytes) -> Hello:
        _check_prefix(buf, HELLO, Kind.HELLO)
        _, _, _, name, width, height, fmt, transport = HELLO.unpack(buf)
        if fmt not in PIXEL_FORMAT_BY_CODE:
            raise ProtocolError(f"unknown pixel format code {fmt}")
        if transport not in (0, 1):
            raise ProtocolError(f"unknown transport {transport}")
        return cls(_unpad(name), width, height, PIXEL_FORMAT_BY_CODE[fmt], Transport(transport))


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
            INGEST_MAGIC, VERSION, Kind.WELCOME, len(self.planes), self.epoch, self.slot_count,
            self.first_slot_offset, self.slot_stride, self.frame_size,
            _pad(self.ring_name, 96), *flat,
        )  # fmt: skip

    @classmethod
    def unpack(cls, buf: bytes) -> Welcome:
        _check_prefix(buf, WELCOME, Kind.WELCOME)
        v = WELCOME.unpack(buf)
        nplanes = v[3]
        if not 1 <= nplanes <= MAX_PLANES:
            raise ProtocolError(f"bad plane count {nplanes}")
        flat = v[10:]
        planes = tuple(Plane(*flat[4 * i : 4 * i + 4]) for i in range(nplanes))
        return cls(v[4], v[5], v[6], v[7], v[8], _unpad(v[9]), planes)


@dataclass(frozen=True, slots=True)
class FrameDesc:
    epoch: int
    slot: int
    seq: int
    timestamp_ns: int
    flags: int = 0

    def pack(self) -> bytes:
        return FRAME.pack(
            INGEST_MAGIC, VERSION, Kind.FRAME, self.flags, self.epoch, self.slot, self.seq,
            self.timestamp_ns,
        )  # fmt: skip

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


# ---------------------------------------------------------------------------------------------
# Shared-memory ring: one POSIX segment per stream and worker epoch.
# RING_HEADER at offset 0; slot i at first_slot_offset + i * slot_stride.

RING_MAGIC = b"CGR1"
RING_HEADER = struct.Struct(
    "<4sBB2xIIQQQ"
)  # magic, version, pad, epoch, slots, first, stride, size
RING_FIRST_SLOT_OFFSET = 4096
RING_SLOT_ALIGN = 4096

# ---------------------------------------------------------------------------------------------
# Output (daemon XPUB -> subscribers): [topic = stream name, OUTPUT_HEADER, Annex-B access unit]

OUTPUT_MAGIC = b"CGO1"
# magic, version, codec, flags, epoch, width, height, packet sequence (per stream and epoch,
# consecutive), frame sequence (the capture's), capture timestamp ns, encode-done timestamp ns
# (CLOCK_REALTIME), reserved.
OUTPUT_HEADER = struct.Struct("<4sBBHIIIQQqqI")


class Codec(enum.IntEnum):
    H264 = 1
    H265 = 2


OUT_KEYFRAME = 0x0001
OUT_EOS = 0x0002
OUT_RESTART = 0x0004  # with OUT_EOS: the stream goes on with a new worker (a reload changed it)


@dataclass(frozen=True, slots=True)
class OutputHeader:
    codec: Codec
    flags: int
    epoch: int
    width: int
    height: int
    packet_seq: int
    frame_seq: int
    capture_ts_ns: int
    encode_ts_ns: int

    def pack(self) -> bytes:
        return OUTPUT_HEADER.pack(
            OUTPUT_MAGIC, VERSION, self.codec, self.flags, self.epoch, self.width, self.height,
            self.packet_seq, self.frame_seq, self.capture_ts_ns, self.encode_ts_ns, 0,
        )  # fmt: skip

    @classmethod
    def unpack(cls, buf: bytes) -> OutputHeader:
        if len(buf) != OUTPUT_HEADER.size:
            raise ProtocolError(f"output header of {len(buf)} bytes, expected {OUTPUT_HEADER.size}")
        magic, version, codec, flags, epoch, w, h, pseq, fseq, cts, ets, _ = OUTPUT_HEADER.unpack(
            buf
        )
        if magic != OUTPUT_MAGIC:
            raise ProtocolError(f"bad output magic {magic!r}")
        if version != VERSION:
            raise VersionError(f"output version {version}, this client speaks {VERSION}")
        return cls(Codec(codec), flags, epoch, w, h, pseq, fseq, cts, ets)

    @property
    def keyframe(self) -> bool:
        return bool(self.flags & OUT_KEYFRAME)

    @property
    def eos(self) -> bool:
        return bool(self.flags & OUT_EOS)

    @property
    def restart(self) -> bool:
        """An end of stream after which the same stream resumes (new epoch)."""
        return bool(self.flags & OUT_RESTART)


# ---------------------------------------------------------------------------------------------
# Worker -> main process (PUSH -> PULL "fan-in"): the first frame says what follows.
FANIN_PACKET = b"P"  # then the three output frames, forwarded as they are
FANIN_HEALTH = b"H"  # then stream name, JSON of WorkerHealth
FANIN_FATAL = b"F"  # then stream name, UTF-8 reason: the worker is about to exit with an error

# Main process -> workers (PUB -> SUB, topic = stream name): [stream, command]
CMD_KEYFRAME = b"K"


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """A worker's heartbeat; the counters are totals since the worker started."""

    stream: str
    pid: int
    epoch: int
    healthy: bool
    frames_in: int
    frames_encoded: int
    packets_out: int
    bytes_out: int
    keyframes: int
    drops: dict[str, int]
    latency_p50_ms: float
    latency_p99_ms: float
    capture_connected: bool
    detail: str = ""

    def pack(self) -> bytes:
        return json.dumps({f: getattr(self, f) for f in self.__slots__}).encode()

    @classmethod
    def unpack(cls, buf: bytes) -> WorkerHealth:
        data: dict[str, Any] = json.loads(buf)
        return cls(**data)


# ---------------------------------------------------------------------------------------------
# Errors and helpers


class ProtocolError(ValueError):
    """A message that does not follow this module's layouts."""


class VersionError(ProtocolError):
    """A message of another protocol version."""


def _pad(text: str, size: int) -> bytes:
    raw = text.encode()
    if len(raw) >= size:
        raise ProtocolError(f"{text!r} is longer than {size - 1} bytes")
    return raw


def _unpad(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def _check_prefix(buf: bytes, layout: struct.Struct, kind: Kind) -> None:
    got = message_kind(buf)
    if got != kind:
        raise ProtocolError(f"expected kind {kind.name}, got {got}")
    if len(buf) != layout.size:
        raise ProtocolError(f"{kind.name} of {len(buf)} bytes, expected {layout.size}")


# ---------------------------------------------------------------------------------------------
# What the supervisor hands to a spawned worker (pickled by multiprocessing's spawn).


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    stream: StreamConfig
    backend: str  # resolved: pyav, acl or null
    ingest_endpoints: tuple[str, ...]
    fanin_endpoint: str
    command_endpoint: str
    instance: str
    parent_pid: int
    heartbeat_interval_s: float
    hang_timeout_s: float
    stop_timeout_s: float
    log_level: str
    log_target: str  # "journal" or "stderr", as the parent resolved it


class ControlCode(enum.StrEnum):
    """Error codes of control-socket replies."""

    INVALID_JSON = "invalid_json"
    BAD_REQUEST = "bad_request"
    UNKNOWN_COMMAND = "unknown_command"
    COMMAND_ERROR = "command_error"
    INTERNAL = "internal"
