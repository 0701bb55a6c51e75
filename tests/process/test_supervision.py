"""Supervision and lifecycle with a real daemon: crashes, hangs, failing encoders, stop, reload."""

from __future__ import annotations

import signal
import time

import pytest
from helpers import Collector, Feeder, check_decodes, wait_until, write_config

pytestmark = pytest.mark.process


@pytest.mark.timeout(90)
def test_always_failing_encoder_is_marked_failed_and_the_other_stream_goes_on(make_daemon, stream):
    bad = stream("bad", encoder={"tune": "nosuchtune"})
    daemon = make_daemon(
        [bad, stream("cam0")], wait=False, supervision={"max_restarts": 2, "backoff_initial_s": 0.1}
    )
    wait_until(
        lambda: daemon.proc.poll() is None and _state(daemon, "bad") == "failed",
        40,
        "the bad stream to fail",
    )
    st = daemon.stream_status("bad")
    assert st["restarts"] == 2
    assert "nosuchtune" in st["detail"] or "cannot open" in st["detail"], st["detail"]
    col = Collector(daemon.out, ["cam0"]).start()
    daemon.wait_subscribers("cam0")
    feed = Feeder(daemon, "cam0").start()
    wait_until(lambda: len(feed.sent) >= 30, 15, "frames sent")
    feed.stop()
    wait_until(lambda: len(col.packets["cam0"]) >= len(feed.sent), 15, "every cam0 packet")
    col.stop()
    check_decodes(col.packets["cam0"], feed.sent, "h264")
    assert daemon.stream_status("cam0")["state"] == "running"


def _state(daemon, name):
    try:
        return daemon.stream_status(name)["state"]
    except Exception:
        return None


@pytest.mark.timeout(90)
def test_sigterm_flushes_sends_eos_and_exits_cleanly(make_daemon, stream):
    daemon = make_daemon([stream("cam0"), stream("cam1")])
    col = Collector(daemon.out, ["cam0", "cam1"]).start()
    daemon.wait_subscribers("cam0")
    daemon.wait_subscribers("cam1")
    feeds = [Feeder(daemon, n, fps=50).start() for n in ("cam0", "cam1")]
    wait_until(lambda: all(len(col.packets[n]) > 10 for n in ("cam0", "cam1")), 20, "packets")
    for f in feeds:
        f.stop()
    t0 = time.monotonic()
    assert daemon.stop(timeout=20) == 0
    took = time.monotonic() - t0
    wait_until(lambda: col.eos == {"cam0", "cam1"}, 5, "end-of-stream markers")
    col.stop()
    for f, name in zip(feeds, ("cam0", "cam1"), strict=True):
        # Packets in flight when the stop came were published before the marker.
        assert [p.header.frame_seq for p in col.packets[name]] == sorted(f.sent)
    assert took < daemon.config["supervision"]["stop_timeout_s"] + 5
    assert not any(daemon.runtime_dir.glob("*.sock"))


@pytest.mark.timeout(150)
def test_reload_adds_removes_changes_and_leaves_an_unchanged_stream_alone(make_daemon, stream):
    streams = [stream("keep"), stream("change"), stream("drop")]
    daemon = make_daemon(streams)
    pids = {n: daemon.worker_pid(n) for n in ("keep", "change")}
    col = Collector(daemon.out, ["keep"]).start()
    daemon.wait_subscribers("keep")
    feed = Feeder(daemon, "keep", fps=50).start()
    wait_until(lambda: len(col.packets["keep"]) > 20, 20, "packets")

    # A broken file first: refused, the running config stays.
    good_text = daemon.config_path.read_text()
    daemon.config_path.write_text(good_text + "\nbogus_key: 1\n")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in daemon.log(), 10, "the refusal in the log")
    assert {s["name"] for s in daemon.status()["streams"]} == {"keep", "change", "drop"}

    new = dict(daemon.config)
    new["streams"] = [
        stream("keep"),
        stream("change", encoder={"qp": 30}),
        stream("add", 128, 96, "i420", "h265"),
    ]
    write_config(daemon.config_path, new)
    daemon.config = new
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(
        lambda: {s["name"] for s in daemon.status()["streams"]} == {"keep", "change", "add"},
        15,
        "the new stream set",
    )
    daemon.wait_running()
    assert daemon.worker_pid("change") != pids["change"]
    assert daemon.worker_pid("keep") == pids["keep"]
    n_before = len(col.packets["keep"])
    wait_until(lambda: len(col.packets["keep"]) > n_before + 20, 20, "packets after reload")
    feed.stop()
    wait_until(lambda: len(col.packets["keep"]) >= len(feed.sent), 15, "every packet")
    col.stop()
    keep = col.packets["keep"]
    assert feed.dropped == 0
    assert [p.header.frame_seq for p in keep] == sorted(feed.sent)
    assert len({p.header.epoch for p in keep}) == 1
    check_decodes(keep, feed.sent, "h264")


@pytest.mark.timeout(90)
def test_an_encoder_that_holds_frames_back_is_not_taken_for_hung(make_daemon, stream):
    """x264 with lookahead keeps frames while the camera pauses: that is not a stall, and at
    the stop the flush delivers every frame."""
    daemon = make_daemon(
        [stream("cam0", encoder={"preset": "veryfast", "tune": None})],
        supervision={"hang_timeout_s": 2.0},
    )
    col = Collector(daemon.out, ["cam0"]).start()
    daemon.wait_subscribers("cam0")
    feed = Feeder(daemon, "cam0", fps=60).start()
    wait_until(lambda: len(feed.sent) >= 20, 15, "frames")
    feed.stop()
    time.sleep(3.0)  # the camera pauses for longer than the hang timeout
    status = daemon.stream_status("cam0")
    assert status["restarts"] == 0 and status["state"] == "running"
    assert len(col.packets["cam0"]) < len(feed.sent)  # frames were indeed held back
    assert daemon.stop() == 0
    wait_until(lambda: "cam0" in col.eos, 10, "end of stream")
    col.stop()
    assert [p.header.frame_seq for p in col.packets["cam0"]] == sorted(feed.sent)
    check_decodes(col.packets["cam0"], feed.sent, "h264")


@pytest.mark.timeout(90)
def test_subscription_churn_does_not_make_every_frame_a_keyframe(make_daemon, stream):
    import zmq

    daemon = make_daemon([stream("cam0", encoder={"gop": 1000})])
    col = Collector(daemon.out, ["cam0"]).start()
    daemon.wait_subscribers("cam0")
    feed = Feeder(daemon, "cam0", fps=60).start()
    ctx = zmq.Context()
    churn = ctx.socket(zmq.SUB)
    churn.setsockopt(zmq.LINGER, 0)
    churn.connect(daemon.out)
    try:
        wait_until(lambda: len(feed.sent) >= 5, 15, "frames")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # 400 subscribe/unsubscribe pairs in 2 s
            churn.setsockopt(zmq.SUBSCRIBE, b"cam0")
            churn.setsockopt(zmq.UNSUBSCRIBE, b"cam0")
            time.sleep(0.005)
    finally:
        churn.close()
        ctx.term()
    feed.stop()
    wait_until(lambda: len(col.packets["cam0"]) >= len(feed.sent), 15, "every packet")
    col.stop()
    keyframes = sum(p.header.keyframe for p in col.packets["cam0"])
    # At most one forced IDR per 0.5 s, plus the first frame.
    assert keyframes <= 2 + 2.0 / 0.5 + 1, keyframes
    assert keyframes >= 2  # the churn did get its keyframes, merged
