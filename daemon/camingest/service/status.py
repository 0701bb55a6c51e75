"""The daemon's status: the JSON the control socket returns for "status", its table for
`camingest status`, the one-line systemd STATUS=, and the rate helper behind fps and bitrate.

Status document (plain dicts, so it goes through json unchanged)::

    {
      "daemon": {
        "pid": int,            # the main process
        "uptime_s": float,     # since the daemon started
        "config": str | None,  # path of the loaded config file
        "state": str,          # starting | running | stopping
        "version": str         # camingest.__version__
      },
      "streams": [             # in config order
        {
          "name": str,
          "state": str,        # starting | running | backoff | failed | stopping | stopped
          "pid": int | None,   # the worker, None while none is running
          "restarts": int,     # restarts by the supervisor since the daemon started
          "fps_in": float,     # frames per second accepted from the capture (sliding window)
          "fps_out": float,    # encoded frames per second (sliding window)
          "frames_in": int,    # totals of the current worker (reset when it restarts)
          "frames_encoded": int,
          "packets_out": int,  # packets handed to the output
          "bytes_out": int,
          "drops": {reason: int},   # reason: wire.ingest.DropReason values
          "drops_total": int,  # sum of drops
          "bitrate_kbps": float,    # output bitrate (sliding window)
          "latency_p50_ms": float | None,  # encode latency percentiles; None before the
          "latency_p99_ms": float | None,  # worker's first heartbeat
          "capture_connected": bool,  # a capture holds a session
          "subscribers": int | None,  # None when unknown
          "detail": str        # last error, "" when none
        }
      ]
    }

Metrics (metrics.py) read the same stream dicts.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

STATES = ("starting", "running", "backoff", "failed", "stopping", "stopped")
COLUMNS = (
    "STREAM",
    "STATE",
    "FPS-IN",
    "FPS-OUT",
    "DROPS",
    "KBIT/S",
    "P50-MS",
    "P99-MS",
    "RESTARTS",
    "SUBS",
)
_DETAIL_MAX = 120  # characters of a detail in STATUS=; the table shows it whole


class DaemonInfo(TypedDict):
    pid: int
    uptime_s: float
    config: str
    state: str
    version: str


class StreamStatus(TypedDict):
    name: str
    state: str
    pid: int | None
    restarts: int
    fps_in: float
    fps_out: float
    frames_in: int
    frames_encoded: int
    drops: dict[str, int]
    drops_total: int
    bitrate_kbps: float
    latency_p50_ms: float
    latency_p99_ms: float
    subscribers: int | None
    detail: str


class Status(TypedDict):
    daemon: DaemonInfo
    streams: list[StreamStatus]


def new_stream_status(name: str, state: str = "starting") -> StreamStatus:
    """A stream entry with every key present and zero counters, for the supervisor to fill."""
    return StreamStatus(
        name=name,
        state=state,
        pid=None,
        restarts=0,
        fps_in=0.0,
        fps_out=0.0,
        frames_in=0,
        frames_encoded=0,
        drops={},
        drops_total=0,
        bitrate_kbps=0.0,
        latency_p50_ms=0.0,
        latency_p99_ms=0.0,
        subscribers=None,
        detail="",
    )


def render_table(status: Mapping[str, Any]) -> str:
    """A header line, then one aligned row per stream; a stream with a detail gets an
    indented line under its row."""
    streams: Sequence[Mapping[str, Any]] = status.get("streams", [])
    rows = [list(COLUMNS)]
    rows += [_row(s) for s in streams]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [_header(status)]
    for row, stream in zip(rows, [None, *streams], strict=True):
        cells = [
            cell.ljust(w) if i < 2 else cell.rjust(w)  # names left, numbers right
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if stream is not None and stream.get("detail"):
            lines.append(f"    {stream['name']}: {stream['detail']}")
    return "\n".join(lines) + "\n"


def summary_line(status: Mapping[str, Any]) -> str:
    """One line for systemd's STATUS=: all well, or what is not."""
    streams: Sequence[Mapping[str, Any]] = status.get("streams", [])
    running = sum(1 for s in streams if s.get("state") == "running")
    daemon_state = status.get("daemon", {}).get("state", "running")
    prefix = f"{daemon_state}: " if daemon_state in ("starting", "reloading", "stopping") else ""
    if streams and running == len(streams):
        fps = sum(float(s.get("fps_in") or 0.0) for s in streams)
        drops = sum(int(s.get("drops_total") or 0) for s in streams)
        return f"{prefix}{running}/{len(streams)} streams running, {fps:.1f} fps in, {drops} drops"
    problems = []
    for s in streams:
        if s.get("state") == "running":
            continue
        text = f"{s['name']} {s.get('state', '?')}"
        if s.get("detail"):
            detail = " ".join(str(s["detail"]).split())
            if len(detail) > _DETAIL_MAX:
                detail = detail[: _DETAIL_MAX - 1] + "…"
            text += f": {detail}"
        problems.append(text)
    return f"{prefix}{running}/{len(streams)} running" + "".join(f", {p}" for p in problems)


def _header(status: Mapping[str, Any]) -> str:
    daemon: Mapping[str, Any] = status.get("daemon", {})
    streams: Sequence[Mapping[str, Any]] = status.get("streams", [])
    running = sum(1 for s in streams if s.get("state") == "running")
    parts = [
        f"camingest {daemon.get('version', '?')}",
        f"pid {daemon.get('pid', '?')}",
        f"{daemon.get('state', '?')}",
        f"up {format_duration(float(daemon.get('uptime_s') or 0.0))}",
        f"{running}/{len(streams)} streams running",
    ]
    if daemon.get("config"):
        parts.append(f"config {daemon['config']}")
    return ", ".join(parts)


def _row(s: Mapping[str, Any]) -> list[str]:
    return [
        str(s.get("name", "?")),
        str(s.get("state", "?")),
        _num(s.get("fps_in"), 1),
        _num(s.get("fps_out"), 1),
        _num(s.get("drops_total"), 0),
        _num(s.get("bitrate_kbps"), 0),
        _num(s.get("latency_p50_ms"), 1),
        _num(s.get("latency_p99_ms"), 1),
        _num(s.get("restarts"), 0),
        _num(s.get("subscribers"), 0),
    ]


def _num(value: object, decimals: int) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value:.{decimals}f}"


def format_duration(seconds: float) -> str:
    """3725 -> "1h02m05s"; days above 24 h ("2d03h"), the coarse units dropped."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class RateMeter:
    """Rate of a cumulative counter over a sliding window: add (monotonic time, total) samples,
    read `rate()` per second. A total that goes down (the worker restarted) starts over."""

    def __init__(self, window_s: float = 5.0) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.window_s = window_s
        self._samples: collections.deque[tuple[float, float]] = collections.deque()

    def add(self, t: float, total: float) -> None:
        if self._samples:
            last_t, last_total = self._samples[-1]
            if t < last_t:
                raise ValueError(f"sample time {t} is before the previous one {last_t}")
            if total < last_total:
                self._samples.clear()
        self._samples.append((t, total))
        # Keep one sample at or before the window's start, so a warm meter always spans a
        # whole window rather than whatever fraction the newest samples cover.
        while len(self._samples) > 2 and self._samples[1][0] <= t - self.window_s:
            self._samples.popleft()

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, v0), (t1, v1) = self._samples[0], self._samples[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0

    def reset(self) -> None:
        self._samples.clear()
