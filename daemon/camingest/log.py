"""Logging for the daemon and its worker processes.

The parent calls `configure_parent` once: its handler writes to the journal (structured fields:
a record's STREAM attribute becomes STREAM=, so `journalctl STREAM=cam0` works) or to stderr.
Workers call `configure_child` first thing with the target the parent resolved, and log with a
handler of their own to the same place: the journal then shows each record with the worker's
own _PID, and no multiprocessing queue is needed (its named semaphores would outlive a
SIGKILL of the whole process group in /dev/shm). Per-stream messages pass
`extra={"STREAM": name}`; a worker sets it on every record for you.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from systemd.journal import JournalHandler

logger = logging.getLogger(__name__)

Target = Literal["auto", "journal", "stderr"]
SYSLOG_IDENTIFIER = "camingest"


def parse_level(level: str) -> int:
    """The number of a level name ("info" or "INFO"); ValueError for an unknown name."""
    value = logging.getLevelNamesMapping().get(level.upper())
    if value is None:
        raise ValueError(f"unknown log level {level!r}")
    return value


def journal_is_stderr(env: Mapping[str, str], stderr: TextIO) -> bool:
    """True when `stderr` is the journal stream systemd connected (JOURNAL_STREAM=dev:ino).

    Checked rather than assumed from the variable's presence: a shell started from a unit
    inherits JOURNAL_STREAM while its stderr is a terminal."""
    dev, sep, ino = env.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stderr.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):  # no fd (a captured stream), or a malformed variable
        return False


class StderrFormatter(logging.Formatter):
    """'LEVEL name [stream] message', with a timestamp in front unless journald adds one."""

    def __init__(self, *, timestamps: bool) -> None:
        super().__init__("%(asctime)s %(message)s" if timestamps else "%(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        stream = getattr(record, "STREAM", None)
        prefix = f"{record.levelname} {record.name}" + (f" [{stream}]" if stream else "")
        saved = record.message
        record.message = f"{prefix} {saved}"
        try:
            return super().formatMessage(record)
        finally:
            record.message = saved


def resolve_target(target: Target, env: Mapping[str, str] | None = None) -> Target:
    """ "auto" -> "journal" when stderr is connected to the journal, else "stderr"."""
    if target != "auto":
        return target
    env = os.environ if env is None else env
    return "journal" if journal_is_stderr(env, sys.stderr) else "stderr"


def make_handler(target: Target, env: Mapping[str, str] | None = None) -> logging.Handler:
    """The one handler for `target` ("auto" resolved as resolve_target does)."""
    env = os.environ if env is None else env
    if resolve_target(target, env) == "journal":
        # Record attributes in upper case (STREAM) become journal fields.
        handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
        return handler
    under_systemd = "INVOCATION_ID" in env or "JOURNAL_STREAM" in env
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setFormatter(StderrFormatter(timestamps=not under_systemd))
    return stderr_handler


@dataclass
class LogSetup:
    """What configure_parent did: the resolved target (for the workers) and how to undo it."""

    target: Target
    handler: logging.Handler
    _restore: Callable[[], None]

    def stop(self) -> None:
        """Hand the root logger back to what it had before (tests rely on that)."""
        self._restore()


def configure_parent(
    level: str, target: Target = "auto", *, env: Mapping[str, str] | None = None
) -> LogSetup:
    """Make one handler (journal or stderr) the root logger's only handler."""
    resolved = resolve_target(target, env)
    handler = make_handler(resolved, env)
    root = logging.getLogger()
    old_handlers, old_level = root.handlers[:], root.level

    def restore() -> None:
        root.removeHandler(handler)
        handler.close()
        for h in old_handlers:
            root.addHandler(h)
        root.setLevel(old_level)

    for h in old_handlers:
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(parse_level(level))
    return LogSetup(resolved, handler, restore)


class _StreamFilter(logging.Filter):
    def __init__(self, stream: str) -> None:
        super().__init__()
        self.stream = stream

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "STREAM", None) is None:
            record.STREAM = self.stream
        return True


def configure_child(target: Target, level: str, stream: str | None) -> None:
    """In a worker: a handler of its own to `target` becomes the only root handler, and every
    record carries the worker's stream."""
    handler = make_handler(target)
    if stream is not None:
        # On the handler, not a logger: logger filters do not see propagated records.
        handler.addFilter(_StreamFilter(stream))
    root = logging.getLogger()
    for h in root.handlers[:]:
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(parse_level(level))


@dataclass(slots=True)
class _Window:
    start: float
    emitted: int = 0
    suppressed: int = 0


class RateLimitedLog:
    """At most `limit` messages per `interval_s` per key; the rest are counted, and the next
    message let through (or `flush()`) reports "… (N more suppressed)".

    For drop storms: `warn.log(logging.WARNING, ("cam0", "malformed"), "bad descriptor: %s", e)`.
    """

    def __init__(
        self,
        log: logging.Logger,
        *,
        limit: int = 5,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or interval_s <= 0:
            raise ValueError("limit must be >= 1 and interval_s > 0")
        self._log = log
        self._limit = limit
        self._interval = interval_s
        self._clock = clock
        self._windows: dict[object, _Window] = {}

    def log(self, level: int, key: object, msg: str, *args: object, **kwargs: Any) -> bool:
        """Log unless `key` is over its limit; returns whether the message was logged."""
        now = self._clock()
        window = self._windows.get(key)
        carried = 0
        if window is None or now - window.start >= self._interval:
            carried = window.suppressed if window is not None else 0
            window = self._windows[key] = _Window(now)
        if window.emitted >= self._limit:
            window.suppressed += 1
            return False
        window.emitted += 1
        if carried:
            if not args:
                msg = msg.replace("%", "%%")  # now that there are args, % would be formatted
            msg, args = msg + " … (%d more suppressed)", (*args, carried)
        self._log.log(level, msg, *args, **kwargs)
        return True

    def warning(self, key: object, msg: str, *args: object, **kwargs: Any) -> bool:
        return self.log(logging.WARNING, key, msg, *args, **kwargs)

    def suppressed(self, key: object) -> int:
        """Messages suppressed so far in `key`'s current window."""
        window = self._windows.get(key)
        return window.suppressed if window is not None else 0

    def flush(self, level: int = logging.WARNING, **kwargs: Any) -> None:
        """Report and forget windows that have ended; call it now and then so the count of a
        storm that stopped is not lost."""
        now = self._clock()
        for key, window in list(self._windows.items()):
            if now - window.start < self._interval:
                continue
            del self._windows[key]
            if window.suppressed:
                self._log.log(level, "%s: … (%d more suppressed)", key, window.suppressed, **kwargs)
