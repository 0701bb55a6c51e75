"""The plane layout of wire/pixels.py as PyAV frames, for both sides of the ring: a capture
that decodes with PyAV, and the worker that converts and encodes with it (libswscale).

Imports PyAV, so the light wire modules (and the client libraries) never import this one.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np
import numpy.typing as npt

from camingest.wire.pixels import FFMPEG_NAMES, PixelFormat, plane_layout

Array = npt.NDArray[np.uint8]
Planes = tuple[Array, ...]


def plane_rows(plane: Any, rows: int, row_bytes: int) -> Array:
    """A (rows, row_bytes) view of a PyAV plane, skipping the padding at the end of each line."""
    line_size = int(plane.line_size)
    if line_size < row_bytes:
        raise ValueError(f"plane line size {line_size} is shorter than {row_bytes} row bytes")
    buf = np.frombuffer(memoryview(plane), dtype=np.uint8)
    if buf.size >= rows * line_size:
        return buf[: rows * line_size].reshape(rows, line_size)[:, :row_bytes]
    # The last line may be cut short of its padding.
    if buf.size < (rows - 1) * line_size + row_bytes:
        raise ValueError(f"plane buffer of {buf.size} bytes is too small for {rows} rows")
    return np.lib.stride_tricks.as_strided(
        buf, shape=(rows, row_bytes), strides=(line_size, 1), writeable=buf.flags.writeable
    )


def to_av_frame(fmt: PixelFormat, width: int, height: int, planes: Planes) -> av.VideoFrame:
    """A new frame holding a copy of `planes` (one copy, row by row into FFmpeg's strides)."""
    frame = av.VideoFrame(width, height, FFMPEG_NAMES[fmt])
    layout = plane_layout(fmt, width, height)
    for i, (src, dst, p) in enumerate(zip(planes, frame.planes, layout, strict=True)):
        # Exact shapes only: numpy would spread a single row or value over the whole plane.
        if np.shape(src) != (p.rows, p.row_bytes):
            raise ValueError(
                f"{fmt.value} {width}x{height}: plane {i} has shape {np.shape(src)}, "
                f"expected ({p.rows}, {p.row_bytes})"
            )
        plane_rows(dst, p.rows, p.row_bytes)[...] = src
    return frame


def from_av_frame(frame: av.VideoFrame, fmt: PixelFormat) -> Planes:
    """The planes of `frame` (which must already be in `fmt`) as packed arrays: copies where
    FFmpeg pads its lines, views of the frame's buffers (kept alive by them) where it does not,
    which spares a copy per plane at the usual widths."""
    layout = plane_layout(fmt, frame.width, frame.height)
    return tuple(
        np.ascontiguousarray(plane_rows(plane, p.rows, p.row_bytes))
        for plane, p in zip(frame.planes, layout, strict=True)
    )


def convert(
    fmt: PixelFormat, width: int, height: int, planes: Planes, target: PixelFormat
) -> Planes:
    """Convert one frame's planes to `target` (swscale's defaults, as FFmpeg would)."""
    frame = to_av_frame(fmt, width, height, planes)
    return from_av_frame(frame.reformat(format=FFMPEG_NAMES[target]), target)
