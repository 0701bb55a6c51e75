"""Benchmark: the ingest transport alone, with the `null` encoder backend (a benchmark
instrument that consumes frames and publishes nothing), for 1080p NV12.

Measured in one run:
  memcpy       np.copyto of one frame into a preallocated buffer (the floor of any copy)
  push/pull    the frame inline over ipc:// with a bare ZeroMQ PUSH/PULL pair (receiver in a
               second process, receiving with a copy as the daemon's ingest does)
  shm+client   the daemon's local path: CaptureClient.send (copy into the ring slot +
               descriptor), worker -> null channel -> release, on_full=wait
  shm desc     the same path with a raw protocol client that sends descriptors without
               writing the slot: descriptors per second of the transport itself
  tcp inline   the daemon's inline path: CaptureClient over a tcp:// ingest endpoint

For each daemon path: frames per second and the daemon's CPU per frame, read from
/proc/<pid>/stat (utime + stime) of the main process and of the stream's worker before and
after; the idle CPU of both is measured too, and shown separately.

    .venv/bin/python tools/bench_transport.py [--frames 10000] [--json]

Everything started here is stopped here (SIGTERM, then SIGKILL of the daemon's process group),
and no segment of the benchmark's instance is left in /dev/shm.
"""

from __future__ import annotations

import argparse
import json
import mmap
import multiprocessing as mp
import os
import platform
import shutil
import socket
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zmq
from benchlib import Daemon, make_frames, proc_cpu_s

from camingest.capture import CaptureClient
from camingest.wire.ingest import (
    INLINE_SLOT,
    FrameDesc,
    Hello,
    Kind,
    RefuseCode,
    Release,
    ReleaseStatus,
    Transport,
    Welcome,
    message_kind,
    unpack_refuse,
)
from camingest.wire.pixels import PixelFormat

Frame = npt.NDArray[np.uint8]
SHM, TCP = "shm", "tcp"
FMT = PixelFormat.NV12


# -- frames ------------------------------------------------------------------------------------


