"""acl.media.venc_*: channel and frame-config descriptors, channel life cycle, send and deliver.

Frames are queued by venc_send_frame and encoded only inside acl.rt.process_report on the
channel's registered thread, reading the input buffer at that moment: a buffer the caller
reuses before its callback shows up as a wrong picture in the output.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from acl import codes
from acl.dvpp import PicDesc, StreamDesc
from acl.encode import SimEncoder
from acl.limits import create_problems
from acl.state import STATE

log = logging.getLogger("acl.sim")
U32 = 0xFFFF_FFFF
MIN_BUF_SIZE = 5 * 1024 * 1024


@dataclass
class Job:
    pic: int
    user_data: Any
    force_idr: bool
    number: int  # process-wide frame number, 1-based, for the fault counters


@dataclass
class ChannelDesc:
    thread_id: int = 0
    callback: Any = None
    entype: int = 0  # H265 main
    pic_format: int = codes.PIXEL_NV12
    pic_width: int = 0
    pic_height: int = 0
    key_frame_interval: int = 0  # ACL's default, which create refuses (acl-venc §6.2)
    buf_addr: int = 0
    buf_size: int = 0
    rc_mode: int = 0
    src_rate: int = 0
    max_bit_rate: int = 0
    max_ip_prop: int = 0
    channel_id: int = 0
    state: str = "desc"  # desc -> created -> eos -> destroyed
    jobs: collections.deque[Job] = field(default_factory=collections.deque)
    hung: bool = False
    encoder: SimEncoder | None = None


@dataclass
class FrameConfig:
    eos: int = 0
    force_i_frame: int = 0


# --- channel description ------------------------------------------------------------------


def venc_create_channel_desc() -> int:
    return STATE.new_handle(ChannelDesc()) if STATE.initialized else 0


def venc_destroy_channel_desc(desc: int) -> int:
    with STATE.lock:
        ch = STATE.get(desc, ChannelDesc)
        if ch is None:
            STATE.violate(f"venc_destroy_channel_desc(0x{desc:x}): not a live channel desc")
            return codes.INVALID_PARAM
        if ch.state in ("created", "eos"):
            STATE.violate("venc_destroy_channel_desc before venc_destroy_channel")
            return codes.INVALID_PARAM
        del STATE.handles[desc]
    return codes.SUCCESS


# Host-side checks of the setters (acl-venc §2): everything else is checked at create.
def _check_field(name: str, value: int) -> bool:
    if name == "pic_format":
        return value in (codes.PIXEL_NV12, codes.PIXEL_NV21)
    if name == "rc_mode":
        return value <= 2
    if name == "buf_size":
        return value >= MIN_BUF_SIZE
    if name == "buf_addr":
        return value != 0
    return True


def _set(desc: object, name: str, value: object) -> int:
    if not isinstance(desc, int) or not isinstance(value, int):
        raise TypeError(f"venc_set_channel_desc_{name} takes (desc, value) as ints")
    with STATE.lock:
        ch = STATE.get(desc, ChannelDesc)
        if ch is None or ch.state != "desc":
            return codes.INVALID_PARAM
        value = value if name in ("thread_id", "buf_addr") else value & U32
        if not _check_field(name, value):
            return codes.INVALID_PARAM
        setattr(ch, name, value)
    return codes.SUCCESS


def _get(desc: int, name: str) -> Any:
    ch = STATE.get(desc, ChannelDesc)
    return getattr(ch, name) if ch is not None else 0


def venc_set_channel_desc_callback(desc: int, callback: Any) -> int:
    if not callable(callback):
        return codes.INVALID_PARAM
    with STATE.lock:
        ch = STATE.get(desc, ChannelDesc)
        if ch is None:
            return codes.INVALID_PARAM
        ch.callback = callback
    return codes.SUCCESS


def venc_get_channel_desc_callback(desc: int) -> Any:
    return _get(desc, "callback")


def _make_accessors(name: str) -> None:
    def setter(desc: int, value: int) -> int:
        return _set(desc, name, value)

    def getter(desc: int) -> int:
        return int(_get(desc, name))

    globals()[f"venc_set_channel_desc_{name}"] = setter
    globals()[f"venc_get_channel_desc_{name}"] = getter


_FIELDS = (
    "thread_id",
    "entype",
    "pic_format",
    "pic_width",
    "pic_height",
    "key_frame_interval",
    "buf_addr",
    "buf_size",
    "rc_mode",
    "src_rate",
    "max_bit_rate",
)
for _name in _FIELDS:
    _make_accessors(_name)


def venc_get_channel_desc_channel_id(desc: int) -> int:
    return int(_get(desc, "channel_id"))


# aclvencChannelDescParamType -> field
_PARAMS = dict(
    enumerate(
        (
            "thread_id",
            "callback",
            "pic_format",
            "entype",
            "pic_width",
            "pic_height",
            "key_frame_interval",
            "buf_addr",
            "buf_size",
            "rc_mode",
            "src_rate",
            "max_bit_rate",
            "max_ip_prop",
        )
    )
)


def venc_set_channel_desc_param(desc: int, param_type: int, value: Any) -> int:
    name = _PARAMS.get(param_type)
    if name is None:
        return codes.INVALID_PARAM
    if name == "callback":
        return venc_set_channel_desc_callback(desc, value)
    return _set(desc, name, value)


def venc_get_channel_desc_param(desc: int, param_type: int) -> tuple[Any, int]:
    name = _PARAMS.get(param_type)
    if name is None or STATE.get(desc, ChannelDesc) is None:
        return 0, codes.INVALID_PARAM
    return _get(desc, name), codes.SUCCESS


# --- frame config ---------------------------------------------------------------------------


def venc_create_frame_config() -> int:
    return STATE.new_handle(FrameConfig()) if STATE.initialized else 0


def venc_destroy_frame_config(cfg: int) -> int:
    with STATE.lock:
        if STATE.get(cfg, FrameConfig) is None:
            STATE.violate(f"venc_destroy_frame_config(0x{cfg:x}): not a live frame config")
            return codes.INVALID_PARAM
        del STATE.handles[cfg]
    return codes.SUCCESS


def _set_cfg(cfg: int, name: str, value: int) -> int:
    if not isinstance(cfg, int) or not isinstance(value, int):
        raise TypeError(f"venc_set_frame_config_{name} takes (config, value) as ints")
    fc = STATE.get(cfg, FrameConfig)
    if fc is None or value not in (0, 1):
        return codes.INVALID_PARAM
    setattr(fc, name, value)
    return codes.SUCCESS


def venc_set_frame_config_eos(cfg: int, eos: int) -> int:
    return _set_cfg(cfg, "eos", eos)


def venc_set_frame_config_force_i_frame(cfg: int, force: int) -> int:
    return _set_cfg(cfg, "force_i_frame", force)


def venc_get_frame_config_eos(cfg: int) -> int:
    fc = STATE.get(cfg, FrameConfig)
    return fc.eos if fc is not None else 0


def venc_get_frame_config_force_i_frame(cfg: int) -> int:
    fc = STATE.get(cfg, FrameConfig)
    return fc.force_i_frame if fc is not None else 0


# --- channel --------------------------------------------------------------------------------


def venc_create_channel(desc: int) -> int:
    with STATE.lock:
        ch = STATE.get(desc, ChannelDesc)
        if ch is None or ch.state != "desc" or ch.callback is None or not ch.thread_id:
            return codes.INVALID_PARAM
        problems = create_problems(ch, STATE.faults.soc)
        if STATE.faults.fail_create:
            problems.append("ACL_SIM_FAIL_CREATE: channel creation refused on demand")
        if problems:
            STATE.dmesg.extend(f"[venc] {p}" for p in problems)
            return codes.RT_AICPU_EXCEPTION  # the reason is only in the kernel log
        ch.encoder = SimEncoder(
            ch.entype,
            ch.pic_width,
            ch.pic_height,
            ch.key_frame_interval,
            ch.src_rate,
            ch.max_bit_rate,
        )
        ch.channel_id = sum(1 for h in STATE.handles.values() if isinstance(h, ChannelDesc))
        ch.state = "created"
    return codes.SUCCESS


def _drain(ch: ChannelDesc) -> bool:
    """Wait (bounded, unlike real hardware) until every queued frame's callback ran."""
    deadline = time.monotonic() + codes.DRAIN_WAIT_S
    with STATE.cond:
        while ch.jobs:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            STATE.cond.wait(left)
    return True


