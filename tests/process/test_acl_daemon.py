"""The daemon with `backend: acl`, its workers importing the pyACL simulator (tests/acl_sim)."""

from __future__ import annotations

import json
import os
import time

import pytest
from helpers import ACL_SIM, Collector, Feeder, check_decodes, wait_until

pytestmark = pytest.mark.process


def acl_env(workdir, **faults: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ACL_SIM), os.environ.get("PYTHONPATH", "")]))
    return {
        "PYTHONPATH": path,
        "ACL_SIM_LEAK_REPORT": str(workdir / "acl-{pid}.json"),
        **{f"ACL_SIM_{k.upper()}": v for k, v in faults.items()},
    }


def acl_stream(stream, name, *args, **enc):
    return stream(
        name, *args, encoder={"backend": "acl", "rate_control": "cbr", "bitrate_kbps": 3000, **enc}
    )


def reports(workdir) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(workdir.glob("acl-*.json"))]


@pytest.mark.timeout(150)
def test_two_acl_streams_decode_and_leave_nothing_allocated(make_daemon, stream, workdir):
    streams = [
        acl_stream(stream, "cam0", 168, 120, "nv12", "h264", profile="high"),
        acl_stream(stream, "cam1", 180, 136, "bgr24", "h265"),  # converted to nv12 in the worker
    ]
    daemon = make_daemon(streams, env=acl_env(workdir))
    col = Collector(daemon.out, ["cam0", "cam1"]).start()
    daemon.wait_subscribers("cam0")
    daemon.wait_subscribers("cam1")
    feeds = {n: Feeder(daemon, n, fps=40).start() for n in ("cam0", "cam1")}
    wait_until(lambda: all(len(f.sent) >= 40 for f in feeds.values()), 30, "frames sent")
    for f in feeds.values():
        f.stop()
    for name, f in feeds.items():
        wait_until(lambda n=name, f=f: len(col.packets[n]) >= len(f.sent), 20, f"{name} packets")
    # A forced keyframe through the control socket.
    from camingest.service.control import call

    call(daemon.control, "keyframe", stream="cam0")
    late = Feeder(daemon, "cam0", fps=40).start()
    wait_until(lambda: len(late.sent) >= 5, 15, "frames after the request")
    late.stop()
    wait_until(
        lambda: len(col.packets["cam0"]) >= len(feeds["cam0"].sent) + len(late.sent),
        20,
        "packets after the request",
    )
    col.stop()
    for name, codec in (("cam0", "h264"), ("cam1", "h265")):
        packets = col.packets[name][: len(feeds[name].sent)]
        assert [p.header.frame_seq for p in packets] == sorted(feeds[name].sent)
        assert packets[0].header.keyframe
        scores = check_decodes(packets, feeds[name].sent, codec)
        print(f"acl {name} ({codec}): {len(packets)} frames, PSNR min {min(scores):.1f} dB")
    after = col.packets["cam0"][len(feeds["cam0"].sent) :]
    assert after[0].header.keyframe, "the requested keyframe (also the new session's first)"
    assert daemon.stop() == 0
    done = reports(workdir)
    assert len(done) == 2, done
    for report in done:
        assert report["finalized"] and report["clean"], report


@pytest.mark.timeout(120)
def test_acl_late_joiner_gets_a_keyframe(make_daemon, stream, workdir):
    daemon = make_daemon([acl_stream(stream, "cam0", gop=1000)], env=acl_env(workdir))
    feed = Feeder(daemon, "cam0", fps=40).start()
    wait_until(lambda: len(feed.sent) >= 30, 15, "frames before the join")
    col = Collector(daemon.out, ["cam0"]).start()
    daemon.wait_subscribers("cam0")
    wait_until(lambda: len(col.packets["cam0"]) >= 15, 15, "packets after the join")
    feed.stop()
    col.stop()
    packets = col.packets["cam0"]
    assert packets[0].header.keyframe and packets[0].header.frame_seq > 1
    check_decodes(packets, feed.sent, "h264")


@pytest.mark.timeout(120)
def test_refused_channel_creation_backs_off_with_a_clear_message(make_daemon, stream, workdir):
    daemon = make_daemon(
        [acl_stream(stream, "cam0")],
        env=acl_env(workdir, fail_create="1"),
        wait=False,
        supervision={"max_restarts": 2, "backoff_initial_s": 0.3},
    )
    states = set()

    def failed() -> bool:
        try:
            st = daemon.stream_status("cam0")
        except Exception:
            return False
        states.add(st["state"])
        return st["state"] == "failed"

    wait_until(failed, 60, "the stream to be marked failed")
    assert "backoff" in states
    detail = daemon.stream_status("cam0")["detail"]
    assert "507018" in detail and "dmesg" in detail, detail
    assert "venc_create_channel" in detail, detail
    assert daemon.proc.poll() is None  # the daemon itself goes on
    # Each failed attempt still tore down everything it had set up.
    for report in reports(workdir):
        assert not report["buffers"] and not report["threads"], report


@pytest.mark.timeout(120)
def test_bad_ret_code_on_one_frame_is_counted_and_the_stream_goes_on(make_daemon, stream, workdir):
    daemon = make_daemon([acl_stream(stream, "cam0")], env=acl_env(workdir, bad_ret_at="10"))
    col = Collector(daemon.out, ["cam0"]).start()
    daemon.wait_subscribers("cam0")
    feed = Feeder(daemon, "cam0", fps=40).start()
    wait_until(lambda: len(feed.sent) >= 40, 20, "frames")
    feed.stop()
    wait_until(lambda: len(col.packets["cam0"]) >= len(feed.sent) - 1, 20, "packets")
    time.sleep(0.5)
    col.stop()
    seqs = [p.header.frame_seq for p in col.packets["cam0"]]
    missing = sorted(set(feed.sent) - set(seqs))
    assert missing == [sorted(feed.sent)[9]], missing  # exactly the 10th frame is lost
    wait_until(
        lambda: daemon.stream_status("cam0")["drops"].get("encoder_error") == 1,
        10,
        "the counted encoder error",
    )
    status = daemon.stream_status("cam0")
    assert status["state"] == "running" and status["restarts"] == 0
    # The frames after the failed one reference a picture the decoder never saw only if the
    # encoder used it; the simulator's encoder never saw it either, so everything decodes.
    check_decodes(col.packets["cam0"], feed.sent, "h264")