def proc_times_s(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


# -- baselines ---------------------------------------------------------------------------------


def bench_memcpy(frames: list[Frame], n: int, dsts: list[Frame] | None = None) -> dict[str, Any]:
    """np.copyto of frames into preallocated buffers, in turn (one private buffer by default)."""
    if dsts is None:
        dsts = [np.empty_like(frames[0])]
    for dst in dsts:
        np.copyto(dst, frames[0])  # fault the pages in
    start = time.perf_counter()
    for i in range(n):
        np.copyto(dsts[i % len(dsts)], frames[i % len(frames)])
    elapsed = time.perf_counter() - start
    size = frames[0].nbytes
    return {
        "us_per_frame": 1e6 * elapsed / n,
        "fps": n / elapsed,
        "gb_per_s": size * n / elapsed / 1e9,
    }


def bench_memcpy_shm(frames: list[Frame], n: int, slots: int) -> dict[str, Any]:
    """The same copy into `slots` frame buffers of one /dev/shm mapping, in turn, as a capture
    fills the slots of its ring."""
    path = Path(f"/dev/shm/cgbt-memcpy-{os.getpid()}")
    size = frames[0].nbytes
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size * slots)
        with mmap.mmap(fd, size * slots) as mapping:
            flat = np.frombuffer(mapping, dtype=np.uint8)
            dsts = [flat[i * size : (i + 1) * size].reshape(frames[0].shape) for i in range(slots)]
            result = bench_memcpy(frames, n, dsts)
            del dsts, flat
        return result
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def _pull_main(endpoint: str, n: int, conn: Connection) -> None:
    """The receiving end of the push/pull baseline, in its own (spawned) process."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 4)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    conn.send("ready")
    first = last = 0.0
    cpu0 = 0.0
    for i in range(n):
        frames = sock.recv_multipart()  # copies into bytes, as the daemon's ingest does
        if i == 0:
            first, cpu0 = time.monotonic(), time.process_time()
        last = time.monotonic()
        assert len(frames[1]) > 0
    conn.send({"first": first, "last": last, "cpu_s": time.process_time() - cpu0})
    sock.close()
    ctx.term()


def bench_pushpull(frames: list[Frame], n: int, workdir: Path) -> dict[str, Any]:
    endpoint = f"ipc://{workdir}/pp.sock"
    parent, child = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(target=_pull_main, args=(endpoint, n, child))
    proc.start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    try:
        if not parent.poll(30):
            raise RuntimeError("push/pull receiver did not start")
        parent.recv()
        sock.setsockopt(zmq.SNDHWM, 4)  # as CaptureClient does for inline frames
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        desc = FrameDesc(1, INLINE_SLOT, 0, 0).pack()
        cpu0 = time.process_time()
        for i in range(n):
            sock.send_multipart([desc, frames[i % len(frames)].data])
        sender_cpu = time.process_time() - cpu0
        if not parent.poll(60):
            raise RuntimeError("push/pull receiver did not finish")
        r = parent.recv()
        proc.join(10)
    finally:
        sock.close(linger=0)
        ctx.term()
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    elapsed = r["last"] - r["first"]
    return {
        "fps": (n - 1) / elapsed,
        "us_per_frame": 1e6 * elapsed / (n - 1),
        "receiver_cpu_us_per_frame": 1e6 * r["cpu_s"] / n,
        "sender_cpu_us_per_frame": 1e6 * sender_cpu / n,
    }


# -- the daemon --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon_config(args: argparse.Namespace, runtime_dir: Path, instance: str) -> dict[str, Any]:
    def stream(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "width": args.width,
            "height": args.height,
            "pixel_format": "nv12",
            "slots": args.slots,
            "on_full": "wait",
            "max_wait_ms": 10000,
            "encoder": {"backend": "null"},
        }

    tcp = stream(TCP) | {"ingest": [f"tcp://127.0.0.1:{free_port()}"]}
    return {
        "instance": instance,
        "runtime_dir": str(runtime_dir),
        "logging": {"level": "warning"},
        "streams": [stream(SHM), tcp],
    }


class Meter:
    """Daemon CPU (main + one worker) and wall time around a run."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.cpu0 = {k: proc_times_s(p) for k, p in pids.items()}
        self.bench0 = time.process_time()
        self.t0 = time.perf_counter()

    def result(self, n: int, end: float, settle_s: float = 0.05) -> dict[str, Any]:
        bench = time.process_time() - self.bench0
        time.sleep(settle_s)  # the last few frames in flight reach the worker
        times = {k: proc_times_s(p) for k, p in self.pids.items()}
        split = {
            k: {
                "user": 1e6 * (t[0] - self.cpu0[k][0]) / n,
                "sys": 1e6 * (t[1] - self.cpu0[k][1]) / n,
            }
            for k, t in times.items()
        }
        cpu = {k: v["user"] + v["sys"] for k, v in split.items()}
        elapsed = end - self.t0
        return {
            "frames": n,
            "fps": n / elapsed,
            "seconds": elapsed,
            "daemon_cpu_us_per_frame": sum(cpu.values()),
            "cpu_us_per_frame": cpu | {"capture": 1e6 * bench / n},
            "cpu_split_us_per_frame": split,
        }


def bench_client(
    daemon: Daemon, name: str, endpoint: str, frames: list[Frame], n: int, args: argparse.Namespace
) -> dict[str, Any]:
    """CaptureClient.send as fast as the worker releases (shm) or takes (tcp) frames."""
    cap = CaptureClient(
        endpoint, name, args.width, args.height, FMT, on_full="wait", max_wait_ms=10000
    )
    try:
        cap.connect(10)
        for i in range(min(50, n)):  # warm-up: fault the ring's pages in
            cap.send(frames[i % len(frames)])
        time.sleep(0.2)
        before = daemon.stream_status(name)["frames_in"]
        pids = {"main": daemon.proc.pid, "worker": int(daemon.stream_status(name)["pid"])}
        meter = Meter(pids)
        for i in range(n):
            cap.send(frames[i % len(frames)])
        result = meter.result(n, time.perf_counter())
        result["capture_drops"] = dict(cap.drops)
    finally:
        cap.close()
    # frames_in comes with the worker's heartbeat: wait for it to show every frame.
    target = before + n - sum(result["capture_drops"].values())
    daemon.wait(lambda: daemon.stream_status(name)["frames_in"] >= target, 10, "frames_in")
    st = daemon.stream_status(name)
    result["worker_frames_in"] = st["frames_in"] - before
    result["worker_drops"] = st["drops"]
    return result


