"""Signal handlers that only record the signal; the daemon's loop acts on it."""

from __future__ import annotations

import signal
import time
from collections import deque
from types import FrameType, TracebackType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP = (signal.SIGINT, signal.SIGTERM)


class SignalQueue:
    """Installs recording handlers on enter and restores the previous ones on exit."""

    def __init__(self, signals: tuple[signal.Signals, ...] = HANDLED) -> None:
        self.signals = signals
        self._pending: deque[signal.Signals] = deque()
        self._previous: dict[signal.Signals, Any] = {}

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self._pending.append(signal.Signals(signum))

    def pop_all(self) -> list[signal.Signals]:
        out = []
        while self._pending:
            out.append(self._pending.popleft())
        return out

    def requested(self) -> bool:
        """A signal arrived and has not been popped (for loops that only need to stop)."""
        return bool(self._pending)

    def sleep(self, seconds: float) -> None:
        """Sleep in short steps, so that a signal ends the wait promptly."""
        end = time.monotonic() + seconds
        while not self._pending:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))

    def push(self, sig: signal.Signals) -> None:
        """Queue a signal as if it had been received (tests, control commands)."""
        self._pending.append(sig)

    def __enter__(self) -> SignalQueue:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
