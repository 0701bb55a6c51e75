"""Pixel formats and the plane geometry of one frame: shared by the capture, the ring and
the worker, and carried in HELLO and WELCOME."""

from __future__ import annotations

import enum
from dataclasses import dataclass


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


_CHANNELS = {
    PixelFormat.YUYV422: 2,
    PixelFormat.BGR24: 3,
    PixelFormat.RGB24: 3,
    PixelFormat.BGRA: 4,
    PixelFormat.RGBA: 4,
}


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
