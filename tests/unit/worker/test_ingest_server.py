"""IngestServer, the worker's side of the ingest socket, driven in-process by scripted capture
messages: a real DEALER sends hand-built HELLO/FRAME messages to the server's real ROUTER, the
rings are real /dev/shm segments, and the frame sink is a plain callable that records what it got.

What is pinned here is the contract of docs/protocol.md sections 3 and 5 as seen from a capture:
what each message is answered with, what reaches the encoder, which drop counter moves, and that
rings are created, replaced and unlinked with the sessions. Only the public API is used.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zmq

from camingest.config.model import StreamConfig
from camingest.errors import ResourceError
from camingest.wire.framing import VERSION
from camingest.wire.ingest import (
    FLAG_FORCE_KEYFRAME,
    FRAME,
    HELLO,
    INGEST_MAGIC,
    INLINE_SLOT,
    PREFIX,
    DropReason,
    FrameDesc,
    Hello,
    Kind,
    RefuseCode,
    Release,
    ReleaseStatus,
    Transport,
    Welcome,
    message_kind,
    unpack_refuse,
)
from camingest.wire.pixels import PIXEL_FORMAT_CODES, PixelFormat, frame_size, plane_layout
from camingest.wire.ring import SHM_DIR, FrameRing, ring_bytes, ring_name, ring_prefix, sweep
from camingest.worker.encoders.base import RawFrame
from camingest.worker.ingest import IngestServer

NAME = "cam1"
WIDTH, HEIGHT = 32, 16
FMT = PixelFormat.I420  # three planes of two sizes: a wrong plane cut shows
SLOTS = 3
SIZE = frame_size(FMT, WIDTH, HEIGHT)
START_EPOCH = 0x1234_0000
TIMEOUT_S = 2.0

Msg = list[bytes]


# -- the rig -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Got:
    """One frame as the sink saw it (planes copied: the server's views die after the call)."""

    pixel_format: PixelFormat
    width: int
    height: int
    planes: tuple[np.ndarray, ...]
    seq: int
    timestamp_ns: int
    force: bool


class Sink:
    """The frame handler the worker would pass (Worker._encode); answers `status`."""

    def __init__(self) -> None:
        self.frames: list[Got] = []
        self.status = ReleaseStatus.CONSUMED

    def __call__(self, frame: RawFrame, force: bool) -> ReleaseStatus:
        planes = tuple(np.array(p, copy=True) for p in frame.planes)
        self.frames.append(
            Got(
                frame.pixel_format,
                frame.width,
                frame.height,
                planes,
                frame.seq,
                frame.timestamp_ns,
                force,
            )
        )
        return self.status


class Rig:
    """One IngestServer, its sink, and the capture DEALERs a test connects to it."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        tmp: Path,
        instance: str,
        epoch: int = START_EPOCH,
        tcp: bool = False,
    ) -> None:
        self.ctx = ctx
        self.instance = instance
        self.stream = StreamConfig(
            name=NAME, width=WIDTH, height=HEIGHT, pixel_format=FMT, slots=SLOTS
        )
        self.ipc = f"ipc://{tmp}/ingest/{NAME}.sock"
        endpoints = (self.ipc, "tcp://127.0.0.1:*") if tcp else (self.ipc,)
        self.sink = Sink()
        self.server = IngestServer(ctx, self.stream, endpoints, instance, epoch, self.sink)
        self.dealers: list[zmq.Socket[bytes]] = []

    def capture(self, endpoint: str | None = None) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint or self.ipc)
        self.dealers.append(sock)
        return sock

    def drops(self, reason: DropReason) -> int:
        return self.server.counters.drops.get(reason.value, 0)

    def pump_until(self, pred: Callable[[], object], what: str) -> None:
        """Serve the server's sockets until `pred()` holds (bounded)."""
        poller = zmq.Poller()
        for sock in self.server.sockets:
            poller.register(sock, zmq.POLLIN)
        deadline = time.monotonic() + TIMEOUT_S
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            for sock, _ in poller.poll(20):
                self.server.handle(sock)

    def reply(self, dealer: zmq.Socket[bytes]) -> Msg:
        """Serve the server until `dealer` has an answer, and return it."""
        poller = zmq.Poller()
        for sock in self.server.sockets:
            poller.register(sock, zmq.POLLIN)
        poller.register(dealer, zmq.POLLIN)
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            for sock, _ in poller.poll(20):
                if sock is dealer:
                    answer: Msg = dealer.recv_multipart()
                    return answer
                self.server.handle(sock)
        raise AssertionError("no answer from the ingest server")

    def ask(self, dealer: zmq.Socket[bytes], msg: Msg) -> Msg:
        dealer.send_multipart(msg)
        return self.reply(dealer)

    def hello(
        self,
        dealer: zmq.Socket[bytes],
        transport: Transport = Transport.SHM,
    ) -> Welcome:
        answer = self.ask(dealer, [Hello(NAME, WIDTH, HEIGHT, FMT, transport).pack()])
        assert len(answer) == 1, f"expected a WELCOME, got {answer!r}"
        return Welcome.unpack(answer[0])

    def assert_no_answer(self, dealer: zmq.Socket[bytes]) -> None:
        """Nothing was answered to what `dealer` sent so far: the answer to a probe that is
        always refused (an unknown stream) is the next message on this FIFO connection."""
        probe = Hello("probe", WIDTH, HEIGHT, FMT, Transport.SHM).pack()
        code, reason = unpack_refuse(self.ask(dealer, [probe]))
        assert code is RefuseCode.UNKNOWN_STREAM and "probe" in reason, (code, reason)


def refused(answer: Msg) -> RefuseCode | int:
    return unpack_refuse(answer)[0]


def pattern(seed: int) -> np.ndarray:
    return ((np.arange(SIZE, dtype=np.uint32) * 7 + seed * 31) % 251).astype(np.uint8)


def expected_planes(data: np.ndarray) -> list[np.ndarray]:
    return [
        data[p.offset : p.offset + p.size].reshape(p.rows, p.stride)[:, : p.row_bytes]
        for p in plane_layout(FMT, WIDTH, HEIGHT)
    ]


def assert_frame(got: Got, data: np.ndarray, seq: int, ts: int, force: bool = False) -> None:
    assert (got.pixel_format, got.width, got.height) == (FMT, WIDTH, HEIGHT)
    assert (got.seq, got.timestamp_ns, got.force) == (seq, ts, force)
    want = expected_planes(data)
    assert [p.shape for p in got.planes] == [p.shape for p in want]
    for a, b in zip(got.planes, want, strict=True):
        np.testing.assert_array_equal(a, b)


def shm_names(instance: str) -> list[str]:
    return sorted(p.name for p in SHM_DIR.glob(ring_prefix(instance) + "*"))


def raw_hello(
    *,
    version: int = VERSION,
    name: bytes = NAME.encode(),
    fmt: int = PIXEL_FORMAT_CODES[FMT],
    transport: int = Transport.SHM,
) -> bytes:
    return HELLO.pack(INGEST_MAGIC, version, Kind.HELLO, name, WIDTH, HEIGHT, fmt, transport)


def raw_frame(*, version: int = VERSION, kind: int = Kind.FRAME, epoch: int = 0) -> bytes:
    return FRAME.pack(INGEST_MAGIC, version, kind, 0, epoch, 0, 1, 0)


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cgi-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def instance() -> Iterator[str]:
    """A unique instance name, so ring names are this test's own; nothing may be left."""
    name = "t" + secrets.token_hex(4)
    yield name
    left = sweep(ring_prefix(name))
    assert not left, f"shared memory left behind: {left}"


@pytest.fixture
def make_rig(
    ctx: zmq.Context[zmq.Socket[bytes]], tmp: Path, instance: str
) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(**kw: object) -> Rig:
        rig = Rig(ctx, tmp, instance, **kw)  # type: ignore[arg-type]
        rigs.append(rig)
        rig.server.open()
        return rig

    yield make
    for rig in rigs:
        for d in rig.dealers:
            d.close(linger=0)
        rig.server.close()


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig()


# -- handshake ---------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_hello_gets_welcome_with_a_ring_of_the_announced_geometry(rig: Rig) -> None:
    """A good SHM HELLO opens a session: the WELCOME names a ring that exists in /dev/shm with
    the slot count, stride, frame size and planes it announces, and a capture can map it with
    the WELCOME's numbers (the header check in FrameRing.attach passes)."""
    before = rig.server.connected
    cap = rig.capture()
    w = rig.hello(cap)
    assert (before, rig.server.connected) == (False, True)
    assert rig.server.counters.sessions == 1
    assert w.epoch == START_EPOCH
    assert w.ring_name == ring_name(rig.instance, NAME, START_EPOCH)
    assert (w.slot_count, w.frame_size, w.first_slot_offset) == (SLOTS, SIZE, 4096)
    assert w.slot_stride >= SIZE and w.slot_stride % 4096 == 0
    assert w.planes == plane_layout(FMT, WIDTH, HEIGHT)
    assert shm_names(rig.instance) == [w.ring_name]
    st = (SHM_DIR / w.ring_name).stat()
    assert st.st_size == ring_bytes(SLOTS, SIZE) == 4096 + SLOTS * w.slot_stride
    # Captures run as other members of the group: the ring must be group read-write.
    assert stat.S_IMODE(st.st_mode) == 0o660
    with FrameRing.attach(w.ring_name, w.slot_count, w.frame_size, w.epoch) as ring:
        assert ring.slot_stride == w.slot_stride
    # The ipc endpoint is group-accessible for the same reason.
    assert stat.S_IMODE(os.stat(rig.ipc[6:]).st_mode) == 0o660


@pytest.mark.timeout(30)
def test_repeated_hello_before_any_frame_gets_the_same_welcome(rig: Rig) -> None:
    """A capture repeats HELLO until answered (protocol 5.4): while its session has taken no
    frame, a repeat gets the same WELCOME, not a new epoch and ring, so repeats do no harm."""
    cap = rig.capture()
    first = rig.hello(cap)
    again = rig.hello(cap)
    assert again == first
    assert rig.server.counters.sessions == 1
    assert shm_names(rig.instance) == [first.ring_name]


@pytest.mark.timeout(30)
def test_shm_frames_reach_the_sink_and_are_released(rig: Rig) -> None:
    """A FRAME for a slot hands the sink exactly that slot's bytes (cut into the stream's
    planes), with the capture's seq, timestamp and force flag; the slot then comes back in a
    RELEASE naming epoch, slot and seq with status CONSUMED."""
    cap = rig.capture()
    w = rig.hello(cap)
    sent = []
    with FrameRing.attach(w.ring_name, w.slot_count, w.frame_size, w.epoch) as ring:
        for i, (slot, seq, ts, flags) in enumerate(
            [(0, 1, 1_700_000_000_000_000_000, 0), (2, 2, -5, FLAG_FORCE_KEYFRAME), (1, 9, 0, 0)]
        ):
            data = pattern(i)
            ring.slot(slot)[:] = data
            answer = rig.ask(cap, [FrameDesc(w.epoch, slot, seq, ts, flags).pack()])
            assert len(answer) == 1
            assert Release.unpack(answer[0]) == Release(w.epoch, slot, seq, ReleaseStatus.CONSUMED)
            sent.append((data, seq, ts, bool(flags)))
    assert len(rig.sink.frames) == 3
    for got, (data, seq, ts, force) in zip(rig.sink.frames, sent, strict=True):
        assert_frame(got, data, seq, ts, force)
    assert rig.server.counters.frames_in == 3
    assert rig.server.counters.drops == {}


@pytest.mark.timeout(30)
def test_encoder_refusal_is_released_with_its_status_and_counted(rig: Rig) -> None:
    """A frame the encoder refuses still gives its slot back (the capture would otherwise run
    out of slots), with status ENCODER_ERROR, and is counted as an encoder_error drop."""
    cap = rig.capture()
    w = rig.hello(cap)
    rig.sink.status = ReleaseStatus.ENCODER_ERROR
    answer = rig.ask(cap, [FrameDesc(w.epoch, 1, 5, 6).pack()])
    assert Release.unpack(answer[0]) == Release(w.epoch, 1, 5, ReleaseStatus.ENCODER_ERROR)
    assert rig.drops(DropReason.ENCODER_ERROR) == 1
    assert len(rig.sink.frames) == 1


@pytest.mark.timeout(30)
def test_inline_session_has_no_ring_and_its_frames_are_not_released(rig: Rig) -> None:
    """An INLINE HELLO gets a WELCOME without ring (no /dev/shm segment); an inline FRAME's
    second part reaches the sink cut into planes, and no RELEASE follows (protocol 3.4)."""
    cap = rig.capture()
    w = rig.hello(cap, Transport.INLINE)
    assert (w.ring_name, w.slot_count, w.frame_size) == ("", 0, SIZE)
    assert w.planes == plane_layout(FMT, WIDTH, HEIGHT)
    assert shm_names(rig.instance) == []
    data = pattern(3)
    cap.send_multipart([FrameDesc(w.epoch, INLINE_SLOT, 77, 88, 0).pack(), data.tobytes()])
    rig.pump_until(lambda: rig.sink.frames, "the inline frame")
    assert_frame(rig.sink.frames[0], data, 77, 88)
    rig.assert_no_answer(cap)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("size", [0, SIZE - 1, SIZE + 1])
def test_inline_frame_of_the_wrong_size_is_dropped(rig: Rig, size: int) -> None:
    """An inline frame whose bytes are not exactly frame_size never reaches the encoder: it is
    counted as wrong_size and not answered."""
    cap = rig.capture()
    w = rig.hello(cap, Transport.INLINE)
    cap.send_multipart([FrameDesc(w.epoch, INLINE_SLOT, 1, 0).pack(), bytes(size)])
    rig.pump_until(lambda: rig.drops(DropReason.WRONG_SIZE) == 1, "a wrong_size drop")
    assert rig.sink.frames == []
    assert rig.server.counters.frames_in == 0
    rig.assert_no_answer(cap)
    assert rig.server.connected  # a bad frame does not end the session


# -- malformed input ---------------------------------------------------------------------------

MALFORMED_ANY_SESSION: dict[str, Msg] = {
    "empty": [b""],
    "shorter than the prefix": [b"CGI"],
    "bad magic": [b"XXXX" + raw_hello()[4:]],
    "truncated hello": [raw_hello()[:-1]],
    "hello one byte too long": [raw_hello() + b"\0"],
    "hello in two frames": [raw_hello(), b"x"],
    "unknown pixel format code": [raw_hello(fmt=99)],
    "pixel format code zero": [raw_hello(fmt=0)],
    "unknown transport": [raw_hello(transport=2)],
    "kind WELCOME": [PREFIX.pack(INGEST_MAGIC, VERSION, Kind.WELCOME) + bytes(200)],
    "kind REFUSE": [PREFIX.pack(INGEST_MAGIC, VERSION, Kind.REFUSE) + b"\0\0", b"why"],
    "kind RELEASE": [Release(1, 0, 1, ReleaseStatus.CONSUMED).pack()],
    "kind 0": [PREFIX.pack(INGEST_MAGIC, VERSION, 0)],
    "kind 255": [PREFIX.pack(INGEST_MAGIC, VERSION, 255) + bytes(26)],
    "truncated frame": [raw_frame()[:-1]],
    "frame too long": [raw_frame() + b"\0"],
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("transport", [Transport.SHM, Transport.INLINE])
@pytest.mark.parametrize("case", sorted(MALFORMED_ANY_SESSION))
def test_malformed_messages_are_counted_and_not_answered(
    rig: Rig, case: str, transport: Transport
) -> None:
    """Bytes that do not follow the layouts (protocol 3.4's table: short, bad magic, wrong
    length, unknown codes, kinds a capture never sends) are counted as malformed, get no
    answer, and leave the current session as it was."""
    cap = rig.capture()
    w = rig.hello(cap, transport)
    cap.send_multipart(MALFORMED_ANY_SESSION[case])
    rig.pump_until(lambda: rig.drops(DropReason.MALFORMED) == 1, "a malformed drop")
    rig.assert_no_answer(cap)
    assert rig.server.counters.drops == {DropReason.MALFORMED.value: 1}
    assert rig.sink.frames == []
    assert rig.server.connected
    assert rig.server.counters.sessions == 1
    assert rig.hello(cap, transport) == w  # the same session still stands


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("transport", "make"),
    [
        pytest.param(
            Transport.SHM,
            lambda e: [FrameDesc(e, INLINE_SLOT, 1, 0).pack(), bytes(SIZE)],
            id="inline frame in a shm session",
        ),
        pytest.param(
            Transport.SHM,
            lambda e: [FrameDesc(e, 0, 1, 0).pack(), b"extra"],
            id="slot descriptor with a second frame",
        ),
        pytest.param(
            Transport.INLINE,
            lambda e: [FrameDesc(e, 0, 1, 0).pack()],
            id="slot descriptor in an inline session",
        ),
        pytest.param(
            Transport.INLINE,
            lambda e: [FrameDesc(e, INLINE_SLOT, 1, 0).pack()],
            id="inline descriptor without its bytes",
        ),
        pytest.param(
            Transport.INLINE,
            lambda e: [FrameDesc(e, INLINE_SLOT, 1, 0).pack(), bytes(SIZE), b"x"],
            id="inline descriptor with three frames",
        ),
    ],
)
def test_frames_that_do_not_fit_the_session_are_malformed(
    rig: Rig, transport: Transport, make: Callable[[int], Msg]
) -> None:
    """A FRAME of the current epoch whose form does not match the session's transport is
    malformed: nothing reaches the sink and nothing is released."""
    cap = rig.capture()
    w = rig.hello(cap, transport)
    cap.send_multipart(make(w.epoch))
    rig.pump_until(lambda: rig.drops(DropReason.MALFORMED) == 1, "a malformed drop")
    rig.assert_no_answer(cap)
    assert rig.sink.frames == []
    assert rig.server.counters.frames_in == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "msg",
    [
        pytest.param([raw_hello(version=VERSION + 1)], id="hello v+1"),
        pytest.param([raw_hello(version=0)], id="hello v0"),
        pytest.param([raw_frame(version=VERSION + 1)], id="frame v+1"),
        pytest.param([PREFIX.pack(INGEST_MAGIC, VERSION + 1, Kind.HELLO)], id="bare prefix"),
    ],
)
def test_another_protocol_version_is_refused_bad_version(rig: Rig, msg: Msg) -> None:
    """A message of another protocol version is answered REFUSE BAD_VERSION (the capture
    stops instead of retrying forever) and counted as malformed; no session starts."""
    cap = rig.capture()
    code, reason = unpack_refuse(rig.ask(cap, msg))
    assert code is RefuseCode.BAD_VERSION
    assert str(VERSION) in reason
    assert rig.server.counters.drops == {DropReason.MALFORMED.value: 1}
    assert not rig.server.connected
    assert shm_names(rig.instance) == []


