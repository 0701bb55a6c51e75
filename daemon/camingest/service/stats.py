"""StatusBook: turns workers' cumulative heartbeats into the per-stream status the control
socket, STATUS= and the metrics report (rates over a short window, totals across restarts)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from camingest.service.status import RateMeter
from camingest.wire.fanin import WorkerHealth

RATE_WINDOW_S = 2.0  # fps and bitrate in the status: recent enough to follow a change


def _meter() -> RateMeter:
    return RateMeter(RATE_WINDOW_S)


@dataclass
class _Meters:
    pid: int
    frames_in: RateMeter = field(default_factory=_meter)
    packets: RateMeter = field(default_factory=_meter)
    bits: RateMeter = field(default_factory=_meter)


class StatusBook:
    def __init__(self) -> None:
        self._meters: dict[str, _Meters] = {}

    def record(self, health: WorkerHealth, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        meters = self._meters.get(health.stream)
        if meters is None or meters.pid != health.pid:
            # A new worker: its counters start again from zero.
            meters = self._meters[health.stream] = _Meters(health.pid)
        meters.frames_in.add(now, health.frames_in)
        meters.packets.add(now, health.packets_out)
        meters.bits.add(now, health.bytes_out * 8)

    def forget(self, streams: list[str]) -> None:
        for name in streams:
            self._meters.pop(name, None)

    def rates(self, stream: str) -> tuple[float, float, float]:
        """Frames in per second, packets out per second, kbit/s out."""
        m = self._meters.get(stream)
        if m is None:
            return 0.0, 0.0, 0.0
        return m.frames_in.rate(), m.packets.rate(), m.bits.rate() / 1000

    def stream_status(self, slot: dict[str, Any], subscribers: int | None) -> dict[str, Any]:
        name = slot["name"]
        health: WorkerHealth | None = slot["health"]
        live = health is not None and slot["state"] == "running"
        fps_in, fps_out, kbps = self.rates(name) if live else (0.0, 0.0, 0.0)
        drops = dict(health.drops) if health else {}
        return {
            "name": name,
            "state": slot["state"],
            "pid": slot["pid"],
            "restarts": slot["restarts"],
            "fps_in": round(fps_in, 2),
            "fps_out": round(fps_out, 2),
            "frames_in": health.frames_in if health else 0,
            "frames_encoded": health.frames_encoded if health else 0,
            "packets_out": health.packets_out if health else 0,
            "bytes_out": health.bytes_out if health else 0,
            "drops": drops,
            "drops_total": sum(drops.values()),
            "bitrate_kbps": round(kbps, 1),
            "latency_p50_ms": round(health.latency_p50_ms, 2) if health else None,
            "latency_p99_ms": round(health.latency_p99_ms, 2) if health else None,
            "subscribers": subscribers,
            "capture_connected": health.capture_connected if health else False,
            "detail": slot["detail"],
        }
