"""The pyACL simulator refuses what acl-venc.md §8 says the real API refuses.

If the simulator accepted a misuse, a wrong `acl` backend would pass its tests and fail on the
board; each test here calls the simulator directly with one mistake.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import numpy as np
import pytest
from helpers import ACL_SIM

pytestmark = pytest.mark.timeout(60)

SIM_PATH = str(ACL_SIM)
W, H = 168, 120  # 168 is not a multiple of 16: stride 176
STRIDE = 176
SIZE = STRIDE * 128 * 3 // 2
D2H = 2


def picture(i: int) -> tuple[np.ndarray, np.ndarray]:
    """A distinct picture per i (NV12 planes, tightly packed)."""
    yy, xx = np.mgrid[0:H, 0:W]
    y = ((xx * (i + 1) + yy * 2 + 40 * i) % 220 + 16).astype(np.uint8)
    uv = np.full((H // 2, W), 128, np.uint8)
    return y, uv


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def decode_h264(chunks: list[bytes]) -> list[np.ndarray]:
    ctx = av.CodecContext.create("h264", "r")
    frames = []
    for chunk in chunks:
        frames += ctx.decode(av.Packet(chunk))
    frames += ctx.decode(None)
    return [f.to_ndarray(format="yuv420p")[:H] for f in frames]


class Rig:
    """A correct VENC set-up on the simulator, whose steps a test can leave out or break."""

    def __init__(self, acl: ModuleType, settings: dict[str, int] | None = None) -> None:
        self.acl, self.m = acl, acl.media
        assert acl.init() == 0
        assert acl.rt.set_device(0) == 0
        self.ctx, ret = acl.rt.create_context(0)
        assert ret == 0
        self.go, self.stop = threading.Event(), threading.Event()
        self.cond = threading.Condition()
        self.calls: list[dict[str, Any]] = []
        self.loop_ident = 0
        self.tid, ret = acl.util.start_thread(self._loop, [self.ctx])
        assert ret == 0
        self.desc = self.m.venc_create_channel_desc()
        values = {
            "thread_id": self.tid,
            "entype": 3,
            "pic_format": 1,
            "pic_width": W,
            "pic_height": H,
            "key_frame_interval": 10,
            "rc_mode": 2,
            "src_rate": 30,
            "max_bit_rate": 2000,
        } | (settings or {})
        for name, value in values.items():
            assert getattr(self.m, f"venc_set_channel_desc_{name}")(self.desc, value) == 0, name
        self.cfg = self.m.venc_create_frame_config()
        self.buffers: list[int] = []
        self.pics: list[int] = []
        self.created = False

    def set_callback(self) -> None:
        assert self.m.venc_set_channel_desc_callback(self.desc, self.on_frame) == 0

    def create(self) -> int:
        ret = int(self.m.venc_create_channel(self.desc))
        self.created = ret == 0
        return ret

    def _loop(self, args: list[Any]) -> None:
        self.loop_ident = threading.get_ident()
        assert self.acl.rt.set_context(args[0]) == 0
        self.go.wait()
        while not self.stop.is_set():
            self.acl.rt.process_report(20)

    def on_frame(self, pic: int, sd: int, user_data: Any) -> None:
        size = self.m.dvpp_get_stream_desc_size(sd)
        ptr = self.m.dvpp_get_stream_desc_data(sd)
        out = np.empty(size, np.uint8)
        if size:
            assert self.acl.rt.memcpy(self.acl.util.numpy_to_ptr(out), size, ptr, size, D2H) == 0
        call = {
            "pic": pic,
            "sd": sd,
            "ptr": ptr,
            "size": size,
            "data": out.tobytes(),
            "ret": self.m.dvpp_get_stream_desc_ret_code(sd),
            "user_data": user_data,
            "thread": threading.get_ident(),
        }
        with self.cond:
            self.calls.append(call)
            self.cond.notify_all()

    def wait_calls(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.calls) >= n, timeout), self.calls
            return list(self.calls)

    def new_input(self) -> tuple[int, int]:
        buf, ret = self.m.dvpp_malloc(SIZE)
        assert ret == 0
        pic = self.m.dvpp_create_pic_desc()
        assert self.m.dvpp_set_pic_desc_data(pic, buf) == 0
        assert self.m.dvpp_set_pic_desc_size(pic, SIZE) == 0
        self.buffers.append(buf)
        self.pics.append(pic)
        return buf, pic

    def write(self, buf: int, planes: tuple[np.ndarray, np.ndarray], stride: int = STRIDE) -> None:
        y, uv = planes
        host = np.zeros(SIZE, np.uint8)
        host[: stride * H].reshape(H, stride)[:, :W] = y
        host[stride * H : stride * H + stride * H // 2].reshape(H // 2, stride)[:, :W] = uv
        assert self.acl.rt.memcpy(buf, SIZE, self.acl.util.numpy_to_ptr(host), SIZE, 1) == 0

    def send(self, pic: int, user_data: Any = None) -> int:
        return int(self.m.venc_send_frame(self.desc, pic, 0, self.cfg, user_data))

    def eos(self) -> int:
        assert self.m.venc_set_frame_config_eos(self.cfg, 1) == 0
        ret = int(self.m.venc_send_frame(self.desc, 0, 0, self.cfg, None))
        assert self.m.venc_set_frame_config_eos(self.cfg, 0) == 0
        return ret

    def close(self) -> int:
        """Tear down in the documented order; acl.finalize's code (0 = nothing left)."""
        self.go.set()
        if self.created:
            assert self.m.venc_destroy_channel(self.desc) == 0
        assert self.m.venc_destroy_channel_desc(self.desc) == 0
        self.stop.set()
        assert self.acl.util.stop_thread(self.tid) == 0
        assert self.m.venc_destroy_frame_config(self.cfg) == 0
        for pic in self.pics:
            assert self.m.dvpp_destroy_pic_desc(pic) == 0
        for buf in self.buffers:
            assert self.m.dvpp_free(buf) == 0
        assert self.acl.rt.destroy_context(self.ctx) == 0
        assert self.acl.rt.reset_device(0) == 0
        return int(self.acl.finalize())