def handshake(sock: zmq.Socket[bytes], args: argparse.Namespace) -> Welcome:
    """HELLO until WELCOME; BUSY (the previous benchmark's capture is still the owner for
    2 s after its last frame) is retried."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        sock.send(Hello(SHM, args.width, args.height, FMT, Transport.SHM).pack())
        if not sock.poll(2000, zmq.POLLIN):
            continue
        frames = sock.recv_multipart()
        if message_kind(frames[0]) == Kind.WELCOME:
            return Welcome.unpack(frames[0])
        code, reason = unpack_refuse(frames)
        if code != RefuseCode.BUSY:
            raise RuntimeError(f"refused: {reason}")
        time.sleep(0.5)
    raise RuntimeError("no WELCOME from the worker")


def bench_descriptors(
    daemon: Daemon, endpoint: str, n: int, args: argparse.Namespace, rate: float = 0.0
) -> dict[str, Any]:
    """The ingest protocol spoken directly: HELLO, then descriptors for slots that are never
    written, keeping every slot in flight (or one every 1/`rate` s, so that the worker wakes
    up for each); ends when the last release is back."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        welcome = handshake(sock, args)
        pids = {"main": daemon.proc.pid, "worker": int(daemon.stream_status(SHM)["pid"])}
        free = list(range(welcome.slot_count))
        not_consumed = 0
        seq = 0

        def one_release() -> None:
            nonlocal not_consumed
            rel = Release.unpack(sock.recv())
            free.append(rel.slot)
            not_consumed += rel.status is not ReleaseStatus.CONSUMED

        meter = Meter(pids)
        t0 = time.perf_counter()
        while seq < n:
            if rate:
                delay = t0 + seq / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                while sock.poll(0, zmq.POLLIN):
                    one_release()
            if not free:
                one_release()
            seq += 1
            sock.send(FrameDesc(welcome.epoch, free.pop(), seq, time.time_ns()).pack())
        while len(free) < welcome.slot_count:
            one_release()
        result = meter.result(n, time.perf_counter(), settle_s=0.0)
        result["not_consumed"] = not_consumed
    finally:
        sock.close(linger=0)
        ctx.term()
    return result


