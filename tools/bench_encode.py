"""Benchmark: frames per second through the whole daemon path against the bare encoder.

(a) bare: one process, PyAV libx264 with exactly the options and CodecContext settings of the
    daemon's pyav backend (camingest.worker.encoders.pyav), VideoFrames built like the daemon builds
    them (camingest.avframes.to_av_frame), N frames encoded and flushed.
(b) daemon: `python -m camingest run` with one stream of the same settings; a CaptureClient
    (on_full=wait) sends the same N frames as fast as the daemon takes them and a Subscriber
    (in a thread of this process) receives the packets; fps = N / (first send -> last packet).

(a) and (b) alternate for --rounds rounds; the medians and their ratio are printed.

    .venv/bin/python tools/bench_encode.py [--frames 300] [--rounds 3] [--json]

Everything started here is stopped here (SIGTERM, then SIGKILL of the daemon's process group),
and no segment of the benchmark's instance is left in /dev/shm.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import av
from benchlib import Daemon, Frame, make_frames, proc_cpu_s

from camingest.capture import CaptureClient
from camingest.config.model import DaemonConfig, StreamConfig
from camingest.subscribe import Subscriber
from camingest.wire.avframes import to_av_frame
from camingest.wire.pixels import PixelFormat, plane_layout
from camingest.worker.encoders.base import ChannelParams
from camingest.worker.encoders.pyav import DEFAULT_ENCODERS, encoder_options, open_context

STREAM = "bench"


# -- frames ------------------------------------------------------------------------------------


def planes_of(frame: Frame, width: int, height: int) -> tuple[Frame, ...]:
    flat = frame.reshape(-1)
    return tuple(
        flat[p.offset : p.offset + p.size].reshape(p.rows, p.row_bytes)
        for p in plane_layout(PixelFormat.NV12, width, height)
    )


# -- configuration (one source for both sides) -------------------------------------------------


def daemon_config(args: argparse.Namespace, runtime_dir: Path, instance: str) -> dict[str, Any]:
    return {
        "instance": instance,
        "runtime_dir": str(runtime_dir),
        "logging": {"level": "warning"},
        "streams": [
            {
                "name": STREAM,
                "width": args.width,
                "height": args.height,
                "pixel_format": "nv12",
                "fps": args.fps,
                "slots": args.slots,
                "on_full": "wait",
                "max_wait_ms": 10000,
                "encoder": {
                    "backend": "pyav",
                    "codec": "h264",
                    "preset": args.preset,
                    "tune": args.tune,
                    "rate_control": "cbr",
                    "bitrate_kbps": args.bitrate,
                    "gop": args.gop,
                },
            }
        ],
    }


def stream_config(config: dict[str, Any]) -> StreamConfig:
    return DaemonConfig.model_validate(config).streams[0]


# -- (a) the bare encoder ----------------------------------------------------------------------


def open_bare(stream: StreamConfig) -> tuple[av.VideoCodecContext, dict[str, str]]:
    """The CodecContext PyAVChannel.open builds for this stream (the same function)."""
    params = ChannelParams(
        stream.name, stream.width, stream.height, stream.pixel_format, stream.fps, stream.encoder
    )
    name = stream.encoder.encoder or DEFAULT_ENCODERS[params.codec]
    ctx, _ = open_context(params, name)
    return ctx, encoder_options(params, name)


def busy_cpu_s() -> float:
    """CPU time the whole machine spent busy (all CPUs, /proc/stat), in seconds."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def others_load(busy0: float, own_cpu_s: float, elapsed: float) -> float:
    """CPUs' worth of work done by processes other than the benchmark's during a run."""
    return max(0.0, (busy_cpu_s() - busy0 - own_cpu_s) / elapsed)


def run_bare(stream: StreamConfig, frames: list[Frame], n: int) -> dict[str, Any]:
    ctx, _ = open_bare(stream)
    w, h = stream.width, stream.height
    packets = 0
    size = 0
    cpu0 = time.process_time()
    busy0 = busy_cpu_s()
    start = time.perf_counter()
    for i in range(n):
        frame = to_av_frame(PixelFormat.NV12, w, h, planes_of(frames[i % len(frames)], w, h))
        frame.pts = i
        for packet in ctx.encode(frame):
            size += len(bytes(packet))
            packets += 1
    for packet in ctx.encode(None):
        size += len(bytes(packet))
        packets += 1
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    return {
        "fps": n / elapsed,
        "seconds": elapsed,
        "packets": packets,
        "bytes": size,
        "cpu_ms_per_frame": {"bench": 1000 * cpu / n},
        "others_cpus": others_load(busy0, cpu, elapsed),
    }


