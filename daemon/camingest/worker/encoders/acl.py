"""The `acl` backend: Ascend's hardware VENC through pyACL (acl.media.venc_*).

Written to /work/shared/reference/acl-venc.md; docs/ascend.md is the operator's side. One
channel owns, for its lifetime: ACL init, the device, a context, a callback thread, the
channel and frame-config descriptors and a small pool of DVPP input buffers with one picture
descriptor each. Packets come back on the callback thread, inside acl.rt.process_report.

Beside it: acl_codes (pyACL's numbers and what they mean), acl_frame (the input frame's layout
in DVPP memory), acl_report (the callback thread) and acl_limits (VENC's limits per SoC).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from camingest.errors import EncoderError
from camingest.wire.annexb import ParameterSetKeeper, is_keyframe
from camingest.wire.pixels import PixelFormat
from camingest.worker.encoders.acl_codes import (
    ACL_DEVICE,
    ACL_HOST,
    DEVICE_TO_DEVICE,
    DEVICE_TO_HOST,
    DMESG_HINT,
    HOST_TO_DEVICE,
    PIC_FORMAT,
    REPEAT_INITIALIZE,
    channel_settings,
    check,
    check_handle,
    describe,
    hint_for,
)
from camingest.worker.encoders.acl_frame import (
    align,
    channel_format,
    check_frame,
    fill_staging,
    frame_bytes,
    input_buffer_size,
)
from camingest.worker.encoders.acl_limits import limit_problems, soc_from_name
from camingest.worker.encoders.acl_report import ReportThread
from camingest.worker.encoders.base import (
    ChannelParams,
    EncodedPacket,
    FrameErrorCallback,
    PacketCallback,
    RawFrame,
)

log = logging.getLogger(__name__)

# Four input buffers: enough to keep the encoder busy while the next frame is copied in
# (V2's input queue holds 6; V1's is undocumented, acl-venc §6.14), few enough to bound
# device memory (4 x 3.1 MB at 1080p). When all four are in flight the encoder is behind,
# and send_frame waits for a callback to return one rather than queueing without limit.
POOL_SIZE = 4
BUFFER_WAIT_S = 5.0
CLOSE_DRAIN_S = 2.0


@dataclass
class _Resources:
    """What open() got from ACL so far; close() releases exactly this, in reverse."""

    initialized: bool = False
    device: int | None = None
    context: int = 0
    thread_id: int = 0
    desc: int = 0
    channel: bool = False
    cfg: int = 0
    buffers: list[int] = field(default_factory=list)
    pics: list[int] = field(default_factory=list)


class AclChannel:
    """An EncoderChannel on one Ascend VENC V1 channel."""

    def __init__(
        self,
        params: ChannelParams,
        on_packet: PacketCallback,
        on_error: FrameErrorCallback,
        acl: ModuleType | None = None,
    ) -> None:
        self._params = params
        self._on_packet = on_packet
        self._on_error = on_error
        self._acl_module = acl
        self._acl: Any = None
        self._res = _Resources()
        self._cond = threading.Condition()
        self._free: list[int] = []  # pool slots not in flight
        self._pending = 0
        self._state = "new"  # new -> open -> ended -> closed
        self._keeper = ParameterSetKeeper(params.codec)
        self._format = channel_format(params.pixel_format)
        self._stride = align(params.width, 16)
        self._buf_size = input_buffer_size(params.width, params.height)
        self._frame_bytes = frame_bytes(params.width, params.height)
        self._staging: npt.NDArray[np.uint8] | None = None
        self._staging_ptr = 0
        self._copy_in = self._copy_out = DEVICE_TO_DEVICE
        self._log_extra = {"STREAM": params.stream}
        self._reporter = ReportThread(log, self._log_extra)
        self.buffer_wait_s = BUFFER_WAIT_S  # how long send_frame waits for a free buffer

    # --- EncoderChannel -----------------------------------------------------------------------

    def input_formats(self) -> frozenset[PixelFormat]:
        return frozenset(PIC_FORMAT)

    def pending(self) -> int:
        with self._cond:
            return self._pending

    def open(self) -> None:
        if self._state != "new":
            raise EncoderError(f"the Ascend channel of {self._params.stream} was already opened")
        # refuses cqp & co. before touching the device
        settings = channel_settings(self._params, self._format)
        if self._acl_module is None:
            try:
                self._acl_module = importlib.import_module("acl")
            except ImportError as exc:
                raise EncoderError(
                    f"pyACL is not importable: {exc}", hint="see docs/ascend.md"
                ) from exc
        self._acl = self._acl_module
        try:
            self._setup(settings)
        except BaseException:
            self.close()
            raise
        self._state = "open"

    def send_frame(self, frame: RawFrame, *, force_idr: bool = False) -> None:
        if self._state != "open":
            raise EncoderError(f"send_frame on an Ascend channel that is {self._state}")
        check_frame(frame, self._params.width, self._params.height)
        slot = self._take_slot()
        media = self._acl.media
        res = self._res
        try:
            self._copy_frame(frame, res.buffers[slot])
            if force_idr:
                check(
                    "venc_set_frame_config_force_i_frame",
                    media.venc_set_frame_config_force_i_frame(res.cfg, 1),
                )
            # ACL has no pts: the user data carries what the packet needs (acl-venc §1.7).
            user_data = (frame.seq, frame.timestamp_ns, time.monotonic_ns(), slot)
            with self._cond:
                self._pending += 1
            try:
                ret = media.venc_send_frame(res.desc, res.pics[slot], 0, res.cfg, user_data)
            except Exception as exc:  # pyACL raises, e.g. RuntimeError with no callback set
                ret = -1
                raise EncoderError(f"venc_send_frame raised {type(exc).__name__}: {exc}") from exc
            finally:
                if ret != 0:
                    with self._cond:
                        self._pending -= 1
            check("venc_send_frame", ret)
        except BaseException:
            self._give_back(slot)
            raise
        finally:
            if force_idr:  # the config is reused: only this frame is forced
                media.venc_set_frame_config_force_i_frame(res.cfg, 0)

    def send_eos(self, timeout_s: float) -> None:
        if self._state == "ended":
            return
        if self._state != "open":
            raise EncoderError(f"send_eos on an Ascend channel that is {self._state}")
        if not self._wait_drained(timeout_s):
            raise EncoderError(
                f"{self.pending()} frames did not come back from VENC within {timeout_s:g} s",
                hint=DMESG_HINT,
            )
        self._send_eos_frame()

    def close(self) -> None:
        if self._state == "closed" or self._acl is None:
            self._state = "closed"
            return
        acl, res = self._acl, self._res
        media = acl.media
        if res.channel:
            if self._state == "open" and self._wait_drained(CLOSE_DRAIN_S):
                self._release("venc_send_frame(eos)", self._send_eos_frame)
            self._release("venc_destroy_channel", media.venc_destroy_channel, res.desc)
            res.channel = False
            self._state = "ended"
        if res.desc:
            self._release("venc_destroy_channel_desc", media.venc_destroy_channel_desc, res.desc)
            res.desc = 0
        if res.thread_id:  # only now: destroy needs the thread inside process_report
            if not self._reporter.stop():  # pyACL's own thread
                self._release("acl.util.stop_thread", acl.util.stop_thread, res.thread_id)
            res.thread_id = 0
        if res.cfg:
            self._release("venc_destroy_frame_config", media.venc_destroy_frame_config, res.cfg)
            res.cfg = 0
        while res.pics:
            self._release("dvpp_destroy_pic_desc", media.dvpp_destroy_pic_desc, res.pics.pop())
        while res.buffers:
            self._release("dvpp_free", media.dvpp_free, res.buffers.pop())
        if res.context:
            self._release("acl.rt.destroy_context", acl.rt.destroy_context, res.context)
            res.context = 0
        if res.device is not None:
            self._release("acl.rt.reset_device", acl.rt.reset_device, res.device)
            res.device = None
        if res.initialized:
            self._release("acl.finalize", acl.finalize)
            res.initialized = False
        self._state = "closed"

    # --- setup --------------------------------------------------------------------------------

    def _setup(self, settings: dict[str, int]) -> None:
        acl, res, enc = self._acl, self._res, self._params.encoder
        ret = acl.init()
        if ret != REPEAT_INITIALIZE:  # someone else in the process initialised: leave it
            check("acl.init", ret)
            res.initialized = True
        check("acl.rt.set_device", acl.rt.set_device(enc.device_id))
        res.device = enc.device_id
        ctx, ret = acl.rt.create_context(enc.device_id)
        check("acl.rt.create_context", ret)
        res.context = check_handle("acl.rt.create_context", ctx)
        get_run_mode = getattr(acl.rt, "get_run_mode", None)  # optional in the docs (§1.1)
        mode, ret = get_run_mode() if get_run_mode else (ACL_HOST, 0)
        check("acl.rt.get_run_mode", ret)
        # On the board (ACL_DEVICE) host and device memory are one; samples copy device to
        # device there, and host<->device only in ACL_HOST mode (acl-venc §1.8).
        if mode != ACL_DEVICE:
            self._copy_in, self._copy_out = HOST_TO_DEVICE, DEVICE_TO_HOST
        get_soc_name = getattr(acl, "get_soc_name", None)  # absent from some pyACL versions
        soc = enc.soc or soc_from_name((get_soc_name() if get_soc_name else None) or "")
        p = self._params
        problems = limit_problems(p.width, p.height, p.fps, enc, soc)
        if problems:
            raise EncoderError("VENC would refuse this stream: " + "; ".join(problems))
        res.thread_id = self._reporter.start(acl, res.context)
        self._create_channel(settings)
        self._create_pool()
        staging = np.zeros(self._buf_size, dtype=np.uint8)  # padding stays zero
        self._staging, self._staging_ptr = staging, acl.util.numpy_to_ptr(staging)
        log.info(
            "Ascend VENC channel %dx%d entype %d on %s (run mode %d)",
            p.width,
            p.height,
            settings["entype"],
            soc,
            mode,
            extra=self._log_extra,
        )

    def _create_channel(self, settings: dict[str, int]) -> None:
        media, res = self._acl.media, self._res
        res.desc = check_handle("venc_create_channel_desc", media.venc_create_channel_desc())
        check(
            "venc_set_channel_desc_thread_id",
            media.venc_set_channel_desc_thread_id(res.desc, res.thread_id),
        )
        check(
            "venc_set_channel_desc_callback",
            media.venc_set_channel_desc_callback(res.desc, self._on_venc),
        )
        for name, value in settings.items():
            call = f"venc_set_channel_desc_{name}"
            check(f"{call}({value})", getattr(media, call)(res.desc, value))
        res.cfg = check_handle("venc_create_frame_config", media.venc_create_frame_config())
        check("venc_set_frame_config_eos", media.venc_set_frame_config_eos(res.cfg, 0))
        check(
            "venc_set_frame_config_force_i_frame",
            media.venc_set_frame_config_force_i_frame(res.cfg, 0),
        )
        ret = media.venc_create_channel(res.desc)
        if ret != 0:
            raise EncoderError(
                f"venc_create_channel failed with {ret} ({describe(ret)}) for "
                f"{settings['pic_width']}x{settings['pic_height']} entype {settings['entype']} "
                f"gop {settings['key_frame_interval']} {settings['max_bit_rate']} kbit/s",
                hint=hint_for(ret),
            )
        res.channel = True

    def _create_pool(self) -> None:
        media, res, p = self._acl.media, self._res, self._params
        fmt = PIC_FORMAT[self._format]
        for _ in range(POOL_SIZE):
            buf, ret = media.dvpp_malloc(self._buf_size)
            check(f"dvpp_malloc({self._buf_size})", ret)
            res.buffers.append(check_handle("dvpp_malloc", buf))
            pic = check_handle("dvpp_create_pic_desc", media.dvpp_create_pic_desc())
            res.pics.append(pic)
            for name, value in (
                ("data", buf),
                ("size", self._buf_size),
                ("format", fmt),
                ("width", p.width),
                ("height", p.height),
                ("width_stride", self._stride),
                ("height_stride", p.height),
            ):
                check(
                    f"dvpp_set_pic_desc_{name}",
                    getattr(media, f"dvpp_set_pic_desc_{name}")(pic, value),
                )
        with self._cond:
            self._free = list(range(POOL_SIZE))

    # --- per frame ----------------------------------------------------------------------------

    def _take_slot(self) -> int:
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._free), self.buffer_wait_s):
                raise EncoderError(
                    f"no DVPP input buffer came back within {self.buffer_wait_s:g} s "
                    f"({self._pending} frames are with the encoder)",
                    hint=DMESG_HINT,
                )
            return self._free.pop(0)

    def _give_back(self, slot: int) -> None:
        with self._cond:
            self._free.append(slot)
            self._cond.notify_all()

    def _copy_frame(self, frame: RawFrame, dst: int) -> None:
        """The frame's rows into the staging buffer (acl_frame), then one copy to DVPP."""
        assert self._staging is not None
        p = self._params
        fill_staging(self._staging, frame, p.width, p.height, self._stride, self._format)
        ret = self._acl.rt.memcpy(
            dst, self._buf_size, self._staging_ptr, self._frame_bytes, self._copy_in
        )
        check("acl.rt.memcpy (frame to DVPP)", ret)

    def _send_eos_frame(self) -> None:
        media, res = self._acl.media, self._res
        check("venc_set_frame_config_eos", media.venc_set_frame_config_eos(res.cfg, 1))
        # No callback comes for EOS; the call returns once every pending callback ran.
        check("venc_send_frame(eos)", media.venc_send_frame(res.desc, 0, 0, res.cfg, None))
        self._state = "ended"

    def _wait_drained(self, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout_s)

    def _release(self, call: str, func: Any, *args: Any) -> None:
        """One teardown step: logged, never raised, so the steps after it still run."""
        try:
            ret = func(*args)
        except Exception:
            log.exception("%s raised during close", call, extra=self._log_extra)
            return
        if isinstance(ret, int) and ret != 0:
            log.warning("%s returned %d (%s)", call, ret, describe(ret), extra=self._log_extra)

    # --- callbacks, on the report thread (acl_report) -----------------------------------------

    def _on_venc(self, pic: int, stream_desc: int, user_data: Any) -> None:
        # pyACL swallows exceptions raised here: log them ourselves.
        try:
            self._on_output(stream_desc, user_data)
        except Exception:
            log.exception("Ascend VENC callback failed", extra=self._log_extra)

    def _on_output(self, stream_desc: int, user_data: Any) -> None:
        seq, timestamp_ns, submitted_ns, slot = user_data
        try:
            try:
                data, error = self._read_output(stream_desc, seq)
            except Exception as exc:  # still a frame the caller must hear about
                data, error = b"", f"VENC frame {seq}: reading the output failed: {exc!r}"
            self._give_back(slot)  # the input buffer is free once its callback came
            slot = -1
            if error:
                self._on_error(seq, error)
            elif data:
                keyframe = is_keyframe(data, self._params.codec)
                data = self._keeper.process(data, keyframe)
                self._on_packet(EncodedPacket(data, keyframe, seq, timestamp_ns, submitted_ns))
            else:
                log.debug("VENC returned no bytes for frame %d", seq, extra=self._log_extra)
        finally:
            if slot >= 0:
                self._give_back(slot)
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()

    def _read_output(self, stream_desc: int, seq: int) -> tuple[bytes, str]:
        """The frame's bytes, copied out now (the encoder reuses the output after the callback)."""
        acl = self._acl
        media = acl.media
        ret = media.dvpp_get_stream_desc_ret_code(stream_desc)
        if ret != 0:
            return (
                b"",
                f"VENC frame {seq}: dvpp_get_stream_desc_ret_code returned {ret} ({describe(ret)})",
            )
        size = media.dvpp_get_stream_desc_size(stream_desc)
        src = media.dvpp_get_stream_desc_data(stream_desc)
        if not size or not src:
            return b"", ""
        out = np.empty(size, dtype=np.uint8)
        ret = acl.rt.memcpy(acl.util.numpy_to_ptr(out), size, src, size, self._copy_out)
        if ret != 0:
            return b"", f"VENC frame {seq}: acl.rt.memcpy of the output failed with {ret}"
        return out.tobytes(), ""
