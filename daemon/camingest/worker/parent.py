"""Whether the daemon that started this worker still runs.

A worker whose daemon died must stop at once and quietly: no end-of-stream marker (the
restarted daemon's subscribers would take it for a real end), no lingering sends. A pidfd
(Linux 5.3+) becomes readable the moment that process exits, and the worker's poller waits on
it beside its sockets; without pidfds the worker asks with signal 0 on each turn of its loop.
The worker's parent process is not the daemon when it is forked from a fork server, so
getppid() would not tell.
"""

from __future__ import annotations

import os
import select


class ParentWatch:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd: int | None = None
        self._gone = False

    def open(self) -> None:
        try:
            self.fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            self._gone = True  # it died before we looked
        except OSError:
            self.fd = None  # no pidfds on this kernel: gone() asks with signal 0

    def gone(self) -> bool:
        if self._gone:
            return True
        if self.fd is not None:
            self._gone = bool(select.select([self.fd], [], [], 0)[0])
        else:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                self._gone = True
            except PermissionError:
                pass  # exists, as another user: not ours to judge
        return self._gone

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
