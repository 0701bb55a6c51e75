"""Frame sources for camingest-capture: a numpy test pattern, or anything PyAV can open.

Every source yields frames already scaled and converted to the stream's geometry, as numpy
arrays in the packed layout of wire.pixels.plane_layout (what CaptureClient.send takes), together
with the frame's natural presentation time in seconds when the source has one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from camingest.wire.avframes import from_av_frame, to_av_frame
from camingest.wire.pixels import (
    EVEN_HEIGHT,
    EVEN_WIDTH,
    FFMPEG_NAMES,
    PixelFormat,
    Plane,
    frame_size,
    packed_shape,
    plane_layout,
)

log = logging.getLogger(__name__)

Array = npt.NDArray[np.uint8]
SourceItem = tuple[Array, float | None]


def frame_to_packed(frame: av.VideoFrame, pixel_format: PixelFormat) -> Array:
    """Copy a PyAV frame into a new packed array; converts the format first if it differs."""
    name = FFMPEG_NAMES[pixel_format]
    if frame.format.name != name:
        frame = frame.reformat(format=name)
    planes = from_av_frame(frame, pixel_format)
    flat = np.concatenate([p.reshape(-1) for p in planes])
    return flat.reshape(packed_shape(pixel_format, int(frame.width), int(frame.height)))


def _source_planes(array: Array | Sequence[Array], layout: tuple[Plane, ...]) -> list[Array]:
    """(rows, row_bytes) views of each plane of a packed array or of a sequence of planes."""
    if isinstance(array, np.ndarray):
        flat = np.ascontiguousarray(array, dtype=np.uint8).reshape(-1)
        total = sum(p.size for p in layout)
        if flat.size != total:
            raise ValueError(f"frame of {flat.size} bytes, expected {total}")
        return [flat[p.offset : p.offset + p.size].reshape(p.rows, p.row_bytes) for p in layout]
    if len(array) != len(layout):
        raise ValueError(f"{len(array)} planes given, the format has {len(layout)}")
    planes = []
    for i, (a, p) in enumerate(zip(array, layout, strict=True)):
        flat = np.ascontiguousarray(a, dtype=np.uint8).reshape(-1)
        if flat.size != p.size:
            raise ValueError(f"plane {i} of {flat.size} bytes, expected {p.size}")
        planes.append(flat.reshape(p.rows, p.row_bytes))
    return planes


def packed_to_frame(
    array: Array | Sequence[Array], pixel_format: PixelFormat, width: int, height: int
) -> av.VideoFrame:
    """A new PyAV frame holding a packed array (or a sequence of its planes); an exact copy."""
    layout = plane_layout(pixel_format, width, height)
    return to_av_frame(pixel_format, width, height, tuple(_source_planes(array, layout)))


# ---------------------------------------------------------------------------------------------
# Sources


class FrameSource:
    """An iterator of (packed frame, natural pts in seconds or None); close() when done."""

    #: a camera or stream that runs at its own pace (never paced by the caller)
    live: bool = False

    def __init__(self, spec: str, width: int, height: int, pixel_format: PixelFormat) -> None:
        self.spec = spec
        self.width = width
        self.height = height
        self.pixel_format = pixel_format

    def __iter__(self) -> Iterator[SourceItem]:
        return self

    def __next__(self) -> SourceItem:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Patch:
    """A small image already in the target format, pasted at even (x, y) into a frame."""

    def __init__(self, rgb: Array, fmt: PixelFormat) -> None:
        h, w = rgb.shape[:2]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        packed = frame_to_packed(frame, fmt)
        self.width, self.height = w, h
        self.planes = _source_planes(packed, plane_layout(fmt, w, h))


class TestSource(FrameSource):
    """A moving test pattern made in numpy: scrolling bars over a gradient, a bouncing box, and
    a binary frame counter, so consecutive frames differ and an encoder's PSNR means something.

    The pattern is converted to the target format once; each frame is a shifted slice of it
    plus a few small pastes, so 1080p at 30 fps costs a memcpy or so per frame.
    """

    _BITS = 16

    def __init__(
        self, width: int, height: int, pixel_format: PixelFormat, fps: float = 30.0
    ) -> None:
        super().__init__("testsrc", width, height, pixel_format)
        if (pixel_format in EVEN_WIDTH and width % 2) or (
            pixel_format in EVEN_HEIGHT and height % 2
        ):
            raise ValueError(f"testsrc needs an even size for {pixel_format}")
        self.fps = fps
        self._n = 0
        self._layout = plane_layout(pixel_format, width, height)
        # Two periods side by side: a shift in [0, width) is one slice, with no seam.
        base = _pattern_rgb(width, height)
        wide = _Patch(np.concatenate([base, base], axis=1), pixel_format)
        self._wide = wide.planes
        box = max(8, min(width, height) // 6) // 2 * 2
        self._box = _Patch(_box_rgb(box), pixel_format)
        cell = max(2, min(width // (self._BITS + 2), height // 8)) // 2 * 2
        self._cell = cell
        self._bit_on = _Patch(np.full((cell, cell, 3), 235, np.uint8), pixel_format)
        self._bit_off = _Patch(np.full((cell, cell, 3), 16, np.uint8), pixel_format)
        self._speed = max(2, width // 160) // 2 * 2  # pixels per frame, even (chroma pairs)

    def __next__(self) -> SourceItem:
        n = self._n
        self._n += 1
        w, h = self.width, self.height
        out = np.empty(frame_size(self.pixel_format, w, h), dtype=np.uint8)
        planes = [
            out[p.offset : p.offset + p.size].reshape(p.rows, p.row_bytes) for p in self._layout
        ]
        shift = (n * self._speed) % w
        shift -= shift % 2
        for dst, src, p in zip(planes, self._wide, self._layout, strict=True):
            # Byte offset of pixel `shift` in this plane (chroma planes are subsampled).
            off = shift * src.shape[1] // (2 * w)
            dst[...] = src[:, off : off + p.row_bytes]
        # The box bounces around the frame.
        bx = _bounce(n * 3, w - self._box.width)
        by = _bounce(n * 2, h - self._box.height)
        self._paste(planes, self._box, bx, by)
        # The frame counter, one cell per bit, along the top edge.
        for bit in range(self._BITS):
            patch = self._bit_on if (n >> bit) & 1 else self._bit_off
            x = w - (bit + 2) * self._cell
            if x >= 0 and self._cell <= h:
                self._paste(planes, patch, x, 0)
        return out.reshape(packed_shape(self.pixel_format, w, h)), n / self.fps

    def _paste(self, planes: list[Array], patch: _Patch, x: int, y: int) -> None:
        x -= x % 2
        y -= y % 2
        for dst, src in zip(planes, patch.planes, strict=True):
            # Scale the pixel position into this plane's rows and bytes.
            r0 = y * src.shape[0] // patch.height
            c0 = x * src.shape[1] // patch.width
            rows = min(src.shape[0], dst.shape[0] - r0)
            cols = min(src.shape[1], dst.shape[1] - c0)
            if rows > 0 and cols > 0:
                dst[r0 : r0 + rows, c0 : c0 + cols] = src[:rows, :cols]


def _bounce(pos: int, span: int) -> int:
    if span <= 0:
        return 0
    pos %= 2 * span
    return pos if pos < span else 2 * span - pos


def _pattern_rgb(width: int, height: int) -> Array:
    """Colour bars over a vertical luma ramp, periodic in x with period `width`."""
    x = np.arange(width, dtype=np.float32)
    y = np.arange(height, dtype=np.float32)[:, None]
    bars = np.array(
        [
            [235, 235, 235],
            [235, 235, 16],
            [16, 235, 235],
            [16, 235, 16],
            [235, 16, 235],
            [235, 16, 16],
            [16, 16, 235],
            [64, 64, 64],
        ],
        dtype=np.float32,
    )
    idx = (x * len(bars) / width).astype(np.int64) % len(bars)
    ramp = 0.35 + 0.65 * (y / max(1, height - 1))  # (h, 1)
    # A smooth periodic ripple so the picture has texture beyond flat bars.
    ripple = 20.0 * np.sin(2 * np.pi * (x / width * 5 + y / max(1, height) * 3))
    rgb = bars[idx][None, :, :] * ramp[:, :, None] + ripple[:, :, None]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _box_rgb(size: int) -> Array:
    box = np.empty((size, size, 3), dtype=np.uint8)
    box[...] = (255, 128, 0)
    b = max(1, size // 8)
    box[b:-b, b:-b] = (20, 60, 200)
    return box


class AVSource(FrameSource):
    """A file, V4L2 device or RTSP URL decoded with PyAV and converted to the stream's format."""

    def __init__(
        self,
        spec: str,
        width: int,
        height: int,
        pixel_format: PixelFormat,
        fps: float,
        *,
        loop: bool = False,
    ) -> None:
        super().__init__(spec, width, height, pixel_format)
        self.fps = fps
        self.loop = loop
        self.kind = _kind_of(spec)
        self.live = self.kind in ("v4l2", "rtsp")
        self._container: Any = None
        self._frames: Iterator[Any] | None = None
        self._offset_s = 0.0  # added to pts after each loop, so time keeps going forward
        self._last_pts_s = 0.0
        self._open()

    def _open(self) -> None:
        self._container = _open_container(self.spec, self.kind, self.width, self.height, self.fps)
        streams = self._container.streams.video
        if not streams:
            self._container.close()
            raise ValueError(f"{self.spec}: no video stream")
        stream = streams[0]
        stream.thread_type = "AUTO"
        self._stream = stream
        self._frames = iter(self._container.decode(stream))

    def __next__(self) -> SourceItem:
        if self._frames is None:
            raise StopIteration
        try:
            frame = next(self._frames)
        except StopIteration:
            if not self.loop or self.live:
                self.close()
                raise
            self._offset_s = self._last_pts_s + 1.0 / self.fps
            self.close()
            self._open()
            log.debug("%s: looping", self.spec)
            frame = next(self._frames)
        pts_s: float | None = None
        if frame.pts is not None and frame.time_base is not None:
            pts_s = self._offset_s + float(frame.pts * Fraction(frame.time_base))
            self._last_pts_s = pts_s
        name = FFMPEG_NAMES[self.pixel_format]
        if (frame.width, frame.height, frame.format.name) != (self.width, self.height, name):
            frame = frame.reformat(self.width, self.height, name)
        return frame_to_packed(frame, self.pixel_format), pts_s

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        self._frames = None