def venc_destroy_channel(desc: int) -> int:
    from acl.rt import current_thread_id

    with STATE.lock:
        ch = STATE.get(desc, ChannelDesc)
        if ch is None or ch.state not in ("created", "eos"):
            STATE.violate("venc_destroy_channel on a channel that is not created")
            return codes.INVALID_PARAM
        if current_thread_id() == ch.thread_id:
            STATE.violate("venc_destroy_channel from the callback thread (deadlocks on hardware)")
            return codes.INVALID_PARAM
    _drain(ch)  # destroy waits for sent frames and their callbacks, then sends EOS itself
    with STATE.lock:
        ch.jobs.clear()  # a hung frame never returns; the simulator gives up on it
        ch.state = "destroyed"
        if ch.encoder is not None:
            ch.encoder.close()
            ch.encoder = None
        STATE.cond.notify_all()
    return codes.SUCCESS


def venc_send_frame(desc: int, pic: int, reserve: int, cfg: int, user_data: Any) -> int:
    from acl.rt import current_thread_id

    for arg in (desc, pic, reserve, cfg):
        if not isinstance(arg, int):
            raise TypeError("venc_send_frame takes (desc, pic, reserve, config) as ints")
    with STATE.lock:
        ch = STATE.get(desc, ChannelDesc)
        if ch is not None and ch.callback is None:
            raise RuntimeError("did not set callback, failed")  # pyACL's own check
        fc = STATE.get(cfg, FrameConfig)
        if ch is None or fc is None or ch.state != "created":
            why = "unknown desc/config" if ch is None or fc is None else f"channel is {ch.state}"
            STATE.violate(f"venc_send_frame: {why}")
            return codes.INVALID_PARAM
        if fc.eos:
            if current_thread_id() == ch.thread_id:
                return codes.INVALID_PARAM
            eos = True
        else:
            eos = False
            why = _check_input(ch, pic)
            if why:
                STATE.violate(f"venc_send_frame: {why}")
                return codes.INVALID_PARAM
            STATE.frames_sent += 1
            ch.jobs.append(Job(pic, user_data, bool(fc.force_i_frame), STATE.frames_sent))
            STATE.cond.notify_all()
    if not eos:
        return codes.SUCCESS
    # EOS: no callback of its own; returns once every pending callback ran (a drain).
    if not _drain(ch):
        return codes.WAIT_CALLBACK_TIMEOUT
    with STATE.lock:
        ch.state = "eos"
    return codes.SUCCESS


