"""FrameRing: one stream's ring of frame slots in a POSIX shared-memory segment.

The segment is a file in /dev/shm (what shm_open(3) uses on Linux) mapped with mmap. We do not
use multiprocessing.shared_memory: on Python 3.11 it registers every segment it opens with the
resource tracker, which unlinks it when the *attaching* process exits (CPython issue #82300,
`track=False` only arrived in 3.13). Mapping the file ourselves keeps ownership explicit: the
worker creates and unlinks, the capture only maps, and the supervisor sweeps after a crash.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import mmap
import os
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

from camingest.errors import ShmError
from camingest.wire.framing import VERSION
from camingest.wire.pixels import Plane

logger = logging.getLogger(__name__)

# RING_HEADER at offset 0; slot i at first_slot_offset + i * slot_stride.
RING_MAGIC = b"CGR1"
# magic, version, pad, epoch, slot count, first slot offset, slot stride, frame size
RING_HEADER = struct.Struct("<4sBB2xIIQQQ")
RING_FIRST_SLOT_OFFSET = 4096
RING_SLOT_ALIGN = 4096

SHM_DIR = Path("/dev/shm")
NAME_PREFIX = "camingest"


def instance_id(runtime_dir: Path, explicit: str | None = None) -> str:
    """Names this daemon instance's segments, so that two daemons never share or sweep each
    other's rings."""
    if explicit:
        return explicit
    return hashlib.sha1(str(Path(runtime_dir).resolve()).encode()).hexdigest()[:8]


def ring_prefix(instance: str, stream: str | None = None) -> str:
    base = f"{NAME_PREFIX}.{instance}."
    return base + f"{stream}." if stream is not None else base


def ring_name(instance: str, stream: str, epoch: int) -> str:
    return f"{ring_prefix(instance, stream)}{epoch:08x}"


def slot_stride(frame_size: int) -> int:
    return -(-frame_size // RING_SLOT_ALIGN) * RING_SLOT_ALIGN


def ring_bytes(slot_count: int, frame_size: int) -> int:
    return RING_FIRST_SLOT_OFFSET + slot_count * slot_stride(frame_size)


def shm_free_bytes() -> int:
    st = os.statvfs(SHM_DIR)
    return st.f_bavail * st.f_frsize


def sweep(prefix: str) -> list[str]:
    """Unlink every segment whose name starts with `prefix`; returns the names removed."""
    removed = []
    for path in SHM_DIR.glob(prefix + "*"):
        try:
            path.unlink()
            removed.append(path.name)
        except FileNotFoundError:
            pass
    return removed


class FrameRing:
    """A mapped ring. `create` (worker) owns the name and unlinks it; `attach` (capture) maps."""

    def __init__(
        self, name: str, fd: int, mm: mmap.mmap, slot_count: int, frame_size: int, owner: bool
    ) -> None:
        self.name = name
        self.slot_count = slot_count
        self.frame_size = frame_size
        self.slot_stride = slot_stride(frame_size)
        self._fd = fd
        self._mm: mmap.mmap | None = mm
        self._owner = owner
        self._array: npt.NDArray[np.uint8] | None = np.frombuffer(mm, dtype=np.uint8)

    @classmethod
    def create(
        cls, name: str, slot_count: int, frame_size: int, epoch: int, mode: int = 0o600
    ) -> FrameRing:
        size = ring_bytes(slot_count, frame_size)
        free = shm_free_bytes()
        if size > free:
            raise ShmError(
                f"ring {name} needs {size} bytes but /dev/shm has {free} free",
                hint="enlarge /dev/shm (mount -o remount,size=...) or lower `slots`",
            )
        path = SHM_DIR / name
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except OSError as exc:
            raise ShmError(f"cannot create {path}: {exc.strerror}") from exc
        try:
            # posix_fallocate reserves the pages now: a full /dev/shm fails here with ENOSPC
            # instead of SIGBUS on first touch (frigate's "Bus error").
            os.fchmod(fd, mode)  # the umask must not narrow it: captures map it as the group
            os.posix_fallocate(fd, 0, size)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            hint = "enlarge /dev/shm or lower `slots`" if exc.errno == errno.ENOSPC else ""
            raise ShmError(f"cannot size {path} to {size} bytes: {exc.strerror}", hint) from exc
        RING_HEADER.pack_into(
            mm,
            0,
            RING_MAGIC,
            VERSION,
            0,
            epoch,
            slot_count,
            RING_FIRST_SLOT_OFFSET,
            slot_stride(frame_size),
            frame_size,
        )
        return cls(name, fd, mm, slot_count, frame_size, owner=True)

    @classmethod
    def attach(cls, name: str, slot_count: int, frame_size: int, epoch: int) -> FrameRing:
        """Map an existing ring and check that its header says what the handshake said."""
        if "/" in name or not name.startswith(NAME_PREFIX):
            raise ShmError(f"refusing to map segment {name!r}: not a camingest ring")
        path = SHM_DIR / name
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise ShmError(f"cannot open ring {path}: {exc.strerror}") from exc
        try:
            size = os.fstat(fd).st_size
            expected = ring_bytes(slot_count, frame_size)
            if size < expected:
                raise ShmError(f"ring {name} is {size} bytes, the handshake implies {expected}")
            mm = mmap.mmap(fd, expected, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except (OSError, ShmError) as exc:
            os.close(fd)
            if isinstance(exc, ShmError):
                raise
            raise ShmError(f"cannot map ring {path}: {exc.strerror}") from exc
        magic, _, _, hdr_epoch, hdr_slots, first, stride, hdr_size = RING_HEADER.unpack_from(mm)
        if (magic, hdr_epoch, hdr_slots, first, stride, hdr_size) != (
            RING_MAGIC,
            epoch,
            slot_count,
            RING_FIRST_SLOT_OFFSET,
            slot_stride(frame_size),
            frame_size,
        ):
            mm.close()
            os.close(fd)
            raise ShmError(f"ring {name}: header does not match the handshake")
        return cls(name, fd, mm, slot_count, frame_size, owner=False)

    def slot(self, index: int) -> npt.NDArray[np.uint8]:
        """The frame bytes of slot `index` (a view, no copy)."""
        if self._array is None:
            raise ShmError(f"ring {self.name} is closed")
        if not 0 <= index < self.slot_count:
            raise IndexError(f"slot {index} outside 0..{self.slot_count - 1}")
        start = RING_FIRST_SLOT_OFFSET + index * self.slot_stride
        return self._array[start : start + self.frame_size]

    def planes(self, index: int, layout: tuple[Plane, ...]) -> tuple[npt.NDArray[np.uint8], ...]:
        data = self.slot(index)
        return tuple(
            data[p.offset : p.offset + p.size].reshape(p.rows, p.stride)[:, : p.row_bytes]
            for p in layout
        )

    def close(self) -> None:
        """Unmap (and, for the creator, unlink). Views handed out must be gone by then."""
        if self._mm is None:
            return
        self._array = None
        try:
            self._mm.close()
        except BufferError:
            # A numpy view is still alive somewhere: the mapping (and the fd mmap keeps) go
            # when the last view is garbage-collected.
            logger.debug("ring %s still has views; the mapping goes with the last", self.name)
        self._mm = None
        os.close(self._fd)
        if self._owner:
            (SHM_DIR / self.name).unlink(missing_ok=True)

    def __enter__(self) -> FrameRing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
