"""Write a stream's encoded packets to a file: raw Annex-B, or remuxed into mp4/mkv/mov.

No re-encoding ever happens. For containers the Annex-B goes to a temp file next to the target
while recording (so a crash leaves a playable .h264 behind, not a half-written mp4), and close()
remuxes it with PyAV, taking pts/dts from the capture timestamps.
"""

from __future__ import annotations

import itertools
import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import av

from camingest.wire.output import Codec

log = logging.getLogger(__name__)

RAW_EXTENSIONS: dict[str, Codec | None] = {
    ".h264": Codec.H264,
    ".264": Codec.H264,
    ".h265": Codec.H265,
    ".265": Codec.H265,
    ".hevc": Codec.H265,
}
CONTAINER_EXTENSIONS = (".mp4", ".mkv", ".mov")
TIME_BASE = Fraction(1, 90000)
_DEMUXER = {Codec.H264: "h264", Codec.H265: "hevc"}


def check_path(path: str | Path, codec: Codec | None = None) -> None:
    """Raise ValueError if `path` has no extension Recorder writes, or one for another codec."""
    ext = Path(path).suffix.lower()
    if ext in CONTAINER_EXTENSIONS:
        return
    if ext not in RAW_EXTENSIONS:
        allowed = ", ".join([*RAW_EXTENSIONS, *CONTAINER_EXTENSIONS])
        raise ValueError(f"{path}: unknown extension {ext or '(none)'!r}; allowed: {allowed}")
    if codec is not None and RAW_EXTENSIONS[ext] is not codec:
        raise ValueError(f"{path}: a {ext} file cannot hold {codec.name} packets")


class Recorder:
    """Writes Annex-B access units, in decode order, to `path`."""

    def __init__(self, path: str | Path, codec: Codec, fps: float) -> None:
        check_path(path, codec)
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.codec = codec
        self.fps = fps
        self.frames = 0
        self.bytes_written = 0
        self._container = self.path.suffix.lower() in CONTAINER_EXTENSIONS
        self._timestamps: list[int] = []
        if self._container:
            ext = ".h264" if codec is Codec.H264 else ".h265"
            self._raw_path = self.path.with_name(f".{self.path.name}.{os.getpid()}{ext}")
        else:
            self._raw_path = self.path
        self._file: IO[bytes] | None = open(self._raw_path, "wb")  # noqa: SIM115

    def write(self, packet_data: bytes, capture_ts_ns: int) -> None:
        if self._file is None:
            raise ValueError("write() on a closed Recorder")
        if not packet_data:
            return
        self._file.write(packet_data)
        self._timestamps.append(capture_ts_ns)
        self.frames += 1
        self.bytes_written += len(packet_data)

    @property
    def duration_s(self) -> float:
        """The span of the capture timestamps written, plus one frame."""
        if not self._timestamps:
            return 0.0
        span = (max(self._timestamps) - min(self._timestamps)) / 1e9
        return span + 1.0 / self.fps

    def close(self) -> None:
        """Finish the file; for containers, remux (raises av.FFmpegError if that fails, and keeps
        the Annex-B temp file so nothing is lost)."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        if not self._container:
            return
        if self.frames == 0:
            log.warning("%s: no packets were recorded; not writing it", self.path)
            self._raw_path.unlink(missing_ok=True)
            return
        try:
            _remux(self._raw_path, self.path, self.codec, self._timestamps, self.fps)
        except Exception:
            log.error(
                "%s: remux failed; the Annex-B stream is kept in %s", self.path, self._raw_path
            )
            raise
        self._raw_path.unlink(missing_ok=True)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def timestamps_to_pts(timestamps_ns: list[int], fps: float) -> tuple[list[int], list[int], int]:
    """(pts, dts, last duration) in TIME_BASE units for packets in decode order.

    pts come from the capture timestamps relative to the earliest. If they are not all distinct
    (a clock that did not move, or no timestamps at all) every frame is 1/fps apart instead.
    dts are the sorted pts, moved back just enough to never pass a pts (B-frames).
    """
    frame_ticks = round(90000 / fps)
    n = len(timestamps_ns)
    usable = n > 0 and len(set(timestamps_ns)) == n and min(timestamps_ns) > 0
    if not usable:
        log.warning("capture timestamps are not increasing; using %.3g fps instead", fps)
        pts = [i * frame_ticks for i in range(n)]
        return pts, list(pts), frame_ticks
    t0 = min(timestamps_ns)
    pts = [round((t - t0) * 90000 / 1e9) for t in timestamps_ns]
    order = sorted(pts)
    if len(set(order)) != n:  # distinct in ns but not at 90 kHz
        pts = [i * frame_ticks for i in range(n)]
        return pts, list(pts), frame_ticks
    shift = max(s - p for s, p in zip(order, pts, strict=True))
    dts = [s - shift for s in order]
    steps = [b - a for a, b in itertools.pairwise(order)]
    last = sorted(steps)[len(steps) // 2] if steps else frame_ticks  # the median frame interval
    return pts, dts, last


def _remux(raw: Path, target: Path, codec: Codec, timestamps_ns: list[int], fps: float) -> None:
    pts, dts, last = timestamps_to_pts(timestamps_ns, fps)
    by_pts = sorted(pts)
    # A packet lasts until the next frame in presentation order.
    durations = {a: b - a for a, b in itertools.pairwise(by_pts)}
    count = 0
    with av.open(str(raw), format=_DEMUXER[codec]) as src:
        in_stream = src.streams.video[0]
        with av.open(str(target), "w") as dst:
            out: Any = dst.add_stream_from_template(in_stream)
            out.time_base = TIME_BASE
            for packet in src.demux(in_stream):
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream marker
                if count < len(pts):
                    p, d = pts[count], dts[count]
                else:
                    # The parser split an access unit we wrote as one: continue at the frame rate.
                    log.warning("%s: more access units than packets written", target)
                    p = d = by_pts[-1] + (count - len(pts) + 1) * last
                packet.stream = out
                packet.time_base = TIME_BASE
                packet.pts = p
                packet.dts = d
                packet.duration = durations.get(p, last)
                dst.mux(packet)
                count += 1
    if count != len(timestamps_ns):
        log.warning("%s: %d packets written, %d muxed", target, len(timestamps_ns), count)
    log.info("%s: remuxed %d packets", target, count)
