"""When a crashed worker starts again: exponential backoff, and a flap limit after which the
stream is marked failed and left alone (circus's flapping, frigate's restarting-too-fast)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from camingest.config.model import SupervisionConfig


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    max_restarts: int
    window_s: float
    backoff_initial_s: float
    backoff_max_s: float
    stable_after_s: float

    @classmethod
    def from_config(cls, config: SupervisionConfig) -> RestartPolicy:
        return cls(
            max_restarts=config.max_restarts,
            window_s=config.restart_window_s,
            backoff_initial_s=config.backoff_initial_s,
            backoff_max_s=config.backoff_max_s,
            stable_after_s=config.stable_after_s,
        )

    def after_crash(self, crashes: deque[float], now: float, uptime_s: float) -> float | None:
        """Record a crash at `now` in `crashes` (times, oldest first; only those inside the
        window are kept) of a worker that ran `uptime_s`. Returns the delay before the next
        start, or None when the stream crashed more than max_restarts times within the window
        and is to be marked failed.

        A worker that had run for stable_after_s (or the first crash in the window) restarts
        at once: one dead worker costs its camera a fraction of a second. Backoff is for a
        worker that keeps dying young."""
        crashes.append(now)
        while crashes and now - crashes[0] > self.window_s:
            crashes.popleft()
        if len(crashes) > self.max_restarts:
            return None
        if len(crashes) == 1 or uptime_s >= self.stable_after_s:
            return 0.0
        doubled: float = self.backoff_initial_s * 2.0 ** (len(crashes) - 2)
        return min(self.backoff_max_s, doubled)
