"""systemd service notifications (sd_notify): READY, STATUS, WATCHDOG, RELOADING, STOPPING.

A thin wrapper over `systemd.daemon.notify` (systemd-python, which calls libsystemd's
sd_notify). Every method is a no-op returning False when NOTIFY_SOCKET is unset, so the daemon
calls them unconditionally. The environment is passed in, never read from a module global.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

import systemd.daemon as sd_daemon

logger = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify datagrams to the socket named by NOTIFY_SOCKET in `env`."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env: Mapping[str, str] = os.environ if env is None else env
        self._socket = self._env.get("NOTIFY_SOCKET", "")
        self._failed = False

    @property
    def enabled(self) -> bool:
        return bool(self._socket)

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1: half of WATCHDOG_USEC, as sd_watchdog_enabled(3)
        recommends; None when the watchdog is off or meant for another process."""
        usec = self._env.get("WATCHDOG_USEC", "")
        pid = self._env.get("WATCHDOG_PID", "")
        if pid and pid != str(os.getpid()):
            return None
        try:
            value = int(usec)
        except ValueError:
            return None
        return value / 2e6 if value > 0 else None

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (also after a reload), optionally with a STATUS= line in the same datagram."""
        if status is None:
            return self._send("READY=1")
        return self._send(f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, text: str) -> bool:
        return self._send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self._send("WATCHDOG=1")

    def reloading(self) -> bool:
        # Type=notify-reload (systemd >= 253) requires MONOTONIC_USEC in the same datagram as
        # RELOADING=1, so systemd can tell this reload from an older one.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self._send("STOPPING=1")

    def _send(self, message: str) -> bool:
        if not self._socket:
            return False
        try:
            if self._socket == os.environ.get("NOTIFY_SOCKET"):
                # libsystemd reads NOTIFY_SOCKET with getenv(), i.e. from the process
                # environment; it handles both "/path" and abstract "@name" sockets.
                return bool(sd_daemon.notify(message))
            # An injected environment that is not the process's: sd_notify cannot be told
            # where to send, so send the same single datagram ourselves.
            _send_datagram(self._socket, message.encode())
            return True
        except OSError as exc:
            # A notify failure must not take the daemon down; systemd's watchdog (if enabled)
            # will notice the silence. Warn once, then stay quiet.
            level = logging.DEBUG if self._failed else logging.WARNING
            logger.log(level, "sd_notify to %s failed: %s", self._socket, exc)
            self._failed = True
            return False


def _send_datagram(address: str, payload: bytes) -> None:
    if address.startswith("@"):
        target = "\0" + address[1:]  # abstract namespace, as sd_notify(3) documents
    elif address.startswith("/"):
        target = address
    else:
        raise OSError(f"unsupported NOTIFY_SOCKET address {address!r}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(payload, target)


def _one_line(text: str) -> str:
    # A newline would start another assignment in the datagram (e.g. a stray READY=1).
    return " ".join(text.splitlines())
