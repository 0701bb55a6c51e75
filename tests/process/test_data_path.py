"""The data path end to end, with a real daemon, real workers, shm, sockets and encoders."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq
from helpers import (
    as_capture_array,
    decode_annexb,
    luma_of,
    pattern_planes,
    psnr,
    wait_until,
)

from camingest.capture import CaptureClient
from camingest.errors import CaptureError
from camingest.subscribe import Subscriber
from camingest.wire.ingest import INGEST_MAGIC, INLINE_SLOT, FrameDesc
from camingest.wire.output import OutputHeader
from camingest.wire.pixels import PixelFormat

pytestmark = pytest.mark.process


def client(daemon, name: str, **kw) -> CaptureClient:
    s = daemon.stream(name)
    c = CaptureClient(daemon.ingest(name), name, s["width"], s["height"], s["pixel_format"], **kw)
    c.connect(timeout_s=10)
    return c


def collect(sub: Subscriber, want: dict[str, int], timeout: float = 30.0) -> dict[str, list]:
    got: dict[str, list] = {name: [] for name in want}
    deadline = time.monotonic() + timeout
    while any(len(got[n]) < want[n] for n in want) and time.monotonic() < deadline:
        packet = sub.recv(0.5)
        if packet is not None and not packet.header.eos:
            got[packet.stream].append(packet)
    return got


@pytest.mark.timeout(120)
def test_two_streams_every_frame_arrives_and_decodes(make_daemon, stream, record_property):
    """An h264 nv12 stream and an h265 bgr24 stream of other sizes: every frame sent comes out
    as one packet, in order, and decodes to the frames sent (PSNR against the source)."""
    streams = [
        stream("cam0", 320, 240, "nv12", "h264", encoder={"profile": "high"}),
        stream("cam1", 256, 144, "bgr24", "h265"),
    ]
    daemon = make_daemon(streams)
    n = 45
    with Subscriber([daemon.out], ["cam0", "cam1"]) as sub:
        daemon.wait_subscribers("cam0")
        daemon.wait_subscribers("cam1")
        caps = {
            s["name"]: client(daemon, s["name"], on_full="wait", max_wait_ms=5000) for s in streams
        }
        sources: dict[str, list[np.ndarray]] = {"cam0": [], "cam1": []}
        for i in range(n):
            for s in streams:
                fmt = PixelFormat(s["pixel_format"])
                planes = pattern_planes(fmt, s["width"], s["height"], i)
                sources[s["name"]].append(luma_of(fmt, s["width"], s["height"], planes))
                assert caps[s["name"]].send(as_capture_array(fmt, s["width"], s["height"], planes))
            time.sleep(0.01)
        got = collect(sub, {"cam0": n, "cam1": n})
        for c in caps.values():
            c.close()
    for s in streams:
        name = s["name"]
        packets = got[name]
        assert [p.header.frame_seq for p in packets] == list(range(1, n + 1))
        assert [p.header.packet_seq for p in packets] == list(range(n))
        assert packets[0].header.keyframe
        assert all(p.header.width == s["width"] and p.header.height == s["height"] for p in packets)
        decoded = decode_annexb(b"".join(p.data for p in packets), s["encoder"]["codec"])
        assert len(decoded) == n
        scores = [psnr(a, b) for a, b in zip(decoded, sources[name], strict=True)]
        record_property(f"psnr_min_{name}", round(min(scores), 2))
        print(f"{name}: {n} frames, PSNR min {min(scores):.2f} dB, mean {np.mean(scores):.2f} dB")
        assert min(scores) > 30.0


@pytest.mark.timeout(90)
def test_late_joiner_starts_at_a_keyframe(make_daemon, stream):
    """A subscriber that joins mid-stream (GOP far away) gets an IDR promptly and decodes
    from its very first packet; so does a second late joiner of the same stream."""
    daemon = make_daemon([stream("cam0", 192, 108, "nv12", encoder={"gop": 1000})])
    fmt = PixelFormat.NV12
    cap = client(daemon, "cam0", on_full="wait", max_wait_ms=5000)
    sent: dict[int, np.ndarray] = {}
    i = 0

    def send(count: int) -> None:
        nonlocal i
        for _ in range(count):
            planes = pattern_planes(fmt, 192, 108, i)
            assert cap.send(as_capture_array(fmt, 192, 108, planes))
            i += 1
            sent[cap._seq] = planes[0]
            time.sleep(0.005)

    send(30)
    for joiner in range(2):
        with Subscriber([daemon.out], ["cam0"]) as sub:
            daemon.wait_subscribers("cam0", 1)
            packets = []
            deadline = time.monotonic() + 20
            while len(packets) < 20 and time.monotonic() < deadline:
                send(1)
                p = sub.recv(0.05)
                while p is not None:
                    packets.append(p)
                    p = sub.recv(0)
            assert len(packets) >= 20, f"joiner {joiner} got {len(packets)} packets"
            assert packets[0].header.keyframe
            assert packets[0].header.frame_seq > 30
            assert OutputHeader  # header parsed
            decoded = decode_annexb(b"".join(p.data for p in packets), "h264")
            assert len(decoded) == len(packets)
            for pic, p in zip(decoded, packets, strict=True):
                assert psnr(pic, sent[p.header.frame_seq]) > 30.0
    cap.close()


@pytest.mark.timeout(90)
def test_bad_input_is_refused_and_the_other_stream_loses_nothing(make_daemon, stream):
    daemon = make_daemon([stream("cam0", 160, 120, "nv12"), stream("cam1", 160, 120, "i420")])
    n = 40
    with Subscriber([daemon.out], ["cam1"]) as sub:
        daemon.wait_subscribers("cam1")
        good = client(daemon, "cam1", on_full="wait", max_wait_ms=5000)
        bad = client(daemon, "cam0")
        # Wrong frame size: a clear ValueError naming expected and actual, nothing sent.
        with pytest.raises(ValueError, match=r"\(180, 160\).*got an array of shape \(120, 160\)"):
            bad.send(np.zeros((120, 160), np.uint8))
        with pytest.raises(ValueError, match="uint8"):
            bad.send(np.zeros((180, 160), np.float32))
        # Unknown stream name and wrong pixel format: refused by the worker with a reason.
        with pytest.raises(CaptureError, match="not 'cam7'"):
            CaptureClient(daemon.ingest("cam0"), "cam7", 160, 120, "nv12").connect(5)
        with pytest.raises(CaptureError, match="takes nv12, the capture sends i420"):
            CaptureClient(daemon.ingest("cam0"), "cam0", 160, 120, "i420").connect(5)
        with pytest.raises(CaptureError, match="is 160x120, the capture sends 320x240"):
            CaptureClient(daemon.ingest("cam0"), "cam0", 320, 240, "nv12").connect(5)
        # Hostile bytes straight at the ingest socket: garbage, a truncated descriptor, a
        # descriptor for a slot out of range, an oversized message.
        ctx = zmq.Context()
        raw = ctx.socket(zmq.DEALER)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(daemon.ingest("cam0"))
        raw.send(b"\xff" * 40)
        raw.send(INGEST_MAGIC + b"\x01\x04")
        raw.send(FrameDesc(epoch=1, slot=999, seq=1, timestamp_ns=0).pack())
        raw.send_multipart([FrameDesc(1, INLINE_SLOT, 1, 0).pack(), b"x" * 10_000_000])
        for i in range(n):
            planes = pattern_planes(PixelFormat.I420, 160, 120, i)
            assert good.send(as_capture_array(PixelFormat.I420, 160, 120, planes))
            time.sleep(0.005)
        got = collect(sub, {"cam1": n})["cam1"]
        assert [p.header.frame_seq for p in got] == list(range(1, n + 1))
        raw.close()
        ctx.term()
        good.close()
        bad.close()
    status = daemon.stream_status("cam0")
    assert status["state"] == "running" and status["restarts"] == 0
    assert status["drops"].get("malformed", 0) + status["drops"].get("stale_epoch", 0) >= 2


@pytest.mark.timeout(60)
def test_inline_transport_over_tcp(make_daemon, stream, workdir):
    """A capture on tcp:// sends frames inline; a wrong-sized inline frame is counted."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ep = f"tcp://127.0.0.1:{port}"
    daemon = make_daemon([stream("cam0", ingest=[ep])])
    with Subscriber([daemon.out], ["cam0"]) as sub:
        daemon.wait_subscribers("cam0")
        cap = CaptureClient(ep, "cam0", 160, 120, "nv12", on_full="wait", max_wait_ms=2000)
        cap.connect(10)
        sent = []
        for i in range(20):
            planes = pattern_planes(PixelFormat.NV12, 160, 120, i)
            sent.append(planes[0])
            assert cap.send(as_capture_array(PixelFormat.NV12, 160, 120, planes))
            time.sleep(0.01)
        got = collect(sub, {"cam0": 20}, timeout=15)["cam0"]
        cap.close()
    decoded = decode_annexb(b"".join(p.data for p in got), "h264")
    assert len(decoded) == 20
    assert min(psnr(a, b) for a, b in zip(decoded, sent, strict=True)) > 30


@pytest.mark.timeout(60)
def test_a_second_capture_is_refused_while_the_first_is_sending(make_daemon, stream):
    from helpers import Feeder

    daemon = make_daemon([stream("cam0")])
    feed = Feeder(daemon, "cam0", fps=60).start()
    wait_until(lambda: len(feed.sent) >= 10, 15, "frames")
    second = CaptureClient(daemon.ingest("cam0"), "cam0", 160, 120, "nv12")
    with pytest.raises(CaptureError, match="another capture is sending"):
        second.connect(timeout_s=2.5)
    second.close()
    n = len(feed.sent)
    wait_until(lambda: len(feed.sent) > n + 10, 15, "the first capture going on")
    feed.stop()
    assert feed.dropped <= 1
    # Once the first has stopped, a new capture takes the stream over.
    third = client(daemon, "cam0")
    assert third.send(np.zeros((180, 160), np.uint8))
    third.close()
