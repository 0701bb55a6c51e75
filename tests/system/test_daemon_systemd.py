"""`camingest run` as systemd sees it: notifications through a real NOTIFY_SOCKET, exit codes,
the runtime-dir lock."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from helpers import start_daemon, wait_until

pytestmark = pytest.mark.system


class NotifySocket:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._cursor = 0

    def drain(self, seconds: float = 0.0) -> list[str]:
        deadline = time.monotonic() + seconds
        new = []
        while True:
            try:
                msg = self.sock.recv(4096).decode()
                self.messages.append((time.monotonic(), msg))
                new.append(msg)
            except TimeoutError:
                if time.monotonic() >= deadline:
                    return new

    def wait_for(self, prefix: str, timeout: float) -> str:
        """The next message (after the last one waited for) that starts with `prefix`."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self._cursor, len(self.messages)):
                if self.messages[i][1].startswith(prefix):
                    self._cursor = i + 1
                    return self.messages[i][1]
            if time.monotonic() >= deadline:
                break
            self.drain(0.1)
        raise AssertionError(f"no {prefix!r} within {timeout} s; got {self.kinds()}")

    def skip_seen(self) -> None:
        self.drain()
        self._cursor = len(self.messages)

    def kinds(self) -> list[str]:
        return [m.split("=", 1)[0] for _, m in self.messages]

    def close(self) -> None:
        self.sock.close()


@pytest.mark.timeout(120)
def test_notify_sequence_and_watchdog(make_daemon, stream, workdir):
    path = str(workdir / "notify.sock")
    notify = NotifySocket(path)
    try:
        env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
        daemon = make_daemon(
            [stream("cam0"), stream("cam1")],
            env=env,
            wait=False,
            supervision={"hang_timeout_s": 4.0},
        )
        notify.wait_for("READY=1", 30)
        notify.wait_for("STATUS=", 10)
        notify.wait_for("WATCHDOG=1", 5)

        # Watchdog pings stop while a worker is hung, and come back once it is replaced.
        pid = daemon.worker_pid("cam0")
        os.kill(pid, signal.SIGSTOP)
        time.sleep(1.5)  # the heartbeat gap that makes the daemon unhealthy
        notify.drain()
        mark = len(notify.messages)
        notify.drain(1.5)
        hung = [m for _, m in notify.messages[mark:]]
        assert not any(m.startswith("WATCHDOG=1") for m in hung), hung
        wait_until(lambda: daemon.stream_status("cam0")["restarts"] == 1, 15, "a restart")
        notify.skip_seen()
        notify.wait_for("WATCHDOG=1", 10)

        daemon.proc.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING=1", 10)
        assert "MONOTONIC_USEC=" in reloading
        usec = int(reloading.split("MONOTONIC_USEC=")[1].split()[0])
        assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 30
        notify.wait_for("READY=1", 10)
        assert daemon.stop() == 0
        notify.wait_for("STOPPING=1", 5)
        order = [k for k in notify.kinds() if k in ("READY", "RELOADING", "STOPPING")]
        assert order == ["READY", "RELOADING", "READY", "STOPPING"], notify.kinds()
        first = {k: notify.kinds().index(k) for k in ("READY", "STATUS", "WATCHDOG")}
        assert first["READY"] < first["WATCHDOG"]
    finally:
        notify.close()


@pytest.mark.timeout(60)
def test_bad_config_exits_3_with_one_line(workdir):
    cfg = workdir / "bad.yaml"
    cfg.write_text("streams:\n  - name: cam0\n    width: 641\n    height: 480\n")
    result = subprocess.run(
        [sys.executable, "-m", "camingest", "run", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 3
    assert "bad.yaml:3: streams[0].width" in result.stderr
    check = subprocess.run(
        [sys.executable, "-m", "camingest", "check", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 3
    assert "streams[0].width" in check.stderr


@pytest.mark.timeout(60)
def test_second_instance_on_the_same_runtime_dir_refuses(make_daemon, stream, workdir):
    daemon = make_daemon([stream("cam0")])
    other_dir = workdir / "second"
    other_dir.mkdir()
    second = start_daemon(dict(daemon.config), other_dir)
    try:
        assert second.proc.wait(30) == 4
        assert "another camingest is running" in second.log()
    finally:
        if second.proc.poll() is None:
            second.proc.kill()
    assert daemon.stream_status("cam0")["state"] == "running"


@pytest.mark.timeout(60)
def test_status_command_and_metrics_endpoint(make_daemon, stream):
    import json
    import urllib.request

    from helpers import Feeder

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = make_daemon([stream("cam0")], metrics={"enabled": True, "port": port})
    feed = Feeder(daemon, "cam0").start()
    wait_until(lambda: daemon.stream_status("cam0")["frames_in"] >= 20, 15, "frames")
    feed.stop()
    cli = [sys.executable, "-m", "camingest"]
    table = subprocess.run(
        [*cli, "status", "-c", str(daemon.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "STREAM" in table and "cam0" in table and "running" in table
    raw = subprocess.run(
        [*cli, "status", "--json", "--socket", str(daemon.control)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert json.loads(raw)["streams"][0]["name"] == "cam0"

    def frames_in() -> float:
        url = f"http://127.0.0.1:{port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith('camingest_frames_in_total{stream="cam0"}'):
                return float(line.split()[-1])
        return 0.0

    # The metrics follow the workers' heartbeats (every 2 s), so they may lag the status.
    wait_until(lambda: frames_in() >= 20, 15, "per-stream metrics")
    bad = subprocess.run(
        [*cli, "keyframe", "nosuch", "--socket", str(daemon.control)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode != 0 and "nosuch" in bad.stderr
