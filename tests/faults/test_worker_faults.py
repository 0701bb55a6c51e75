"""A worker dies (SIGKILL, mid-frame) or hangs (SIGSTOP): it is replaced, its stream resumes at
a keyframe without the capture or the subscriber being restarted, and the other stream loses
nothing."""

from __future__ import annotations

import os
import signal
import time

import pytest
from faultkit import kill_quietly, wait_gone
from helpers import Collector, Feeder, check_decodes, shm_segments, wait_until

pytestmark = pytest.mark.process


@pytest.mark.timeout(150)
def test_worker_sigkill_mid_frame(make_daemon, stream, leaks):
    # Killed after running a second or so each time: "stable" enough to restart at once.
    daemon = make_daemon(
        [stream("cam0"), stream("cam1", codec="h265")], supervision={"stable_after_s": 0.5}
    )
    col = Collector(daemon.out, ["cam0", "cam1"]).start()
    daemon.wait_subscribers("cam0")
    daemon.wait_subscribers("cam1")
    feeds = {n: Feeder(daemon, n, fps=60).start() for n in ("cam0", "cam1")}
    wait_until(lambda: len(col.packets["cam0"]) > 30, 20, "packets before the kills")
    leaks.baseline(daemon)
    pids = []
    for n in range(1, 4):
        pid = daemon.worker_pid("cam0")
        pids.append(pid)
        before = len(col.packets["cam0"])
        os.kill(pid, signal.SIGKILL)  # at 60 fps it is in the middle of some frame
        wait_gone(pid)
        wait_until(lambda n=n: daemon.stream_status("cam0")["restarts"] == n, 15, "a restart")
        wait_until(lambda b=before: len(col.packets["cam0"]) > b + 20, 20, "packets again")
        # Its ring went with it (swept by the supervisor), the new session has one.
        assert len(shm_segments(daemon.config["instance"])) == 2
    for f in feeds.values():
        f.stop()
    wait_until(lambda: len(col.packets["cam1"]) >= len(feeds["cam1"].sent), 15, "cam1 drained")
    time.sleep(0.3)  # the last cam0 packets in flight
    col.stop()

    cam0 = col.packets["cam0"]
    epochs = [p.header.epoch for p in cam0]
    assert len(set(epochs)) == 4, "each new worker has a new epoch"
    for epoch in set(epochs):
        assert cam0[epochs.index(epoch)].header.keyframe, "each worker's stream starts at an IDR"
    # The recording goes on across the restarts and decodes to the frames sent.
    check_decodes(cam0, feeds["cam0"].sent, "h264")
    # The other stream lost nothing: every frame its capture handed over came out, in order.
    cam1 = col.packets["cam1"]
    assert feeds["cam1"].dropped == 0
    assert [p.header.frame_seq for p in cam1] == sorted(feeds["cam1"].sent)
    check_decodes(cam1, feeds["cam1"].sent, "h265")
    assert daemon.stream_status("cam1")["restarts"] == 0
    assert "restarting in" not in daemon.log(), "a worker that ran stably restarts at once"
    leaks.finish(daemon)


@pytest.mark.timeout(90)
def test_worker_sigstop_is_killed_and_replaced_within_the_hang_timeout(make_daemon, stream, leaks):
    daemon = make_daemon([stream("cam0"), stream("cam1")], supervision={"hang_timeout_s": 2.0})
    col = Collector(daemon.out, ["cam1"]).start()
    daemon.wait_subscribers("cam1")
    feed = Feeder(daemon, "cam1", fps=40).start()
    wait_until(lambda: len(col.packets["cam1"]) > 10, 20, "cam1 packets")
    leaks.baseline(daemon)
    pid = daemon.worker_pid("cam0")
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: daemon.stream_status("cam0")["restarts"] == 1, 15, "a restart")
        daemon.wait_running()
        assert daemon.worker_pid("cam0") != pid
        wait_gone(pid)
        assert "hung" in daemon.log()
    finally:
        kill_quietly(pid)
    feed.stop()
    wait_until(lambda: len(col.packets["cam1"]) >= len(feed.sent), 15, "cam1 drained")
    col.stop()
    assert feed.dropped == 0
    assert [p.header.frame_seq for p in col.packets["cam1"]] == sorted(feed.sent)
    assert daemon.stream_status("cam1")["restarts"] == 0
    leaks.finish(daemon)
