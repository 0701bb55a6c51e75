"""pyACL's numbers: the enum values a VENC channel is configured with, the return codes it gets
back and what they mean (acl-venc.md §1; docs/ascend.md has the operator's table).

pyACL has no named constants, so the backend (acl.py) takes them from here. Pure, no I/O.
"""

from __future__ import annotations

from camingest.config.model import RateControl
from camingest.errors import EncoderError
from camingest.wire.output import CodecName
from camingest.wire.pixels import PixelFormat
from camingest.worker.encoders.acl_limits import src_rate
from camingest.worker.encoders.base import ChannelParams

# ACL's enum values (acl-venc.md §1.3, §1.5, §1.1).
ENTYPE: dict[tuple[CodecName, str], int] = {
    (CodecName.H265, "main"): 0,
    (CodecName.H264, "baseline"): 1,
    (CodecName.H264, "main"): 2,
    (CodecName.H264, "high"): 3,
}
PIC_FORMAT = {PixelFormat.NV12: 1, PixelFormat.NV21: 2}
RC_MODE = {RateControl.VBR: 1, RateControl.CBR: 2}
ACL_DEVICE = 0
ACL_HOST = 1
HOST_TO_DEVICE, DEVICE_TO_HOST, DEVICE_TO_DEVICE = 1, 2, 3
REPORT_TIMEOUT = 507012
REPEAT_INITIALIZE = 100002

ERROR_MEANINGS: dict[int, str] = {
    100000: "ACL_ERROR_INVALID_PARAM: a parameter or the channel state is wrong",
    100001: "ACL_ERROR_UNINITIALIZE: acl.init was not called",
    100002: "ACL_ERROR_REPEAT_INITIALIZE",
    100033: "ACL_ERROR_REPEAT_SUBSCRIBE",
    100034: "ACL_ERROR_STREAM_NOT_SUBSCRIBE",
    100035: "ACL_ERROR_THREAD_NOT_SUBSCRIBE",
    100036: "ACL_ERROR_WAIT_CALLBACK_TIMEOUT",
    107000: "ACL_ERROR_RT_PARAM_INVALID",
    107002: "ACL_ERROR_RT_CONTEXT_NULL: the thread has no context",
    200000: "ACL_ERROR_BAD_ALLOC: out of memory",
    200001: "ACL_ERROR_API_NOT_SUPPORT",
    200002: "ACL_ERROR_INVALID_DEVICE",
    200003: "ACL_ERROR_MEMORY_ADDRESS_UNALIGNED",
    200006: "ACL_ERROR_FEATURE_UNSUPPORTED",
    207000: "ACL_ERROR_RT_FEATURE_NOT_SUPPORT",
    207001: "ACL_ERROR_RT_MEMORY_ALLOCATION",
    300000: "ACL_ERROR_STORAGE_OVER_LIMIT",
    500000: "ACL_ERROR_INTERNAL_ERROR",
    500001: "ACL_ERROR_FAILURE",
    500002: "ACL_ERROR_GE_FAILURE",
    500003: "ACL_ERROR_RT_FAILURE",
    500004: "ACL_ERROR_DRV_FAILURE",
    507000: "ACL_ERROR_RT_INTERNAL_ERROR",
    507012: "ACL_ERROR_RT_REPORT_TIMEOUT",
    507018: "ACL_ERROR_RT_AICPU_EXCEPTION: the device refused the request",
}
DMESG_HINT = "the device logs the reason in the kernel log: run `dmesg | grep -i venc`"


def describe(code: int) -> str:
    return ERROR_MEANINGS.get(code, "unknown ACL error code")


def hint_for(code: int) -> str:
    """The operator's hint for a failed call: runtime errors (507xxx) are explained in dmesg."""
    return DMESG_HINT if 507000 <= code < 508000 else ""


def check(call: str, ret: int) -> None:
    """Raise EncoderError naming the call, the code and its meaning for a non-zero return."""
    if ret != 0:
        raise EncoderError(f"{call} failed with {ret} ({describe(ret)})", hint=hint_for(ret))


def check_handle(call: str, handle: int) -> int:
    if not handle:  # pyACL's create functions return 0, not None, on failure
        raise EncoderError(f"{call} returned 0 (the descriptor could not be created)")
    return handle


def channel_settings(params: ChannelParams, pic_format: PixelFormat) -> dict[str, int]:
    """The channel descriptor's values (venc_set_channel_desc_<name>) for a stream whose frames
    reach VENC in `pic_format`; refuses what VENC V1 does not offer, before any device call."""
    enc = params.encoder
    entype = ENTYPE.get((enc.codec, enc.effective_profile))
    if entype is None:
        raise EncoderError(
            f"{enc.codec.value} profile {enc.effective_profile} is not offered by VENC"
        )
    if enc.rate_control not in RC_MODE:
        raise EncoderError(
            f"rate_control {enc.rate_control.value} is not offered by Ascend VENC V1 "
            "(only cbr and vbr)",
            hint="set encoder.rate_control to cbr or vbr for backend acl",
        )
    return {
        "entype": entype,
        "pic_format": PIC_FORMAT[pic_format],
        "pic_width": params.width,
        "pic_height": params.height,
        "key_frame_interval": enc.gop,
        "rc_mode": RC_MODE[enc.rate_control],
        "src_rate": src_rate(params.fps),
        "max_bit_rate": enc.bitrate_kbps,  # kbit/s, as VENC wants (acl-venc §6.1)
    }