def _kind_of(spec: str) -> str:
    if spec.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if spec.startswith("/dev/video"):
        return "v4l2"
    return "file"


def _open_container(spec: str, kind: str, width: int, height: int, fps: float) -> Any:
    if kind == "rtsp":
        options = {
            "rtsp_transport": "tcp",
            "fflags": "nobuffer",
            "flags": "low_delay",
            "max_delay": "500000",
        }
        return av.open(spec, options=options, timeout=(10.0, 10.0))
    if kind == "v4l2":
        wanted = {"framerate": f"{fps:g}", "video_size": f"{width}x{height}"}
        try:
            return av.open(spec, format="v4l2", options=wanted)
        except av.FFmpegError as exc:
            # The device may not offer this size or rate: take what it has and scale.
            log.warning("%s: %s with %s; opening with its defaults", spec, exc, wanted)
            return av.open(spec, format="v4l2")
    if not Path(spec).exists():
        raise FileNotFoundError(f"no such file: {spec}")
    return av.open(spec)


def open_source(
    spec: str,
    width: int,
    height: int,
    pixel_format: PixelFormat,
    fps: float,
    *,
    loop: bool = False,
) -> FrameSource:
    """Open `testsrc`, a video file, `/dev/videoN` or an `rtsp://` URL.

    Raises FileNotFoundError, ValueError or av.FFmpegError when the source cannot be opened.
    """
    if spec == "testsrc":
        return TestSource(width, height, pixel_format, fps)
    return AVSource(spec, width, height, pixel_format, fps, loop=loop)
