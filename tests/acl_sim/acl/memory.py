"""Simulated device, DVPP and host memory: real bytes behind fake integer addresses.

Addresses are never reused, so a freed address stays recognisable: a second free or a copy
through it is reported as a violation instead of silently touching other memory. Memory the
application wraps with acl.util.numpy_to_ptr/bytes_to_ptr is registered as "user" memory.
"""

from __future__ import annotations

import bisect
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

POISON = 0xDB
ALIGN = 128  # DVPP wants 16-aligned start addresses; be stricter so offsets show up


@dataclass
class Region:
    base: int
    size: int
    kind: str  # dvpp, device, host, user, venc_out
    data: Any  # np.ndarray, or a weakref to the user's array
    readonly: bool = False

    def array(self) -> np.ndarray | None:
        data = self.data() if isinstance(self.data, weakref.ref) else self.data
        return data if isinstance(data, np.ndarray) else None


class MemoryMap:
    def __init__(self) -> None:
        self.regions: dict[int, Region] = {}
        self.bases: list[int] = []
        self.freed: dict[int, tuple[str, int]] = {}  # base -> (kind, size) of released regions
        self.freed_bases: list[int] = []
        self.next_base = 0xA000_0000_0000
        # Own lock: a garbage-collected user array unregisters itself from whatever thread.
        self.lock = threading.RLock()

    def _add(self, size: int, kind: str, data: Any, readonly: bool = False) -> int:
        with self.lock:
            base = self.next_base
            self.next_base += ((max(size, 1) + ALIGN - 1) // ALIGN + 1) * ALIGN
            self.regions[base] = Region(base, size, kind, data, readonly)
            bisect.insort(self.bases, base)
            return base

    def alloc(self, size: int, kind: str) -> int:
        return self._add(size, kind, np.full(size, 0xCD, dtype=np.uint8))  # uninitialised

    def register_user(self, arr: np.ndarray) -> int:
        flat = arr.reshape(-1).view(np.uint8)
        base = self._add(flat.size, "user", weakref.ref(arr))
        weakref.finalize(arr, self._forget, base)
        return base

    def register_bytes(self, raw: bytes) -> int:
        arr = np.frombuffer(raw, dtype=np.uint8)
        return self._add(arr.size, "user", arr, readonly=True)

    def _forget(self, base: int) -> None:
        with self.lock:
            if base in self.regions:
                self._drop(base)

    def _drop(self, base: int) -> Region:
        # caller holds self.lock
        region = self.regions.pop(base)
        self.bases.remove(base)
        self.freed[base] = (region.kind, region.size)
        bisect.insort(self.freed_bases, base)
        return region

    def free(self, base: int, kinds: tuple[str, ...]) -> str | None:
        """Release an allocation; the reason it is refused, or None."""
        with self.lock:
            return self._free(base, kinds)

    def _free(self, base: int, kinds: tuple[str, ...]) -> str | None:
        region = self.regions.get(base)
        if region is None:
            if base in self.freed:
                return f"double free of {self.freed[base][0]} memory 0x{base:x}"
            return f"free of 0x{base:x}, which was never allocated (or is not a base address)"
        if region.kind not in kinds:
            return f"0x{base:x} is {region.kind} memory, freed with the call for {'/'.join(kinds)}"
        self.poison_and_drop(base)
        return None

    def poison_and_drop(self, base: int) -> None:
        with self.lock:
            region = self._drop(base)
        arr = region.array()
        if arr is not None and not region.readonly and region.kind != "user":
            arr.reshape(-1).view(np.uint8)[:] = POISON

    def find(self, addr: int) -> Region | None:
        i = bisect.bisect_right(self.bases, addr) - 1
        if i < 0:
            return None
        region = self.regions[self.bases[i]]
        return region if addr < region.base + max(region.size, 1) else None

    def view(self, addr: int, length: int, write: bool = False) -> tuple[np.ndarray | None, str]:
        """A writable/readable uint8 view of [addr, addr+length), or None and the reason."""
        with self.lock:
            return self._view(addr, length, write)

    def _view(self, addr: int, length: int, write: bool) -> tuple[np.ndarray | None, str]:
        region = self.find(addr)
        if region is None:
            i = bisect.bisect_right(self.freed_bases, addr) - 1
            if i >= 0:
                base = self.freed_bases[i]
                kind, size = self.freed[base]
                if addr < base + max(size, 1):
                    return None, f"use after free: 0x{addr:x} ({kind}) is not allocated any more"
            return None, f"0x{addr:x} is not an allocated address"
        if addr + length > region.base + region.size:
            return None, (
                f"0x{addr:x}+{length} runs past the end of a {region.size}-byte "
                f"{region.kind} allocation at 0x{region.base:x}"
            )
        if write and region.readonly:
            return None, f"0x{addr:x} is read-only (bytes_to_ptr)"
        arr = region.array()
        if arr is None:
            return None, f"use after free: the array behind 0x{addr:x} was garbage collected"
        off = addr - region.base
        return arr.reshape(-1).view(np.uint8)[off : off + length], ""

    def outstanding(self) -> list[dict[str, Any]]:
        with self.lock:
            return self._outstanding()

    def _outstanding(self) -> list[dict[str, Any]]:
        return [
            {"addr": f"0x{r.base:x}", "size": r.size, "kind": r.kind}
            for r in self.regions.values()
            if r.kind != "user"
        ]
