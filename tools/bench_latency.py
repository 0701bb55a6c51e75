"""Benchmark: latency from the capture's send to the packet's arrival at a subscriber, minus
the encoder's own time, for 1080p NV12 and libx264 (same settings as tools/bench_encode.py).

(a) bare: the daemon's CodecContext in this process, frames paced at --fps; per frame, the
    time of to_av_frame + encode() until its packet is out (the encoder's own time).
(b) daemon: a CaptureClient sends the same frames paced at --fps; a Subscriber thread notes
    each packet's arrival (CLOCK_REALTIME, like the capture timestamp in the header). The
    header's encode-done timestamp splits the path into capture -> packet out of the encoder
    (ingest, conversion, queue, encode) and packet -> subscriber (fan-in and output).

    .venv/bin/python tools/bench_latency.py [--frames 300] [--fps 30] [--json]

The daemon runner, frames and encoder settings come from tools/bench_encode.py, which Python
finds next to this script. Everything started here is stopped here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_encode import STREAM, daemon_config, machine, open_bare, planes_of, stream_config
from benchlib import Daemon, Frame, make_frames

from camingest.capture import CaptureClient
from camingest.config.model import StreamConfig
from camingest.subscribe import Subscriber
from camingest.wire.avframes import to_av_frame
from camingest.wire.pixels import PixelFormat


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "p50": pct(values_ms, 50),
        "p99": pct(values_ms, 99),
        "max": max(values_ms),
        "n": len(values_ms),
    }


def bare_latency(stream: StreamConfig, frames: list[Frame], n: int, fps: float) -> list[float]:
    """Per frame, ms from handing the ndarray over to having its packet (paced at `fps`)."""
    ctx, _ = open_bare(stream)
    w, h = stream.width, stream.height
    out: list[float] = []
    t0 = time.perf_counter()
    for i in range(n):
        delay = t0 + i / fps - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        start = time.perf_counter()
        frame = to_av_frame(PixelFormat.NV12, w, h, planes_of(frames[i % len(frames)], w, h))
        frame.pts = i
        packets = ctx.encode(frame)
        if packets:  # zerolatency: one packet per frame, at once
            out.append(1000 * (time.perf_counter() - start))
    ctx.encode(None)
    return out


class Arrivals(threading.Thread):
    """Notes (capture ts, encode-done ts, arrival ts) of every packet, in ns."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.sub = Subscriber([endpoint], [STREAM])
        self.rows: list[tuple[int, int, int]] = []
        self._stop_evt = threading.Event()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            p = self.sub.recv(0.1)
            if p is not None and not p.header.eos:
                now = time.time_ns()
                self.rows.append((p.header.capture_ts_ns, p.header.encode_ts_ns, now))

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(5)
        self.sub.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--frames", type=int, default=300, help="frames per run (default 300)")
    ap.add_argument("--distinct", type=int, default=60)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--fps", type=float, default=30.0, help="paced send rate (default 30)")
    ap.add_argument("--preset", default="ultrafast")
    ap.add_argument("--tune", default="zerolatency")
    ap.add_argument("--bitrate", type=int, default=4000)
    ap.add_argument("--gop", type=int, default=60)
    ap.add_argument("--slots", type=int, default=6)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="cgbl", dir="/tmp"))
    config = daemon_config(args, workdir / "rt", f"bl{os.getpid()}")
    stream = stream_config(config)
    frames = make_frames(args.width, args.height, args.distinct)
    results: dict[str, Any] = {"machine": machine(), "args": vars(args)}
    results["bare_encode_ms"] = summary(bare_latency(stream, frames, args.frames, args.fps))
    daemon: Daemon | None = None
    cap: CaptureClient | None = None
    arr: Arrivals | None = None
    leftovers: list[str] = []
    try:
        daemon = Daemon(config, workdir)
        daemon.wait_running()
        arr = Arrivals(daemon.out)
        arr.start()
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
        for i in range(30):  # warm-up, not measured
            cap.send(frames[i % len(frames)])
        time.sleep(1.0)
        arr.rows.clear()
        t0 = time.perf_counter()
        for i in range(args.frames):
            delay = t0 + i / args.fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            cap.send(frames[i % len(frames)])
        time.sleep(1.0)
        st = daemon.stream_status(STREAM)
        results["worker_reported_ms"] = {"p50": st["latency_p50_ms"], "p99": st["latency_p99_ms"]}
        results["capture_drops"] = cap.stats["dropped"]
    finally:
        if cap is not None:
            cap.close()
        if arr is not None:
            arr.stop()
        if daemon is not None:
            leftovers = daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    rows = arr.rows if arr is not None else []
    results["packets"] = len(rows)
    results["send_to_subscriber_ms"] = summary([(a - c) / 1e6 for c, _, a in rows])
    results["send_to_encoded_ms"] = summary([(e - c) / 1e6 for c, e, _ in rows])
    results["encoded_to_subscriber_ms"] = summary([(a - e) / 1e6 for _, e, a in rows])
    bare = results["bare_encode_ms"]
    total = results["send_to_subscriber_ms"]
    results["daemon_overhead_ms"] = {q: total[q] - bare[q] for q in ("p50", "p99")}
    results["shm_leftovers"] = leftovers
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(
        f"{args.width}x{args.height} nv12, libx264 {args.preset}/{args.tune}, "
        f"{args.frames} frames paced at {args.fps:g} fps, {len(rows)} packets received, "
        f"{results['capture_drops']} capture drops"
    )
    print(f"{'ms':34} {'p50':>7} {'p99':>7} {'max':>7}")
    for key, label in (
        ("bare_encode_ms", "bare encoder (copy + encode)"),
        ("send_to_subscriber_ms", "daemon: send -> subscriber"),
        ("send_to_encoded_ms", "  send -> packet encoded"),
        ("encoded_to_subscriber_ms", "  packet encoded -> subscriber"),
    ):
        r = results[key]
        print(f"{label:34} {r['p50']:7.2f} {r['p99']:7.2f} {r['max']:7.2f}")
    o = results["daemon_overhead_ms"]
    print(f"{'daemon minus bare encoder':34} {o['p50']:7.2f} {o['p99']:7.2f}")
    w = results["worker_reported_ms"]
    print(f"(worker's own encode latency from status: p50 {w['p50']:.2f}, p99 {w['p99']:.2f})")
    if leftovers:
        print(f"removed shm leftovers: {leftovers}")


if __name__ == "__main__":
    main()
