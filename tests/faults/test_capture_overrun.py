"""A capture faster than its encoder: the excess is dropped at the capture, counted there and
shown by the daemon (status and metrics), and no frame is torn."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import Collector, as_capture_array, pattern_planes, wait_until

from camingest.capture import CaptureClient
from camingest.wire.pixels import PixelFormat

pytestmark = pytest.mark.process


@pytest.mark.timeout(120)
def test_drops_at_the_capture_are_shown_by_the_daemon_and_nothing_is_torn(
    make_daemon, stream, workdir: Path
):
    w, h = 640, 480
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = make_daemon(
        [
            stream("fast", w, h, codec="h265", slots=2, encoder={"preset": "slow"}),
            stream("calm"),
        ],
        metrics={"enabled": True, "address": "127.0.0.1", "port": port},
    )
    col = Collector(daemon.out, ["fast"]).start()
    daemon.wait_subscribers("fast")
    fmt = PixelFormat.NV12
    frames = [as_capture_array(fmt, w, h, pattern_planes(fmt, w, h, i)) for i in range(16)]
    cap = CaptureClient(daemon.ingest("fast"), "fast", w, h, fmt)  # on_full: drop
    cap.connect(10)
    sent = 0
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        sent += cap.send(frames[sent % len(frames)])
        time.sleep(0.002)
    dropped = dict(cap.drops)
    cap.close()
    assert dropped.get("no_slot", 0) > 10, dropped  # the scenario: the encoder is behind

    # The daemon shows exactly what the capture counted, under capture_<reason>.
    wait_until(
        lambda: daemon.stream_status("fast")["drops"].get("capture_no_slot") == dropped["no_slot"],
        10,
        "the capture's drops in the status",
    )
    st = daemon.stream_status("fast")
    assert st["drops_total"] >= dropped["no_slot"]
    assert daemon.stream_status("calm")["drops"] == {}
    want = f'camingest_drops_total{{reason="capture_no_slot",stream="fast"}} {dropped["no_slot"]}.0'

    def scraped() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return want in r.read().decode()

    wait_until(scraped, 10, f"{want} in the metrics")

    wait_until(lambda: len(col.packets["fast"]) >= sent, 60, "every frame handed over encoded")
    col.stop()
    assert len(col.packets["fast"]) == sent
    # No torn frame: the whole recording decodes with ffmpeg stopping at the first error.
    path = workdir / "fast.h265"
    path.write_bytes(b"".join(p.data for p in col.packets["fast"]))
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-xerror", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    assert np.all([p.header.width == w for p in col.packets["fast"]])
