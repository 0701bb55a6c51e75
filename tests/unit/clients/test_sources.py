"""Frame sources: the numpy test pattern, files through PyAV, and the packed <-> frame copies."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from camingest.clients.sources import (
    frame_to_packed,
    open_source,
    packed_to_frame,
)
from camingest.wire.pixels import FFMPEG_NAMES, PixelFormat, frame_size, packed_shape

EXPECTED_SHAPES = {
    PixelFormat.NV12: (180, 160),
    PixelFormat.NV21: (180, 160),
    PixelFormat.I420: (180, 160),
    PixelFormat.YUYV422: (120, 160, 2),
    PixelFormat.GRAY: (120, 160),
    PixelFormat.BGR24: (120, 160, 3),
    PixelFormat.RGB24: (120, 160, 3),
    PixelFormat.BGRA: (120, 160, 4),
    PixelFormat.RGBA: (120, 160, 4),
}


@pytest.mark.parametrize("fmt", list(PixelFormat))
def test_testsrc_shape_and_motion(fmt: PixelFormat) -> None:
    with open_source("testsrc", 160, 120, fmt, 30.0) as src:
        frames = [next(src) for _ in range(5)]
    for array, pts in frames:
        assert array.shape == EXPECTED_SHAPES[fmt]
        assert array.dtype == np.uint8
        assert array.nbytes == frame_size(fmt, 160, 120)
        assert pts is not None
    for (a, _), (b, _) in itertools.pairwise(frames):
        assert a is not b
        assert not np.array_equal(a, b)
    assert [pts for _, pts in frames] == pytest.approx([i / 30 for i in range(5)])


def test_testsrc_is_a_picture() -> None:
    """The pattern has real content (not a flat frame), so an encoder's PSNR means something."""
    with open_source("testsrc", 160, 120, PixelFormat.GRAY, 30.0) as src:
        luma, _ = next(src)
    assert luma.std() > 20
    assert len(np.unique(luma)) > 50


def test_testsrc_rejects_odd_sizes_for_420() -> None:
    with pytest.raises(ValueError, match="even"):
        open_source("testsrc", 161, 120, PixelFormat.NV12, 30.0)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-frames",
            "20",
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


@pytest.mark.timeout(60)
def test_file_source_scales_and_converts(clip: Path) -> None:
    with open_source(str(clip), 176, 144, PixelFormat.NV21, 30.0) as src:
        assert not src.live
        items = list(src)
    assert len(items) == 20
    for array, _ in items:
        assert array.shape == (144 * 3 // 2, 176)
        assert array.dtype == np.uint8
    pts = [p for _, p in items]
    assert pts == pytest.approx([i / 30 for i in range(20)], abs=1e-3)
    assert not np.array_equal(items[0][0], items[1][0])


@pytest.mark.timeout(60)
def test_file_source_loop_keeps_going(clip: Path) -> None:
    with open_source(str(clip), 64, 48, PixelFormat.BGR24, 30.0, loop=True) as src:
        items = [next(src) for _ in range(50)]
    assert all(a.shape == (48, 64, 3) for a, _ in items)
    # The loop restarts the picture but time keeps moving forward.
    assert np.array_equal(items[0][0], items[20][0])
    pts = [p for _, p in items]
    assert pts is not None
    assert all(b is not None and a is not None and b > a for a, b in itertools.pairwise(pts))


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError):
        open_source("/nonexistent/clip.mp4", 64, 48, PixelFormat.NV12, 30.0)


@pytest.mark.parametrize("fmt", list(PixelFormat))
@pytest.mark.parametrize(("width", "height"), [(160, 120), (170, 98), (64, 2), (33, 17)])
def test_packed_round_trip_exact(fmt: PixelFormat, width: int, height: int) -> None:
    rng = np.random.default_rng(7)
    shape = packed_shape(fmt, width, height)
    array = rng.integers(0, 256, size=shape, dtype=np.uint8)
    frame = packed_to_frame(array, fmt, width, height)
    assert (frame.width, frame.height, frame.format.name) == (width, height, FFMPEG_NAMES[fmt])
    back = frame_to_packed(frame, fmt)
    assert back.shape == shape
    assert np.array_equal(back, array)


@pytest.mark.parametrize("fmt", [PixelFormat.NV12, PixelFormat.I420, PixelFormat.GRAY])
def test_packed_to_frame_from_planes(fmt: PixelFormat) -> None:
    w, h = 170, 98
    rng = np.random.default_rng(3)
    array = rng.integers(0, 256, size=packed_shape(fmt, w, h), dtype=np.uint8)
    flat = array.reshape(-1)
    y = flat[: w * h].reshape(h, w)
    rest = flat[w * h :]
    planes: list[np.ndarray] = [y]
    if fmt is PixelFormat.NV12:
        planes.append(rest.reshape(h // 2, w))
    elif fmt is PixelFormat.I420:
        half = rest.size // 2
        planes += [rest[:half].reshape(h // 2, w // 2), rest[half:].reshape(h // 2, w // 2)]
    frame = packed_to_frame(tuple(planes), fmt, w, h)
    assert np.array_equal(frame_to_packed(frame, fmt), array)


def test_frame_to_packed_matches_pyav_and_converts() -> None:
    """A padded frame (line size > row bytes) packs like to_ndarray() does, and a frame in
    another format is converted first."""
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(98, 170, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    assert np.array_equal(frame_to_packed(frame, PixelFormat.RGB24), rgb)
    bgr = frame_to_packed(frame, PixelFormat.BGR24)
    assert np.array_equal(bgr, rgb[:, :, ::-1])
    yuv = frame.reformat(format="yuv420p")
    assert yuv.planes[1].line_size > 85  # padded chroma rows
    assert np.array_equal(frame_to_packed(yuv, PixelFormat.I420), yuv.to_ndarray())


def test_wrong_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="bytes"):
        packed_to_frame(np.zeros((10, 10), np.uint8), PixelFormat.NV12, 16, 16)
    with pytest.raises(ValueError, match="planes"):
        packed_to_frame((np.zeros((16, 16), np.uint8),), PixelFormat.NV12, 16, 16)