def _geometry(ch: ChannelDesc, pic: PicDesc) -> tuple[int, int, int]:
    """(width stride, uv offset, bytes needed) for the channel's size and the pic's strides."""
    stride = pic.width_stride or (ch.pic_width + 15) // 16 * 16
    hstride = pic.height_stride or ch.pic_height
    return stride, stride * hstride, stride * hstride + stride * ch.pic_height // 2


def _check_input(ch: ChannelDesc, pic_handle: int) -> str:
    if pic_handle == 0:
        return "empty picture with eos=0"
    pic = STATE.get(pic_handle, PicDesc)
    if pic is None:
        return f"0x{pic_handle:x} is not a live pic desc"
    if not pic.data or not pic.size:
        return "empty picture (no data or size 0) with eos=0"
    stride, _, needed = _geometry(ch, pic)
    if stride % 16 or stride < ch.pic_width:
        return f"width stride {stride} must be a multiple of 16 and >= {ch.pic_width}"
    if pic.height_stride and pic.height_stride < ch.pic_height:
        return f"height stride {pic.height_stride} < height {ch.pic_height}"
    if pic.size < needed:
        return f"pic size {pic.size} < {needed} (stride {stride} x height x 3/2)"
    region = STATE.memory.find(pic.data)
    if region is None or region.kind not in ("dvpp", "device"):
        kind = region.kind if region else "unallocated"
        return f"pic data 0x{pic.data:x} is {kind} memory, not DVPP/device memory"
    view, why = STATE.memory.view(pic.data, pic.size)
    return why if view is None else ""


