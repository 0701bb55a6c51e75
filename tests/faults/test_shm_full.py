"""/dev/shm too small for a stream's ring: that stream's capture is refused with an error naming
the stream and the size needed; the other streams run on.

The daemon runs in a mount namespace of its own whose /dev/shm is a small tmpfs (the test
makes it with unshare), and the captures join that namespace with nsenter."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from helpers import Collector, DaemonProc, daemon_cfg, kill_group, wait_until, write_config

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"),
        reason="needs root, unshare and nsenter to give the daemon a small /dev/shm",
    ),
]

SHM_MB = 16

CAPTURE = """
import sys, time, numpy as np
from camingest.capture import CaptureClient
from camingest.errors import CaptureError
endpoint, name = sys.argv[1], sys.argv[2]
w, h, n = (int(a) for a in sys.argv[3:6])
c = CaptureClient(endpoint, name, w, h, "nv12", on_full="wait", max_wait_ms=2000)
try:
    c.connect(10)
except CaptureError as exc:
    print("refused:", exc, flush=True)
    sys.exit(3)
for i in range(n):
    c.send(np.full((h * 3 // 2, w), i % 250, np.uint8))
c.close()
print("sent", n, flush=True)
"""


def in_namespace(pid: int, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-m", *cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(120)
def test_a_ring_that_does_not_fit_is_refused_by_name_and_size(workdir, stream, leaks):
    config = daemon_cfg(workdir, [stream("small", 160, 120), stream("big", 1920, 1080)])
    path = workdir / "camingest.yaml"
    write_config(path, config)
    log_path = workdir / "daemon.log"
    script = (
        f"mount -t tmpfs -o size={SHM_MB}m,mode=1777 tmpfs /dev/shm && "
        f'exec "$0" -m camingest run -c "$1" --log-target stderr'
    )
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                sys.executable,
                str(path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    daemon = DaemonProc(path, config, proc, log_path)
    try:
        daemon.wait_running()
        # Something else fills the namespace's /dev/shm: 8 MiB free, the big ring needs ~12.
        filled = in_namespace(proc.pid, "fallocate", "-l", f"{SHM_MB - 8}m", "/dev/shm/filler")
        assert filled.returncode == 0, filled.stderr
        col = Collector(daemon.out, ["small"]).start()
        daemon.wait_subscribers("small")

        big = in_namespace(
            proc.pid,
            sys.executable,
            "-c",
            CAPTURE,
            daemon.ingest("big"),
            "big",
            "1920",
            "1080",
            "5",
        )
        assert big.returncode == 3, big.stdout + big.stderr
        assert "stream big" in big.stdout and "needs 12" in big.stdout, big.stdout
        assert "stream big: ring" in daemon.log()

        small = in_namespace(
            proc.pid,
            sys.executable,
            "-c",
            CAPTURE,
            daemon.ingest("small"),
            "small",
            "160",
            "120",
            "30",
        )
        assert small.returncode == 0, small.stdout + small.stderr
        wait_until(lambda: len(col.packets["small"]) >= 30, 20, "every frame of the small stream")
        col.stop()
        assert daemon.stream_status("small")["restarts"] == 0
        assert daemon.stream_status("big")["state"] == "running"  # it waits for a capture
        in_namespace(proc.pid, "rm", "-f", "/dev/shm/filler")
    except BaseException:
        kill_group(proc)
        raise
    leaks.finish(daemon)