@pytest.mark.timeout(30)
def test_frames_without_a_current_session_are_refused_stale_epoch(rig: Rig) -> None:
    """A FRAME before any HELLO, with another epoch, or from another connection than the
    session's owner is refused STALE_EPOCH (handshake again) and counted; none reaches the
    sink, and the owner's session is untouched."""
    owner, other = rig.capture(), rig.capture()
    assert refused(rig.ask(owner, [FrameDesc(START_EPOCH, 0, 1, 0).pack()])) == (
        RefuseCode.STALE_EPOCH
    )
    w = rig.hello(owner)
    for epoch in (w.epoch - 1, w.epoch + 1, 0):
        assert refused(rig.ask(owner, [FrameDesc(epoch, 0, 1, 0).pack()])) == (
            RefuseCode.STALE_EPOCH
        )
    # Another connection that learnt (or guessed) the epoch cannot write into this session.
    assert refused(rig.ask(other, [FrameDesc(w.epoch, 0, 1, 0).pack()])) == (RefuseCode.STALE_EPOCH)
    assert rig.server.counters.drops == {DropReason.STALE_EPOCH.value: 5}
    assert rig.sink.frames == []
    answer = rig.ask(owner, [FrameDesc(w.epoch, 0, 1, 0).pack()])
    assert Release.unpack(answer[0]).status is ReleaseStatus.CONSUMED