def expect_violation(acl: ModuleType, text: str) -> None:
    """The misuse was recorded (then forgotten, so that the rig's teardown can check clean)."""
    found = acl.sim.violations()
    assert any(text in v for v in found), found
    acl.sim.clear_violations()


@pytest.fixture
def rig(acl: ModuleType) -> Iterator[Rig]:
    r = Rig(acl)
    r.set_callback()
    yield r
    if acl.state.STATE.initialized:  # the test's own misuse was cleared: nothing may be left
        assert r.close() == 0, acl.sim.last_report()


# --- channel description and creation ------------------------------------------------------


def test_a_correct_sequence_encodes_and_leaves_nothing(acl: ModuleType, rig: Rig) -> None:
    assert rig.create() == 0
    buf, pic = rig.new_input()
    rig.write(buf, picture(0))
    assert rig.send(pic, "ud0") == 0
    rig.go.set()
    (call,) = rig.wait_calls(1)
    assert call["ret"] == 0 and call["pic"] == pic and call["user_data"] == "ud0"
    (y,) = decode_h264([call["data"]])
    assert psnr(y, picture(0)[0]) > 30
    assert rig.close() == 0
    report = acl.sim.last_report()
    assert report["clean"] and not report["violations"], report


def test_bad_pic_format_is_refused_by_the_setter(acl: ModuleType, rig: Rig) -> None:
    for fmt in (0, 3, 7):
        assert acl.media.venc_set_channel_desc_pic_format(rig.desc, fmt) == 100000


