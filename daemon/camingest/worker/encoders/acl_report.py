"""ACL's callback thread for one VENC channel: it sits in acl.rt.process_report, inside which
pyACL runs the channel's callbacks (acl-venc.md §1.6, §9).

The channel (acl.py) starts it before creating the VENC channel, subscribes it by its thread id
and stops it only after destroying the channel, because destroy needs the thread in
process_report to deliver the last callbacks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from camingest.worker.encoders.acl_codes import REPORT_TIMEOUT, check

# process_report's timeout: how long the callback thread may take to notice it should stop.
REPORT_TIMEOUT_MS = 100


class ReportThread:
    """Runs acl.rt.process_report in the channel's context until stopped."""

    def __init__(self, log: logging.Logger, log_extra: Mapping[str, object]) -> None:
        self._log = log  # the channel's logger: its messages keep the channel's name
        self._log_extra = log_extra
        self._acl: Any = None
        self._stop = threading.Event()
        self._py_thread: threading.Thread | None = None  # when pyACL has no start_thread

    def start(self, acl: Any, context: int) -> int:
        """Start the thread; returns the id that subscribe-report takes. pyACL's start_thread
        where it exists; the newest docs mark it unsupported on Atlas 200I/500 A2 and 310P
        (acl-venc §9), so otherwise a Python thread, whose pthread id is what it takes."""
        self._acl = acl
        start = getattr(acl.util, "start_thread", None)
        if start is not None:
            tid, ret = start(self._loop, [context])
            check("acl.util.start_thread", ret)
            return int(tid)
        ready = threading.Event()
        ident: list[int] = []

        def run() -> None:
            ident.append(threading.get_ident())
            ready.set()
            self._loop([context])

        self._py_thread = threading.Thread(target=run, name="acl-venc-report", daemon=True)
        self._py_thread.start()
        ready.wait(5)
        return ident[0]

    def stop(self) -> bool:
        """Ask the loop to end. True when that ended the thread (a Python thread, joined);
        False when it is pyACL's, which the caller still ends with acl.util.stop_thread."""
        self._stop.set()
        if self._py_thread is None:
            return False
        self._py_thread.join(REPORT_TIMEOUT_MS / 1000 + 1)
        self._py_thread = None
        return True

    def _loop(self, args: list[Any]) -> None:
        rt = self._acl.rt
        ret = rt.set_context(args[0])  # threads do not inherit a context
        if ret != 0:
            self._log.error(
                "acl.rt.set_context failed with %d on the callback thread",
                ret,
                extra=self._log_extra,
            )
        while not self._stop.is_set():
            ret = rt.process_report(REPORT_TIMEOUT_MS)
            if ret not in (0, REPORT_TIMEOUT):
                # Not subscribed yet (before create) or any more (after destroy): do not spin.
                self._stop.wait(0.01)
