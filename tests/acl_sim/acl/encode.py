"""The simulated encoder core: real H.264/H.265 through PyAV (libx264/libx265)."""

from __future__ import annotations

from fractions import Fraction
from typing import cast

import av
import numpy as np
from av.video.codeccontext import VideoCodecContext

from acl import codes

PROFILES = {1: "baseline", 2: "main", 3: "high"}


class SimEncoder:
    """One VENC channel's encoder; one access unit out per frame in (zero-latency settings)."""

    def __init__(
        self, entype: int, width: int, height: int, gop: int, src_rate: int, bitrate_kbps: int
    ) -> None:
        self.width, self.height = width, height
        rate = src_rate or 30
        name = "libx265" if entype == 0 else "libx264"
        ctx = cast(VideoCodecContext, av.CodecContext.create(name, "w"))
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, rate)
        ctx.framerate = Fraction(rate, 1)
        ctx.gop_size = gop
        ctx.max_b_frames = 0
        ctx.bit_rate = (bitrate_kbps or 2000) * 1000
        ctx.thread_count = 1
        opts = {"preset": "ultrafast", "tune": "zerolatency", "forced-idr": "1"}
        if name == "libx264":
            opts["profile"] = PROFILES[entype]
        else:
            # VENC puts VPS/SPS/PPS in front of every IDR; x265 does so only when asked.
            opts["x265-params"] = "repeat-headers=1:log-level=error"
        ctx.options = opts
        self.ctx = ctx
        self.pts = 0

    def encode(
        self, buf: np.ndarray, stride: int, uv_offset: int, pixel_format: int, force_idr: bool
    ) -> bytes:
        """Encode one NV12/NV21 frame laid out with `stride` bytes per row."""
        w, h = self.width, self.height
        y = buf[: stride * h].reshape(h, stride)[:, :w]
        uv = buf[uv_offset : uv_offset + stride * (h // 2)].reshape(h // 2, stride)[:, :w]
        u, v = (uv[:, 0::2], uv[:, 1::2])
        if pixel_format == codes.PIXEL_NV21:
            u, v = v, u
        planar = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(h * 3 // 2, w)
        frame = av.VideoFrame.from_ndarray(planar, format="yuv420p")
        frame.pts = self.pts
        self.pts += 1
        if force_idr:
            frame.pict_type = av.video.frame.PictureType.I
        return b"".join(bytes(p) for p in self.ctx.encode(frame))

    def close(self) -> None:
        try:
            self.ctx.encode(None)  # flush; zero-latency settings leave nothing behind
        except av.error.EOFError:
            pass
