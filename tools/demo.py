"""The demo: the daemon on config/camingest.yaml, a testsrc capture per stream, a few seconds
recorded of each, the status table, then everything stopped. Run it with tools/demo.sh."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import av

from camingest.config.load import load_config
from camingest.errors import ControlError
from camingest.service.control import call
from camingest.service.status import render_table

REPO = Path(__file__).resolve().parent.parent


def wait_running(control: Path, daemon: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit(f"demo: the daemon exited with {daemon.returncode}")
        try:
            if all(s["state"] == "running" for s in call(control, "status")["streams"]):
                return
        except ControlError:
            pass
        time.sleep(0.2)
    raise SystemExit("demo: the streams did not start in time")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def describe(path: Path) -> str:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        seconds = float(container.duration or 0) / 1e6
        return (
            f"{path}: {stream.codec_context.name} {stream.codec_context.width}x"
            f"{stream.codec_context.height}, {frames} frames, {seconds:.1f} s"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-c", "--config", default=str(REPO / "config" / "camingest.yaml"))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", default=str(REPO / "demo-out"))
    args = parser.parse_args()
    config = load_config(args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "camingest"]
    print(f"demo: starting camingest on {args.config}")
    daemon = subprocess.Popen([*cli, "run", "-c", args.config, "--log-target", "stderr"])
    children: list[subprocess.Popen[bytes]] = []
    try:
        wait_running(config.control_path, daemon, 60)
        recordings = []
        for s in config.streams:
            path = out / f"{s.name}.mp4"
            recordings.append(path)
            children.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "camingest.cli.record",
                        "--stream",
                        s.name,
                        "--out",
                        str(path),
                        "-c",
                        args.config,
                        "--seconds",
                        str(args.seconds),
                    ]
                )
            )
        time.sleep(0.5)  # the recorders subscribe first, so they start at the first keyframe
        captures = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "camingest.cli.capture",
                    "--stream",
                    s.name,
                    "--source",
                    "testsrc",
                    "-c",
                    args.config,
                ]
            )
            for s in config.streams
        ]
        children += captures
        recorders = children[: len(config.streams)]
        time.sleep(args.seconds * 0.8)  # the table while everything is running
        table = render_table(call(config.control_path, "status"))
        for rec in recorders:
            rec.wait(args.seconds + 60)
        print(f"\n{table}\n")
        for cap in captures:
            stop(cap, signal.SIGINT)
        code = stop(daemon)
        print(f"demo: camingest stopped (exit {code})")
        print("demo: recordings:")
        for path in recordings:
            print("  " + (describe(path) if path.exists() else f"{path}: missing"))
        failed = code != 0 or any(r.returncode != 0 for r in recorders)
        return 1 if failed or not all(p.exists() for p in recordings) else 0
    finally:
        for child in children:
            stop(child, signal.SIGINT)
        stop(daemon)


if __name__ == "__main__":
    raise SystemExit(main())
