"""What the benchmarks share: a daemon in its own session that always cleans up, test
frames, and CPU time of a process. A helper of tools/bench_*.py, not part of the package."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import yaml

from camingest.errors import ControlError
from camingest.service.control import call
from camingest.wire.pixels import PixelFormat, packed_shape

Frame = npt.NDArray[np.uint8]


def make_frames(width: int, height: int, count: int) -> list[Frame]:
    """`count` distinct NV12 frames in the packed layout CaptureClient.send takes: gradients
    with a moving box, so consecutive frames differ and the encoder has real work."""
    y, x = np.ogrid[0:height, 0:width]
    cy, cx = np.ogrid[0 : height // 2, 0 : width // 2]
    frames = []
    for i in range(count):
        luma = ((x * 2 + y + i * 4) % 200 + 28).astype(np.uint8)
        bx, by = (i * 17) % (width - 64), (i * 11) % (height - 64)
        luma[by : by + 64, bx : bx + 64] = 235
        uv = np.empty((height // 2, width), dtype=np.uint8)
        uv[:, 0::2] = ((cx + i) % 64 + 96).astype(np.uint8)
        uv[:, 1::2] = ((cy * 2 + i) % 64 + 96).astype(np.uint8)
        frame = np.concatenate([luma.reshape(-1), uv.reshape(-1)])
        frames.append(frame.reshape(packed_shape(PixelFormat.NV12, width, height)))
    return frames


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Daemon:
    """A camingest daemon in its own session; stop() always cleans up."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.runtime_dir = Path(config["runtime_dir"])
        self.instance = str(config["instance"])
        self.log_path = workdir / "daemon.log"
        path = workdir / "camingest.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        env = os.environ | {"PYTHONUNBUFFERED": "1"}
        env.pop("NOTIFY_SOCKET", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "camingest",
                    "run",
                    "-c",
                    str(path),
                    "--log-target",
                    "stderr",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    @property
    def control(self) -> Path:
        return self.runtime_dir / "control.sock"

    def ingest(self, stream: str) -> str:
        return f"ipc://{self.runtime_dir}/ingest/{stream}.sock"

    @property
    def out(self) -> str:
        return f"ipc://{self.runtime_dir}/out.sock"

    def status(self) -> dict[str, Any]:
        return cast(dict[str, Any], call(self.control, "status", timeout_s=5.0))

    def stream_status(self, name: str) -> dict[str, Any]:
        return next(s for s in self.status()["streams"] if s["name"] == name)

    def wait(self, pred: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if pred():
                    return
            except ControlError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}:\n{self.log()}")
            time.sleep(0.05)

    def wait_running(self, timeout: float = 30.0) -> None:
        self.wait(
            lambda: all(s["state"] == "running" for s in self.status()["streams"]),
            timeout,
            "all streams running",
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> list[str]:
        """SIGTERM, then SIGKILL of the whole group; returns (and removes) shm leftovers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                print("daemon did not stop within 15 s: SIGKILL", file=sys.stderr)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers too, if any outlived it
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)
        leftovers = sorted(str(p) for p in Path("/dev/shm").glob(f"camingest.{self.instance}.*"))
        for p in leftovers:
            Path(p).unlink(missing_ok=True)
        return leftovers


class Background:
    """A daemon thread running `self._run()` until stop(); start() returns self."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Any:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        raise NotImplementedError
