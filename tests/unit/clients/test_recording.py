"""Recorder: raw Annex-B and remux into mp4/mkv, checked by decoding and with ffprobe.

The packets come from libx264/libx265 run here through PyAV (with repeat-headers, as the
daemon's encoders send them), so the test needs no daemon. Frames are paired by index, not by
timestamp (see design.md, Testing notes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from camingest.clients.recording import Recorder, check_path, timestamps_to_pts
from camingest.clients.sources import frame_to_packed, open_source, packed_to_frame
from camingest.wire.output import Codec
from camingest.wire.pixels import PixelFormat

W, H, FPS, N = 160, 120, 30, 30
T0 = 1_700_000_000_000_000_000  # a CLOCK_REALTIME-like start, in ns

ENCODERS = {
    Codec.H264: ("libx264", {"x264-params": "repeat-headers=1", "crf": "18"}),
    Codec.H265: ("libx265", {"x265-params": "repeat-headers=1:log-level=error", "crf": "18"}),
}


def source_frames() -> list[np.ndarray]:
    with open_source("testsrc", W, H, PixelFormat.I420, FPS) as src:
        return [next(src)[0] for _ in range(N)]


def encode(codec: Codec, frames: list[np.ndarray], *, bframes: bool = False) -> list[av.Packet]:
    """Encode like the daemon does: zerolatency (no B-frames) unless asked otherwise."""
    name, options = ENCODERS[codec]
    ctx = av.CodecContext.create(name, "w")
    ctx.width, ctx.height, ctx.pix_fmt = W, H, "yuv420p"
    ctx.time_base = Fraction(1, FPS)
    ctx.framerate = Fraction(FPS)
    ctx.options = {**options, "preset": "ultrafast", **({} if bframes else {"tune": "zerolatency"})}
    if bframes:
        ctx.max_b_frames = 2
    packets: list[av.Packet] = []
    for i, array in enumerate(frames):
        frame = packed_to_frame(array, PixelFormat.I420, W, H)
        frame.pts = i
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    return packets


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return source_frames()


@pytest.fixture(scope="module", params=[Codec.H264, Codec.H265], ids=["h264", "h265"])
def encoded(request: pytest.FixtureRequest, frames: list[np.ndarray]) -> tuple[Codec, list]:
    codec: Codec = request.param
    return codec, encode(codec, frames)


def capture_ts(frame_index: int) -> int:
    return T0 + frame_index * 1_000_000_000 // FPS


def decode_all(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame_to_packed(f, PixelFormat.I420) for f in container.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def ffprobe(path: Path) -> dict:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_packets",
            "-show_entries",
            "stream=codec_name,nb_read_packets,width,height:format=duration",
            "-of",
            "json",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return json.loads(out.stdout)


def record(path: Path, codec: Codec, packets: list, timestamps: list[int] | None = None) -> None:
    with Recorder(path, codec, FPS) as rec:
        for i, packet in enumerate(packets):
            ts = timestamps[i] if timestamps is not None else capture_ts(int(packet.pts))
            rec.write(bytes(packet), ts)
        assert rec.frames == len(packets)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ext", ["raw", ".mp4", ".mkv"])
def test_recorded_file_decodes(
    tmp_path: Path, ext: str, encoded: tuple[Codec, list], frames: list[np.ndarray]
) -> None:
    codec, packets = encoded
    if ext == "raw":
        ext = ".h264" if codec is Codec.H264 else ".h265"
    path = tmp_path / f"out{ext}"
    record(path, codec, packets)
    decoded = decode_all(path)
    assert len(decoded) == N
    for i, (got, want) in enumerate(zip(decoded, frames, strict=True)):
        assert psnr(got, want) > 30, f"frame {i}"
    if ext in (".mp4", ".mkv"):
        assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # temp file removed
        info = ffprobe(path)
        stream = info["streams"][0]
        assert stream["codec_name"] == ("h264" if codec is Codec.H264 else "hevc")
        assert int(stream["nb_read_packets"]) == N
        assert (stream["width"], stream["height"]) == (W, H)
        assert float(info["format"]["duration"]) == pytest.approx(N / FPS, abs=0.05)


@pytest.mark.timeout(60)
def test_raw_is_written_as_it_comes(tmp_path: Path, encoded: tuple[Codec, list]) -> None:
    codec, packets = encoded
    path = tmp_path / ("out.264" if codec is Codec.H264 else "out.hevc")
    record(path, codec, packets)
    assert path.read_bytes() == b"".join(bytes(p) for p in packets)


@pytest.mark.timeout(60)
def test_mp4_falls_back_to_fps_without_timestamps(
    tmp_path: Path, encoded: tuple[Codec, list]
) -> None:
    codec, packets = encoded
    path = tmp_path / "out.mp4"
    record(path, codec, packets, timestamps=[0] * len(packets))
    info = ffprobe(path)
    assert int(info["streams"][0]["nb_read_packets"]) == N
    assert float(info["format"]["duration"]) == pytest.approx(N / FPS, abs=0.05)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_container_with_bframes(tmp_path: Path, ext: str, frames: list[np.ndarray]) -> None:
    """Packets arrive in decode order with their frames' capture times: pts reorder, dts not."""
    packets = encode(Codec.H264, frames, bframes=True)
    assert any(p.pts != p.dts for p in packets)
    path = tmp_path / f"out{ext}"
    record(path, Codec.H264, packets)
    decoded = decode_all(path)
    assert len(decoded) == N
    for got, want in zip(decoded, frames, strict=True):
        assert psnr(got, want) > 30
    assert float(ffprobe(path)["format"]["duration"]) == pytest.approx(N / FPS, abs=0.05)


def test_timestamps_to_pts() -> None:
    ms = 1_000_000
    pts, dts, last = timestamps_to_pts([10 * ms, 50 * ms, 20 * ms, 30 * ms, 40 * ms], 25.0)
    assert pts == [0, 3600, 900, 1800, 2700]
    assert dts == [-900, 0, 900, 1800, 2700]
    assert all(d <= p for d, p in zip(dts, pts, strict=True))
    assert last == 900
    assert timestamps_to_pts([5, 5, 5], 30.0) == ([0, 3000, 6000], [0, 3000, 6000], 3000)


def test_check_path() -> None:
    check_path("a.mkv", Codec.H265)
    check_path("a.H264", Codec.H264)
    with pytest.raises(ValueError, match="cannot hold"):
        check_path("a.h264", Codec.H265)
    with pytest.raises(ValueError, match="unknown extension"):
        check_path("a.avi")


def test_container_without_packets_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    Recorder(path, Codec.H264, FPS).close()
    assert list(tmp_path.iterdir()) == []


pytestmark = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe is not installed")
