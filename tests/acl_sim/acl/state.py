"""The process-wide state of the simulated ACL library (the real one is process-global too).

Everything the simulator tracks lives in one `SimState`, guarded by one re-entrant lock, so
that the leak report at finalize can list whatever the application left behind.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from acl.memory import MemoryMap


@dataclass
class FaultConfig:
    """Faults on demand, read from the environment at acl.init() (so a worker process can be
    told by its test): see the package docstring."""

    fail_create: bool = False
    bad_ret_at: int = 0  # 1-based frame number whose callback gets a non-zero ret code
    hang_at: int = 0  # 1-based frame number that never comes back
    soc: str = "Ascend310B4"
    run_mode: int = 0
    leak_report: str = ""

    @classmethod
    def from_env(cls) -> FaultConfig:
        env = os.environ
        return cls(
            fail_create=env.get("ACL_SIM_FAIL_CREATE", "") not in ("", "0"),
            bad_ret_at=int(env.get("ACL_SIM_BAD_RET_AT", "0") or 0),
            hang_at=int(env.get("ACL_SIM_HANG_AT", "0") or 0),
            soc=env.get("ACL_SIM_SOC", "Ascend310B4") or "Ascend310B4",
            run_mode=int(env.get("ACL_SIM_RUN_MODE", "0") or 0),
            leak_report=env.get("ACL_SIM_LEAK_REPORT", ""),
        )


@dataclass
class SimState:
    lock: threading.RLock = field(default_factory=threading.RLock)
    initialized: bool = False
    faults: FaultConfig = field(default_factory=FaultConfig)
    memory: MemoryMap = field(default_factory=MemoryMap)
    handles: dict[int, Any] = field(default_factory=dict)  # pic/stream/channel descs, configs
    next_handle: int = 0x7F00_0000_0000
    devices: dict[int, int] = field(default_factory=dict)  # device id -> set_device count
    contexts: dict[int, int] = field(default_factory=dict)  # context -> device id
    threads: dict[int, threading.Thread] = field(default_factory=dict)  # started, not stopped
    subscriptions: set[tuple[int, int]] = field(default_factory=set)
    dmesg: list[str] = field(default_factory=list)  # where the device explains a 5070xx
    violations: list[str] = field(default_factory=list)
    callback_errors: list[str] = field(default_factory=list)  # swallowed, as pyACL does
    frames_sent: int = 0  # process-wide, for the fault counters
    last_report: dict[str, Any] | None = None
    atexit_registered: bool = False

    def __post_init__(self) -> None:
        self.cond = threading.Condition(self.lock)
        self.local = threading.local()

    def new_handle(self, obj: Any) -> int:
        with self.lock:
            self.next_handle += 0x100
            self.handles[self.next_handle] = obj
            return self.next_handle

    def get(self, handle: object, kind: type) -> Any:
        """The live object of that kind behind `handle`, else None."""
        if not isinstance(handle, int):
            return None
        obj = self.handles.get(handle)
        return obj if isinstance(obj, kind) else None

    def violate(self, message: str) -> None:
        with self.lock:
            self.violations.append(message)

    def outstanding(self) -> dict[str, Any]:
        with self.lock:
            kinds: dict[str, int] = {}
            for obj in self.handles.values():
                name = type(obj).__name__
                kinds[name] = kinds.get(name, 0) + 1
            return {
                "buffers": self.memory.outstanding(),
                "handles": kinds,
                "threads": sorted(self.threads),
                "contexts": sorted(self.contexts),
                "devices": sorted(d for d, n in self.devices.items() if n > 0),
            }

    def report(self, finalized: bool) -> dict[str, Any]:
        out = self.outstanding()
        leaked = bool(
            out["buffers"] or out["handles"] or out["threads"] or out["contexts"] or out["devices"]
        )
        return {
            "finalized": finalized,
            "clean": not leaked and not self.violations,
            **out,
            "violations": list(self.violations),
            "callback_errors": list(self.callback_errors),
        }

    def write_report(self, finalized: bool) -> dict[str, Any]:
        report = self.report(finalized)
        self.last_report = report
        if self.faults.leak_report:
            # "{pid}" lets each worker process of a daemon write its own report.
            path = self.faults.leak_report.replace("{pid}", str(os.getpid()))
            with open(path, "w", encoding="utf-8") as fh:
                json.dump(report, fh, indent=1)
        return report

    def at_exit(self) -> None:
        if self.initialized:  # the application never called finalize
            self.write_report(finalized=False)

    def register_atexit(self) -> None:
        if not self.atexit_registered:
            atexit.register(self.at_exit)
            self.atexit_registered = True


STATE = SimState()
