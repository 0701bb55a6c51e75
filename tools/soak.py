"""Soak: N streams for M minutes with worker kills and subscriber churn, watching for leaks.

    .venv/bin/python tools/soak.py --minutes 10 --streams 4 [--kill-every 20] [--churn]

Each stream is fed by its own `camingest-capture --source testsrc` process and read by one
persistent subscriber. With --kill-every S the worker of a rotating stream is SIGKILLed every
S seconds; with --churn a thread connects and drops subscribers several times a second.
Every --sample-every seconds (15) it samples the RSS, open fds and threads of the daemon, its
fork server and its workers, the /dev/shm entries of the instance, and each stream's counters.

It prints the samples as a table and exits non-zero when a resource grows over the run (the
mean of the last third of the samples above the first third's by more than the allowance: a
trend, not noise), or when a stream lost packets it should not have: a gap in packet_seq within
one worker's epoch at the persistent subscriber, or frames dropped inside the daemon
(fan-in, encoder) rather than by a worker's death. Everything started here is stopped here.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq
from benchlib import Background, Daemon

from camingest.subscribe import Subscriber

# How much each resource may grow between the first and last third of the run.
ALLOWANCE = {"rss_mib": 8.0, "fds": 4, "threads": 2}
# Drops that a killed worker explains (frames in flight to the dead one, the reconnection).
FAULT_DROPS = {"stale_epoch", "capture_reconnecting", "capture_no_slot"}


def proc_stats(pid: int) -> tuple[float, int, int]:
    """RSS in MiB, open fds, threads of one process (zeros if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return 0.0, 0, 0
    values = {k: v.split()[0] for k, _, v in (line.partition(":") for line in status) if v.split()}
    if "VmRSS" not in values:  # a zombie: exited, not yet reaped
        return 0.0, 0, 0
    return int(values["VmRSS"]) / 1024, fds, int(values["Threads"])


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        path = task / "children"
        if path.exists():
            out += [int(c) for c in path.read_text().split()]
    return out


def descendants(pid: int) -> list[int]:
    todo, found = [pid], []
    while todo:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


class Watcher(Background):
    """One persistent subscriber: counts packets per stream and gaps inside an epoch."""

    def __init__(self, endpoint: str, streams: list[str]) -> None:
        super().__init__()
        self.endpoint, self.streams = endpoint, streams
        self.packets = dict.fromkeys(streams, 0)
        self.gaps = dict.fromkeys(streams, 0)
        self._last: dict[str, tuple[int, int]] = {}

    def _run(self) -> None:
        with Subscriber([self.endpoint], self.streams) as sub:
            while not self._stop.is_set():
                p = sub.recv(0.1)
                if p is None or p.header.eos:
                    continue
                h = p.header
                last = self._last.get(p.stream)
                if last is not None and last[0] == h.epoch and h.packet_seq != last[1] + 1:
                    self.gaps[p.stream] += 1
                self._last[p.stream] = (h.epoch, h.packet_seq)
                self.packets[p.stream] += 1


class Churn(Background):
    """Subscribers that come and go several times a second."""

    def __init__(self, endpoint: str, streams: list[str]) -> None:
        super().__init__()
        self.endpoint, self.streams = endpoint, streams
        self.cycles = 0

    def _run(self) -> None:
        rng = random.Random(1)
        with zmq.Context() as ctx:
            while not self._stop.is_set():
                sock = ctx.socket(zmq.SUB)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SUBSCRIBE, rng.choice(self.streams).encode())
                sock.connect(self.endpoint)
                deadline = time.monotonic() + rng.uniform(0.05, 0.3)
                while time.monotonic() < deadline:
                    if sock.poll(20):
                        sock.recv_multipart()
                sock.close()
                self.cycles += 1


def config(args: argparse.Namespace, runtime_dir: Path, instance: str) -> dict[str, Any]:
    return {
        "instance": instance,
        "runtime_dir": str(runtime_dir),
        "logging": {"level": "warning"},
        "supervision": {"max_restarts": 1000, "stable_after_s": 2.0},
        "streams": [
            {
                "name": f"cam{i}",
                "width": args.width,
                "height": args.height,
                "pixel_format": "nv12",
                "fps": args.fps,
                "encoder": {"backend": "pyav", "codec": "h264", "preset": "ultrafast"},
            }
            for i in range(args.streams)
        ],
    }


def sample(daemon: Daemon, t: float) -> dict[str, Any]:
    main = daemon.proc.pid
    status = daemon.status()["streams"]
    workers = {int(s["pid"]) for s in status if s["pid"]}
    others = [p for p in descendants(main) if p not in workers]  # fork server, tracker
    row: dict[str, Any] = {"t_s": round(t)}
    rss, fds, threads = proc_stats(main)
    row |= {"rss_mib": round(rss, 1), "fds": fds, "threads": threads}
    helper = [proc_stats(p) for p in others]
    row["helpers_rss_mib"] = round(sum(h[0] for h in helper), 1)
    w = [proc_stats(p) for p in workers]
    row["workers_rss_mib"] = round(max((x[0] for x in w), default=0.0), 1)
    row["workers_fds"] = max((x[1] for x in w), default=0)
    row["shm"] = len(list(Path("/dev/shm").glob(f"camingest.{daemon.instance}.*")))
    row["streams"] = {
        s["name"]: {
            "frames_in": s["frames_in"],
            "packets_out": s["packets_out"],
            "restarts": s["restarts"],
            "drops": s["drops"],
        }
        for s in status
    }
    return row