def idle_cpu(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """CPU of the idle daemon, in ms per second."""
    cpu0 = {k: proc_cpu_s(p) for k, p in pids.items()}
    time.sleep(seconds)
    return {k: 1000 * (proc_cpu_s(p) - cpu0[k]) / seconds for k, p in pids.items()}


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--frames", type=int, default=10000, help="frames per daemon run (10000)")
    ap.add_argument("--inline-frames", type=int, default=2000, help="frames per inline run")
    ap.add_argument("--memcpy-frames", type=int, default=2000)
    ap.add_argument("--distinct", type=int, default=16, help="distinct frames, cycled (16)")
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--slots", type=int, default=6)
    ap.add_argument("--paced-rate", type=float, default=500.0, help="paced descriptors/s (500)")
    ap.add_argument("--paced-seconds", type=float, default=4.0)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="cgbt", dir="/tmp"))
    instance = f"bt{os.getpid()}"
    frames = make_frames(args.width, args.height, args.distinct)
    results: dict[str, Any] = {
        "args": vars(args),
        "frame_bytes": frames[0].nbytes,
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(),
        },
    }
    results["memcpy"] = bench_memcpy(frames, args.memcpy_frames)
    results["memcpy_shm"] = bench_memcpy_shm(frames, args.memcpy_frames, args.slots)
    results["pushpull_ipc"] = bench_pushpull(frames, args.inline_frames, workdir)
    daemon: Daemon | None = None
    leftovers: list[str] = []
    try:
        config = daemon_config(args, workdir / "rt", instance)
        daemon = Daemon(config, workdir)
        d = daemon
        d.wait(
            lambda: all(s["state"] == "running" for s in d.status()["streams"]),
            30,
            "all streams running",
        )
        shm_ep = f"ipc://{daemon.runtime_dir}/ingest/{SHM}.sock"
        tcp_ep = config["streams"][1]["ingest"][0]
        pids = {"main": daemon.proc.pid, "worker": int(daemon.stream_status(SHM)["pid"])}
        results["idle_cpu_ms_per_s"] = idle_cpu(pids, 2.0)
        results["shm_client"] = bench_client(daemon, SHM, shm_ep, frames, args.frames, args)
        results["shm_descriptors"] = bench_descriptors(daemon, shm_ep, args.frames, args)
        n_paced = max(100, int(args.paced_rate * args.paced_seconds))
        results["shm_descriptors_paced"] = bench_descriptors(
            daemon, shm_ep, n_paced, args, rate=args.paced_rate
        )
        results["tcp_inline"] = bench_client(daemon, TCP, tcp_ep, frames, args.inline_frames, args)
    finally:
        if daemon is not None:
            leftovers = daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    results["shm_leftovers"] = leftovers
    if args.json:
        print(json.dumps(results, indent=1))
        return
    mc, ms, pp = results["memcpy"], results["memcpy_shm"], results["pushpull_ipc"]
    print(
        f"{args.width}x{args.height} nv12 ({results['frame_bytes']} bytes/frame), "
        f"{os.cpu_count()} CPUs, libzmq {zmq.zmq_version()}"
    )
    print(
        f"{'path':12} {'frames/s':>9} {'us/frame':>9}  daemon CPU us/frame (main + worker)"
        "   capture CPU us/frame"
    )
    for label, r in (("memcpy", mc), (f"memcpy {args.slots}sl", ms)):
        print(f"{label:12} {r['fps']:9.0f} {r['us_per_frame']:9.1f}  ({r['gb_per_s']:.1f} GB/s)")
    print(
        f"{'push/pull':12} {pp['fps']:9.0f} {pp['us_per_frame']:9.1f}  "
        f"receiver {pp['receiver_cpu_us_per_frame']:.1f}"
        f"{'':19}sender {pp['sender_cpu_us_per_frame']:.1f}"
    )
    for key, label in (
        ("shm_client", "shm+client"),
        ("shm_descriptors", "shm desc"),
        ("shm_descriptors_paced", "shm paced"),
        ("tcp_inline", "tcp inline"),
    ):
        r = results[key]
        c = r["cpu_us_per_frame"]
        print(
            f"{label:12} {r['fps']:9.0f} {1e6 / r['fps']:9.1f}  "
            f"{r['daemon_cpu_us_per_frame']:6.1f} = {c['main']:.1f} + {c['worker']:.1f}"
            f"{'':16}{c['capture']:.1f}"
        )
    idle = results["idle_cpu_ms_per_s"]
    print(
        f"idle daemon: main {idle['main']:.1f} ms/s, worker {idle['worker']:.1f} ms/s "
        "(included above)"
    )
    r = results["shm_descriptors"]
    print(
        f"targets: > 2000 descriptors/s: {r['fps']:.0f}; < 100 us daemon CPU/frame: "
        f"{r['daemon_cpu_us_per_frame']:.1f} (desc only), "
        f"{results['shm_client']['daemon_cpu_us_per_frame']:.1f} (with client)"
    )
    if leftovers:
        print(f"removed shm leftovers: {leftovers}")


if __name__ == "__main__":
    main()
