"""Prometheus metrics, built from the same per-stream status dicts as `camingest status`.

Each `Metrics` owns a `CollectorRegistry` (never prometheus_client's global REGISTRY, so two
daemons or two tests never share series). A custom collector renders the latest snapshot at
scrape time: totals are exported as counters without Counter.inc() bookkeeping, and a stream
that a reload removed simply stops being exported.

Series (label `stream` on all; see status.py for the meaning of each field):
  camingest_frames_in_total, camingest_frames_encoded_total, camingest_packets_out_total,
  camingest_bytes_out_total, camingest_restarts_total              counters
  camingest_drops_total{reason}                                    counter
  camingest_stream_state{state}                                    1 for the current state, else 0
  camingest_fps_in, camingest_fps_out, camingest_bitrate_kbps      gauges
  camingest_latency_ms{quantile="0.5"|"0.99"}                      gauge (encode latency)
  camingest_subscribers                                            gauge (absent when unknown)
Worker counters restart from 0 with the worker; Prometheus' rate() treats that as a reset.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from camingest.service.status import STATES

logger = logging.getLogger(__name__)

_COUNTERS = (
    ("frames_in", "Frames the worker accepted from the capture"),
    ("frames_encoded", "Frames the encoder returned packets for"),
    ("packets_out", "Packets published to subscribers"),
    ("bytes_out", "Bytes of packets published to subscribers"),
    ("restarts", "Times the supervisor restarted the worker"),
)
_GAUGES = (
    ("fps_in", "Frames per second in, over a sliding window"),
    ("fps_out", "Encoded frames per second out, over a sliding window"),
    ("bitrate_kbps", "Output bitrate in kbit/s, over a sliding window"),
)


class _SnapshotCollector(Collector):
    def __init__(self) -> None:
        # Replaced whole by update() and only read by collect(): the HTTP thread sees either
        # the old or the new tuple, never a half-written one, without a lock.
        self.streams: tuple[dict[str, Any], ...] = ()

    def collect(self) -> Iterator[Metric]:
        streams = self.streams
        for key, doc in _COUNTERS:
            counter = CounterMetricFamily(f"camingest_{key}", doc, labels=["stream"])
            for s in streams:
                counter.add_metric([s["name"]], float(s.get(key) or 0))
            yield counter
        drops = CounterMetricFamily(
            "camingest_drops", "Frames that did not reach the encoder", labels=["stream", "reason"]
        )
        for s in streams:
            for reason, count in sorted((s.get("drops") or {}).items()):
                drops.add_metric([s["name"], reason], float(count))
        yield drops
        state = GaugeMetricFamily(
            "camingest_stream_state", "1 for the stream's current state", labels=["stream", "state"]
        )
        for s in streams:
            for name in STATES:
                state.add_metric([s["name"], name], 1.0 if s.get("state") == name else 0.0)
        yield state
        for key, doc in _GAUGES:
            gauge = GaugeMetricFamily(f"camingest_{key}", doc, labels=["stream"])
            for s in streams:
                gauge.add_metric([s["name"]], float(s.get(key) or 0.0))
            yield gauge
        latency = GaugeMetricFamily(
            "camingest_latency_ms", "Encode latency in ms", labels=["stream", "quantile"]
        )
        for s in streams:
            latency.add_metric([s["name"], "0.5"], float(s.get("latency_p50_ms") or 0.0))
            latency.add_metric([s["name"], "0.99"], float(s.get("latency_p99_ms") or 0.0))
        yield latency
        subs = GaugeMetricFamily("camingest_subscribers", "Output subscribers", labels=["stream"])
        for s in streams:
            if s.get("subscribers") is not None:
                subs.add_metric([s["name"]], float(s["subscribers"]))
        yield subs


class Metrics:
    """The daemon's metrics: `update()` from the main loop, scraped over HTTP after `serve()`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        self._collector = _SnapshotCollector()
        self.registry.register(self._collector)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def update(self, streams: list[dict[str, Any]]) -> None:
        """Replace the snapshot with these per-stream status dicts (status.py keys)."""
        self._collector.streams = tuple(dict(s) for s in streams)

    def serve(self, address: str, port: int) -> None:
        """Start the HTTP exporter (port 0: any free port, see `port`)."""
        if self._server is not None:
            raise RuntimeError("metrics exporter already running")
        # prometheus-client >= 0.20 returns (server, thread); older ones return None, and
        # their server thread then lives (as a daemon thread) until the process exits.
        result: object = start_http_server(port, addr=address, registry=self.registry)
        if isinstance(result, tuple):
            self._server, self._thread = result
        logger.info("metrics on http://%s:%d/metrics", address, self.port or port)

    @property
    def port(self) -> int | None:
        """The port the exporter listens on, None when it is not running."""
        if self._server is None:
            return None
        return int(self._server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._collector.streams = ()
