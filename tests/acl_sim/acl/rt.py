"""acl.rt: devices, contexts, memory, copies and the report (callback) loop."""

from __future__ import annotations

import threading

from acl import codes
from acl.state import STATE


def current_thread_id() -> int:
    """The id ACL knows the calling thread by: start_thread's id, else the OS thread ident."""
    tid = getattr(STATE.local, "thread_id", 0)
    return int(tid) if tid else threading.get_ident()


def _ready() -> bool:
    return STATE.initialized


def set_device(device_id: int) -> int:
    if not _ready():
        return codes.UNINITIALIZE
    if not isinstance(device_id, int) or device_id != 0:
        return codes.INVALID_DEVICE  # one device, like an Atlas 200I/500 A2
    with STATE.lock:
        STATE.devices[device_id] = STATE.devices.get(device_id, 0) + 1
    STATE.local.device = device_id
    return codes.SUCCESS


def reset_device(device_id: int) -> int:
    with STATE.lock:
        if STATE.devices.get(device_id, 0) <= 0:
            STATE.violate(f"reset_device({device_id}) without set_device")
            return codes.INVALID_DEVICE
        STATE.devices[device_id] -= 1
        for ctx, dev in list(STATE.contexts.items()):
            if dev == device_id and STATE.devices[device_id] == 0:
                STATE.violate(f"reset_device({device_id}) with context 0x{ctx:x} not destroyed")
    return codes.SUCCESS


def create_context(device_id: int) -> tuple[int, int]:
    if not _ready():
        return 0, codes.UNINITIALIZE
    with STATE.lock:
        if STATE.devices.get(device_id, 0) <= 0:
            return 0, codes.INVALID_DEVICE
        ctx = STATE.new_handle(None)
        del STATE.handles[ctx]  # contexts are tracked on their own
        STATE.contexts[ctx] = device_id
    STATE.local.context = ctx  # aclrtCreateContext makes it current for the caller
    return ctx, codes.SUCCESS


def destroy_context(context: int) -> int:
    with STATE.lock:
        if context not in STATE.contexts:
            STATE.violate(f"destroy_context(0x{context:x}): no such context")
            return codes.INVALID_PARAM
        del STATE.contexts[context]
    if getattr(STATE.local, "context", 0) == context:
        STATE.local.context = 0
    return codes.SUCCESS


def set_context(context: int) -> int:
    with STATE.lock:
        if context not in STATE.contexts:
            return codes.INVALID_PARAM
    STATE.local.context = context
    return codes.SUCCESS


def get_context() -> tuple[int, int]:
    ctx = getattr(STATE.local, "context", 0)
    return (ctx, codes.SUCCESS) if ctx else (0, codes.RT_CONTEXT_NULL)


def get_run_mode() -> tuple[int, int]:
    if not _ready():
        return 0, codes.UNINITIALIZE
    return STATE.faults.run_mode, codes.SUCCESS


def _alloc(size: object, kind: str) -> tuple[int, int]:
    if not isinstance(size, int):
        raise TypeError("size must be an int")
    if not _ready():
        return 0, codes.UNINITIALIZE
    if size <= 0:
        return 0, codes.INVALID_PARAM
    return STATE.memory.alloc(size, kind), codes.SUCCESS


def _free(ptr: int, kinds: tuple[str, ...], call: str) -> int:
    reason = STATE.memory.free(ptr, kinds)
    if reason:
        STATE.violate(f"{call}: {reason}")
        return codes.INVALID_PARAM
    return codes.SUCCESS


def malloc(size: int, policy: int = 0) -> tuple[int, int]:
    return _alloc(size, "device")


def free(ptr: int) -> int:
    return _free(ptr, ("device",), "acl.rt.free")


def malloc_host(size: int) -> tuple[int, int]:
    return _alloc(size, "host")


def free_host(ptr: int) -> int:
    return _free(ptr, ("host",), "acl.rt.free_host")


def memcpy(dst: int, dst_max: int, src: int, count: int, kind: int) -> int:
    for arg in (dst, dst_max, src, count, kind):
        if not isinstance(arg, int):
            raise TypeError("memcpy takes (dst, dest_max, src, count, kind) as ints")
    if not _ready():
        return codes.UNINITIALIZE
    # Any kind is accepted, as on RC boards the runtime infers the direction (acl-venc §1.8).
    if kind not in codes.MEMCPY_KINDS or count < 0 or count > dst_max:
        STATE.violate(f"memcpy: bad kind {kind} or count {count} > dest_max {dst_max}")
        return codes.INVALID_PARAM
    if count == 0:
        return codes.SUCCESS
    dst_view, why_dst = STATE.memory.view(dst, count, write=True)
    src_view, why_src = STATE.memory.view(src, count)
    if dst_view is None or src_view is None:
        STATE.violate(f"memcpy: {why_dst or why_src}")
        return codes.INVALID_PARAM
    dst_view[:] = src_view
    return codes.SUCCESS


def process_report(timeout: int) -> int:
    if not isinstance(timeout, int):
        raise TypeError("timeout must be an int (milliseconds)")
    if timeout == 0 or timeout < -1:
        return codes.INVALID_PARAM
    if not getattr(STATE.local, "context", 0):
        return codes.RT_CONTEXT_NULL  # threads do not inherit a context (acl-venc §6.6)
    from acl import venc  # late: venc imports rt

    return venc.deliver(current_thread_id(), timeout)


def subscribe_report(thread_id: int, stream: int) -> int:
    # VENC subscribes its own callback stream; an application never needs this for VENC.
    if not isinstance(thread_id, int) or not isinstance(stream, int):
        raise TypeError("subscribe_report takes (thread_id, stream) as ints")
    with STATE.lock:
        subs = STATE.subscriptions
        if (thread_id, stream) in subs:
            return 100033
        subs.add((thread_id, stream))
    return codes.SUCCESS


def unsubscribe_report(thread_id: int, stream: int) -> int:
    with STATE.lock:
        subs = STATE.subscriptions
        if (thread_id, stream) not in subs:
            return 100034
        subs.discard((thread_id, stream))
    return codes.SUCCESS
