"""FrameRing and the ring naming helpers (camingest.wire.ring), against real /dev/shm.

What is pinned: the header and layout of docs/protocol.md section 5, that two mappings (also in
another process) share the bytes, what `attach` refuses, the views `slot`/`planes` hand out,
who unlinks (only the creator: an attaching process that exits must not take the segment with
it, the CPython resource-tracker trap the module docstring describes), the naming scheme and
that `sweep` stays within its prefix.
"""

from __future__ import annotations

import gc
import hashlib
import multiprocessing
import os
import secrets
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from camingest.errors import ShmError
from camingest.wire.framing import VERSION
from camingest.wire.pixels import PixelFormat, Plane, frame_size, plane_layout
from camingest.wire.ring import (
    NAME_PREFIX,
    RING_FIRST_SLOT_OFFSET,
    RING_HEADER,
    RING_MAGIC,
    RING_SLOT_ALIGN,
    SHM_DIR,
    FrameRing,
    instance_id,
    ring_bytes,
    ring_name,
    ring_prefix,
    slot_stride,
    sweep,
)

PAGE = 4096
SPAWN_TIMEOUT_S = 20.0


# -- helpers -----------------------------------------------------------------------------------


class ShmNames:
    """Hands out unique name prefixes for one test and checks at teardown that no segment with
    any of them is left in /dev/shm (and removes whatever is)."""

    def __init__(self) -> None:
        self.prefixes: list[str] = []

    def instance(self) -> str:
        inst = "u" + secrets.token_hex(5)
        self.prefixes.append(ring_prefix(inst))
        return inst

    def foreign(self) -> str:
        """A segment name outside the camingest scheme (a decoy)."""
        name = f"cgdecoy-{secrets.token_hex(5)}"
        self.prefixes.append(name)
        return name

    def leftovers(self) -> list[str]:
        return sorted(p.name for prefix in self.prefixes for p in SHM_DIR.glob(prefix + "*"))


@pytest.fixture
def shm() -> Iterator[ShmNames]:
    names = ShmNames()
    yield names
    left = names.leftovers()
    for name in left:
        (SHM_DIR / name).unlink(missing_ok=True)
    assert not left, f"shared memory left behind: {left}"


def pattern(size: int, seed: int) -> npt.NDArray[np.uint8]:
    return ((np.arange(size, dtype=np.int64) * (2 * seed + 1) + seed) % 251).astype(np.uint8)


def raw(name: str) -> bytes:
    """The segment's bytes as a reader of /dev/shm sees them, not through any FrameRing."""
    return (SHM_DIR / name).read_bytes()


def fds_on(name: str) -> int:
    """How many of this process's file descriptors refer to the segment (unlinked or not)."""
    target = str(SHM_DIR / name)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(target)
        except OSError:  # the fd listdir itself used, closed by now
            pass
    return count


def mappings(name: str) -> int:
    """How many mappings of the segment this process has."""
    lines = Path("/proc/self/maps").read_text().splitlines()
    return sum(f"{SHM_DIR / name}" in line for line in lines)


def mapped(name: str) -> bool:
    return mappings(name) > 0


def view_address(view: npt.NDArray[np.uint8]) -> int:
    return int(view.__array_interface__["data"][0])


# Run in a process started with the 'spawn' context: they must be importable module functions.


def _own_resource_tracker() -> None:
    """Forget the resource tracker inherited from the parent, so that anything this process
    registers goes to a tracker of its own, as in a capture program started on its own."""
    from multiprocessing import resource_tracker

    resource_tracker._resource_tracker._fd = None  # type: ignore[attr-defined]


def _wait_for_own_resource_tracker() -> None:
    """If this process started a resource tracker, let it do its exit-time cleanup now, so the
    parent's check does not race it (that cleanup is what unlinks a segment)."""
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker
    if tracker._pid is not None:  # type: ignore[attr-defined]
        os.close(tracker._fd)  # type: ignore[attr-defined]
        os.waitpid(tracker._pid, 0)  # type: ignore[attr-defined]


def _child_attach(
    name: str, slot_count: int, size: int, epoch: int, close: bool, write_slot: int
) -> None:
    _own_resource_tracker()
    ring = FrameRing.attach(name, slot_count, size, epoch)
    if not np.array_equal(ring.slot(0), pattern(size, 1)):
        os._exit(3)
    ring.slot(write_slot)[:] = pattern(size, 2)
    if close:
        ring.close()
    _wait_for_own_resource_tracker()
    # os._exit: no interpreter cleanup, as when a capture dies (with close=False, unclosed).
    os._exit(0)


