"""acl.util: pyACL's Python-only helpers (threads and pointer conversions)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from acl import codes
from acl.state import STATE

# NumPy type numbers accepted by ptr_to_numpy (NPY_TYPES), as pyACL takes them.
_NPY_TYPES = {
    1: np.int8,
    2: np.uint8,
    3: np.int16,
    4: np.uint16,
    5: np.int32,
    6: np.uint32,
    7: np.int64,
    8: np.uint64,
    11: np.float32,
    12: np.float64,
    23: np.float16,
}


def start_thread(func: object, args_list: list[Any]) -> tuple[int, int]:
    """Run func(args_list) on a new thread; its id is what venc_set_channel_desc_thread_id wants."""
    if not callable(func):
        return 0, codes.INVALID_PARAM
    with STATE.lock:
        STATE.next_handle += 0x100
        tid = STATE.next_handle

    def body() -> None:
        STATE.local.thread_id = tid
        cast(Callable[[Any], Any], func)(args_list)

    thread = threading.Thread(target=body, name=f"acl-thread-{tid:x}", daemon=True)
    with STATE.lock:
        STATE.threads[tid] = thread
    thread.start()
    return tid, codes.SUCCESS


def stop_thread(thread_id: int) -> int:
    """Wait for the thread to end (it must be told to stop first: this only joins)."""
    with STATE.lock:
        thread = STATE.threads.get(thread_id)
    if thread is None:
        STATE.violate(f"stop_thread(0x{thread_id:x}): no such thread")
        return codes.INVALID_PARAM
    if thread is threading.current_thread():
        return codes.INVALID_PARAM
    thread.join()
    with STATE.lock:
        STATE.threads.pop(thread_id, None)
    return codes.SUCCESS


def numpy_to_ptr(arr: np.ndarray) -> int:
    if not isinstance(arr, np.ndarray) or not arr.flags.c_contiguous:
        raise TypeError("numpy_to_ptr needs a C-contiguous numpy array")
    return STATE.memory.register_user(arr)


def bytes_to_ptr(raw: bytes) -> int:
    if not isinstance(raw, bytes):
        raise TypeError("bytes_to_ptr needs bytes")
    return STATE.memory.register_bytes(raw)


def ptr_to_numpy(ptr: int, shape: tuple[int, ...], npy_type: int) -> np.ndarray:
    dtype = np.dtype(_NPY_TYPES[npy_type])
    count = int(np.prod(shape)) * dtype.itemsize
    view, why = STATE.memory.view(ptr, count)
    if view is None:
        STATE.violate(f"ptr_to_numpy: {why}")
        raise ValueError(why)
    return view.view(dtype).reshape(shape)


def ptr_to_bytes(ptr: int, size: int) -> bytes:
    view, why = STATE.memory.view(ptr, size)
    if view is None:
        STATE.violate(f"ptr_to_bytes: {why}")
        raise ValueError(why)
    return view.tobytes()