@pytest.mark.timeout(30)
@pytest.mark.parametrize("slot", [SLOTS, SLOTS + 1, INLINE_SLOT - 1])
def test_slot_index_outside_the_ring_is_dropped(rig: Rig, slot: int) -> None:
    """A descriptor naming a slot past the ring's end is counted as bad_slot, never read (no
    out-of-bounds access) and not answered."""
    cap = rig.capture()
    w = rig.hello(cap)
    cap.send_multipart([FrameDesc(w.epoch, slot, 1, 0).pack()])
    rig.pump_until(lambda: rig.drops(DropReason.BAD_SLOT) == 1, "a bad_slot drop")
    rig.assert_no_answer(cap)
    assert rig.sink.frames == []
    assert rig.server.counters.frames_in == 0


@pytest.mark.timeout(30)
def test_a_slot_sent_twice_is_delivered_twice(rig: Rig) -> None:
    """Current behaviour, documented: the server does not track which slots the capture has
    handed over, so a descriptor for a slot already in the worker's hands (sent twice without
    a RELEASE in between) is encoded and released again; DropReason.NOT_OWNED is never
    counted. The RELEASE is sent after the sink returned, so a slot is never read while the
    capture may write it as long as the capture follows the ownership rules."""
    cap = rig.capture()
    w = rig.hello(cap)
    desc = FrameDesc(w.epoch, 1, 4, 0).pack()
    cap.send_multipart([desc])
    cap.send_multipart([desc])
    answers = [rig.reply(cap), rig.reply(cap)]
    assert [Release.unpack(a[0]) for a in answers] == [
        Release(w.epoch, 1, 4, ReleaseStatus.CONSUMED)
    ] * 2
    assert len(rig.sink.frames) == 2
    assert DropReason.NOT_OWNED.value not in rig.server.counters.drops


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("hello", "code"),
    [
        (Hello("cam2", WIDTH, HEIGHT, FMT, Transport.SHM), RefuseCode.UNKNOWN_STREAM),
        (Hello("cam", WIDTH, HEIGHT, FMT, Transport.SHM), RefuseCode.UNKNOWN_STREAM),
        (Hello("cam10", WIDTH, HEIGHT, FMT, Transport.SHM), RefuseCode.UNKNOWN_STREAM),
        (Hello(NAME, WIDTH + 2, HEIGHT, FMT, Transport.SHM), RefuseCode.GEOMETRY),
        (Hello(NAME, WIDTH, HEIGHT - 2, FMT, Transport.INLINE), RefuseCode.GEOMETRY),
        (Hello(NAME, HEIGHT, WIDTH, FMT, Transport.SHM), RefuseCode.GEOMETRY),
        (Hello(NAME, WIDTH, HEIGHT, PixelFormat.NV12, Transport.SHM), RefuseCode.PIXEL_FORMAT),
        (Hello(NAME, WIDTH, HEIGHT, PixelFormat.GRAY, Transport.INLINE), RefuseCode.PIXEL_FORMAT),
        # Checked in order: the stream name first, then the size, then the format.
        (Hello("other", 1, 1, PixelFormat.GRAY, Transport.SHM), RefuseCode.UNKNOWN_STREAM),
        (Hello(NAME, 1, 1, PixelFormat.GRAY, Transport.SHM), RefuseCode.GEOMETRY),
    ],
)
def test_hello_that_does_not_match_the_stream_is_refused(
    rig: Rig, hello: Hello, code: RefuseCode
) -> None:
    """A HELLO for another stream, size or pixel format is refused with the code naming the
    first mismatch (name, geometry, format); no session starts and no ring is created."""
    cap = rig.capture()
    got, reason = unpack_refuse(rig.ask(cap, [hello.pack()]))
    assert got is code
    assert reason
    assert not rig.server.connected
    assert rig.server.counters.sessions == 0
    assert shm_names(rig.instance) == []


