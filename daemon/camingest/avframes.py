"""Planes <-> PyAV frames, and pixel-format conversion in the worker (libswscale via PyAV)."""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt

from camingest.protocol import FFMPEG_NAMES, PixelFormat, plane_layout

Planes = tuple[npt.NDArray[np.uint8], ...]


def to_av_frame(fmt: PixelFormat, width: int, height: int, planes: Planes) -> av.VideoFrame:
    """A new frame holding a copy of `planes` (one copy, row by row into FFmpeg's strides)."""
    frame = av.VideoFrame(width, height, FFMPEG_NAMES[fmt])
    for src, dst_plane, layout in zip(planes, frame.planes, plane_layout(fmt, width, height),
                                      strict=True):  # fmt: skip
        dst = np.frombuffer(memoryview(dst_plane), np.uint8)
        dst = dst[: layout.rows * dst_plane.line_size].reshape(layout.rows, dst_plane.line_size)
        dst[:, : layout.row_bytes] = src
    return frame


def from_av_frame(frame: av.VideoFrame, fmt: PixelFormat) -> Planes:
    """Packed copies of the planes of `frame` (which must already be in `fmt`)."""
    out = []
    for plane, layout in zip(frame.planes, plane_layout(fmt, frame.width, frame.height),
                             strict=True):  # fmt: skip
        src = np.frombuffer(memoryview(plane), np.uint8)
        src = src[: layout.rows * plane.line_size].reshape(layout.rows, plane.line_size)
        out.append(np.ascontiguousarray(src[:, : layout.row_bytes]))
    return tuple(out)


def convert(
    fmt: PixelFormat, width: int, height: int, planes: Planes, target: PixelFormat
) -> Planes:
    """Convert one frame's planes to `target` (BT.601, as FFmpeg's default for SD/HD input)."""
    frame = to_av_frame(fmt, width, height, planes)
    return from_av_frame(frame.reformat(format=FFMPEG_NAMES[target]), target)