# --- delivery (inside acl.rt.process_report) ------------------------------------------------


def _next_job(tid: int) -> tuple[ChannelDesc, Job] | None:
    for obj in STATE.handles.values():
        if isinstance(obj, ChannelDesc) and obj.thread_id == tid and obj.jobs and not obj.hung:
            if obj.jobs[0].number == STATE.faults.hang_at:
                obj.hung = True  # this frame and, in order, all after it never come back
                continue
            return obj, obj.jobs[0]
    return None


def deliver(tid: int, timeout_ms: int) -> int:
    with STATE.lock:
        subscribed = any(
            isinstance(o, ChannelDesc) and o.thread_id == tid and o.state in ("created", "eos")
            for o in STATE.handles.values()
        )
        if not subscribed:
            return codes.THREAD_NOT_SUBSCRIBE
    deadline = None if timeout_ms == -1 else time.monotonic() + timeout_ms / 1000
    with STATE.cond:
        while (found := _next_job(tid)) is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return codes.RT_REPORT_TIMEOUT
            STATE.cond.wait(left)
    while found is not None:
        _run_job(*found)
        with STATE.cond:
            found = _next_job(tid)
    return codes.SUCCESS


def _encode(ch: ChannelDesc, job: Job) -> tuple[bytes, int]:
    with STATE.lock:
        pic = STATE.get(job.pic, PicDesc)
        if pic is None:
            STATE.violate("input pic desc destroyed before its callback")
            return b"", codes.RT_INTERNAL_ERROR
        stride, uv_offset, needed = _geometry(ch, pic)
        view, why = STATE.memory.view(pic.data, needed)
        if view is None:
            STATE.violate(f"encode: input buffer {why}")
            return b"", codes.RT_INTERNAL_ERROR
        buf = np.array(view)  # the input is read now, not at send time
    if job.number == STATE.faults.bad_ret_at:
        return b"", codes.RT_AICPU_EXCEPTION
    assert ch.encoder is not None
    return ch.encoder.encode(buf, stride, uv_offset, ch.pic_format, job.force_idr), 0


def _run_job(ch: ChannelDesc, job: Job) -> None:
    data, ret = _encode(ch, job)
    out = STATE.memory.alloc(len(data), "venc_out") if data else 0
    if out:
        view, _ = STATE.memory.view(out, len(data), write=True)
        assert view is not None
        view[:] = np.frombuffer(data, dtype=np.uint8)
    sd = STATE.new_handle(StreamDesc(data=out, size=len(data), format=ch.entype, ret_code=ret))
    try:
        ch.callback(job.pic, sd, job.user_data)
    except Exception as exc:  # pyACL only logs "VencCallback wrong"
        log.warning("VencCallback wrong: %r", exc)
        with STATE.lock:
            STATE.callback_errors.append(repr(exc))
    finally:
        # The output belongs to the encoder again: poison it, and the desc dies.
        with STATE.cond:
            if out:
                STATE.memory.poison_and_drop(out)
            STATE.handles.pop(sd, None)
            if ch.jobs and ch.jobs[0] is job:
                ch.jobs.popleft()
            STATE.cond.notify_all()
