"""AclChannel (the `acl` backend) against the pyACL simulator in tests/acl_sim.

The simulator encodes for real (libx264/libx265 through PyAV) from the bytes the backend put in
its DVPP buffers, so these tests decode every packet and compare pixels with the source.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType
from typing import Any

import av
import numpy as np
import pytest
from helpers import ACL_SIM

from camingest.config.model import EncoderConfig
from camingest.errors import EncoderError
from camingest.wire.annexb import nal_types
from camingest.wire.output import CodecName
from camingest.wire.pixels import PixelFormat
from camingest.worker.encoders.acl import AclChannel
from camingest.worker.encoders.base import ChannelParams, EncodedPacket, RawFrame

pytestmark = pytest.mark.timeout(60)

SIM_PATH = str(ACL_SIM)


class Sink:
    def __init__(self) -> None:
        self.packets: list[EncodedPacket] = []
        self.errors: list[tuple[int, str]] = []
        self.threads: set[int] = set()

    def on_packet(self, packet: EncodedPacket) -> None:
        self.threads.add(threading.get_ident())
        self.packets.append(packet)

    def on_error(self, seq: int, message: str) -> None:
        self.errors.append((seq, message))


def make_params(
    codec: str = "h264",
    profile: str | None = "high",
    width: int = 160,
    height: int = 120,
    fmt: PixelFormat = PixelFormat.NV12,
    **enc: Any,
) -> ChannelParams:
    encoder = EncoderConfig.model_validate(
        {
            "backend": "acl",
            "codec": codec,
            "profile": profile,
            "gop": 30,
            "bitrate_kbps": 3000,
            **enc,
        }
    )
    return ChannelParams("cam0", width, height, fmt, 30.0, encoder)


def source_yuv(width: int, height: int, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A moving picture: gradients plus a bright square that travels; distinct U and V."""
    yy, xx = np.mgrid[0:height, 0:width]
    y = (xx * 2 + yy + i * 3) % 200 + 20
    x0, y0 = (i * 4) % (width - 32), (i * 3) % (height - 32)
    y[y0 : y0 + 32, x0 : x0 + 32] = 235
    cy, cx = np.mgrid[0 : height // 2, 0 : width // 2]
    u = 128 + 60 * np.sin((cx + i) / 9.0)
    v = 128 + 60 * np.cos((cy - i) / 7.0)
    return y.astype(np.uint8), u.astype(np.uint8), v.astype(np.uint8)


def raw_frame(fmt: PixelFormat, width: int, height: int, i: int) -> RawFrame:
    y, u, v = source_yuv(width, height, i)
    uv = np.empty((height // 2, width), dtype=np.uint8)
    first, second = (u, v) if fmt is PixelFormat.NV12 else (v, u)
    uv[:, 0::2], uv[:, 1::2] = first, second
    return RawFrame(fmt, width, height, (y, uv), seq=100 + i, timestamp_ns=1_000_000 * i)


def decode(packets: list[EncodedPacket], codec: str) -> list[av.VideoFrame]:
    ctx = av.CodecContext.create("hevc" if codec == "h265" else "h264", "r")
    frames = []
    for p in packets:
        frames += ctx.decode(av.Packet(p.data))
    return frames + ctx.decode(None)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def planes_of(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arr = frame.to_ndarray(format="yuv420p")
    h, w = frame.height, frame.width
    u = arr[h : h + h // 4].reshape(h // 2, w // 2)
    v = arr[h + h // 4 :].reshape(h // 2, w // 2)
    return arr[:h], u, v


def encode_ten(acl: ModuleType) -> Sink:
    """Ten 160x120 frames through a default channel, eos, close."""
    sink = Sink()
    ch = AclChannel(make_params(), sink.on_packet, sink.on_error, acl=acl)
    ch.open()
    try:
        for i in range(10):
            ch.send_frame(raw_frame(PixelFormat.NV12, 160, 120, i))
        ch.send_eos(10.0)
    finally:
        ch.close()
    return sink


CASES = [
    ("h264", "high", 160, 120, PixelFormat.NV12, 0),
    ("h265", "main", 168, 144, PixelFormat.NV21, 0),
    ("h264", "baseline", 180, 136, PixelFormat.NV21, 1),  # ACL_HOST run mode: other copy kinds
    ("h265", "main", 160, 120, PixelFormat.NV12, 1),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("codec", "profile", "width", "height", "fmt", "run_mode"), CASES)
def test_encodes_every_frame_in_order(
    acl: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    codec: str,
    profile: str,
    width: int,
    height: int,
    fmt: PixelFormat,
    run_mode: int,
) -> None:
    monkeypatch.setenv("ACL_SIM_RUN_MODE", str(run_mode))
    n, forced = 30, 11
    sink = Sink()
    ch = AclChannel(
        make_params(codec, profile, width, height, fmt), sink.on_packet, sink.on_error, acl=acl
    )
    assert ch.input_formats() == {PixelFormat.NV12, PixelFormat.NV21}
    ch.open()
    try:
        for i in range(n):
            ch.send_frame(raw_frame(fmt, width, height, i), force_idr=i == forced)
        ch.send_eos(10.0)
        assert ch.pending() == 0
    finally:
        ch.close()
    report = acl.sim.last_report()
    assert report is not None and report["clean"], report
    assert not sink.errors
    assert [p.seq for p in sink.packets] == [100 + i for i in range(n)]
    assert [p.timestamp_ns for p in sink.packets] == [1_000_000 * i for i in range(n)]
    assert threading.get_ident() not in sink.threads  # delivered on the callback thread
    keyframes = [i for i, p in enumerate(sink.packets) if p.keyframe]
    assert keyframes[:2] == [0, forced]
    params = {7, 8} if codec == "h264" else {32, 33, 34}
    for i in keyframes:
        assert params <= set(nal_types(sink.packets[i].data, CodecName(codec))), i
    decoded = decode(sink.packets, codec)
    assert len(decoded) == n
    for i, frame in enumerate(decoded):
        y, u, v = planes_of(frame)
        sy, su, sv = source_yuv(width, height, i)
        assert psnr(y, sy) > 30, f"frame {i}: luma {psnr(y, sy):.1f} dB"
        assert psnr(u, su) > 30 and psnr(v, sv) > 30, f"frame {i}: chroma swapped or shifted"


@pytest.mark.timeout(60)
def test_refused_creation_names_code_and_dmesg(
    acl: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACL_SIM_FAIL_CREATE", "1")
    sink = Sink()
    ch = AclChannel(make_params(), sink.on_packet, sink.on_error, acl=acl)
    with pytest.raises(EncoderError) as info:
        ch.open()
    text = str(info.value)
    assert "venc_create_channel" in text and "507018" in text
    assert "dmesg | grep -i venc" in text
    report = acl.sim.last_report()
    assert report is not None and report["clean"], report  # open cleaned up after itself
    ch.close()  # and close after a failed open is harmless


@pytest.mark.timeout(60)
def test_bad_ret_code_reports_that_frame_only(
    acl: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACL_SIM_BAD_RET_AT", "4")  # the 4th frame sent: seq 103
    sink = encode_ten(acl)
    assert len(sink.errors) == 1
    seq, message = sink.errors[0]
    assert seq == 103 and "507018" in message and "ret_code" in message
    assert [p.seq for p in sink.packets] == [100 + i for i in range(10) if i != 3]
    assert len(decode(sink.packets, "h264")) == 9
    report = acl.sim.last_report()
    assert report is not None and report["clean"], report


def test_a_raising_packet_callback_does_not_stop_the_channel(acl: ModuleType) -> None:
    sink = Sink()

    def on_packet(packet: EncodedPacket) -> None:
        sink.on_packet(packet)
        if packet.seq == 101:
            raise ValueError("subscriber bug")  # pyACL would swallow it without a word

    ch = AclChannel(make_params(), on_packet, sink.on_error, acl=acl)
    ch.open()
    try:
        for i in range(6):
            ch.send_frame(raw_frame(PixelFormat.NV12, 160, 120, i))
        ch.send_eos(10.0)
    finally:
        ch.close()
    assert [p.seq for p in sink.packets] == [100 + i for i in range(6)]
    assert ch.pending() == 0


@pytest.mark.timeout(60)
def test_cqp_refused_before_touching_the_device(acl: ModuleType) -> None:
    ch = AclChannel(make_params(rate_control="cqp"), Sink().on_packet, Sink().on_error, acl=acl)
    with pytest.raises(EncoderError, match="cqp"):
        ch.open()
    assert not acl.state.STATE.initialized
    ch.close()


@pytest.mark.timeout(60)
def test_limits_checked_before_create(acl: ModuleType) -> None:
    ch = AclChannel(make_params(width=100, height=96), Sink().on_packet, Sink().on_error, acl=acl)
    with pytest.raises(EncoderError, match=r"width 100 is outside 114\.\.8192"):
        ch.open()
    report = acl.sim.last_report()
    assert report is not None and report["clean"], report


@pytest.mark.timeout(60)
def test_failed_frame_then_close_leaves_nothing(acl: ModuleType) -> None:
    sink = Sink()
    ch = AclChannel(make_params(), sink.on_packet, sink.on_error, acl=acl)
    ch.open()
    ch.send_frame(raw_frame(PixelFormat.NV12, 160, 120, 0))
    with pytest.raises(EncoderError, match="176x144"):
        ch.send_frame(raw_frame(PixelFormat.NV12, 176, 144, 1))
    ch.close()
    ch.close()
    report = acl.sim.last_report()
    assert report is not None and report["clean"], report
    assert [p.seq for p in sink.packets] == [100]  # close drained the frame sent before
    with pytest.raises(EncoderError):
        ch.send_frame(raw_frame(PixelFormat.NV12, 160, 120, 2))


@pytest.mark.timeout(60)
def test_hung_encoder_bounded_eos_and_clean_close(
    acl: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACL_SIM_HANG_AT", "2")
    sink = Sink()
    ch = AclChannel(make_params(), sink.on_packet, sink.on_error, acl=acl)
    ch.open()
    try:
        for i in range(3):
            ch.send_frame(raw_frame(PixelFormat.NV12, 160, 120, i))
        with pytest.raises(EncoderError, match="did not come back"):
            ch.send_eos(0.3)
        assert ch.pending() == 2
    finally:
        ch.close()
    assert [p.seq for p in sink.packets] == [100]
    report = acl.sim.last_report()
    assert report is not None and report["clean"], report


@pytest.mark.timeout(60)
def test_send_waits_for_a_buffer_but_not_forever(
    acl: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACL_SIM_HANG_AT", "2")  # frames 2.. keep their input buffers
    sink = Sink()
    ch = AclChannel(make_params(), sink.on_packet, sink.on_error, acl=acl)
    ch.buffer_wait_s = 0.2
    ch.open()
    try:
        for i in range(5):  # frame 1 comes back; 2..5 hold all four buffers
            ch.send_frame(raw_frame(PixelFormat.NV12, 160, 120, i))
        with pytest.raises(EncoderError, match="no DVPP input buffer came back"):
            ch.send_frame(raw_frame(PixelFormat.NV12, 160, 120, 5))
        assert ch.pending() == 4
    finally:
        ch.close()
    report = acl.sim.last_report()
    assert report is not None and report["clean"], report


@pytest.mark.timeout(60)
def test_uses_soc_limits_reported_by_pyacl(
    acl: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACL_SIM_SOC", "Ascend310")
    params = make_params(bitrate_kbps=40000)  # fine on 310B, beyond 310's 30000 kbit/s
    ch = AclChannel(params, Sink().on_packet, Sink().on_error, acl=acl)
    with pytest.raises(EncoderError, match=r"Ascend 310\)"):
        ch.open()
    report = acl.sim.last_report()
    assert report is not None and report["clean"], report


def test_sim_is_importable_as_acl(acl: ModuleType) -> None:
    assert acl.__file__ is not None and acl.__file__.startswith(SIM_PATH)
    assert SIM_PATH in sys.path


def test_acl_problems_by_soc() -> None:
    from camingest.config.model import StreamConfig
    from camingest.worker.encoders.acl_limits import acl_problems, soc_from_name

    assert [soc_from_name(n) for n in ("Ascend310B4", "Ascend310P3", "Ascend310", "x")] == [
        "310B",
        "310P",
        "310",
        "310B",
    ]
    ok = StreamConfig.model_validate({"name": "cam0", "width": 1920, "height": 1080})
    assert acl_problems(ok, None) == []
    big = StreamConfig.model_validate(
        {
            "name": "cam0",
            "width": 3840,
            "height": 2160,
            "fps": 200,
            "encoder": {"rate_control": "cqp", "bitrate_kbps": 50000},
        }
    )
    assert acl_problems(big, "310B") == [
        "rate_control cqp is not offered by Ascend VENC V1; use cbr or vbr"
    ]
    problems = " | ".join(acl_problems(big, "310"))
    for text in ("width 3840", "height 2160", "fps 200", "bitrate_kbps 50000", "cqp"):
        assert text in problems
    h264_area = StreamConfig.model_validate({"name": "cam0", "width": 4096, "height": 4096})
    assert "area" in " ".join(acl_problems(h264_area, "310P"))


@pytest.mark.timeout(60)
def test_without_start_thread_a_python_thread_reports(
    acl: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newest docs mark acl.util.start_thread unsupported on some boards: the channel then
    runs its report loop on a Python thread, whose pthread id it registers."""
    monkeypatch.delattr(acl.util, "start_thread")
    sink = encode_ten(acl)
    report = acl.sim.last_report()
    assert report is not None and report["clean"], report
    assert [p.seq for p in sink.packets] == [100 + i for i in range(10)]
    assert len(decode(sink.packets, "h264")) == 10
