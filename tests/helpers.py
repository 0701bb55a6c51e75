"""Shared test helpers: deadlines, test patterns, decoding Annex-B, PSNR, a daemon runner."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import yaml

from camingest.errors import ControlError
from camingest.service.control import call
from camingest.wire.avframes import convert, from_av_frame
from camingest.wire.pixels import PixelFormat, packed_shape

REPO = Path(__file__).resolve().parent.parent
ACL_SIM = REPO / "tests" / "acl_sim"


def wait_until(pred: Callable[[], Any], timeout: float, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


# -- test pattern ------------------------------------------------------------------------------


def pattern_planes(fmt: PixelFormat, width: int, height: int, i: int) -> tuple[np.ndarray, ...]:
    """Frame `i` of a moving test pattern in `fmt`: smooth gradients plus a moving box, so an
    encoder at a sane bitrate reaches a high PSNR and consecutive frames differ."""
    y, x = np.mgrid[0:height, 0:width]
    luma = ((x * 2 + y + i * 4) % 200 + 28).astype(np.uint8)
    bx, by = (i * 5) % max(1, width - 24), (i * 3) % max(1, height - 24)
    luma[by : by + 24, bx : bx + 24] = 235
    cy, cx = np.mgrid[0 : (height + 1) // 2, 0 : (width + 1) // 2]
    u = ((cx + i) % 64 + 96).astype(np.uint8)
    v = ((cy * 2 + i) % 64 + 96).astype(np.uint8)
    i420 = (luma, u, v)
    if fmt is PixelFormat.I420:
        return i420
    return convert(PixelFormat.I420, width, height, i420, fmt)


def packed(planes: Iterable[np.ndarray]) -> np.ndarray:
    return np.concatenate([p.reshape(-1) for p in planes])


def as_capture_array(fmt: PixelFormat, width: int, height: int, planes: tuple[np.ndarray, ...]):
    return packed(planes).reshape(packed_shape(fmt, width, height))


def luma_of(
    fmt: PixelFormat, width: int, height: int, planes: tuple[np.ndarray, ...]
) -> np.ndarray:
    """The Y plane the encoder sees for a frame sent in `fmt` (converted like the worker does)."""
    if fmt in (PixelFormat.NV12, PixelFormat.NV21, PixelFormat.I420):
        return planes[0]
    return convert(fmt, width, height, planes, PixelFormat.I420)[0]


# -- decoding ----------------------------------------------------------------------------------


def decode_annexb(data: bytes, codec: str) -> list[np.ndarray]:
    """Decode an Annex-B byte stream with FFmpeg; returns each frame's Y plane in order."""
    ctx = av.CodecContext.create("hevc" if codec in ("h265", "hevc") else "h264", "r")
    frames = []
    for packet in [*ctx.parse(data), *ctx.parse(None), None]:
        for frame in ctx.decode(packet):
            frames.append(from_av_frame(frame.reformat(format="yuv420p"), PixelFormat.I420)[0])
    return frames