@pytest.mark.timeout(30)
def test_a_refused_hello_leaves_the_current_session_alone(rig: Rig) -> None:
    """A mismatching HELLO from the session's own capture neither ends nor replaces its
    session: the ring stays and the next frame is still taken."""
    cap = rig.capture()
    w = rig.hello(cap)
    bad = Hello(NAME, WIDTH, HEIGHT, PixelFormat.NV12, Transport.SHM).pack()
    assert refused(rig.ask(cap, [bad])) == RefuseCode.PIXEL_FORMAT
    assert rig.server.connected and shm_names(rig.instance) == [w.ring_name]
    answer = rig.ask(cap, [FrameDesc(w.epoch, 0, 1, 0).pack()])
    assert Release.unpack(answer[0]).epoch == w.epoch


@pytest.mark.timeout(30)
def test_shared_memory_is_refused_over_tcp_but_inline_is_accepted(
    make_rig: Callable[..., Rig],
) -> None:
    """On a tcp endpoint the capture may be on another host and cannot map the ring: an SHM
    HELLO there is refused TRANSPORT (without creating a ring), an INLINE one is welcomed."""
    rig = make_rig(tcp=True)
    tcp_sock = rig.server.sockets[1]
    endpoint = tcp_sock.getsockopt_string(zmq.LAST_ENDPOINT)
    assert endpoint.startswith("tcp://127.0.0.1:")
    cap = rig.capture(endpoint)
    code, reason = unpack_refuse(
        rig.ask(cap, [Hello(NAME, WIDTH, HEIGHT, FMT, Transport.SHM).pack()])
    )
    assert code is RefuseCode.TRANSPORT and "ipc" in reason
    assert not rig.server.connected
    assert shm_names(rig.instance) == []
    w = rig.hello(cap, Transport.INLINE)
    assert w.ring_name == ""
    data = pattern(5)
    cap.send_multipart([FrameDesc(w.epoch, INLINE_SLOT, 3, 4).pack(), data.tobytes()])
    rig.pump_until(lambda: rig.sink.frames, "the inline frame over tcp")
    assert_frame(rig.sink.frames[0], data, 3, 4)


