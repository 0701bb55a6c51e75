"""Faults on the capture side: a capture killed in the middle of writing a frame, and a
capture faster than its encoder."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from faultkit import kill_quietly
from helpers import Collector, as_capture_array, pattern_planes, shm_segments, wait_until

from camingest.capture import CaptureClient
from camingest.subscribe import Subscriber
from camingest.wire.pixels import PixelFormat

pytestmark = pytest.mark.process

# Writes frames as fast as the worker takes them, so a SIGKILL lands in the middle of a copy.
CAPTURE_SCRIPT = """
import sys, numpy as np
from camingest.capture import CaptureClient
c = CaptureClient(sys.argv[1], "cam0", 160, 120, "nv12", on_full="wait", max_wait_ms=1000)
c.connect(10)
print("connected", flush=True)
frame = np.zeros((180, 160), np.uint8)
i = 0
while True:
    frame[:] = i % 250
    c.send(frame)
    i += 1
"""


@pytest.mark.timeout(90)
def test_capture_sigkill_mid_write(make_daemon, stream, leaks):
    """The worker lives on; the dead capture shows as disconnected within seconds and its ring
    is freed; the next capture gets a whole new ring (every slot free at once), and its frames
    all arrive."""
    slots = 4
    daemon = make_daemon([stream("cam0", slots=slots)])
    proc = subprocess.Popen(
        [sys.executable, "-c", CAPTURE_SCRIPT, daemon.ingest("cam0")], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"connected"
        wait_until(lambda: daemon.stream_status("cam0")["frames_in"] > 20, 15, "frames")
        leaks.baseline(daemon)
        assert daemon.stream_status("cam0")["capture_connected"]
        proc.kill()
        proc.wait(5)
        # An operator can tell a dead camera from a live one within a couple of seconds.
        wait_until(lambda: not daemon.stream_status("cam0")["capture_connected"], 3, "dead")
        wait_until(lambda: not shm_segments(daemon.config["instance"]), 5, "its ring freed")
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
        kill_quietly(proc.pid)
        proc.wait(5)
    with Subscriber([daemon.out], ["cam0"]) as sub:
        daemon.wait_subscribers("cam0")
        s = daemon.stream("cam0")
        cap = CaptureClient(daemon.ingest("cam0"), "cam0", s["width"], s["height"], "nv12")
        cap.connect(10)
        # on_full=drop: with the whole ring free, `slots` frames in a burst all get a slot.
        assert all(cap.send(np.full((180, 160), i * 20, np.uint8)) for i in range(slots))
        got = []
        deadline = time.monotonic() + 15
        while len(got) < slots and time.monotonic() < deadline:
            p = sub.recv(0.5)
            if p is not None and not p.header.eos:
                got.append(p)
        assert len(shm_segments(daemon.config["instance"])) == 1
        cap.close()
    assert [p.header.frame_seq for p in got] == list(range(1, slots + 1))
    assert daemon.stream_status("cam0")["restarts"] == 0
    wait_until(lambda: not shm_segments(daemon.config["instance"]), 5, "the ring to go")
    leaks.finish(daemon)


@pytest.mark.timeout(120)
def test_capture_faster_than_its_encoder_drops_are_shown_and_nothing_is_torn(
    make_daemon, stream, workdir: Path, leaks
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
    leaks.baseline(daemon)
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
    leaks.finish(daemon)