def decode_file(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [
            from_av_frame(f.reformat(format="yuv420p"), PixelFormat.I420)[0]
            for f in container.decode(video=0)
        ]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


# -- a daemon in a subprocess ------------------------------------------------------------------


@dataclass
class DaemonProc:
    config_path: Path
    config: dict[str, Any]
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def runtime_dir(self) -> Path:
        return Path(self.config["runtime_dir"])

    @property
    def control(self) -> Path:
        return self.runtime_dir / "control.sock"

    @property
    def out(self) -> str:
        return f"ipc://{self.runtime_dir}/out.sock"

    def ingest(self, stream: str) -> str:
        return f"ipc://{self.runtime_dir}/ingest/{stream}.sock"

    def stream(self, name: str) -> dict[str, Any]:
        return next(s for s in self.config["streams"] if s["name"] == name)

    def status(self) -> dict[str, Any]:
        return call(self.control, "status", timeout_s=5.0)

    def stream_status(self, name: str) -> dict[str, Any]:
        return next(s for s in self.status()["streams"] if s["name"] == name)

    def wait_running(self, timeout: float = 30.0) -> None:
        def running() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return all(s["state"] == "running" for s in self.status()["streams"])
            except ControlError:
                return False

        wait_until(running, timeout, "all streams running")

    def wait_subscribers(self, name: str, n: int = 1, timeout: float = 10.0) -> None:
        wait_until(
            lambda: (self.stream_status(name)["subscribers"] or 0) >= n,
            timeout,
            f"{n} subscriber(s) of {name}",
        )

    def worker_pid(self, name: str) -> int:
        return int(self.stream_status(name)["pid"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                log = self.log()
                raise AssertionError(f"daemon did not stop within {timeout} s:\n{log}") from None
        return self.proc.returncode


def write_config(path: Path, config: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def start_daemon(
    config: dict[str, Any],
    workdir: Path,
    env: dict[str, str] | None = None,
    extra_args: Iterable[str] = (),
) -> DaemonProc:
    config_path = workdir / "camingest.yaml"
    write_config(config_path, config)
    log_path = workdir / "daemon.log"
    full_env = os.environ | {"PYTHONUNBUFFERED": "1"} | (env or {})
    full_env.pop("NOTIFY_SOCKET", None) if env is None or "NOTIFY_SOCKET" not in env else None
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "camingest",
                "run",
                "-c",
                str(config_path),
                "--log-target",
                "stderr",
                *extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )
    return DaemonProc(config_path, config, proc, log_path, full_env)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Make sure nothing of a test's daemon outlives the test."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def shm_segments(instance: str) -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"camingest.{instance}.*"))


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)


class Feeder:
    """Feeds one stream from a thread at about `fps` until stopped; remembers the Y plane of
    every frame it handed over, by the capture's sequence number."""

    def __init__(self, daemon: DaemonProc, name: str, fps: float = 60.0) -> None:
        import threading

        self.daemon, self.name, self.fps = daemon, name, fps
        self.sent: dict[int, np.ndarray] = {}
        self.dropped = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        from camingest.capture import CaptureClient

        s = self.daemon.stream(self.name)
        fmt, w, h = PixelFormat(s["pixel_format"]), s["width"], s["height"]
        try:
            cap = CaptureClient(self.daemon.ingest(self.name), self.name, w, h, fmt)
            cap.connect(10)
            i = 0
            while not self._stop.is_set():
                planes = pattern_planes(fmt, w, h, i)
                if cap.send(as_capture_array(fmt, w, h, planes)):
                    self.sent[cap._seq] = luma_of(fmt, w, h, planes)
                else:
                    self.dropped += 1
                i += 1
                time.sleep(1 / self.fps)
            cap.close()
        except BaseException as exc:
            self.error = exc


class Collector:
    """Subscribes from a thread and keeps every packet it yields, per stream."""

    def __init__(self, endpoint: str, streams: list[str]) -> None:
        import threading

        self.endpoint, self.streams = endpoint, streams
        self.packets: dict[str, list[Any]] = {s: [] for s in streams}
        self.eos: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def start(self) -> Collector:
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        from camingest.subscribe import Subscriber

        with Subscriber([self.endpoint], self.streams) as sub:
            self._ready.set()
            while not self._stop.is_set():
                p = sub.recv(0.1)
                if p is None:
                    continue
                if p.header.eos:
                    self.eos.add(p.stream)
                else:
                    self.packets[p.stream].append(p)


def check_decodes(packets: list[Any], sent: dict[int, np.ndarray], codec: str) -> list[float]:
    """Decode the packets as one stream; every packet gives one picture matching its source."""
    decoded = decode_annexb(b"".join(p.data for p in packets), codec)
    assert len(decoded) == len(packets), f"{len(decoded)} pictures from {len(packets)} packets"
    scores = [psnr(pic, sent[p.header.frame_seq]) for pic, p in zip(decoded, packets, strict=True)]
    assert min(scores) > 30.0, f"PSNR down to {min(scores):.1f} dB"
    return scores


# -- configs of the process tests ---------------------------------------------------------------


def stream_cfg(
    name: str,
    width: int = 160,
    height: int = 120,
    pixel_format: str = "nv12",
    codec: str = "h264",
    **extra: Any,
) -> dict[str, Any]:
    encoder = {"codec": codec, **extra.pop("encoder", {})}
    return {
        "name": name,
        "width": width,
        "height": height,
        "pixel_format": pixel_format,
        "fps": 30,
        "encoder": encoder,
        **extra,
    }


def daemon_cfg(workdir: Path, streams: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "runtime_dir": str(workdir / "run"),
        "instance": "t" + secrets.token_hex(4),
        "defaults": {
            "encoder": {
                "backend": "pyav",
                "preset": "ultrafast",
                "rate_control": "cqp",
                "qp": 22,
                "gop": 30,
            },
        },
        "supervision": {
            "heartbeat_interval_s": 0.2,
            "hang_timeout_s": 3.0,
            "backoff_initial_s": 0.2,
            "stop_timeout_s": 5.0,
        },
        "streams": streams,
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = config[key] | value
        else:
            config[key] = value
    return config
