"""Benchmark: aggregate fps of N streams in one daemon against N bare ffmpeg processes.

(a) bare: N `ffmpeg` processes (the system's /usr/bin/ffmpeg) started at once, each encoding
    the same raw NV12 frames from one file in /tmp with libx264 and the options the daemon's
    pyav backend uses (camingest.encoders.pyav.encoder_options), to `-f null`, as fast as they
    go; aggregate fps = N * frames / wall time until the slowest exits (process start-up
    included; the start-up of N one-frame runs is measured and printed as well).
(b) daemon: one `python -m camingest run` with N streams of the same settings; N feeder
    processes (`sys.executable -c`, so that no GIL is shared), each a CaptureClient
    (on_full=wait) sending the same frames as fast as its worker takes them; one Subscriber
    thread here counts the packets; aggregate fps = N * frames / (first send -> last packet).

For each N, bare and daemon alternate for --rounds rounds after a warm-up of each; the medians
and the ratio daemon/bare are printed.

    .venv/bin/python tools/bench_scaling.py [--streams 1,2,3,4] [--frames 300] [--rounds 2]

Everything started here is stopped here (ffmpeg and feeders killed if still running, the
daemon by benchlib.Daemon.stop); the frame file and the work directory in /tmp are removed,
and no segment of the benchmark's instance is left in /dev/shm.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, cast

import av
from bench_encode import (
    busy_cpu_s,
    daemon_config,
    machine,
    others_load,
    stream_config,
    x264_version,
)
from benchlib import Daemon, Frame, make_frames, proc_cpu_s

from camingest.subscribe import Subscriber
from camingest.worker.encoders.base import ChannelParams
from camingest.worker.encoders.pyav import DEFAULT_ENCODERS, encoder_options

FFMPEG = "/usr/bin/ffmpeg"

# A feeder: maps the frame file, connects, says "ready", then for every "run <count>" line on
# stdin sends <count> frames (cycled) and answers "done <first send> <last send> <drops>"
# (time.monotonic(), CLOCK_MONOTONIC, comparable across processes).
FEEDER = """
import sys, time
import numpy as np
from camingest.capture import CaptureClient
from camingest.wire.pixels import PixelFormat, packed_shape
path, endpoint, stream, w, h, distinct = sys.argv[1:7]
w, h, distinct = int(w), int(h), int(distinct)
frames = np.fromfile(path, dtype=np.uint8).reshape(
    distinct, *packed_shape(PixelFormat.NV12, w, h))
cap = CaptureClient(endpoint, stream, w, h, "nv12", on_full="wait", max_wait_ms=10000)
cap.connect(10)
print("ready", flush=True)
for line in sys.stdin:
    n = int(line.split()[1])
    d0 = cap.stats["dropped"]
    t0 = time.monotonic()
    for i in range(n):
        cap.send(frames[i % distinct])
    t1 = time.monotonic()
    print(f"done {t0} {t1} {cap.stats['dropped'] - d0}", flush=True)
cap.close()
"""


# -- configuration (one source for both sides) -------------------------------------------------


def scaling_config(
    args: argparse.Namespace, n: int, runtime_dir: Path, instance: str
) -> dict[str, Any]:
    """bench_encode's one-stream config, the stream repeated as s0 .. s<n-1>."""
    config = daemon_config(args, runtime_dir, instance)
    (stream,) = config["streams"]
    stream["encoder"]["threads"] = args.threads
    config["streams"] = [stream | {"name": f"s{i}"} for i in range(n)]
    return config


def ffmpeg_command(args: argparse.Namespace, config: dict[str, Any], yuv: Path) -> list[str]:
    """ffmpeg reading the frame file in a loop, with the daemon's libx264 options."""
    stream = stream_config(config)
    params = ChannelParams(
        stream.name, stream.width, stream.height, stream.pixel_format, stream.fps, stream.encoder
    )
    opts = encoder_options(params, DEFAULT_ENCODERS[params.codec])
    out: list[str] = []
    for key, value in opts.items():
        flag = {"b": "-b:v", "g": "-g", "bf": "-bf", "profile": "-profile:v"}.get(key, "-" + key)
        out += [flag, value]
    return [
        FFMPEG,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "nv12",
        "-s",
        f"{args.width}x{args.height}",
        "-r",
        f"{args.fps:g}",
        "-stream_loop",
        "-1",
        "-i",
        str(yuv),
        "-frames:v",
        str(args.frames),
        "-c:v",
        "libx264",
        "-threads",
        str(args.threads),
        *out,
        "-f",
        "null",
        "-",
    ]


