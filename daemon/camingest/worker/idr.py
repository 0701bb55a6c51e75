"""Forced IDRs, merged: subscriptions and keyframe requests ask for one, and the worker makes
at most one per interval, so a subscriber toggling its subscription cannot turn every frame
of every viewer into a keyframe."""

from __future__ import annotations


class IdrRequests:
    def __init__(self, min_interval_s: float) -> None:
        self.min_interval_s = min_interval_s
        self._due: float | None = 0.0  # the first frame is an IDR anyway; ask for it
        self._last = -min_interval_s

    def request(self, now: float) -> None:
        """An IDR is wanted: it falls due now, or one interval after the last forced one."""
        if self._due is None:
            self._due = max(now, self._last + self.min_interval_s)

    def due(self, now: float) -> bool:
        return self._due is not None and now >= self._due

    def sent(self, now: float) -> None:
        """The encoder took a frame with the IDR forced; a refused frame leaves it due."""
        self._due, self._last = None, now
