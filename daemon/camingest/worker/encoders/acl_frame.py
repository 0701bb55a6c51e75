"""The layout of a VENC input frame in DVPP memory (acl-venc.md §1.4, §6.14). Pure, no I/O.

VENC takes semi-planar nv12/nv21 with rows at a 16-aligned stride: a frame is checked against
the channel, then its rows are laid out in a host staging buffer of that shape, which the
channel (acl.py) copies to one of its DVPP input buffers in a single memcpy.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from camingest.errors import EncoderError
from camingest.wire.pixels import PixelFormat
from camingest.worker.encoders.acl_codes import PIC_FORMAT
from camingest.worker.encoders.base import RawFrame


def align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


def input_buffer_size(width: int, height: int) -> int:
    """Bytes of one NV12/NV21 input buffer: the larger of the two documented formulas
    (wstride*h*3/2 and wstride*hstride*3/2 with hstride aligned to 16), so both fit."""
    stride = align(width, 16)
    return max(stride * height * 3 // 2, stride * align(height, 16) * 3 // 2)


def frame_bytes(width: int, height: int) -> int:
    """Bytes of one frame laid out at the stride (Y rows, then h/2 chroma rows): the copy size."""
    return align(width, 16) * height * 3 // 2


def channel_format(stream_format: PixelFormat) -> PixelFormat:
    """The channel's picture format: the stream's when VENC takes it; every other format is
    converted to nv12 by the worker before send_frame."""
    return stream_format if stream_format in PIC_FORMAT else PixelFormat.NV12


def check_frame(frame: RawFrame, width: int, height: int) -> None:
    """Refuse a frame VENC cannot take or that does not fit a width x height channel."""
    if frame.pixel_format not in PIC_FORMAT:
        raise EncoderError(f"VENC takes nv12/nv21 frames, got {frame.pixel_format.value}")
    if (frame.width, frame.height) != (width, height) or len(frame.planes) != 2:
        raise EncoderError(
            f"frame {frame.seq} is {frame.width}x{frame.height} with {len(frame.planes)} "
            f"planes; the channel takes {width}x{height} semi-planar"
        )
    y, uv = frame.planes
    if (
        y.shape[0] < height
        or y.shape[1] < width
        or uv.shape[0] < height // 2
        or uv.shape[1] < width
    ):
        raise EncoderError(f"frame {frame.seq}: planes {y.shape} and {uv.shape} are too small")


def fill_staging(
    staging: npt.NDArray[np.uint8],
    frame: RawFrame,
    width: int,
    height: int,
    stride: int,
    pic_format: PixelFormat,
) -> None:
    """Rows into the 16-aligned stride (Y, then the interleaved chroma plane), swapping the
    chroma pairs when the frame's format (nv12/nv21) is not the channel's `pic_format`.
    The padding is never written: it stays as the caller allocated it (zero)."""
    w, h, st = width, height, stride
    y, uv = frame.planes
    staging[: st * h].reshape(h, st)[:, :w] = y[:h, :w]
    uv_dst = staging[st * h : st * h + st * (h // 2)].reshape(h // 2, st)
    if frame.pixel_format is pic_format:
        uv_dst[:, :w] = uv[: h // 2, :w]
    else:  # nv12 <-> nv21: swap the chroma pairs on the way
        uv_dst[:, 0:w:2] = uv[: h // 2, 1:w:2]
        uv_dst[:, 1:w:2] = uv[: h // 2, 0:w:2]