@pytest.mark.timeout(30)
def test_a_ring_that_cannot_be_created_is_refused_transport(rig: Rig) -> None:
    """When the ring cannot be created (here: its name is taken) the HELLO is refused TRANSPORT,
    the foreign segment is left alone, and no session starts. The epoch is used up, so the
    capture's retry gets the next epoch (a fresh name) and is welcomed."""
    blocker = SHM_DIR / ring_name(rig.instance, NAME, START_EPOCH)
    blocker.write_bytes(b"not ours")
    try:
        cap = rig.capture()
        code, _ = unpack_refuse(
            rig.ask(cap, [Hello(NAME, WIDTH, HEIGHT, FMT, Transport.SHM).pack()])
        )
        assert code is RefuseCode.TRANSPORT
        assert not rig.server.connected
        assert blocker.read_bytes() == b"not ours"
        w = rig.hello(cap)
        assert w.epoch == START_EPOCH + 1
        assert (SHM_DIR / w.ring_name).exists()
    finally:
        blocker.unlink(missing_ok=True)


# -- who owns the stream -----------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_second_capture_is_busy_while_the_first_is_sending(rig: Rig) -> None:
    """While the current capture is sending, another connection's HELLO is refused BUSY: two
    live captures must not take the stream from each other. The first keeps its session."""
    first, second = rig.capture(), rig.capture()
    w = rig.hello(first)
    rig.ask(first, [FrameDesc(w.epoch, 0, 1, 0).pack()])
    for transport in (Transport.SHM, Transport.INLINE):
        answer = rig.ask(second, [Hello(NAME, WIDTH, HEIGHT, FMT, transport).pack()])
        assert refused(answer) == RefuseCode.BUSY
    assert shm_names(rig.instance) == [w.ring_name]
    answer = rig.ask(first, [FrameDesc(w.epoch, 1, 2, 0).pack()])
    assert Release.unpack(answer[0]) == Release(w.epoch, 1, 2, ReleaseStatus.CONSUMED)
    assert rig.server.counters.sessions == 1