@pytest.mark.parametrize(
    ("settings", "dmesg"),
    [
        ({"entype": 5}, "en type 5"),
        ({"key_frame_interval": 0}, "gop 0 err"),
        ({"max_bit_rate": 2_000_000}, "bit rate 2000000"),  # bps instead of kbit/s
        ({"pic_width": 161}, "pic width 161 err, should be even"),
        ({"pic_height": 64}, "pic height 64 err"),
        ({"src_rate": 500}, "src rate 500"),
    ],
)
def test_create_refuses_bad_settings_with_507018(
    acl: ModuleType, settings: dict[str, int], dmesg: str
) -> None:
    r = Rig(acl, settings)
    r.set_callback()
    assert r.create() == 507018
    assert any(dmesg in line for line in acl.sim.dmesg()), acl.sim.dmesg()
    assert r.close() == 0


def test_gop_is_required(acl: ModuleType) -> None:
    r = Rig(acl)
    r.set_callback()
    desc = acl.media.venc_create_channel_desc()  # a fresh desc: key frame interval left at 0
    for name, value in (("thread_id", r.tid), ("pic_width", W), ("pic_height", H)):
        assert getattr(acl.media, f"venc_set_channel_desc_{name}")(desc, value) == 0
    assert acl.media.venc_set_channel_desc_callback(desc, r.on_frame) == 0
    assert acl.media.venc_create_channel(desc) == 507018
    assert acl.media.venc_destroy_channel_desc(desc) == 0
    assert r.close() == 0


def test_failed_creates_return_0_not_none(acl: ModuleType) -> None:
    assert acl.media.venc_create_channel_desc() == 0  # before acl.init
    assert acl.media.dvpp_create_pic_desc() == 0
    assert acl.media.venc_create_frame_config() == 0
    assert acl.media.dvpp_malloc(100) == (0, 100001)


# --- send_frame ------------------------------------------------------------------------------


def test_send_before_create(acl: ModuleType, rig: Rig) -> None:
    _, pic = rig.new_input()
    assert rig.send(pic) == 100000
    expect_violation(acl, "channel is desc")


