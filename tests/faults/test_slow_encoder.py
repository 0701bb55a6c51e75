"""An encoder slower than its camera is busy, not hung: it keeps beating and is never killed."""

from __future__ import annotations

import time

import pytest
from helpers import Collector, Feeder, check_decodes, wait_until

pytestmark = pytest.mark.process


@pytest.mark.timeout(120)
def test_a_busy_encoder_is_not_taken_for_a_hung_one(make_daemon, stream, leaks):
    """libx265 veryslow at 640x480 takes ~250 ms a frame here; a capture five times faster
    keeps a 24-slot ring full, so one turn of the worker's loop could hold seconds of work.
    Heartbeats (and the status counters) must keep flowing between frames whatever the encode
    time: the stream is never restarted, its packets decode, the excess is dropped at the
    capture and counted there."""
    daemon = make_daemon(
        [
            stream(
                "slow",
                640,
                480,
                codec="h265",
                slots=24,
                encoder={"preset": "veryslow", "tune": "zerolatency"},
            )
        ],
        supervision={"heartbeat_interval_s": 0.2, "hang_timeout_s": 1.5},
    )
    col = Collector(daemon.out, ["slow"]).start()
    daemon.wait_subscribers("slow")
    feed = Feeder(daemon, "slow", fps=25).start()
    encoded_seen: list[int] = []
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline:
        st = daemon.stream_status("slow")
        assert st["restarts"] == 0, f"killed as hung: {st['detail']}\n{daemon.log()[-2000:]}"
        encoded_seen.append(st["frames_encoded"])
        time.sleep(0.5)
    feed.stop()
    wait_until(lambda: len(col.packets["slow"]) >= len(feed.sent), 30, "every frame encoded")
    col.stop()
    assert "hung" not in daemon.log()
    assert daemon.stream_status("slow")["state"] == "running"
    # The status moved while the encoder worked: no long silences in the counters.
    assert encoded_seen[-1] > 0 and sorted(encoded_seen) == encoded_seen
    assert len(set(encoded_seen)) >= 4, encoded_seen
    check_decodes(col.packets["slow"], feed.sent, "h265")
    leaks.finish(daemon)