@pytest.mark.timeout(30)
def test_a_capture_that_sent_nothing_is_taken_over(rig: Rig) -> None:
    """A capture that handshook but never sent a frame does not hold the stream: another
    connection's HELLO starts a new session (next epoch, new ring, old ring unlinked), and
    the replaced capture's next FRAME is refused STALE_EPOCH."""
    first, second = rig.capture(), rig.capture()
    old = rig.hello(first)
    new = rig.hello(second)
    assert new.epoch == old.epoch + 1
    assert shm_names(rig.instance) == [new.ring_name]
    answer = rig.ask(first, [FrameDesc(old.epoch, 0, 1, 0).pack()])
    assert refused(answer) == RefuseCode.STALE_EPOCH
    assert rig.sink.frames == []


@pytest.mark.timeout(30)
def test_a_new_hello_from_the_same_capture_starts_a_new_epoch(rig: Rig) -> None:
    """Once frames have flowed, a HELLO from the same capture (it restarted its session) gets
    a new epoch and a new ring; the old ring is unlinked and the old epoch's FRAMEs are stale.
    A HELLO changing the transport also starts a new session, even before any frame."""
    cap = rig.capture()
    old = rig.hello(cap)
    rig.ask(cap, [FrameDesc(old.epoch, 0, 1, 0).pack()])
    new = rig.hello(cap)
    assert new.epoch == old.epoch + 1
    assert new.ring_name != old.ring_name
    assert shm_names(rig.instance) == [new.ring_name]
    assert rig.server.counters.sessions == 2
    assert refused(rig.ask(cap, [FrameDesc(old.epoch, 0, 2, 0).pack()])) == (RefuseCode.STALE_EPOCH)
    inline = rig.hello(cap, Transport.INLINE)
    assert inline.epoch == new.epoch + 1 and inline.ring_name == ""
    assert shm_names(rig.instance) == []
    back = rig.hello(cap)
    assert back.epoch == inline.epoch + 1
    assert shm_names(rig.instance) == [back.ring_name]


