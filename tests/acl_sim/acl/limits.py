"""What venc_create_channel refuses on the device (507018), per product (acl-venc.md §5).

The messages imitate the kernel log lines that explain a 507018 on real hardware.
"""

from __future__ import annotations

from typing import Any

# soc prefix -> (min side, max side, max area or 0, max src rate, bitrate range kbps)
_LIMITS = {
    "Ascend310B": (114, 8192, 0, 240, (2, 614400)),
    "Ascend310P": (128, 4096, 4096 * 2304, 240, (2, 614400)),
    "Ascend310": (128, 1920, 0, 120, (10, 30000)),
}


def product(soc: str) -> tuple[int, int, int, int, tuple[int, int]]:
    for prefix in ("Ascend310B", "Ascend310P", "Ascend310"):
        if soc.startswith(prefix):
            return _LIMITS[prefix]
    return _LIMITS["Ascend310B"]


def create_problems(ch: Any, soc: str) -> list[str]:
    lo, hi, area, max_rate, (bmin, bmax) = product(soc)
    w, h = ch.pic_width, ch.pic_height
    out = []
    if ch.entype not in range(4):
        out.append(f"en type {ch.entype} err, should be in [0 3]")
    for name, v in (("width", w), ("height", h)):
        if not lo <= v <= hi:
            out.append(f"pic {name} {v} err, should be in [{lo} {hi}]")
        if v % 2:
            out.append(f"pic {name} {v} err, should be even")
    if area and ch.entype != 0 and w * h > area:
        out.append(f"pic area {w}x{h} err, H.264 should be <= {area}")
    if not 1 <= ch.key_frame_interval <= 65536:
        out.append(f"gop {ch.key_frame_interval} err, should be in [1 65536]")
    if ch.src_rate and not 1 <= ch.src_rate <= max_rate:
        out.append(f"src rate {ch.src_rate} err, should be 0 or in [1 {max_rate}]")
    if ch.max_bit_rate and not bmin <= ch.max_bit_rate <= bmax:
        out.append(f"bit rate {ch.max_bit_rate} err, should be 0 or in [{bmin}k {bmax}k]")
    return out
