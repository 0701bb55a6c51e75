"""A simulator of the pyACL surface used by camingest's `acl` encoder backend.

Put tests/acl_sim on sys.path and `import acl`. It follows pyACL's conventions ((value, ret)
tuples, int codes from setters, 0 from failed creates) and enforces the contract of §8 of
acl-venc.md, the research notes the backend is written to (see docs/ascend.md). Misuse returns
ACL's error codes and is also recorded (acl.sim.violations()); acl.finalize() returns 500001
and keeps a report (acl.sim.last_report()) when anything is still allocated or was misused.
Frames are encoded for real (PyAV) inside acl.rt.process_report of the channel's thread.

Faults on demand, read from the environment by acl.init():
  ACL_SIM_FAIL_CREATE=1     venc_create_channel returns 507018
  ACL_SIM_BAD_RET_AT=N      the Nth frame sent in this process gets ret_code 507018
  ACL_SIM_HANG_AT=N         the Nth frame (and, in order, every later one) never comes back
  ACL_SIM_SOC=Ascend310B4   what get_soc_name() reports and which product limits apply
  ACL_SIM_RUN_MODE=0|1      what acl.rt.get_run_mode() reports (ACL_DEVICE=0, ACL_HOST=1)
  ACL_SIM_LEAK_REPORT=PATH  write the report as JSON at finalize, or at exit without finalize
                            ("{pid}" in PATH is replaced by the process id)
"""

from __future__ import annotations

from acl import codes, media, rt, sim, util
from acl.memory import MemoryMap
from acl.state import STATE, FaultConfig

__all__ = ["finalize", "get_soc_name", "init", "media", "rt", "sim", "util"]


def init(config_path: str = "") -> int:
    with STATE.lock:
        if STATE.initialized:
            return codes.REPEAT_INITIALIZE
        STATE.faults = FaultConfig.from_env()
        STATE.violations.clear()
        STATE.callback_errors.clear()
        STATE.dmesg.clear()
        STATE.frames_sent = 0
        STATE.initialized = True
        STATE.register_atexit()
    return codes.SUCCESS


def finalize() -> int:
    with STATE.lock:
        if not STATE.initialized:
            return codes.UNINITIALIZE
        report = STATE.write_report(finalized=True)
        STATE.initialized = False
        # Start the next init() from nothing, whatever this session left behind.
        STATE.handles.clear()
        STATE.contexts.clear()
        STATE.devices.clear()
        STATE.subscriptions.clear()
        STATE.threads.clear()
        STATE.memory = MemoryMap()
    return codes.SUCCESS if report["clean"] else codes.FAILURE


def get_soc_name() -> str | None:
    """The chip's name ("Ascend310B4"); None when it cannot be read, as pyACL documents."""
    return STATE.faults.soc if STATE.initialized else None