@pytest.mark.timeout(30)
def test_epochs_wrap_from_ffffffff_to_1(make_rig: Callable[..., Rig]) -> None:
    """Epoch 0 is never handed out: after 0xFFFFFFFF the next session gets 1."""
    rig = make_rig(epoch=0xFFFFFFFF)
    cap = rig.capture()
    w = rig.hello(cap)
    assert w.epoch == 0xFFFFFFFF
    rig.ask(cap, [FrameDesc(w.epoch, 0, 1, 0).pack()])
    assert rig.hello(cap).epoch == 1


# -- lifecycle ---------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_close_unlinks_the_ring_and_the_socket_file(rig: Rig) -> None:
    """close() ends the session (unlinking its ring), closes the sockets and removes the ipc
    socket file, so a stream removed by a reload leaves nothing in /dev/shm or the run dir."""
    cap = rig.capture()
    w = rig.hello(cap)
    with FrameRing.attach(w.ring_name, w.slot_count, w.frame_size, w.epoch) as ring:
        ring.slot(0)[:] = pattern(0)
        rig.ask(cap, [FrameDesc(w.epoch, 0, 1, 0).pack()])
    assert Path(rig.ipc[6:]).exists()
    rig.server.close()
    assert not rig.server.connected
    assert rig.server.sockets == []
    assert shm_names(rig.instance) == []
    assert not Path(rig.ipc[6:]).exists()
    rig.server.close()  # twice is harmless (the fixture closes again)


@pytest.mark.timeout(30)
def test_open_on_a_taken_endpoint_raises_resource_error(
    ctx: zmq.Context[zmq.Socket[bytes]], tmp: Path, instance: str
) -> None:
    """A bind failure is a ResourceError naming the endpoint (the worker reports it as fatal
    with the resource exit code), and close() afterwards releases every socket made, the one
    that failed included, and the ipc file of the one that bound."""
    taken = ctx.socket(zmq.ROUTER)
    taken.setsockopt(zmq.LINGER, 0)
    try:
        taken.bind("tcp://127.0.0.1:*")
        tcp = taken.getsockopt_string(zmq.LAST_ENDPOINT)
        stream = StreamConfig(name=NAME, width=WIDTH, height=HEIGHT, pixel_format=FMT)
        ipc = f"ipc://{tmp}/ingest/{NAME}.sock"
        server = IngestServer(ctx, stream, (ipc, tcp), instance, 1, Sink())
        with pytest.raises(ResourceError, match=f"cannot bind ingest endpoint {tcp}"):
            server.open()
        assert len(server.sockets) == 2
        server.close()
        assert server.sockets == []
        assert not Path(ipc[6:]).exists()
    finally:
        taken.close(linger=0)


@pytest.mark.timeout(30)
def test_close_after_a_failed_open_under_a_file_does_not_raise(
    ctx: zmq.Context[zmq.Socket[bytes]], tmp: Path, instance: str
) -> None:
    """An ipc endpoint under a regular file cannot be bound: open() raises ResourceError and
    close() must then clean up quietly, as the worker calls it in a finally block."""
    (tmp / "file").write_text("")
    stream = StreamConfig(name=NAME, width=WIDTH, height=HEIGHT, pixel_format=FMT)
    ep = f"ipc://{tmp}/file/{NAME}.sock"
    server = IngestServer(ctx, stream, (ep,), instance, 1, Sink())
    try:
        with pytest.raises(ResourceError, match="cannot bind ingest endpoint"):
            server.open()
    finally:
        for sock in server.sockets:  # in case close() raises below
            sock.close(linger=0)
    server.close()