def with_frames(cmd: list[str], frames: int) -> list[str]:
    i = cmd.index("-frames:v")
    return [*cmd[: i + 1], str(frames), *cmd[i + 2 :]]


def ffmpeg_x264_version(cmd: list[str]) -> str:
    """The system ffmpeg's libx264 version string, from the SEI of one encoded frame."""
    one = with_frames(cmd, 1)[:-3]  # without "-f null -"
    data = subprocess.run(
        [*one, "-f", "h264", "-"], capture_output=True, check=True, timeout=60
    ).stdout
    m = re.search(rb"x264 - core \d+[ \w.]*", data)
    return m.group(0).decode() if m else "unknown"


# -- (a) N bare ffmpeg processes ---------------------------------------------------------------


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_bare(cmd: list[str], n: int, frames: int) -> dict[str, Any]:
    """n ffmpeg processes started at once: wall time until the last one exits, their CPU."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cpu0 = children_cpu_s()
        busy0 = busy_cpu_s()
        start = time.monotonic()
        for _ in range(n):
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        for p in procs:
            _, err = p.communicate(timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"ffmpeg exited with {p.returncode}: {err.decode()}")
        wall = time.monotonic() - start
        cpu = children_cpu_s() - cpu0
        return {
            "fps": n * frames / wall,
            "seconds": wall,
            "cpu_ms_per_frame": 1000 * cpu / (n * frames),
            "others_cpus": others_load(busy0, cpu, wall),
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)


# -- (b) one daemon, N streams -----------------------------------------------------------------


class Counter(threading.Thread):
    """One Subscriber for all streams; notes when every stream has its expected packets."""

    def __init__(self, endpoint: str, streams: list[str]) -> None:
        super().__init__(daemon=True)
        self.sub = Subscriber([endpoint], streams)
        self.counts = dict.fromkeys(streams, 0)
        self.expect = 0
        self.done = threading.Event()
        self.done_at = 0.0
        self._stop_evt = threading.Event()

    def arm(self, expect: int) -> None:
        self.counts = dict.fromkeys(self.counts, 0)
        self.expect = expect
        self.done.clear()

    def run(self) -> None:
        complete = 0
        while not self._stop_evt.is_set():
            p = self.sub.recv(0.1)
            if p is None or p.header.eos or not self.expect:
                continue
            self.counts[p.stream] += 1
            if self.counts[p.stream] == self.expect:
                complete = sum(c >= self.expect for c in self.counts.values())
                if complete == len(self.counts):
                    self.done_at = time.monotonic()
                    self.done.set()

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(5)
        self.sub.close()


def start_feeders(
    feeders: list[subprocess.Popen[str]],
    daemon: Daemon,
    streams: list[str],
    yuv: Path,
    args: argparse.Namespace,
) -> None:
    """Starts one feeder per stream into `feeders` (the caller stops them) and waits for all."""
    for s in streams:
        feeders.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    FEEDER,
                    str(yuv),
                    daemon.ingest(s),
                    s,
                    str(args.width),
                    str(args.height),
                    str(args.distinct),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    for f in feeders:
        line = cast(IO[str], f.stdout).readline()
        if line.strip() != "ready":
            raise RuntimeError(f"feeder did not start: {line!r}")


def run_daemon_round(
    feeders: list[subprocess.Popen[str]], counter: Counter, frames: int, pids: list[int]
) -> dict[str, Any]:
    counter.arm(frames)
    fpids = [f.pid for f in feeders]
    cpu0 = sum(proc_cpu_s(p) for p in pids)
    fcpu0 = sum(proc_cpu_s(p) for p in fpids)
    own0 = time.process_time()
    busy0 = busy_cpu_s()
    t0 = time.monotonic()
    for f in feeders:
        stdin = cast(IO[str], f.stdin)
        stdin.write(f"run {frames}\n")
        stdin.flush()
    replies = [cast(IO[str], f.stdout).readline().split() for f in feeders]
    if not all(r and r[0] == "done" for r in replies):
        raise RuntimeError(f"feeder failed: {replies}")
    if not counter.done.wait(max(30.0, frames / 5)):
        raise RuntimeError(f"packets missing: {counter.counts} of {frames} each")
    start = min(float(r[1]) for r in replies)
    elapsed = counter.done_at - start
    n = len(feeders)
    dcpu = sum(proc_cpu_s(p) for p in pids) - cpu0
    fcpu = sum(proc_cpu_s(p) for p in fpids) - fcpu0
    own = time.process_time() - own0
    return {
        "fps": n * frames / elapsed,
        "seconds": elapsed,
        "drops": sum(int(r[3]) for r in replies),
        "cpu_ms_per_frame": 1000 * (dcpu + fcpu + own) / (n * frames),
        "daemon_cpu_ms_per_frame": 1000 * dcpu / (n * frames),
        "others_cpus": others_load(busy0, dcpu + fcpu + own, time.monotonic() - t0),
    }


def stop_feeders(feeders: list[subprocess.Popen[str]]) -> None:
    for f in feeders:
        if f.poll() is None and f.stdin is not None:
            try:
                f.stdin.close()  # EOF: the feeder closes its client and exits
            except OSError:
                pass
    for f in feeders:
        try:
            f.wait(5)
        except subprocess.TimeoutExpired:
            f.kill()
            f.wait(5)


def measure_n(
    args: argparse.Namespace, n: int, yuv: Path, cmd: list[str], tag: str
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="cgbs", dir="/tmp"))
    config = scaling_config(args, n, workdir / "rt", f"bs{os.getpid()}{tag}")
    streams = [s["name"] for s in config["streams"]]
    res: dict[str, Any] = {"n": n, "bare": [], "daemon": []}
    daemon: Daemon | None = None
    counter: Counter | None = None
    feeders: list[subprocess.Popen[str]] = []
    try:
        daemon = Daemon(config, workdir)
        daemon.wait_running()
        counter = Counter(daemon.out, streams)
        counter.start()
        d = daemon
        d.wait(
            lambda: all((d.stream_status(s)["subscribers"] or 0) >= 1 for s in streams),
            10,
            "subscriber",
        )
        start_feeders(feeders, daemon, streams, yuv, args)
        pids = [daemon.proc.pid, *(int(s["pid"]) for s in daemon.status()["streams"])]
        # Warm-up: ring page faults, encoder start; ffmpeg's binary and the file into cache.
        run_daemon_round(feeders, counter, min(30, args.frames), pids)
        run_bare(with_frames(cmd, 30), n, 30)
        for r in range(args.rounds):
            bare = run_bare(cmd, n, args.frames)
            res["bare"].append(bare)
            dmn = run_daemon_round(feeders, counter, args.frames, pids)
            res["daemon"].append(dmn)
            if not args.json:
                print(
                    f"N={n} round {r + 1}: bare {bare['fps']:6.1f} fps "
                    f"{bare['cpu_ms_per_frame']:5.2f} ms CPU/frame (others "
                    f"{bare['others_cpus']:.2f} CPUs)   daemon {dmn['fps']:6.1f} fps "
                    f"{dmn['cpu_ms_per_frame']:5.2f} ms CPU/frame, daemon alone "
                    f"{dmn['daemon_cpu_ms_per_frame']:.2f} (others {dmn['others_cpus']:.2f} "
                    f"CPUs, {dmn['drops']} drops)   ratio {dmn['fps'] / bare['fps']:.3f}",
                    flush=True,
                )
        res["restarts"] = sum(s["restarts"] for s in daemon.status()["streams"])
    finally:
        stop_feeders(feeders)
        if counter is not None:
            counter.stop()
        res["shm_leftovers"] = daemon.stop() if daemon is not None else []
        shutil.rmtree(workdir, ignore_errors=True)
    res["startup_s"] = run_bare(with_frames(cmd, 1), n, 1)["seconds"]
    for key in ("bare", "daemon"):
        res[key + "_fps"] = statistics.median(x["fps"] for x in res[key])
    res["ratio"] = res["daemon_fps"] / res["bare_fps"]
    bare_s = statistics.median(x["seconds"] for x in res["bare"])
    res["bare_fps_no_startup"] = n * args.frames / (bare_s - res["startup_s"])
    res["ratio_no_startup"] = res["daemon_fps"] / res["bare_fps_no_startup"]
    for key, part in (
        ("bare", "cpu_ms_per_frame"),
        ("daemon", "cpu_ms_per_frame"),
        ("daemon", "daemon_cpu_ms_per_frame"),
    ):
        res[f"{key}_{part}"] = statistics.median(x[part] for x in res[key])
    return res


# -- main --------------------------------------------------------------------------------------


def write_frames(path: Path, frames: list[Frame]) -> None:
    with open(path, "wb") as f:
        for frame in frames:
            f.write(frame.tobytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--streams", default="1,2,3,4", help="values of N (default 1,2,3,4)")
    ap.add_argument("--frames", type=int, default=300, help="frames per stream per round (300)")
    ap.add_argument("--distinct", type=int, default=60, help="distinct frames, cycled (60)")
    ap.add_argument("--rounds", type=int, default=2, help="bare/daemon rounds per N (2)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--fps", type=float, default=30.0, help="stream fps (rate control only)")
    ap.add_argument("--preset", default="ultrafast")
    ap.add_argument("--tune", default="zerolatency")
    ap.add_argument("--bitrate", type=int, default=2000, help="kbit/s, cbr (default 2000)")
    ap.add_argument("--gop", type=int, default=60)
    ap.add_argument("--threads", type=int, default=0, help="encoder threads, 0 = automatic")
    ap.add_argument("--slots", type=int, default=6)
    ap.add_argument("--json", action="store_true", help="print all results as JSON")
    args = ap.parse_args()
    ns = [int(x) for x in args.streams.split(",")]

    frames = make_frames(args.width, args.height, args.distinct)
    fd, name = tempfile.mkstemp(prefix="cgbs", suffix=".yuv", dir="/tmp")
    os.close(fd)
    yuv = Path(name)
    results: dict[str, Any] = {"args": vars(args), "machine": machine(), "runs": []}
    try:
        write_frames(yuv, frames)
        cmd = ffmpeg_command(args, scaling_config(args, 1, Path("/tmp/x"), "x"), yuv)
        results["ffmpeg_command"] = cmd
        results["x264_pyav"] = x264_version(
            stream_config(scaling_config(args, 1, Path("/tmp/x"), "x")), frames
        )
        results["x264_ffmpeg"] = ffmpeg_x264_version(cmd)
        ff = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True, check=True)
        results["ffmpeg_version"] = ff.stdout.split("\n", 1)[0]
        if not args.json:
            print(f"PyAV {av.__version__}: {results['x264_pyav']}")
            print(f"{results['ffmpeg_version']}: {results['x264_ffmpeg']}")
            print("bare: " + " ".join(cmd), flush=True)
        for i, n in enumerate(ns):
            results["runs"].append(measure_n(args, n, yuv, cmd, str(i)))
    finally:
        yuv.unlink(missing_ok=True)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    m = results["machine"]
    print()
    print(
        f"{args.width}x{args.height} nv12, libx264 {args.preset}/{args.tune}, cbr "
        f"{args.bitrate} kbit/s, gop {args.gop}, threads {args.threads}; {args.frames} "
        f"frames per stream x {args.rounds} rounds; {m['nproc']} CPUs"
    )
    print(
        f"{'N':>2} {'bare fps':>9} {'daemon fps':>10} {'ratio':>6} {'per stream':>10} "
        f"{'startup s':>9} {'bare-su fps':>11} {'ratio-su':>8} {'CPU ms/f bare':>13} "
        f"{'daemon (own)':>13}  rounds bare | daemon"
    )
    for r in results["runs"]:
        rb = " ".join(f"{x['fps']:.1f}" for x in r["bare"])
        rd = " ".join(f"{x['fps']:.1f}" for x in r["daemon"])
        print(
            f"{r['n']:>2} {r['bare_fps']:9.1f} {r['daemon_fps']:10.1f} {r['ratio']:6.3f} "
            f"{r['daemon_fps'] / r['n']:10.1f} {r['startup_s']:9.2f} "
            f"{r['bare_fps_no_startup']:11.1f} {r['ratio_no_startup']:8.3f} "
            f"{r['bare_cpu_ms_per_frame']:13.2f} {r['daemon_cpu_ms_per_frame']:6.2f} "
            f"({r['daemon_daemon_cpu_ms_per_frame']:.2f})  {rb} | {rd}"
        )
    left = [p for r in results["runs"] for p in r["shm_leftovers"]]
    drops = sum(x["drops"] for r in results["runs"] for x in r["daemon"])
    print(f"capture drops: {drops}; removed shm leftovers: {left or 'none'}")
    print("bare-su: bare with the start-up of N one-frame ffmpeg runs taken off the wall time")
    print(
        "CPU ms/f: bare = all ffmpeg processes; daemon = daemon + feeders + subscriber "
        "(own: daemon main + workers alone)"
    )


if __name__ == "__main__":
    main()