def x264_version(stream: StreamConfig, frames: list[Frame]) -> str:
    """libx264's own version string, from the SEI it writes into the first keyframe."""
    ctx, _ = open_bare(stream)
    w, h = stream.width, stream.height
    frame = to_av_frame(PixelFormat.NV12, w, h, planes_of(frames[0], w, h))
    frame.pts = 0
    data = b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])
    m = re.search(rb"x264 - core \d+[ \w.]*", data)
    return m.group(0).decode() if m else "unknown"


# -- (b) the daemon ----------------------------------------------------------------------------


class Collector(threading.Thread):
    """Receives packets of one stream and notes when the expected count has arrived."""

    def __init__(self, endpoint: str, stream: str) -> None:
        super().__init__(daemon=True)
        self.sub = Subscriber([endpoint], [stream])
        self.expect = 0
        self.count = 0
        self.bytes = 0
        self.keyframes = 0
        self.done = threading.Event()
        self.done_at = 0.0
        self.first_data = b""
        self._stop_evt = threading.Event()

    def arm(self, expect: int) -> None:
        self.count, self.bytes, self.keyframes, self.expect = 0, 0, 0, expect
        self.done.clear()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            p = self.sub.recv(0.1)
            if p is None or p.header.eos:
                continue
            self.count += 1
            self.bytes += len(p.data)
            self.keyframes += p.header.keyframe
            if not self.first_data:
                self.first_data = p.data
            if self.expect and self.count == self.expect:
                self.done_at = time.perf_counter()
                self.done.set()

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(5)
        self.sub.close()


def run_daemon_round(
    cap: CaptureClient, col: Collector, frames: list[Frame], n: int, pids: dict[str, int]
) -> dict[str, Any]:
    col.arm(n)
    dropped0 = cap.stats["dropped"]
    cpu0 = {k: proc_cpu_s(pid) for k, pid in pids.items()}
    bench0 = time.process_time()
    busy0 = busy_cpu_s()
    start = time.perf_counter()
    for i in range(n):
        cap.send(frames[i % len(frames)])
    sent_at = time.perf_counter()
    if not col.done.wait(max(30.0, n / 5)):
        raise RuntimeError(f"only {col.count} of {n} packets arrived")
    elapsed = col.done_at - start
    cpu = {k: 1000 * (proc_cpu_s(pid) - cpu0[k]) / n for k, pid in pids.items()}
    cpu["bench"] = 1000 * (time.process_time() - bench0) / n
    others = others_load(busy0, sum(cpu.values()) * n / 1000, time.perf_counter() - start)
    return {
        "fps": n / elapsed,
        "seconds": elapsed,
        "send_seconds": sent_at - start,
        "packets": col.count,
        "bytes": col.bytes,
        "capture_drops": cap.stats["dropped"] - dropped0,
        "cpu_ms_per_frame": cpu,
        "others_cpus": others,
    }