def growth(rows: list[dict[str, Any]], key: str) -> float:
    third = max(1, len(rows) // 3)
    first = sum(r[key] for r in rows[:third]) / third
    last = sum(r[key] for r in rows[-third:]) / third
    return float(last - first)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--kill-every", type=float, default=0.0, help="seconds; 0: no kills")
    ap.add_argument("--churn", action="store_true", help="subscribers come and go")
    ap.add_argument("--sample-every", type=float, default=15.0)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--json", action="store_true", help="print the samples as JSON too")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="cgsoak-", dir="/tmp"))
    cfg = config(args, workdir / "run", "sk" + os.urandom(3).hex())
    names = [s["name"] for s in cfg["streams"]]
    daemon = Daemon(cfg, workdir)
    captures: list[subprocess.Popen[bytes]] = []
    watcher = Watcher(daemon.out, names)
    churn = None
    rows: list[dict[str, Any]] = []
    killed: dict[str, int] = dict.fromkeys(names, 0)
    try:
        daemon.wait_running()
        for name in names:
            captures.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "camingest.cli.capture", "--stream", name),
                        *("--source", "testsrc", "-c", str(workdir / "camingest.yaml")),
                        *("--log-level", "error"),
                    ],
                    start_new_session=True,
                )
            )
        watcher.start()
        churn = Churn(daemon.out, names).start() if args.churn else None
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        next_sample, next_kill, victim = t0 + 5.0, t0 + (args.kill_every or 1e18), 0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_kill:
                name = names[victim % len(names)]
                pid = daemon.stream_status(name)["pid"]
                if pid:
                    os.kill(int(pid), signal.SIGKILL)
                    killed[name] += 1
                victim += 1
                next_kill = now + args.kill_every
            if now >= next_sample:
                rows.append(sample(daemon, now - t0))
                r = rows[-1]
                print(
                    f"t={r['t_s']:5d}s rss={r['rss_mib']:6.1f} MiB fds={r['fds']:4d} "
                    f"threads={r['threads']:3d} shm={r['shm']} "
                    f"workers_rss={r['workers_rss_mib']:6.1f} MiB",
                    file=sys.stderr,
                    flush=True,
                )
                next_sample = now + args.sample_every
            time.sleep(0.05)
        rows.append(sample(daemon, time.monotonic() - t0))
    finally:
        if churn is not None:
            churn.stop()
        watcher.stop()
        for c in captures:
            c.terminate()
        for c in captures:
            try:
                c.wait(10)
            except subprocess.TimeoutExpired:
                c.kill()
        left = daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    problems = []
    measured = rows[1:] if len(rows) > 4 else rows  # the first sample is the warm-up
    for key, allowed in ALLOWANCE.items():
        g = growth(measured, key)
        if g > allowed:
            problems.append(f"{key} grew by {g:.1f} over the run (allowed {allowed})")
    final = rows[-1]["streams"] if rows else {}
    for name in names:
        if watcher.gaps[name]:
            problems.append(f"{name}: {watcher.gaps[name]} packet gaps inside an epoch")
        inside = {k: v for k, v in final.get(name, {}).get("drops", {}).items()}
        unexplained = {k: v for k, v in inside.items() if k not in FAULT_DROPS}
        if unexplained:
            problems.append(f"{name}: frames dropped inside the daemon: {unexplained}")
        if not killed[name] and inside:
            problems.append(f"{name}: never faulted, yet dropped {inside}")
    most_rings = max((r["shm"] for r in rows), default=0)
    if most_rings > len(names):  # one ring per capture session: more would be a leak
        problems.append(f"{most_rings} rings in /dev/shm at once for {len(names)} streams")
    if left:
        problems.append(f"shared memory left behind: {left}")

    print(
        f"\n{args.streams} streams {args.width}x{args.height} at {args.fps:g} fps, "
        f"{args.minutes:g} min, kill every {args.kill_every or '-'} s, churn {args.churn}"
    )
    header = [
        "t_s",
        "rss_mib",
        "fds",
        "threads",
        "helpers_rss_mib",
        "workers_rss_mib",
        "workers_fds",
        "shm",
    ]
    print("| " + " | ".join(header) + " | packets_out (all streams) | restarts |")
    print("|" + "---|" * (len(header) + 2))
    for r in rows:
        packets = sum(s["packets_out"] for s in r["streams"].values())
        restarts = sum(s["restarts"] for s in r["streams"].values())
        print("| " + " | ".join(str(r[k]) for k in header) + f" | {packets} | {restarts} |")
    print(f"\npersistent subscriber: packets {watcher.packets}, gaps in an epoch {watcher.gaps}")
    print(f"workers killed: {killed}")
    if churn is not None:
        print(f"subscriber churn: {churn.cycles} connect/disconnect cycles")
    if args.json:
        print(json.dumps(rows, indent=1))
    for key in ALLOWANCE:
        print(f"growth of {key} (last third - first third): {growth(measured, key):+.1f}")
    if problems:
        print("\nFAILED:\n  " + "\n  ".join(problems))
        return 1
    print("\nOK: no resource grew, no stream lost packets it should not have")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
