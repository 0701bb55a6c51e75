"""Supervision and lifecycle with a real daemon: crashes, hangs, failing encoders, stop, reload."""

from __future__ import annotations

import os
import signal
import time

import pytest
from helpers import Collector, Feeder, check_decodes, wait_until, write_config

pytestmark = pytest.mark.process


@pytest.mark.timeout(120)
def test_killed_worker_restarts_and_the_stream_resumes_with_a_keyframe(make_daemon, stream):
    daemon = make_daemon([stream("cam0"), stream("cam1", codec="h265")])
    col = Collector(daemon.out, ["cam0", "cam1"]).start()
    daemon.wait_subscribers("cam0")
    daemon.wait_subscribers("cam1")
    feeds = {n: Feeder(daemon, n, fps=40).start() for n in ("cam0", "cam1")}
    wait_until(lambda: len(col.packets["cam0"]) > 30, 20, "packets before the kill")
    old_pid = daemon.worker_pid("cam0")
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: daemon.stream_status("cam0")["restarts"] == 1, 15, "a restart")
    daemon.wait_running()
    before = len(col.packets["cam0"])
    wait_until(lambda: len(col.packets["cam0"]) > before + 30, 20, "packets after the restart")
    for f in feeds.values():
        f.stop()
    wait_until(lambda: len(col.packets["cam1"]) >= len(feeds["cam1"].sent), 15, "cam1 drained")
    time.sleep(0.3)
    col.stop()

    cam0 = col.packets["cam0"]
    epochs = [p.header.epoch for p in cam0]
    assert len(set(epochs)) == 2, "the restarted worker has a new epoch"
    first_new = epochs.index(epochs[-1])
    assert cam0[first_new].header.keyframe, "the stream resumes with a keyframe"
    assert daemon.worker_pid("cam0") != old_pid
    # The recording goes on across the restart and decodes to the frames sent.
    check_decodes(cam0, feeds["cam0"].sent, "h264")
    # The other stream lost nothing: every frame its capture handed over came out, in order.
    cam1 = col.packets["cam1"]
    assert feeds["cam1"].dropped == 0
    assert [p.header.frame_seq for p in cam1] == sorted(feeds["cam1"].sent)
    check_decodes(cam1, feeds["cam1"].sent, "h265")
    assert daemon.stream_status("cam1")["restarts"] == 0


@pytest.mark.timeout(90)
def test_stopped_worker_is_detected_and_replaced(make_daemon, stream):
    daemon = make_daemon([stream("cam0"), stream("cam1")], supervision={"hang_timeout_s": 2.0})
    pid = daemon.worker_pid("cam0")
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        wait_until(lambda: daemon.stream_status("cam0")["restarts"] == 1, 15, "a restart")
        detected = time.monotonic() - t0
        daemon.wait_running()
        assert daemon.worker_pid("cam0") != pid
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert "hung" in daemon.log()
        print(f"SIGSTOP detected and restarted after {detected:.1f} s (hang_timeout_s 2)")
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert daemon.stream_status("cam1")["restarts"] == 0


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


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.timeout(120)
def test_restarts_leak_no_file_descriptors(make_daemon, stream):
    daemon = make_daemon([stream("cam0")])
    feed = Feeder(daemon, "cam0", fps=30).start()
    wait_until(lambda: daemon.stream_status("cam0")["frames_in"] > 5, 15, "frames")
    base = _fds(daemon.proc.pid)
    for n in range(1, 4):
        os.kill(daemon.worker_pid("cam0"), signal.SIGKILL)
        wait_until(lambda n=n: daemon.stream_status("cam0")["restarts"] == n, 15, "a restart")
        daemon.wait_running()
    feed.stop()
    # The capture kept going through three restarts without being restarted itself.
    assert len(feed.sent) > 0
    assert _fds(daemon.proc.pid) <= base


@pytest.mark.timeout(90)
def test_a_subscriber_that_never_reads_slows_no_one(make_daemon, stream):
    """A stalled subscriber loses its own messages at its high-water mark (the client counts
    the gap when it reads again); the encoder and a healthy subscriber lose nothing."""
    from camingest.subscribe import Subscriber

    daemon = make_daemon([stream("cam0", 320, 240)], output={"sndhwm": 5})
    stalled = Subscriber([daemon.out], ["cam0"], rcvhwm=5, control_path=str(daemon.control))
    try:
        col = Collector(daemon.out, ["cam0"]).start()
        daemon.wait_subscribers("cam0", 2)
        first = Feeder(daemon, "cam0", fps=100).start()
        wait_until(lambda: len(first.sent) >= 150, 30, "frames sent")
        first.stop()
        queued = []
        while (p := stalled.recv(0.5)) is not None:
            queued.append(p)
        assert len(queued) < len(first.sent)  # it lost its own messages ...
        second = Feeder(daemon, "cam0", fps=100).start()  # a new capture session
        wait_until(lambda: len(second.sent) >= 60, 30, "more frames")
        second.stop()
        total = len(first.sent) + len(second.sent)
        wait_until(lambda: len(col.packets["cam0"]) >= total, 15, "every packet")
        col.stop()
        # ... while the healthy subscriber lost nothing.
        expected = sorted(first.sent) + sorted(second.sent)
        assert [p.header.frame_seq for p in col.packets["cam0"]] == expected
        later = []
        while (p := stalled.recv(1.0)) is not None:
            later.append(p)
        assert stalled.gaps >= 1  # the gap was seen and counted
        assert later and later[0].header.keyframe  # it resumed at a (requested) keyframe
        check_decodes(later, second.sent, "h264")
    finally:
        stalled.close()


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
