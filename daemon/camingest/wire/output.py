"""Output (daemon XPUB -> subscribers): [topic = stream name, OUTPUT_HEADER, Annex-B access
unit]."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from camingest.wire.framing import VERSION, ProtocolError, VersionError


class CodecName(enum.StrEnum):
    """The codec as configured and as named in status; Codec is its code on the wire."""

    H264 = "h264"
    H265 = "h265"


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
            OUTPUT_MAGIC,
            VERSION,
            self.codec,
            self.flags,
            self.epoch,
            self.width,
            self.height,
            self.packet_seq,
            self.frame_seq,
            self.capture_ts_ns,
            self.encode_ts_ns,
            0,
        )

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
