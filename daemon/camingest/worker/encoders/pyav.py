"""`pyav` backend: FFmpeg encoders through PyAV (libx264, libx265, and hardware ones by name).

The channel keeps VENC's shape (send_frame, packets through a callback, eos drains) but encodes
in the caller's thread: send_frame copies the frame into an FFmpeg frame, encodes it and
delivers the packets it yields before it returns. FFmpeg's encoders run threads of their own;
a thread of ours in front of them cost the worker about 1 ms of CPU per 1080p frame in
tools/bench_encode.py (hand-off and GIL traffic) and bought nothing. Frames an encoder holds
back (lookahead) come out with later calls, or with send_eos.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import cast

import av
import av.error
from av.video.frame import PictureType

from camingest.config.model import RateControl
from camingest.errors import EncoderError
from camingest.wire.annexb import ParameterSetKeeper, is_keyframe
from camingest.wire.avframes import to_av_frame
from camingest.wire.output import CodecName
from camingest.wire.pixels import PixelFormat
from camingest.worker.encoders.base import (
    ChannelParams,
    EncodedPacket,
    FrameErrorCallback,
    PacketCallback,
    RawFrame,
)

logger = logging.getLogger(__name__)

DEFAULT_ENCODERS = {CodecName.H264: "libx264", CodecName.H265: "libx265"}
NATIVE_CANDIDATES = (PixelFormat.NV12, PixelFormat.NV21, PixelFormat.I420)


@dataclass(frozen=True, slots=True)
class _Meta:
    seq: int
    timestamp_ns: int
    submitted_ns: int


def encoder_options(params: ChannelParams, name: str) -> dict[str, str]:
    """FFmpeg options for the stream's settings: low latency, in-band parameter sets."""
    enc = params.encoder
    kbps = enc.bitrate_kbps
    opts: dict[str, str] = {"g": str(enc.gop), "bf": "0"}
    if enc.rate_control is RateControl.CBR:
        opts |= {"b": f"{kbps}k", "maxrate": f"{kbps}k", "bufsize": f"{kbps}k"}
    elif enc.rate_control is RateControl.VBR:
        opts |= {"b": f"{kbps}k", "maxrate": f"{2 * kbps}k", "bufsize": f"{2 * kbps}k"}
    if name in ("libx264", "libx265"):
        opts |= {"preset": enc.preset, "forced-idr": "1", "profile": enc.effective_profile}
        if enc.tune:
            opts["tune"] = enc.tune
        if enc.rate_control is RateControl.CQP:
            opts["qp"] = str(enc.qp)
        key = "x264-params" if name == "libx264" else "x265-params"
        extra = ["repeat-headers=1"]  # SPS/PPS(/VPS) on every keyframe, for late joiners
        if name == "libx264":
            extra.append("scenecut=0")  # keyframes only on schedule or on request
        else:
            extra += ["scenecut=0", "log-level=warning"]
        user = enc.options.get(key)
        opts[key] = ":".join([*extra, user] if user else extra)
    else:
        opts["profile"] = enc.effective_profile
    return opts | {k: v for k, v in enc.options.items() if k not in opts}


def open_context(p: ChannelParams, name: str) -> tuple[av.VideoCodecContext, PixelFormat]:
    """An open encoder for the stream and the pixel format it takes: the stream's own when
    the encoder takes it, else one the worker converts to. Raises EncoderError."""
    try:
        codec = av.Codec(name, "w")
    except (av.error.FFmpegError, ValueError) as exc:
        raise EncoderError(f"FFmpeg encoder {name!r} is not available: {exc}") from exc
    formats = {f.name for f in codec.video_formats or ()}
    native = [f for f in NATIVE_CANDIDATES if _ffname(f) in formats]
    if not native:
        raise EncoderError(f"encoder {name} takes none of nv12, nv21, yuv420p")
    chosen = p.pixel_format if p.pixel_format in native else native[0]
    ctx = cast(av.VideoCodecContext, av.CodecContext.create(codec))
    ctx.width, ctx.height = p.width, p.height
    ctx.pix_fmt = _ffname(chosen)
    fps = Fraction(p.fps).limit_denominator(1001)
    ctx.framerate = fps
    ctx.time_base = 1 / fps
    ctx.gop_size = p.encoder.gop
    ctx.max_b_frames = 0
    ctx.thread_count = p.encoder.threads
    ctx.options = encoder_options(p, name)
    try:
        ctx.open()
    except (av.error.FFmpegError, ValueError) as exc:
        raise EncoderError(f"cannot open {name} for stream {p.stream}: {exc}") from exc
    return ctx, chosen


