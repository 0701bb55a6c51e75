"""Product limits of Ascend's VENC V1 per SoC (docs/ascend.md; acl-venc.md §5). Pure, no I/O.

Checked before a channel is created because the device only answers a bad value with 507018
and leaves the reason in the kernel log.
"""

from __future__ import annotations

from dataclasses import dataclass

from camingest.config.model import EncoderConfig, RateControl, StreamConfig
from camingest.wire.output import CodecName

DEFAULT_SOC = "310B"


@dataclass(frozen=True, slots=True)
class VencLimits:
    product: str
    min_side: int
    max_side: int
    max_h264_area: int  # 0: no separate area limit
    max_src_rate: int
    min_kbps: int
    max_kbps: int


LIMITS: dict[str, VencLimits] = {
    "310B": VencLimits("Atlas 200I/500 A2 (Ascend 310B)", 114, 8192, 0, 240, 2, 614400),
    "310P": VencLimits("Atlas inference (Ascend 310P)", 128, 4096, 4096 * 2304, 240, 2, 614400),
    "310": VencLimits("Atlas 200/300/500 (Ascend 310)", 128, 1920, 0, 120, 10, 30000),
}
GOP_RANGE = (1, 65536)


def soc_from_name(name: str) -> str:
    """pyACL's SoC name ("Ascend310B4", "Ascend310P3", "Ascend310") -> "310B"/"310P"/"310"."""
    text = name.strip().upper().removeprefix("ASCEND")
    if text.startswith("310B"):
        return "310B"
    if text.startswith("310P"):
        return "310P"
    if text.startswith("310"):
        return "310"
    return DEFAULT_SOC


def src_rate(fps: float) -> int:
    """VENC's integer input frame rate for a stream's fps (rounded, at least 1)."""
    return max(1, round(fps))


def limit_problems(
    width: int, height: int, fps: float, encoder: EncoderConfig, soc: str | None
) -> list[str]:
    """Why VENC on `soc` (default 310B) would refuse this geometry and encoder, if it would."""
    lim = LIMITS.get(soc or DEFAULT_SOC, LIMITS[DEFAULT_SOC])
    where = f"on {lim.product}"
    out: list[str] = []
    for name, value in (("width", width), ("height", height)):
        if value % 2:
            out.append(f"{name} {value} must be even for the Ascend encoder")
        if not lim.min_side <= value <= lim.max_side:
            out.append(
                f"{name} {value} is outside {lim.min_side}..{lim.max_side} supported {where}"
            )
    if lim.max_h264_area and encoder.codec is CodecName.H264 and width * height > lim.max_h264_area:
        out.append(f"H.264 at {width}x{height} exceeds the 4096x2304 area supported {where}")
    rate = src_rate(fps)
    if not 1 <= rate <= lim.max_src_rate:
        out.append(f"fps {fps:g} is outside 1..{lim.max_src_rate} supported {where}")
    if not lim.min_kbps <= encoder.bitrate_kbps <= lim.max_kbps:
        out.append(
            f"bitrate_kbps {encoder.bitrate_kbps} is outside {lim.min_kbps}..{lim.max_kbps} "
            f"kbit/s supported {where}"
        )
    if not GOP_RANGE[0] <= encoder.gop <= GOP_RANGE[1]:
        out.append(f"gop {encoder.gop} is outside {GOP_RANGE[0]}..{GOP_RANGE[1]}")
    if encoder.rate_control is RateControl.CQP:
        out.append("rate_control cqp is not offered by Ascend VENC V1; use cbr or vbr")
    if encoder.codec is CodecName.H265 and encoder.effective_profile != "main":
        out.append(f"h265 profile {encoder.effective_profile} is not supported; only main")
    return out


def acl_problems(stream: StreamConfig, soc: str | None) -> list[str]:
    """Human messages for each limit `stream` breaks with backend acl on `soc` (None: 310B).

    The messages do not name the stream: the caller knows where it found it."""
    return limit_problems(stream.width, stream.height, stream.fps, stream.encoder, soc)