def test_empty_frame_without_eos(acl: ModuleType, rig: Rig) -> None:
    assert rig.create() == 0
    assert rig.send(0) == 100000
    _, pic = rig.new_input()
    assert rig.m.dvpp_set_pic_desc_size(pic, 0) == 0
    assert rig.send(pic) == 100000
    assert rig.m.dvpp_set_pic_desc_size(pic, STRIDE * H * 3 // 2 - 1) == 0  # one byte short
    assert rig.send(pic) == 100000
    expect_violation(acl, "empty picture with eos=0")


def test_input_must_be_dvpp_memory(acl: ModuleType, rig: Rig) -> None:
    assert rig.create() == 0
    host = np.zeros(SIZE, np.uint8)
    pic = acl.media.dvpp_create_pic_desc()
    rig.pics.append(pic)
    assert acl.media.dvpp_set_pic_desc_data(pic, acl.util.numpy_to_ptr(host)) == 0
    assert acl.media.dvpp_set_pic_desc_size(pic, SIZE) == 0
    assert rig.send(pic) == 100000
    expect_violation(acl, "is user memory, not DVPP")


def test_reserve_must_be_an_int(rig: Rig) -> None:
    assert rig.create() == 0
    _, pic = rig.new_input()
    with pytest.raises(TypeError):
        rig.m.venc_send_frame(rig.desc, pic, None, rig.cfg, None)


def test_send_without_callback_raises(acl: ModuleType) -> None:
    r = Rig(acl)
    _, pic = r.new_input()
    with pytest.raises(RuntimeError, match="did not set callback"):
        r.send(pic)
    assert r.create() == 100000  # nor can such a channel be created
    assert r.close() == 0


def test_send_after_eos_and_after_destroy(acl: ModuleType, rig: Rig) -> None:
    assert rig.create() == 0
    buf, pic = rig.new_input()
    rig.write(buf, picture(0))
    rig.go.set()
    assert rig.send(pic) == 0
    assert rig.eos() == 0
    assert len(rig.calls) == 1  # eos returned after the pending callback ran; none for eos
    assert rig.send(pic) == 100000
    assert rig.m.venc_destroy_channel(rig.desc) == 0
    rig.created = False
    assert rig.send(pic) == 100000
    expect_violation(acl, "channel is destroyed")


# --- callbacks ------------------------------------------------------------------------------


def test_callback_only_inside_process_report_of_the_registered_thread(
    acl: ModuleType, rig: Rig
) -> None:
    assert rig.create() == 0
    buf, pic = rig.new_input()
    rig.write(buf, picture(0))
    assert rig.send(pic) == 0
    assert acl.rt.process_report(50) == 100035  # main thread: not the channel's thread
    assert rig.calls == []  # nothing happens until the registered thread asks
    rig.go.set()
    (call,) = rig.wait_calls(1)
    assert call["thread"] == rig.loop_ident != threading.get_ident()


def test_process_report_needs_a_context(acl: ModuleType, rig: Rig) -> None:
    codes: list[int] = []
    t = threading.Thread(target=lambda: codes.append(acl.rt.process_report(10)))
    t.start()
    t.join(5)
    assert codes == [107002]


def test_idle_process_report_times_out_with_507012(acl: ModuleType, rig: Rig) -> None:
    assert rig.create() == 0
    result: list[tuple[int, float]] = []

    def probe(args: list[Any]) -> None:
        acl.rt.set_context(args[0])
        rig.go.wait()  # until its channel exists
        t0 = time.monotonic()
        result.append((acl.rt.process_report(150), time.monotonic() - t0))

    # The probe thread is the callback thread of a second channel that gets no frames.
    desc = acl.media.venc_create_channel_desc()
    ptid, _ = acl.util.start_thread(probe, [rig.ctx])
    for name, value in (
        ("thread_id", ptid),
        ("pic_width", W),
        ("pic_height", H),
        ("key_frame_interval", 5),
    ):
        getattr(acl.media, f"venc_set_channel_desc_{name}")(desc, value)
    acl.media.venc_set_channel_desc_callback(desc, rig.on_frame)
    assert acl.media.venc_create_channel(desc) == 0
    rig.go.set()
    assert acl.util.stop_thread(ptid) == 0
    (ret, waited) = result[0]
    assert ret == 507012 and waited >= 0.14
    assert acl.media.venc_destroy_channel(desc) == 0
    assert acl.media.venc_destroy_channel_desc(desc) == 0


def test_output_memory_is_invalid_after_the_callback(acl: ModuleType, rig: Rig) -> None:
    assert rig.create() == 0
    buf, pic = rig.new_input()
    rig.write(buf, picture(0))
    assert rig.send(pic) == 0
    rig.go.set()
    (call,) = rig.wait_calls(1)
    late = np.empty(call["size"], np.uint8)
    ret = acl.rt.memcpy(acl.util.numpy_to_ptr(late), late.size, call["ptr"], late.size, D2H)
    assert ret == 100000
    assert any("use after free" in v for v in acl.sim.violations())
    assert acl.media.dvpp_get_stream_desc_size(call["sd"]) == 0  # the desc is gone too
    acl.sim.clear_violations()


def test_input_reused_before_its_callback_corrupts_the_frame(rig: Rig) -> None:
    """The encoder reads the input when it encodes, not when send_frame returns."""
    assert rig.create() == 0
    buf, pic = rig.new_input()
    rig.write(buf, picture(0))
    assert rig.send(pic) == 0
    rig.write(buf, picture(5))  # too early: frame 0's callback has not come
    rig.go.set()
    (call,) = rig.wait_calls(1)
    (y,) = decode_h264([call["data"]])
    assert psnr(y, picture(0)[0]) < 20
    assert psnr(y, picture(5)[0]) > 30


def test_input_freed_before_its_callback(acl: ModuleType, rig: Rig) -> None:
    assert rig.create() == 0
    buf, pic = rig.new_input()
    rig.write(buf, picture(0))
    assert rig.send(pic) == 0
    assert acl.media.dvpp_free(buf) == 0  # too early
    rig.buffers.remove(buf)
    rig.go.set()
    (call,) = rig.wait_calls(1)
    assert call["ret"] != 0 and call["size"] == 0
    expect_violation(acl, "use after free")


def test_rows_not_padded_to_the_stride_come_out_wrong(rig: Rig) -> None:
    assert rig.create() == 0
    buf, pic = rig.new_input()
    rig.write(buf, picture(1), stride=W)  # packed rows, as a careless backend would copy
    assert rig.send(pic) == 0
    rig.go.set()
    (call,) = rig.wait_calls(1)
    (y,) = decode_h264([call["data"]])
    assert psnr(y, picture(1)[0]) < 20


def test_faults_bad_ret_code(acl: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACL_SIM_BAD_RET_AT", "2")
    r = Rig(acl)
    r.set_callback()
    assert r.create() == 0
    buf, pic = r.new_input()
    for i in range(3):
        r.write(buf, picture(i))
        assert r.send(pic) == 0
        r.go.set()
        r.wait_calls(i + 1)
    assert [c["ret"] != 0 for c in r.calls] == [False, True, False]
    assert r.calls[1]["size"] == 0
    assert r.close() == 0


# --- memory and teardown ----------------------------------------------------------------------


def test_double_free_and_double_destroy(acl: ModuleType, rig: Rig) -> None:
    buf, pic = rig.new_input()
    assert acl.media.dvpp_free(buf) == 0
    assert acl.media.dvpp_free(buf) == 100000
    assert acl.media.dvpp_destroy_pic_desc(pic) == 0
    assert acl.media.dvpp_destroy_pic_desc(pic) == 100000
    host, _ = acl.rt.malloc_host(64)
    assert acl.rt.free(host) == 100000  # host memory freed as device memory
    assert acl.rt.free_host(host) == 0
    found = acl.sim.violations()
    assert any("double free" in v for v in found)
    assert any("dvpp_destroy_pic_desc" in v for v in found)
    rig.buffers.clear()
    rig.pics.clear()
    acl.sim.clear_violations()


def test_destroy_desc_before_channel_is_refused(acl: ModuleType, rig: Rig) -> None:
    assert rig.create() == 0
    assert acl.media.venc_destroy_channel_desc(rig.desc) == 100000
    acl.sim.clear_violations()


def test_leak_report_at_finalize(
    acl: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "leaks.json"
    monkeypatch.setenv("ACL_SIM_LEAK_REPORT", str(path))
    r = Rig(acl)
    r.set_callback()
    r.new_input()
    r.go.set()
    r.stop.set()  # the thread ends but is never joined with stop_thread
    assert acl.finalize() == 500001
    report = acl.sim.last_report()
    assert json.loads(path.read_text()) == report
    assert not report["clean"]
    assert [b["kind"] for b in report["buffers"]] == ["dvpp"]
    assert report["handles"] == {"PicDesc": 1, "ChannelDesc": 1, "FrameConfig": 1}
    assert len(report["threads"]) == 1 and len(report["contexts"]) == 1
    assert report["devices"] == [0]


@pytest.mark.timeout(60)
def test_leak_report_at_exit_without_finalize(tmp_path: Path) -> None:
    path = tmp_path / "exit.json"
    code = "import acl; acl.init(); acl.rt.set_device(0); acl.media.dvpp_malloc(4096)"
    env = {"PYTHONPATH": SIM_PATH, "ACL_SIM_LEAK_REPORT": str(path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=30)
    report = json.loads(path.read_text())
    assert report["finalized"] is False
    assert [b["size"] for b in report["buffers"]] == [4096]