def run_spawned(*args: object) -> int:
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_child_attach, args=args)
    proc.start()
    proc.join(SPAWN_TIMEOUT_S)
    if proc.is_alive():
        proc.kill()
        proc.join(5)
        pytest.fail(f"spawned child did not finish within {SPAWN_TIMEOUT_S} s")
    assert proc.exitcode is not None
    return proc.exitcode


# -- arithmetic and constants ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "stride"),
    [(0, 0), (1, 4096), (4095, 4096), (4096, 4096), (4097, 8192), (64 * 48 * 3 // 2, 8192)],
)
def test_slot_stride_rounds_up_to_the_alignment(size: int, stride: int) -> None:
    """slot_stride is frame_size rounded up to a multiple of 4096 (protocol 5.1): captures in
    other languages compute the same number, so it must never change."""
    assert slot_stride(size) == stride
    assert stride % RING_SLOT_ALIGN == 0


@pytest.mark.parametrize(("slots", "size"), [(0, 100), (1, 1), (3, 5000), (4, 8192)])
def test_ring_bytes_is_header_page_plus_slots(slots: int, size: int) -> None:
    """ring_bytes = 4096 + slot_count * slot_stride (protocol 5.1)."""
    assert ring_bytes(slots, size) == 4096 + slots * slot_stride(size)


def test_layout_constants_match_the_protocol() -> None:
    """The constants the doc states: header 40 bytes, slot 0 at 4096, 4096-aligned slots."""
    assert RING_HEADER.size == 40
    assert RING_HEADER.format == "<4sBB2xIIQQQ"
    assert RING_MAGIC == b"CGR1"
    assert RING_FIRST_SLOT_OFFSET == 4096
    assert RING_SLOT_ALIGN == 4096


# -- header and layout -------------------------------------------------------------------------


def test_header_bytes_follow_the_protocol_table(shm: ShmNames) -> None:
    """The creator writes the RING_HEADER fields at the offsets of protocol 5.2, read back here
    with explicit offsets (not RING_HEADER), and the rest of the segment starts zeroed."""
    name = ring_name(shm.instance(), "cam0", 0x0BADCAFE)
    with FrameRing.create(name, 3, 5000, 0x0BADCAFE):
        data = raw(name)
    assert len(data) == 4096 + 3 * 8192
    assert data[0:4] == b"CGR1"
    assert data[4] == VERSION == 1
    assert data[5] == 0
    assert data[6:8] == b"\x00\x00"
    assert struct.unpack_from("<I", data, 8)[0] == 0x0BADCAFE
    assert struct.unpack_from("<I", data, 12)[0] == 3
    assert struct.unpack_from("<Q", data, 16)[0] == 4096
    assert struct.unpack_from("<Q", data, 24)[0] == 8192
    assert struct.unpack_from("<Q", data, 32)[0] == 5000
    assert data[40:] == bytes(len(data) - 40)


def test_slot_views_sit_at_their_offsets(shm: ShmNames) -> None:
    """slot(i) is frame_size bytes at 4096 + i * stride, page aligned, a view (no copy), and
    the padding after a frame belongs to no slot."""
    name = ring_name(shm.instance(), "cam0", 1)
    size = 5000
    with FrameRing.create(name, 3, size, 1) as ring:
        assert ring.slot_stride == 8192
        base = view_address(ring.slot(0)) - RING_FIRST_SLOT_OFFSET
        assert base % PAGE == 0
        for i in range(3):
            view = ring.slot(i)
            assert view.dtype == np.uint8
            assert view.shape == (size,)
            assert view_address(view) == base + 4096 + i * 8192
            assert view_address(view) % RING_SLOT_ALIGN == 0
            view[:] = pattern(size, i + 1)
        assert np.array_equal(ring.slot(1), pattern(size, 2))  # same memory, not a copy
        data = raw(name)
        for i in range(3):
            start = 4096 + i * 8192
            assert data[start : start + size] == pattern(size, i + 1).tobytes()
            assert data[start + size : start + 8192] == bytes(8192 - size)
        assert data[40:4096] == bytes(4096 - 40)


@pytest.mark.parametrize("index", [-1, 3, 4, 100])
def test_slot_and_planes_refuse_an_index_outside_the_ring(shm: ShmNames, index: int) -> None:
    """An out-of-range slot (negative included: no Python wrap-around to the last slot) is an
    IndexError, so a bad FRAME descriptor can never read outside the ring."""
    name = ring_name(shm.instance(), "cam0", 1)
    with FrameRing.create(name, 3, 4096, 1) as ring:
        with pytest.raises(IndexError):
            ring.slot(index)
        with pytest.raises(IndexError):
            ring.planes(index, plane_layout(PixelFormat.GRAY, 64, 64))


def test_planes_are_views_of_the_slot(shm: ShmNames) -> None:
    """planes() gives one (rows, row_bytes) view per plane at slot start + plane offset, so a
    write through a plane lands where the worker reads it."""
    w, h = 64, 48
    layout = plane_layout(PixelFormat.NV12, w, h)
    size = frame_size(PixelFormat.NV12, w, h)
    name = ring_name(shm.instance(), "cam0", 1)
    with FrameRing.create(name, 2, size, 1) as ring:
        y, uv = ring.planes(1, layout)
        assert y.shape == (48, 64)
        assert uv.shape == (24, 64)
        assert view_address(y) == view_address(ring.slot(1))
        assert view_address(uv) == view_address(ring.slot(1)) + 64 * 48
        y[:] = 17
        uv[:] = 200
        data = raw(name)
    slot1 = data[4096 + 8192 : 4096 + 8192 + size]
    assert slot1 == bytes([17]) * (64 * 48) + bytes([200]) * (64 * 24)
    assert data[4096 : 4096 + size] == bytes(size)  # slot 0 untouched


def test_planes_with_row_padding_leave_the_padding_alone(shm: ShmNames) -> None:
    """With stride > row_bytes a plane view covers only the pixel bytes of each row."""
    layout = (Plane(offset=8, stride=16, rows=4, row_bytes=10),)
    name = ring_name(shm.instance(), "cam0", 1)
    with FrameRing.create(name, 1, 8 + 64, 1) as ring:
        (plane,) = ring.planes(0, layout)
        assert plane.shape == (4, 10)
        plane[:] = 0xEE
        got = bytes(ring.slot(0))
    expected = bytearray(72)
    for r in range(4):
        expected[8 + r * 16 : 8 + r * 16 + 10] = b"\xee" * 10
    assert got == bytes(expected)


# -- sharing -----------------------------------------------------------------------------------


def test_attach_sees_what_the_creator_writes_and_back(shm: ShmNames) -> None:
    """Two mappings of one segment share bytes both ways, and attach reports the geometry."""
    name = ring_name(shm.instance(), "cam0", 7)
    with FrameRing.create(name, 2, 3000, 7) as owner, FrameRing.attach(name, 2, 3000, 7) as peer:
        assert (peer.name, peer.slot_count, peer.frame_size, peer.slot_stride) == (
            name,
            2,
            3000,
            4096,
        )
        owner.slot(0)[:] = pattern(3000, 1)
        assert np.array_equal(peer.slot(0), pattern(3000, 1))
        peer.slot(1)[:] = pattern(3000, 2)
        assert np.array_equal(owner.slot(1), pattern(3000, 2))


@pytest.mark.process
@pytest.mark.timeout(30)
def test_a_spawned_process_reads_and_writes_the_ring(shm: ShmNames) -> None:
    """A separate process attaches by name, sees the creator's frame and its write comes back:
    what a capture program does with the worker's ring."""
    name = ring_name(shm.instance(), "cam0", 9)
    with FrameRing.create(name, 3, 6000, 9) as ring:
        ring.slot(0)[:] = pattern(6000, 1)
        assert run_spawned(name, 3, 6000, 9, True, 2) == 0
        assert np.array_equal(ring.slot(2), pattern(6000, 2))
        assert not ring.slot(1).any()


@pytest.mark.process
@pytest.mark.timeout(30)
@pytest.mark.parametrize("close", [True, False], ids=["closed", "exited-unclosed"])
def test_segment_survives_the_exit_of_an_attaching_process(shm: ShmNames, close: bool) -> None:
    """An attaching process that exits (closing the ring or not) leaves the segment in place
    and intact: with multiprocessing.shared_memory on 3.11 its resource tracker would unlink
    it at exit (CPython #82300). The child gets a tracker of its own and waits for it, so such
    a regression shows here deterministically."""
    name = ring_name(shm.instance(), "cam0", 11)
    with FrameRing.create(name, 2, 5000, 11) as ring:
        ring.slot(0)[:] = pattern(5000, 1)
        assert run_spawned(name, 2, 5000, 11, close, 1) == 0
        assert (SHM_DIR / name).exists()
        with FrameRing.attach(name, 2, 5000, 11) as again:
            assert np.array_equal(again.slot(1), pattern(5000, 2))
    assert not (SHM_DIR / name).exists()


# -- ownership, close --------------------------------------------------------------------------


def test_only_the_creator_unlinks(shm: ShmNames) -> None:
    """Closing an attached ring leaves the segment; closing the creator removes it."""
    name = ring_name(shm.instance(), "cam0", 1)
    owner = FrameRing.create(name, 1, 100, 1)
    try:
        FrameRing.attach(name, 1, 100, 1).close()
        assert (SHM_DIR / name).exists()
    finally:
        owner.close()
    assert not (SHM_DIR / name).exists()


def test_the_context_manager_closes(shm: ShmNames) -> None:
    """`with FrameRing.create(...)` unlinks on leaving, also when the block raises."""
    name = ring_name(shm.instance(), "cam0", 1)

    def use_and_fail() -> None:
        with FrameRing.create(name, 1, 100, 1):
            assert (SHM_DIR / name).exists()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        use_and_fail()
    assert not (SHM_DIR / name).exists()


@pytest.mark.parametrize("owner", [True, False], ids=["creator", "attacher"])
def test_close_is_idempotent_and_frees_fd_and_mapping(shm: ShmNames, owner: bool) -> None:
    """close() twice is fine; it closes the fd and unmaps, and slot() afterwards is ShmError."""
    name = ring_name(shm.instance(), "cam0", 1)
    creator = FrameRing.create(name, 2, 100, 1)
    try:
        ring = creator if owner else FrameRing.attach(name, 2, 100, 1)
        # Each ring holds two: its own and the one mmap keeps (a dup).
        assert fds_on(name) == (2 if owner else 4)
        ring.close()
        ring.close()
        assert fds_on(name) == (0 if owner else 2)
        with pytest.raises(ShmError):
            ring.slot(0)
        with pytest.raises(ShmError):
            ring.planes(0, plane_layout(PixelFormat.GRAY, 10, 10))
        if not owner:
            assert (SHM_DIR / name).exists()
            creator.close()
        assert not mapped(name)
    finally:
        creator.close()


def test_close_with_a_live_view_keeps_the_view_valid(shm: ShmNames) -> None:
    """A view still alive at close() does not make close() fail; the view keeps working until
    it goes, then the mapping goes too. The creator still unlinks."""
    name = ring_name(shm.instance(), "cam0", 1)
    ring = FrameRing.create(name, 2, 100, 1)
    view = ring.slot(1)
    view[:] = 42
    ring.close()
    assert not (SHM_DIR / name).exists()
    with pytest.raises(ShmError):
        ring.slot(1)
    assert mapped(name)
    assert fds_on(name) == 1  # the ring's own fd is closed; mmap's dup goes with the mapping
    assert (view == 42).all()
    view[:] = 43  # still writable memory, no crash
    assert (view == 43).all()
    ring.close()
    del view
    gc.collect()
    assert not mapped(name)
    assert fds_on(name) == 0


# -- create and attach refusals ----------------------------------------------------------------


def test_create_refuses_an_existing_name_and_leaves_it(shm: ShmNames) -> None:
    """A second create of the same name is ShmError (O_EXCL) and must not unlink or touch the
    first ring, which may be in use."""
    name = ring_name(shm.instance(), "cam0", 1)
    with FrameRing.create(name, 1, 100, 1) as ring:
        ring.slot(0)[:] = 5
        with pytest.raises(ShmError):
            FrameRing.create(name, 1, 100, 1)
        assert (SHM_DIR / name).exists()
        with FrameRing.attach(name, 1, 100, 1) as peer:
            assert (peer.slot(0) == 5).all()


def test_create_refuses_a_ring_bigger_than_free_shm(shm: ShmNames) -> None:
    """A ring that cannot fit in /dev/shm is refused up front with a hint; no file is made."""
    name = ring_name(shm.instance(), "cam0", 1)
    with pytest.raises(ShmError) as info:
        FrameRing.create(name, 1 << 20, 1 << 30, 1)
    assert info.value.hint
    assert not (SHM_DIR / name).exists()


def test_create_sets_the_mode_regardless_of_umask(shm: ShmNames) -> None:
    """The mode is exactly what was asked (0660 as the worker asks, 0600 by default) even under
    a umask that would narrow it: a capture maps the ring as the group."""
    inst = shm.instance()
    old = os.umask(0o077)
    try:
        with (
            FrameRing.create(ring_name(inst, "cam0", 1), 1, 100, 1, mode=0o660) as group,
            FrameRing.create(ring_name(inst, "cam0", 2), 1, 100, 2) as default,
        ):
            assert stat.S_IMODE(os.stat(SHM_DIR / group.name).st_mode) == 0o660
            assert stat.S_IMODE(os.stat(SHM_DIR / default.name).st_mode) == 0o600
    finally:
        os.umask(old)


@pytest.mark.parametrize(
    ("slots", "size", "epoch"),
    [
        pytest.param(3, 5000, 2, id="wrong-epoch"),
        pytest.param(2, 5000, 1, id="fewer-slots"),
        pytest.param(4, 5000, 1, id="more-slots"),
        pytest.param(3, 5001, 1, id="frame-size-same-stride"),
        pytest.param(3, 9000, 1, id="frame-size-bigger-stride"),
        pytest.param(3, 4000, 1, id="frame-size-smaller-stride"),
    ],
)
def test_attach_refuses_a_handshake_the_header_contradicts(
    shm: ShmNames, slots: int, size: int, epoch: int
) -> None:
    """attach checks the segment against the WELCOME (size, epoch, slots, stride, frame size);
    a mismatch is ShmError, leaks no fd and leaves the segment alone."""
    name = ring_name(shm.instance(), "cam0", 1)
    with FrameRing.create(name, 3, 5000, 1):
        with pytest.raises(ShmError):
            FrameRing.attach(name, slots, size, epoch)
        assert (fds_on(name), mappings(name)) == (2, 1)  # the creator's only
        assert (SHM_DIR / name).exists()


@pytest.mark.parametrize(
    ("offset", "value"),
    [
        pytest.param(0, b"CGRX", id="magic"),
        pytest.param(16, struct.pack("<Q", 8192), id="first-slot-offset"),
        pytest.param(24, struct.pack("<Q", 4096), id="slot-stride"),
    ],
)
def test_attach_refuses_a_bad_header(shm: ShmNames, offset: int, value: bytes) -> None:
    """A segment whose magic, first slot offset or stride is not what the protocol says is
    refused, and the fd is not leaked."""
    name = ring_name(shm.instance(), "cam0", 1)
    with FrameRing.create(name, 2, 5000, 1):
        with open(SHM_DIR / name, "r+b") as f:
            f.seek(offset)
            f.write(value)
        with pytest.raises(ShmError):
            FrameRing.attach(name, 2, 5000, 1)
        assert (fds_on(name), mappings(name)) == (2, 1)  # the creator's only


def test_attach_accepts_a_segment_larger_than_needed(shm: ShmNames) -> None:
    """The size check is 'at least' (protocol 5.2 step 3), the header decides the rest."""
    name = ring_name(shm.instance(), "cam0", 1)
    with FrameRing.create(name, 2, 5000, 1):
        os.truncate(SHM_DIR / name, ring_bytes(2, 5000) + 3 * PAGE)
        with FrameRing.attach(name, 2, 5000, 1) as peer:
            assert peer.slot(1).shape == (5000,)


def test_attach_refuses_a_segment_too_small_for_the_handshake(shm: ShmNames) -> None:
    """A segment shorter than the handshake implies is refused (mapping it would SIGBUS)."""
    name = ring_name(shm.instance(), "cam0", 1)
    with FrameRing.create(name, 2, 5000, 1):
        os.truncate(SHM_DIR / name, ring_bytes(2, 5000) - 1)
        with pytest.raises(ShmError):
            FrameRing.attach(name, 2, 5000, 1)
        assert (fds_on(name), mappings(name)) == (2, 1)  # the creator's only


def test_attach_refuses_a_missing_segment(shm: ShmNames) -> None:
    """A ring that does not exist (a stale WELCOME, a swept segment) is ShmError, not OSError."""
    name = ring_name(shm.instance(), "cam0", 1)
    with pytest.raises(ShmError):
        FrameRing.attach(name, 2, 5000, 1)


@pytest.mark.parametrize(
    "name",
    ["../camingest.x.cam0.00000001", "camingest/../../etc/passwd", "notcamingest.x.y.1", "sem.x"],
)
def test_attach_refuses_names_outside_the_scheme(shm: ShmNames, name: str) -> None:
    """A ring name from the wire is refused if it has a '/' or lacks the camingest prefix, so
    a hostile WELCOME cannot make a capture map an arbitrary file."""
    foreign = shm.foreign()
    with FrameRing.create(foreign, 1, 100, 1):
        # Even an existing, well-formed segment under another name is refused.
        for candidate in (name, foreign):
            with pytest.raises(ShmError):
                FrameRing.attach(candidate, 1, 100, 1)


def test_attach_refuses_a_slash_even_when_the_path_would_reach_a_ring(shm: ShmNames) -> None:
    """'camingest.<dir>/../<ring>' would open a real ring: the '/' alone must get it refused."""
    inst = shm.instance()
    name = ring_name(inst, "cam0", 1)
    directory = SHM_DIR / f"{ring_prefix(inst)}d"
    directory.mkdir()
    try:
        with FrameRing.create(name, 1, 100, 1):
            detour = f"{directory.name}/../{name}"
            assert (SHM_DIR / detour).exists()  # the path itself would work
            with pytest.raises(ShmError):
                FrameRing.attach(detour, 1, 100, 1)
    finally:
        directory.rmdir()


# -- naming and sweeping -----------------------------------------------------------------------


def test_instance_id_is_explicit_or_hash_of_the_resolved_runtime_dir(tmp_path: Path) -> None:
    """The default instance is the first 8 hex digits of SHA-1 of the resolved runtime_dir
    (protocol 5.1): two spellings of one directory give one instance, two directories two."""
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "link").symlink_to(run)
    expected = hashlib.sha1(str(run.resolve()).encode()).hexdigest()[:8]
    assert instance_id(run) == expected
    assert instance_id(tmp_path / "link") == expected
    assert instance_id(tmp_path / "x" / ".." / "run") == expected
    assert instance_id(tmp_path / "other") != expected
    assert len(expected) == 8 and int(expected, 16) >= 0
    assert instance_id(run, "box7") == "box7"
    assert instance_id(run, "") == expected