class PyAVChannel:
    def __init__(
        self, params: ChannelParams, on_packet: PacketCallback, on_error: FrameErrorCallback
    ) -> None:
        self.params = params
        self._on_packet = on_packet
        self._on_error = on_error
        self._name = params.encoder.encoder or DEFAULT_ENCODERS[params.codec]
        self._ctx: av.VideoCodecContext | None = None
        self._meta: dict[int, _Meta] = {}
        self._pts = 0
        self._sent = 0
        self._done = 0
        self._ended = False
        self._keeper = ParameterSetKeeper(params.codec)
        self._native: frozenset[PixelFormat] = frozenset()

    def input_formats(self) -> frozenset[PixelFormat]:
        return self._native

    def open(self) -> None:
        ctx, chosen = open_context(self.params, self._name)
        self._native = frozenset({chosen})
        self._keeper = ParameterSetKeeper(self.params.codec, bytes(ctx.extradata or b""))
        self._ctx = ctx

    def send_frame(self, frame: RawFrame, *, force_idr: bool = False) -> None:
        if self._ctx is None or self._ended:
            raise EncoderError("send_frame on a channel that is not open")
        if frame.pixel_format not in self._native:
            raise EncoderError(f"{self._name} does not take {frame.pixel_format.value} frames")
        av_frame = to_av_frame(frame.pixel_format, frame.width, frame.height, frame.planes)
        av_frame.pts = self._pts
        if force_idr:
            av_frame.pict_type = PictureType.I
        meta = _Meta(frame.seq, frame.timestamp_ns, time.monotonic_ns())
        self._meta[self._pts] = meta
        self._pts += 1
        self._sent += 1
        self._encode(self._ctx, av_frame, meta)

    def send_eos(self, timeout_s: float) -> None:
        if self._ctx is None or self._ended:
            return
        self._ended = True
        self._encode(self._ctx, None, None)  # flush: the held-back frames come out now

    def pending(self) -> int:
        return self._sent - self._done

    def close(self) -> None:
        self._ended = True
        self._ctx = None

    def _encode(
        self, ctx: av.VideoCodecContext, frame: av.VideoFrame | None, meta: _Meta | None
    ) -> None:
        try:
            packets = ctx.encode(frame)
        except (av.error.FFmpegError, ValueError) as exc:
            if meta is not None:
                self._meta.pop(
                    frame.pts if frame is not None and frame.pts is not None else -1, None
                )
                self._done += 1
                self._on_error(meta.seq, f"{self._name}: encode failed: {exc}")
            return
        for packet in packets:
            self._deliver(bytes(packet), packet.pts)

    def _deliver(self, data: bytes, pts: int | None) -> None:
        meta = self._meta.pop(pts, None) if pts is not None else None
        if meta is None or pts is None:
            logger.warning("%s: packet with unknown pts %s dropped", self._name, pts)
            return
        # Without B-frames packets come in input order: earlier frames still waiting were
        # dropped by the encoder and will never come.
        for old in [p for p in self._meta if p < pts]:
            del self._meta[old]
            self._done += 1
        keyframe = is_keyframe(data, self.params.codec)
        data = self._keeper.process(data, keyframe)
        self._done += 1
        try:
            self._on_packet(
                EncodedPacket(data, keyframe, meta.seq, meta.timestamp_ns, meta.submitted_ns)
            )
        except Exception:
            logger.exception("%s: packet callback failed", self._name)


def _ffname(fmt: PixelFormat) -> str:
    return "yuv420p" if fmt is PixelFormat.I420 else fmt.value
