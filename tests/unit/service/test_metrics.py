"""Metrics: the exported text for a status snapshot, over the registry and over HTTP."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from camingest.service.metrics import Metrics
from camingest.service.status import new_stream_status


def stream(name: str, **values: Any) -> dict[str, Any]:
    s: dict[str, Any] = dict(new_stream_status(name, "running"))
    s.update(values)
    return s


CAM0 = stream(
    "cam0",
    pid=1234,
    frames_in=900,
    frames_encoded=898,
    packets_out=898,
    bytes_out=123456,
    drops={"malformed": 2, "no_slot": 5},
    drops_total=7,
    restarts=1,
    fps_in=30.0,
    fps_out=29.9,
    bitrate_kbps=2000.5,
    latency_p50_ms=4.5,
    latency_p99_ms=12.0,
    subscribers=2,
)
CAM1 = stream("cam1", state="failed", detail="encoder refused", subscribers=None)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    m = Metrics()
    yield m
    m.close()


def test_update_exports_every_field(metrics: Metrics) -> None:
    metrics.update([CAM0, CAM1])
    got = samples(metrics.registry)

    def value(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert value("camingest_frames_in_total", stream="cam0") == 900
    assert value("camingest_frames_encoded_total", stream="cam0") == 898
    assert value("camingest_packets_out_total", stream="cam0") == 898
    assert value("camingest_bytes_out_total", stream="cam0") == 123456
    assert value("camingest_restarts_total", stream="cam0") == 1
    assert value("camingest_drops_total", stream="cam0", reason="no_slot") == 5
    assert value("camingest_drops_total", stream="cam0", reason="malformed") == 2
    assert value("camingest_fps_in", stream="cam0") == 30.0
    assert value("camingest_fps_out", stream="cam0") == 29.9
    assert value("camingest_bitrate_kbps", stream="cam0") == 2000.5
    assert value("camingest_latency_ms", stream="cam0", quantile="0.5") == 4.5
    assert value("camingest_latency_ms", stream="cam0", quantile="0.99") == 12.0
    assert value("camingest_subscribers", stream="cam0") == 2
    assert value("camingest_stream_state", stream="cam0", state="running") == 1
    assert value("camingest_stream_state", stream="cam0", state="failed") == 0
    assert value("camingest_stream_state", stream="cam1", state="failed") == 1
    assert value("camingest_frames_in_total", stream="cam1") == 0
    # Unknown subscriber count: no sample rather than a made-up 0.
    assert ("camingest_subscribers", (("stream", "cam1"),)) not in got


def test_removed_stream_disappears(metrics: Metrics) -> None:
    metrics.update([CAM0, CAM1])
    metrics.update([stream("cam1", frames_in=5)])  # a reload removed cam0
    got = samples(metrics.registry)
    assert not [key for key in got if ("stream", "cam0") in key[1]]
    assert got[("camingest_frames_in_total", (("stream", "cam1"),))] == 5


def test_own_registry_not_the_global_one() -> None:
    a, b = Metrics(), Metrics()
    a.update([CAM0])
    assert b"cam0" not in generate_latest(b.registry)
    assert b"camingest_" not in generate_latest(REGISTRY)
    shared = CollectorRegistry()
    c = Metrics(shared)
    assert c.registry is shared


@pytest.mark.timeout(30)
def test_serve_over_http(metrics: Metrics) -> None:
    metrics.update([CAM0])
    metrics.serve("127.0.0.1", 0)
    port = metrics.port
    assert port is not None
    assert port > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        body = resp.read().decode()
    assert 'camingest_frames_in_total{stream="cam0"} 900.0' in body
    with pytest.raises(RuntimeError, match="already"):
        metrics.serve("127.0.0.1", 0)
    metrics.close()
    assert metrics.port is None
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