def test_ring_names_follow_the_documented_scheme() -> None:
    """camingest.<instance>.<stream>.<epoch as 8 lowercase hex>, with prefixes ending in a dot
    so that stream 'cam1' never matches 'cam10'."""
    assert NAME_PREFIX == "camingest"
    assert ring_name("3f2a9c01", "cam1", 0x0BADCAFE) == "camingest.3f2a9c01.cam1.0badcafe"
    assert ring_name("i", "s", 1) == "camingest.i.s.00000001"
    assert ring_name("i", "s", 0xFFFFFFFF) == "camingest.i.s.ffffffff"
    assert ring_prefix("i") == "camingest.i."
    assert ring_prefix("i", "cam1") == "camingest.i.cam1."
    assert ring_name("i", "cam1", 5).startswith(ring_prefix("i", "cam1"))
    assert not ring_name("i", "cam10", 5).startswith(ring_prefix("i", "cam1"))


def test_sweep_removes_exactly_the_prefix(shm: ShmNames) -> None:
    """sweep(prefix) unlinks the segments with that prefix and nothing else: not another
    stream whose name extends it, not another instance, not a foreign segment. A mapping of a
    swept segment keeps working (protocol 5.1: writing to it is harmless)."""
    inst, other = shm.instance(), shm.instance()
    rings = {
        "cam1a": FrameRing.create(ring_name(inst, "cam1", 1), 1, 100, 1),
        "cam1b": FrameRing.create(ring_name(inst, "cam1", 2), 1, 100, 2),
        "cam10": FrameRing.create(ring_name(inst, "cam10", 1), 1, 100, 1),
        "other": FrameRing.create(ring_name(other, "cam1", 1), 1, 100, 1),
        "decoy": FrameRing.create(shm.foreign(), 1, 100, 1),
    }
    try:
        peer = FrameRing.attach(rings["cam1a"].name, 1, 100, 1)
        removed = sweep(ring_prefix(inst, "cam1"))
        assert sorted(removed) == sorted([rings["cam1a"].name, rings["cam1b"].name])
        present = {k for k, r in rings.items() if (SHM_DIR / r.name).exists()}
        assert present == {"cam10", "other", "decoy"}

        peer.slot(0)[:] = 9
        assert (rings["cam1a"].slot(0) == 9).all()
        peer.close()

        assert sweep(ring_prefix(inst)) == [rings["cam10"].name]
        assert sweep(ring_prefix(inst)) == []
        present = {k for k, r in rings.items() if (SHM_DIR / r.name).exists()}
        assert present == {"other", "decoy"}
    finally:
        for r in rings.values():
            r.close()  # the creator's unlink of a swept segment is not an error
    assert shm.leftovers() == []
