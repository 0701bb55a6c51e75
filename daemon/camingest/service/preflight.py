"""Checks that need the machine but change nothing: shm space, encoders, device nodes.

The config model is pure; whatever depends on this box (free space in /dev/shm, what `auto`
resolves to, which FFmpeg encoders PyAV was built with, Ascend product limits, device nodes)
is checked here, by `camingest check` and at start.
"""

from __future__ import annotations

import glob
import importlib
import os
from collections.abc import Callable

from camingest.config.load import format_path
from camingest.config.model import (
    Backend,
    DaemonConfig,
    Loc,
    RateControl,
    StreamConfig,
    stream_fit_problems,
)
from camingest.wire.output import CodecName
from camingest.wire.pixels import frame_size
from camingest.wire.ring import RING_FIRST_SLOT_OFFSET, RING_SLOT_ALIGN

SHM_DIR = "/dev/shm"
MIB = 1024 * 1024

# FFmpeg's decoder name for each codec family; an encoder belongs to a family by codec id.
FAMILY_DECODER: dict[CodecName, str] = {CodecName.H264: "h264", CodecName.H265: "hevc"}

# Hardware encoders, by a part of their FFmpeg name: the device nodes they open (glob patterns)
# and how the message names them.
HW_DEVICES: dict[str, tuple[tuple[str, ...], str]] = {
    "nvenc": (("/dev/nvidia[0-9]*",), "/dev/nvidia0 (an NVIDIA GPU and its driver)"),
    "qsv": (("/dev/dri/renderD*",), "/dev/dri/renderD128 (an Intel GPU)"),
    "vaapi": (("/dev/dri/renderD*",), "/dev/dri/renderD128 (a VA-API GPU)"),
    "v4l2m2m": (("/dev/video*",), "/dev/videoN (a V4L2 memory-to-memory encoder)"),
}


def ring_bytes(stream: StreamConfig) -> int:
    """Bytes of the stream's shared-memory ring: a header page, then slot-aligned frames."""
    size = frame_size(stream.pixel_format, stream.width, stream.height)
    stride = -(-size // RING_SLOT_ALIGN) * RING_SLOT_ALIGN
    return RING_FIRST_SLOT_OFFSET + stream.slots * stride


def shm_free_bytes(path: str = SHM_DIR) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def preflight(config: DaemonConfig, *, shm_free: Callable[[], int] = shm_free_bytes) -> list[str]:
    """Problems found on this machine, one line each as `path: message`; empty when none.

    `shm_free` returns the free bytes in /dev/shm (replaceable for tests)."""
    return [
        f"{format_path(loc)}: {msg}" if loc else msg
        for loc, msg in preflight_problems(config, shm_free=shm_free)
    ]


def preflight_problems(
    config: DaemonConfig, *, shm_free: Callable[[], int] = shm_free_bytes
) -> list[tuple[Loc, str]]:
    """Like preflight(), with the path of each problem kept apart (for line numbers)."""
    problems = _shm_problems(config, shm_free)
    resolved: Backend | None = None
    for i, stream in enumerate(config.streams):
        backend = stream.encoder.backend
        at: Loc = ("streams", i)
        if backend is Backend.AUTO:
            resolved = resolved or _resolve_auto()
            backend = resolved
            for loc, msg in stream_fit_problems(stream, backend):
                problems.append((at + loc, f"{msg} (backend auto chose {backend.value} here)"))
        if backend is Backend.ACL:
            problems += [(at, msg) for msg in _acl_problems(stream)]
        elif backend is Backend.PYAV and stream.encoder.encoder is not None:
            problems += [
                ((*at, "encoder", "encoder"), msg)
                for msg in _pyav_problems(stream.encoder.encoder, stream.encoder.codec)
            ]
    return problems


def _shm_problems(config: DaemonConfig, shm_free: Callable[[], int]) -> list[tuple[Loc, str]]:
    needs = [(s.name, ring_bytes(s)) for s in config.streams]
    total = sum(n for _, n in needs)
    try:
        free = shm_free()
    except OSError as exc:
        return [((), f"{SHM_DIR}: cannot check free space: {exc.strerror or exc}")]
    if total <= free:
        return []
    parts = ", ".join(f"{name} {n / MIB:.1f} MiB" for name, n in needs)
    return [
        (
            (),
            f"{SHM_DIR}: the frame rings need {total / MIB:.1f} MiB ({total} bytes: {parts}) "
            f"but only {free / MIB:.1f} MiB ({free} bytes) is free; enlarge {SHM_DIR} "
            "(docker: --shm-size; "
            f"otherwise: mount -o remount,size=... {SHM_DIR}) or lower slots",
        )
    ]


def _resolve_auto() -> Backend:
    from camingest.worker.encoders.auto import resolve_backend

    return Backend(resolve_backend())


def _acl_problems(stream: StreamConfig) -> list[str]:
    # Imported by name: the product-limit table is optional here, and when it is missing
    # there is nothing to check against.
    try:
        module = importlib.import_module("camingest.worker.encoders.acl_limits")
    except ImportError:
        return []
    check: Callable[[StreamConfig, str | None], list[str]] = module.acl_problems
    prefix = f"streams.{stream.name}: "  # the caller already names the stream by its path
    return [msg.removeprefix(prefix) for msg in check(stream, stream.encoder.soc)]


def _pyav_problems(name: str, codec: CodecName) -> list[str]:
    try:
        import av
    except ImportError:
        return ["PyAV (the av package) is not installed; backend pyav needs it"]
    if name not in av.codecs_available:
        return [f"{name!r} is not in this FFmpeg build (PyAV {av.__version__})"]
    try:
        enc = av.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return [f"{name!r} is a decoder, not an encoder, in this FFmpeg build"]
    family = av.Codec(FAMILY_DECODER[codec], "r")
    if enc.type != "video" or enc.id != family.id:
        return [
            f"{name!r} encodes {enc.long_name}, not {codec.value}; choose an "
            f"{FAMILY_DECODER[codec]} encoder (e.g. {_default_encoder(codec)}) or change codec"
        ]
    return _device_problems(name)


def _device_problems(name: str) -> list[str]:
    for part, (patterns, device) in HW_DEVICES.items():
        if part in name and not any(glob.glob(p) for p in patterns):
            return [f"{name!r} needs device {device}, which is missing on this machine"]
    return []


def _default_encoder(codec: CodecName) -> str:
    return "libx264" if codec is CodecName.H264 else "libx265"


def summary_line(stream: StreamConfig) -> str:
    """One line describing a stream, e.g.
    `cam0: 1280x720 nv12 25 fps -> pyav h264/main cbr 4000 kbit/s, gop 50, 4 slots`."""
    enc = stream.encoder
    backend = enc.backend.value + (f"({enc.encoder})" if enc.encoder else "")
    if enc.rate_control is RateControl.CQP:
        rate = f"cqp qp {enc.qp}"
    else:
        rate = f"{enc.rate_control.value} {enc.bitrate_kbps} kbit/s"
    return (
        f"{stream.name}: {stream.width}x{stream.height} {stream.pixel_format.value} "
        f"{stream.fps:g} fps -> {backend} {enc.codec.value}/{enc.effective_profile} {rate}, "
        f"gop {enc.gop}, {stream.slots} slots"
    )
