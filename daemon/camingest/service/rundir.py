"""The runtime directory: the lock that keeps one daemon per directory, and the sweep of what
a daemon leaves there and in /dev/shm (its rings, its ipc socket files)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from camingest.config.model import DaemonConfig
from camingest.errors import ResourceError
from camingest.wire.ring import ring_prefix, sweep

LOCK_FILE = "camingest.lock"


def lock_runtime_dir(runtime_dir: Path) -> Callable[[], None]:
    """Create the directory and take its lock; returns the function that releases it."""
    runtime_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    fd = os.open(runtime_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ResourceError(
            f"another camingest is running with runtime dir {runtime_dir}",
            hint="stop it, or give this instance its own runtime_dir",
        ) from None

    def release() -> None:
        # Never unlinked: a second instance that opened this file must keep seeing the lock
        # of the same inode, or two daemons could both think they hold it.
        os.close(fd)

    return release


def sweep_leftovers(config: DaemonConfig, instance: str) -> None:
    """Remove this instance's rings and the ipc socket files its config names."""
    sweep(ring_prefix(instance))
    paths = [config.fanin_endpoint, config.command_endpoint, *config.output_endpoints]
    for s in config.streams:
        paths += config.ingest_endpoints(s)
    for ep in paths:
        if ep.startswith("ipc://"):
            Path(ep[6:]).unlink(missing_ok=True)
    ingest_dir = config.runtime_dir / "ingest"
    if ingest_dir.is_dir() and not any(ingest_dir.iterdir()):
        ingest_dir.rmdir()
