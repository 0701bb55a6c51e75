"""What the fault tests share. Every one ends with Leaks.finish: the daemon stops cleanly, no
process of it is left, no new /dev/shm entry exists, and its file descriptors did not grow
with the faults."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from helpers import DaemonProc, wait_until

SHM = Path("/dev/shm")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class Leaks:
    """Take `baseline(daemon)` once the daemon is warm (captures and subscribers connected),
    then `finish(daemon)` after the faults."""

    def __init__(self) -> None:
        self.shm_before = set(os.listdir(SHM))
        self.fds: int | None = None

    def baseline(self, daemon: DaemonProc) -> None:
        self.fds = fd_count(daemon.proc.pid)

    def finish(self, daemon: DaemonProc) -> None:
        if self.fds is not None:
            # The same sockets as before the faults: replaced workers and captures left none.
            assert fd_count(daemon.proc.pid) <= self.fds, "the daemon's fds grew"
        pgid = daemon.proc.pid
        assert daemon.stop() == 0, daemon.log()[-3000:]
        wait_until(lambda: not group_alive(pgid), 10, "every process of the daemon to exit")
        # Any new entry counts (semaphores, stray segments), except the rings of other daemons
        # that another test run on this machine may have at the moment.
        ours = f"camingest.{daemon.config['instance']}."
        new = {
            n
            for n in set(os.listdir(SHM)) - self.shm_before
            if not n.startswith("camingest.") or n.startswith(ours)
        }
        assert not new, f"new /dev/shm entries: {sorted(new)}"


def kill_quietly(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} is still there"
        time.sleep(0.02)