# -- main --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    libs = {k: ".".join(map(str, v)) for k, v in av.library_versions.items()}
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "pyav": av.__version__,
        "ffmpeg_libs": libs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--frames", type=int, default=300, help="frames per run (default 300)")
    ap.add_argument("--distinct", type=int, default=60, help="distinct frames, cycled (60)")
    ap.add_argument("--rounds", type=int, default=3, help="bare/daemon rounds (default 3)")
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--fps", type=float, default=30.0, help="stream fps (rate control only)")
    ap.add_argument("--preset", default="ultrafast")
    ap.add_argument("--tune", default="zerolatency")
    ap.add_argument("--bitrate", type=int, default=4000, help="kbit/s, cbr (default 4000)")
    ap.add_argument("--gop", type=int, default=60)
    ap.add_argument("--slots", type=int, default=6)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="cgbe", dir="/tmp"))
    instance = f"be{os.getpid()}"
    config = daemon_config(args, workdir / "rt", instance)
    stream = stream_config(config)
    frames = make_frames(args.width, args.height, args.distinct)
    results: dict[str, Any] = {
        "machine": machine(),
        "args": vars(args),
        "encoder_options": open_bare(stream)[1],
        "x264": x264_version(stream, frames),
        "bare": [],
        "daemon": [],
    }
    daemon: Daemon | None = None
    cap: CaptureClient | None = None
    col: Collector | None = None
    leftovers: list[str] = []
    try:
        daemon = Daemon(config, workdir)
        daemon.wait_running()
        col = Collector(daemon.out, STREAM)
        col.start()
        d = daemon
        d.wait(lambda: (d.stream_status(STREAM)["subscribers"] or 0) >= 1, 10, "subscriber")
        cap = CaptureClient(
            daemon.ingest(STREAM),
            STREAM,
            args.width,
            args.height,
            "nv12",
            on_full="wait",
            max_wait_ms=10000,
        )
        cap.connect(10)
        pids = {"main": daemon.proc.pid, "worker": int(daemon.stream_status(STREAM)["pid"])}
        # Warm-up: the first frames pay for page faults in the ring and the encoder's start.
        run_daemon_round(cap, col, frames, min(30, args.frames), pids)
        run_bare(stream, frames, min(30, args.frames))
        for r in range(args.rounds):
            bare = run_bare(stream, frames, args.frames)
            results["bare"].append(bare)
            dmn = run_daemon_round(cap, col, frames, args.frames, pids)
            results["daemon"].append(dmn)
            if not args.json:
                bb, dd = bare, dmn
                print(
                    f"round {r + 1}: bare {bb['fps']:6.1f} fps (others {bb['others_cpus']:.2f} "
                    f"CPUs)   daemon {dd['fps']:6.1f} fps (others {dd['others_cpus']:.2f} "
                    f"CPUs)   ratio {dd['fps'] / bb['fps']:.3f}   "
                    f"{dd['capture_drops']} capture drops",
                    flush=True,
                )
        st = daemon.stream_status(STREAM)
        results["daemon_status"] = {k: st[k] for k in ("frames_in", "drops", "restarts")}
    finally:
        if cap is not None:
            cap.close()
        if col is not None:
            col.stop()
        if daemon is not None:
            leftovers = daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    results["shm_leftovers"] = leftovers
    med: dict[str, Any] = {}
    for key in ("bare", "daemon"):
        runs = results[key]
        med[key + "_fps"] = statistics.median(x["fps"] for x in runs)
        med[key + "_cpu_ms_per_frame"] = {
            part: statistics.median(x["cpu_ms_per_frame"][part] for x in runs)
            for part in runs[0]["cpu_ms_per_frame"]
        }
    med["ratio"] = med["daemon_fps"] / med["bare_fps"]
    med["ratio_of_rounds"] = statistics.median(
        d["fps"] / bb["fps"] for b, d in zip(results["bare"], results["daemon"], strict=True)
    )
    results["median"] = med
    if args.json:
        print(json.dumps(results, indent=1))
        return
    m = results["machine"]
    print()
    print(
        f"{args.width}x{args.height} nv12, libx264 {args.preset}/{args.tune}, "
        f"cbr {args.bitrate} kbit/s, gop {args.gop}; {args.frames} frames x {args.rounds} "
        f"rounds; {m['nproc']} CPUs, PyAV {m['pyav']}, {results['x264']}"
    )
    rounds = " ".join(f"{'r' + str(i + 1):>7}" for i in range(args.rounds))
    print(f"{'':8} {'median fps':>10} {rounds}   CPU ms/frame (median)")
    for key in ("bare", "daemon"):
        runs = " ".join(f"{x['fps']:7.1f}" for x in results[key])
        cpu = med[key + "_cpu_ms_per_frame"]
        detail = " + ".join(f"{part} {v:.2f}" for part, v in cpu.items())
        print(f"{key:8} {med[key + '_fps']:10.1f} {runs}   {sum(cpu.values()):.2f} = {detail}")
    print(
        f"ratio daemon/bare: of the medians {med['ratio']:.3f}, median of the rounds' ratios "
        f"{med['ratio_of_rounds']:.3f}  (target >= 0.95)"
    )
    if leftovers:
        print(f"removed shm leftovers: {leftovers}")


if __name__ == "__main__":
    main()
