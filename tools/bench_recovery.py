"""Benchmark: how long a stream's output goes silent when its worker is SIGKILLed.

(a) worker start-up: a process that imports what a worker imports and opens the stream's PyAV
    channel, started with the spawn method (a new interpreter) and with the fork server the
    supervisor uses (forked from a process with those modules loaded); start() to ready.
(b) recovery: a daemon with one stream fed by a real `camingest-capture --source testsrc`
    process at --fps, and a subscriber in this process. The worker is SIGKILLed --kills times,
    --interval seconds apart; for each kill, the time from the SIGKILL to the first packet of
    the new worker (its new epoch) at the subscriber. Neither the capture nor the subscriber
    is restarted.
(c) daemon crash: the same, but the main process is SIGKILLed and started again at once (as
    systemd's Restart= would) --daemon-kills times; the time from the new start to the first
    packet of its worker at the same subscriber, fed by the same capture.

    .venv/bin/python tools/bench_recovery.py [--kills 20] [--daemon-kills 5] [--interval 4]

Everything started here is stopped here, and no shared memory is left behind.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import Background, Daemon

from camingest.config.model import DaemonConfig, StreamConfig
from camingest.service.supervisor import worker_context
from camingest.subscribe import Subscriber

STREAM = "cam0"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "p50": round(pct(values_ms, 50), 1),
        "p99": round(pct(values_ms, 99), 1),
        "max": round(max(values_ms), 1),
        "n": len(values_ms),
    }


def config(args: argparse.Namespace, runtime_dir: Path, instance: str) -> dict[str, Any]:
    return {
        "instance": instance,
        "runtime_dir": str(runtime_dir),
        "logging": {"level": "warning"},
        "supervision": {
            "heartbeat_interval_s": 0.5,
            "hang_timeout_s": 5.0,
            "stable_after_s": min(2.0, args.interval / 2),
            "max_restarts": 1000,
        },
        "streams": [
            {
                "name": STREAM,
                "width": args.width,
                "height": args.height,
                "pixel_format": "nv12",
                "fps": args.fps,
                "encoder": {"backend": "pyav", "codec": "h264", "preset": "ultrafast"},
            }
        ],
    }


# -- (a) worker start-up -----------------------------------------------------------------------


def startup_probe(stream: StreamConfig, conn: Connection) -> None:
    """What a new worker does before it can take frames: its imports and the encoder open."""
    from camingest.worker.encoders import open_channel
    from camingest.worker.encoders.base import ChannelParams

    s = stream
    params = ChannelParams(s.name, s.width, s.height, s.pixel_format, s.fps, s.encoder)
    channel = open_channel("pyav", params, lambda packet: None, lambda seq, msg: None)
    conn.send(b"ready")
    channel.close()


def startup_times(method: str, stream: StreamConfig, runs: int) -> list[float]:
    ctx: Any = worker_context() if method == "forkserver" else multiprocessing.get_context(method)
    out = []
    for _ in range(runs):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=startup_probe, args=(stream, child))
        t0 = time.perf_counter()
        proc.start()
        if not parent.poll(30):
            proc.kill()
            raise RuntimeError(f"{method}: the probe did not get ready within 30 s")
        parent.recv()
        out.append((time.perf_counter() - t0) * 1000)
        proc.join(10)
        parent.close()
        child.close()
    return out


# -- (b) recovery ------------------------------------------------------------------------------


class Arrivals(Background):
    """A subscriber thread noting the arrival time (monotonic) of each packet and its epoch."""

    def __init__(self, endpoint: str) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.packets: list[tuple[float, int]] = []
        self.lock = threading.Lock()

    def _run(self) -> None:
        with Subscriber([self.endpoint], [STREAM]) as sub:
            while not self._stop.is_set():
                p = sub.recv(0.1)
                if p is not None and not p.header.eos:
                    with self.lock:
                        self.packets.append((time.monotonic(), p.header.epoch))

    def first_after(self, t0: float, not_epoch: int) -> float | None:
        with self.lock:
            for t, epoch in self.packets:
                if t >= t0 and epoch != not_epoch:
                    return t
        return None

    def last_epoch(self) -> int:
        with self.lock:
            return self.packets[-1][1]


def wait_for(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.005)
    raise RuntimeError(f"timed out waiting for {what}")


def start_capture(workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "camingest.cli.capture",
            "--stream",
            STREAM,
            "--source",
            "testsrc",
            "-c",
            str(workdir / "camingest.yaml"),
            "--log-level",
            "warning",
        ],
        start_new_session=True,
    )


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def recovery_times(args: argparse.Namespace, workdir: Path) -> tuple[list[float], list[float]]:
    cfg = config(args, workdir / "run", "br" + os.urandom(3).hex())
    daemon = Daemon(cfg, workdir)
    capture = None
    arrivals = Arrivals(daemon.out).start()
    dead_groups: list[int] = []
    try:
        daemon.wait_running()
        capture = start_capture(workdir)
        wait_for(lambda: len(arrivals.packets) > args.fps, 30, "packets before the first kill")
        out = []
        for i in range(args.kills):
            pid = int(daemon.stream_status(STREAM)["pid"])
            epoch = arrivals.last_epoch()
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            t1 = wait_for(
                lambda t0=t0, epoch=epoch: arrivals.first_after(t0, epoch),
                30,
                f"packets after kill {i}",
            )
            out.append((t1 - t0) * 1000)
            print(f"kill {i + 1}/{args.kills}: {out[-1]:.0f} ms", file=sys.stderr)
            time.sleep(max(0.0, args.interval - (time.monotonic() - t0)))
        restarts = []
        for i in range(args.daemon_kills):
            epoch = arrivals.last_epoch()
            dead_groups.append(daemon.proc.pid)
            os.kill(daemon.proc.pid, signal.SIGKILL)
            daemon.proc.wait(10)
            t0 = time.monotonic()
            daemon = Daemon(cfg, workdir)
            t1 = wait_for(
                lambda t0=t0, epoch=epoch: arrivals.first_after(t0, epoch),
                30,
                f"packets after daemon restart {i}",
            )
            restarts.append((t1 - t0) * 1000)
            print(
                f"daemon restart {i + 1}/{args.daemon_kills}: {restarts[-1]:.0f} ms",
                file=sys.stderr,
            )
            time.sleep(max(0.0, args.interval - (time.monotonic() - t0)))
        return out, restarts
    finally:
        arrivals.stop()
        if capture is not None:
            capture.terminate()
            capture.wait(10)
        left = daemon.stop()
        if left:
            raise RuntimeError(f"shared memory left behind: {left}")
        stray = [g for g in dead_groups if group_alive(g)]
        if stray:
            raise RuntimeError(f"processes of killed daemons still running: groups {stray}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--daemon-kills", type=int, default=5)
    ap.add_argument("--interval", type=float, default=4.0, help="seconds between kills")
    ap.add_argument("--startups", type=int, default=5, help="start-up probes per method")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="cgbr-", dir="/tmp"))
    try:
        stream = DaemonConfig.model_validate(config(args, workdir / "run", "x")).streams[0]
        startup = {m: startup_times(m, stream, args.startups) for m in ("spawn", "forkserver")}
        recovery, restarts = recovery_times(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = {
        "startup_ms": {m: summary(v) for m, v in startup.items()},
        "startup_ratio_forkserver_to_spawn": round(
            pct(startup["forkserver"], 50) / pct(startup["spawn"], 50), 3
        ),
        "recovery_ms": summary(recovery),
        "recovery_all_ms": [round(v) for v in recovery],
        "daemon_restart_ms": summary(restarts) if restarts else None,
        "daemon_restart_all_ms": [round(v) for v in restarts],
        "stream": f"{args.width}x{args.height} nv12 h264 ultrafast at {args.fps:g} fps",
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"stream: {result['stream']}")
    for method, s in result["startup_ms"].items():
        print(f"worker start-up, {method:10s}: p50 {s['p50']:7.1f} ms  max {s['max']:7.1f} ms")
    print(f"  fork server / spawn (p50): {result['startup_ratio_forkserver_to_spawn']}")
    r = result["recovery_ms"]
    print(
        f"SIGKILL -> first packet of the new worker, {r['n']} kills: "
        f"p50 {r['p50']:.0f} ms  p99 {r['p99']:.0f} ms  max {r['max']:.0f} ms"
    )
    d = result["daemon_restart_ms"]
    if d:
        print(
            f"daemon SIGKILL + start -> first packet, {d['n']} restarts: "
            f"p50 {d['p50']:.0f} ms  max {d['max']:.0f} ms"
        )


if __name__ == "__main__":
    main()