@pytest.mark.timeout(30)
def test_handle_serves_at_most_its_budget_and_never_blocks(rig: Rig) -> None:
    """handle(sock, budget) takes at most `budget` messages per call (the worker loop stays
    responsive to commands under a flood) and returns at once when nothing is waiting."""
    cap = rig.capture()
    sock = rig.server.sockets[0]
    start = time.monotonic()
    rig.server.handle(sock, 8)  # nothing waiting: returns without blocking
    assert time.monotonic() - start < 0.5
    for _ in range(7):
        cap.send_multipart([b"junk"])
    seen = 0
    deadline = time.monotonic() + TIMEOUT_S
    while seen < 7:
        assert time.monotonic() < deadline, "the junk did not arrive"
        if sock.poll(20):
            rig.server.handle(sock, 2)
            now = rig.drops(DropReason.MALFORMED)
            assert now - seen <= 2
            seen = now
    assert seen == 7


@pytest.mark.timeout(30)
def test_an_oversized_message_never_arrives(rig: Rig) -> None:
    """A message larger than frame size + 4096 bytes is cut off by libzmq (MAXMSGSIZE): it is
    neither delivered nor counted, and the server keeps serving other captures."""
    cap = rig.capture()
    w = rig.hello(cap, Transport.INLINE)
    cap.send_multipart([FrameDesc(w.epoch, INLINE_SLOT, 1, 0).pack(), bytes(SIZE + 8192)])
    poller = zmq.Poller()
    poller.register(rig.server.sockets[0], zmq.POLLIN)
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        for sock, _ in poller.poll(20):
            rig.server.handle(sock)
    assert rig.sink.frames == []
    assert rig.server.counters.drops == {}
    rig.assert_no_answer(rig.capture())


@pytest.mark.timeout(30)
def test_hostile_input_never_raises(rig: Rig) -> None:
    """Random bytes, valid prefixes with random bodies, every kind and version, and random
    frame counts, from several connections, in and out of a session: handle() never raises,
    the junk is counted, and the capture that owns the stream is still served afterwards."""
    rnd = random.Random(1234)
    owner, *others = caps = [rig.capture() for _ in range(3)]
    w = rig.hello(owner)
    rig.ask(owner, [FrameDesc(w.epoch, 0, 1, 0).pack()])
    busy = rig.ask(others[0], [Hello(NAME, WIDTH, HEIGHT, FMT, Transport.INLINE).pack()])
    assert refused(busy) == RefuseCode.BUSY

    def junk() -> bytes:
        choice = rnd.randrange(5)
        body = rnd.randbytes(rnd.choice([0, 1, 5, 6, 31, 32, 33, 52, 140, 204, SIZE]))
        if choice == 0:
            return body
        version = rnd.choice([VERSION, VERSION, 0, 2, 255])
        if choice == 1:
            kind = rnd.choice([*Kind, 0, 6, 255])
            return PREFIX.pack(INGEST_MAGIC, version, kind) + body
        if choice == 2:
            return raw_hello(fmt=rnd.randrange(256), transport=rnd.randrange(256))
        if choice == 3:
            name = rnd.randbytes(rnd.randrange(33)).ljust(32, b"\0")[:32]
            return raw_hello(name=name, version=version)
        return FRAME.pack(
            INGEST_MAGIC,
            version,
            Kind.FRAME,
            rnd.randrange(2**16),
            rnd.choice([w.epoch, w.epoch + 1, 0, 0xFFFFFFFF]),
            rnd.choice([0, 1, SLOTS, INLINE_SLOT, rnd.randrange(2**32)]),
            rnd.randrange(2**64),
            rnd.randrange(-(2**63), 2**63),
        )

    for _ in range(400):
        rnd.choice(caps).send_multipart([junk() for _ in range(rnd.choice([1, 1, 1, 2, 3]))])
    for sock in rig.server.sockets:
        while sock.poll(100):
            rig.server.handle(sock, 16)  # raising here fails the test
    assert sum(rig.server.counters.drops.values()) > 100
    # The owner (it sent a frame moments ago, so nobody could take over) handshakes again
    # and is served; its earlier answers come first on the connection.
    owner.send_multipart([Hello(NAME, WIDTH, HEIGHT, FMT, Transport.SHM).pack()])
    answer = rig.reply(owner)
    while message_kind(answer[0]) != Kind.WELCOME:
        answer = rig.reply(owner)
    nw = Welcome.unpack(answer[0])
    assert shm_names(rig.instance) == [nw.ring_name]
    owner.send_multipart([FrameDesc(nw.epoch, 2, 99, 0).pack()])
    answer = rig.reply(owner)
    while message_kind(answer[0]) != Kind.RELEASE:
        answer = rig.reply(owner)
    assert Release.unpack(answer[0]) == Release(nw.epoch, 2, 99, ReleaseStatus.CONSUMED)
