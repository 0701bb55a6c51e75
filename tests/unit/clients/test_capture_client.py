"""CaptureClient's session logic against a scripted worker.

The "worker" here is a real ZeroMQ ROUTER bound on an ipc:// endpoint in a short /tmp dir and a
real FrameRing in /dev/shm, driven by hand with the message classes of camingest.wire.ingest.
Only the client's public API is used (constructor, connect, send, close, epoch, stats, drops),
so these tests pin what docs/protocol.md (sections 3, 5 and 6) promises a capture does, not how
capture.py happens to do it.

The client acts only inside connect() and send(): connect() blocks, so during a handshake the
scripted side runs in a small thread with bounded polls; everything else runs in the test's
thread. Where a message from the worker must reach the client before the next step, the test
either uses on_full="wait" (send() then waits for it) or repeats send() under a deadline.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from camingest.capture import CaptureClient
from camingest.errors import CaptureError
from camingest.wire.framing import VERSION
from camingest.wire.ingest import (
    FLAG_FORCE_KEYFRAME,
    INGEST_MAGIC,
    INLINE_SLOT,
    REFUSE,
    FrameDesc,
    Hello,
    Kind,
    RefuseCode,
    Release,
    ReleaseStatus,
    Transport,
    Welcome,
    message_kind,
    pack_refuse,
)
from camingest.wire.pixels import PixelFormat, Plane, frame_size, packed_shape, plane_layout
from camingest.wire.ring import RING_FIRST_SLOT_OFFSET, SHM_DIR, FrameRing, slot_stride

STREAM = "cam0"
W, H = 64, 48
FMT = PixelFormat.NV12
FRAME_SIZE = frame_size(FMT, W, H)
SHAPE = packed_shape(FMT, W, H)  # (72, 64)
EPOCH = 0x0BADCAFE
LAYOUT = plane_layout(FMT, W, H)
STALL_S = 2.0  # docs/protocol.md 5.4: no RELEASE for 2 s with every slot out -> HELLO again

Array = npt.NDArray[np.uint8]


def epoch_of(client: CaptureClient) -> int | None:
    """client.epoch, read through a call so that mypy does not keep an earlier narrowing."""
    return client.epoch


def make_frame(seed: int, shape: tuple[int, ...] = SHAPE) -> Array:
    """A frame whose bytes differ from every other seed's (so slot contents identify it)."""
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


class Script:
    """The scripted worker's side of a blocking client call, in a thread; join re-raises."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.error: BaseException | None = None
        self._fn = fn
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # handed to the test thread by join()
            self.error = exc

    def join(self, timeout: float = 10.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the scripted worker thread did not finish"
        if self.error is not None:
            raise self.error


class ScriptedWorker:
    """A ROUTER the test drives by hand, plus the rings it creates (and unlinks)."""

    def __init__(self, endpoint: str, prefix: str) -> None:
        self.endpoint = endpoint
        self.prefix = prefix  # every ring's name starts with this
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        if endpoint.startswith("tcp://"):
            self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.rings: dict[int, FrameRing] = {}
        self.scripts: list[Script] = []
        self.stats_msgs: list[list[bytes]] = []

    # -- receiving ---------------------------------------------------------------------------

    def poll_recv(self, timeout: float) -> tuple[bytes, list[bytes]] | None:
        """The next message, or None after `timeout`. STATS (the capture's own drop counts,
        for the daemon's status; no answer) are kept aside, as a worker just records them."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            if not self.sock.poll(int(remaining * 1000), zmq.POLLIN):
                return None
            ident, *frames = self.sock.recv_multipart()
            if message_kind(frames[0]) == Kind.STATS:
                self.stats_msgs.append(frames)
                continue
            return ident, frames

    def recv(self, timeout: float = 2.0) -> tuple[bytes, list[bytes]]:
        got = self.poll_recv(timeout)
        assert got is not None, f"scripted worker: nothing from the client within {timeout:g} s"
        return got

    def recv_hello(self, timeout: float = 3.0) -> tuple[bytes, Hello]:
        ident, frames = self.recv(timeout)
        assert message_kind(frames[0]) == Kind.HELLO, f"expected HELLO, got {frames!r:.80}"
        assert len(frames) == 1
        return ident, Hello.unpack(frames[0])

    def recv_frame(self, timeout: float = 2.0) -> tuple[bytes, FrameDesc, list[bytes]]:
        """The next FRAME; repeated HELLOs of a handshake just answered are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            ident, frames = self.recv(max(0.0, deadline - time.monotonic()))
            kind = message_kind(frames[0])
            if kind == Kind.HELLO:
                continue
            assert kind == Kind.FRAME, f"expected FRAME, got kind {kind}"
            return ident, FrameDesc.unpack(frames[0]), frames[1:]

    def assert_silent(self, timeout: float = 0.1) -> None:
        got = self.poll_recv(timeout)
        assert got is None, f"unexpected message from the client: {got[1]!r:.100}"

    # -- answering ---------------------------------------------------------------------------

    def ring_name(self, epoch: int) -> str:
        return f"{self.prefix}{STREAM}.{epoch:08x}"

    def welcome(
        self,
        ident: bytes,
        epoch: int,
        slots: int,
        *,
        size: int = FRAME_SIZE,
        layout: tuple[Plane, ...] = LAYOUT,
        shm: bool = True,
    ) -> Welcome:
        if shm:
            name = self.ring_name(epoch)
            self.rings[epoch] = FrameRing.create(name, slots, size, epoch)
            stride = slot_stride(size)
            msg = Welcome(epoch, slots, RING_FIRST_SLOT_OFFSET, stride, size, name, layout)
        else:
            msg = Welcome(epoch, 0, 0, 0, size, "", layout)
        self.sock.send_multipart([ident, msg.pack()])
        return msg

    def refuse(self, ident: bytes, code: RefuseCode, reason: str) -> None:
        self.sock.send_multipart([ident, *pack_refuse(code, reason)])

    def release(
        self, ident: bytes, desc: FrameDesc, status: ReleaseStatus = ReleaseStatus.CONSUMED
    ) -> None:
        self.sock.send_multipart([ident, Release(desc.epoch, desc.slot, desc.seq, status).pack()])

    def end_session(self, epoch: int) -> None:
        """What a worker does when a session ends: unmap and unlink its ring."""
        self.rings.pop(epoch).close()

    def slot_bytes(self, epoch: int, slot: int) -> Array:
        return self.rings[epoch].slot(slot).copy()

    # -- blocking client calls ---------------------------------------------------------------

    def script(self, fn: Callable[[], None]) -> Script:
        s = Script(fn)
        self.scripts.append(s)
        return s

    def handshake(
        self, client: CaptureClient, epoch: int = EPOCH, slots: int = 4, **kw: Any
    ) -> tuple[bytes, Hello]:
        """Run client.connect() while a thread answers its HELLO with WELCOME."""
        got: list[tuple[bytes, Hello]] = []

        def answer() -> None:
            ident, hello = self.recv_hello()
            self.welcome(ident, epoch, slots, **kw)
            got.append((ident, hello))

        s = self.script(answer)
        client.connect(5.0)
        s.join()
        return got[0]

    def close(self) -> None:
        for s in self.scripts:
            s.thread.join(10)
        for ring in self.rings.values():
            ring.close()
        self.rings.clear()
        self.sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
def shm_prefix() -> Iterator[str]:
    """A ring name prefix of this test's own; nothing with it may be left in /dev/shm."""
    prefix = f"camingest.cct{secrets.token_hex(4)}."
    yield prefix
    left = sorted(p.name for p in SHM_DIR.glob(prefix + "*"))
    assert not left, f"shared memory left behind: {left}"


@pytest.fixture
def ipc_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cct-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def worker(ipc_dir: Path, shm_prefix: str) -> Iterator[ScriptedWorker]:
    w = ScriptedWorker(f"ipc://{ipc_dir}/in.sock", shm_prefix)
    yield w
    w.close()


@pytest.fixture
def make_client() -> Iterator[Callable[..., CaptureClient]]:
    """CaptureClients that are always closed (before the worker's fixture tears down)."""
    made: list[CaptureClient] = []

    def make(endpoint: str, **kw: Any) -> CaptureClient:
        args: dict[str, Any] = {"stream": STREAM, "width": W, "height": H, "pixel_format": FMT}
        args.update(kw)
        client = CaptureClient(endpoint, **args)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def send_until_accepted(
    client: CaptureClient, frame: Array, timeout: float = 3.0
) -> tuple[int, int]:
    """Offer `frame` until send() takes it (a worker message must first reach the client);
    returns (calls made, calls dropped)."""
    deadline = time.monotonic() + timeout
    calls = 0
    while True:
        calls += 1
        if client.send(frame):
            return calls, calls - 1
        assert time.monotonic() < deadline, f"send() still dropping after {timeout:g} s"


# -- handshake and sending ------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_hello_then_frames_land_in_the_slots_named(
    worker: ScriptedWorker, make_client: Callable[..., CaptureClient]
) -> None:
    """HELLO says stream, geometry, format and SHM transport; after WELCOME each send() puts
    the frame's bytes in the slot its FRAME names (FIFO from slot 0), with WELCOME's epoch,
    sequence numbers 1, 2, 3..., the caller's timestamp and the force-keyframe flag. A FRAME
    whose slot did not hold the frame would make the worker encode garbage."""
    client = make_client(worker.endpoint, pixel_format="nv12")
    assert epoch_of(client) is None
    _, hello = worker.handshake(client, EPOCH, slots=4)
    assert hello == Hello(STREAM, W, H, PixelFormat.NV12, Transport.SHM)
    assert client.epoch == EPOCH

    sent: list[Array] = []
    for i in range(3):
        frame = make_frame(i)
        before = time.time_ns()
        assert client.send(frame, force_keyframe=(i == 1)) is True
        after = time.time_ns()
        _, desc, rest = worker.recv_frame()
        assert rest == [], "an SHM FRAME is one ZeroMQ frame"
        assert (desc.epoch, desc.slot, desc.seq) == (EPOCH, i, i + 1)
        assert desc.force_keyframe is (i == 1)
        assert desc.flags == (FLAG_FORCE_KEYFRAME if i == 1 else 0), "other flag bits are zero"
        assert before <= desc.timestamp_ns <= after, "default timestamp is CLOCK_REALTIME now"
        assert np.array_equal(worker.slot_bytes(EPOCH, desc.slot), frame.reshape(-1))
        sent.append(frame)

    # The frame given as separate planes (Y, UV) lands packed, with the caller's timestamp.
    frame = make_frame(3)
    y, uv = frame[:H], frame[H:]
    assert client.send((y, uv), timestamp_ns=123_456_789) is True
    _, desc, _ = worker.recv_frame()
    assert (desc.epoch, desc.slot, desc.seq, desc.timestamp_ns) == (EPOCH, 3, 4, 123_456_789)
    assert np.array_equal(worker.slot_bytes(EPOCH, 3), frame.reshape(-1))
    # Earlier slots were not touched by later frames.
    for i, f in enumerate(sent):
        assert np.array_equal(worker.slot_bytes(EPOCH, i), f.reshape(-1))
    assert client.stats["sent"] == 4 and client.stats["dropped"] == 0
    assert client.drops == {}


@pytest.mark.timeout(30)
def test_tcp_endpoint_says_inline_and_sends_the_bytes_in_the_frame(
    ipc_dir: Path, shm_prefix: str, make_client: Callable[..., CaptureClient]
) -> None:
    """Over tcp:// the HELLO asks for transport INLINE and a FRAME carries slot INLINE_SLOT
    followed by exactly the frame's bytes: a remote capture cannot map the ring."""
    worker = ScriptedWorker("tcp://127.0.0.1:*", shm_prefix)
    try:
        fmt, w, h = PixelFormat.BGR24, 32, 16
        client = make_client(worker.endpoint, width=w, height=h, pixel_format=fmt)
        size, layout = frame_size(fmt, w, h), plane_layout(fmt, w, h)
        _, hello = worker.handshake(client, EPOCH, 0, size=size, layout=layout, shm=False)
        assert hello == Hello(STREAM, w, h, fmt, Transport.INLINE)
        frame = make_frame(7, packed_shape(fmt, w, h))
        assert client.send(frame, force_keyframe=True) is True
        _, desc, rest = worker.recv_frame()
        assert (desc.epoch, desc.slot, desc.seq, desc.force_keyframe) == (
            EPOCH,
            INLINE_SLOT,
            1,
            True,
        )
        assert len(rest) == 1 and bytes(rest[0]) == frame.tobytes()
        client.close()
    finally:
        worker.close()


# -- refusals during connect() ----------------------------------------------------------------

FATAL_CODES = [
    RefuseCode.MALFORMED,
    RefuseCode.BAD_VERSION,
    RefuseCode.UNKNOWN_STREAM,
    RefuseCode.GEOMETRY,
    RefuseCode.PIXEL_FORMAT,
    RefuseCode.TRANSPORT,
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("code", [*FATAL_CODES, 99], ids=lambda c: getattr(c, "name", str(c)))
def test_fatal_refusal_makes_connect_raise_with_the_reason(
    worker: ScriptedWorker, make_client: Callable[..., CaptureClient], code: int
) -> None:
    """Every REFUSE but BUSY and STALE_EPOCH (and codes this version does not know) ends
    connect() at once with a CaptureError carrying the worker's reason (protocol.md 3.4 and
    6.3): retrying a config mismatch would only hide it until the timeout."""
    reason = f"scripted refusal {code}: stream cam0 is 1920x1080"
    client = make_client(worker.endpoint)

    def refuse() -> None:
        ident, _ = worker.recv_hello()
        if isinstance(code, RefuseCode):
            worker.refuse(ident, code, reason)
        else:
            head = REFUSE.pack(INGEST_MAGIC, VERSION, Kind.REFUSE, code)
            worker.sock.send_multipart([ident, head, reason.encode()])

    s = worker.script(refuse)
    t0 = time.monotonic()
    with pytest.raises(CaptureError) as err:
        client.connect(5.0)
    elapsed = time.monotonic() - t0
    s.join()
    assert reason in str(err.value)
    assert elapsed < 3.0, f"connect() waited {elapsed:.1f} s after a fatal refusal"
    assert client.epoch is None


@pytest.mark.timeout(30)
def test_refusal_without_reason_frame_is_still_a_capture_error(
    worker: ScriptedWorker, make_client: Callable[..., CaptureClient]
) -> None:
    """The reason frame of a REFUSE may be missing (protocol.md 3.4): the client must still
    report a CaptureError, not crash with an IndexError."""
    client = make_client(worker.endpoint)

    def refuse() -> None:
        ident, _ = worker.recv_hello()
        worker.sock.send_multipart([ident, pack_refuse(RefuseCode.GEOMETRY, "")[0]])

    s = worker.script(refuse)
    with pytest.raises(CaptureError, match=STREAM):
        client.connect(5.0)
    s.join()


@pytest.mark.timeout(30)
def test_busy_retries_hello_after_a_second_then_connects(
    worker: ScriptedWorker, make_client: Callable[..., CaptureClient]
) -> None:
    """REFUSE BUSY (another capture owns the stream) is not fatal: the client says HELLO again
    about a second later (protocol.md 3.2, 6.3) on the same connection, and a WELCOME then
    completes connect()."""
    client = make_client(worker.endpoint)
    times: dict[str, float] = {}
    idents: list[bytes] = []

    def busy_then_welcome() -> None:
        ident, _ = worker.recv_hello()
        worker.refuse(ident, RefuseCode.BUSY, "another capture is sending")
        times["refused"] = time.monotonic()
        ident2, hello = worker.recv_hello(timeout=3.0)
        times["hello"] = time.monotonic()
        assert hello.stream == STREAM
        idents.extend([ident, ident2])
        worker.welcome(ident2, EPOCH, 2)

    s = worker.script(busy_then_welcome)
    client.connect(5.0)
    s.join()
    assert client.epoch == EPOCH
    assert idents[0] == idents[1], "the retry reuses the connection"
    gap = times["hello"] - times["refused"]
    assert gap >= 0.99, f"HELLO repeated {gap:.2f} s after BUSY; protocol.md says a second"


@pytest.mark.timeout(30)
def test_busy_until_the_timeout_raises_with_the_busy_reason(
    worker: ScriptedWorker, make_client: Callable[..., CaptureClient]
) -> None:
    """A stream that stays BUSY makes connect() give up at its timeout with the BUSY reason
    (not a misleading "no answer")."""
    client = make_client(worker.endpoint)
    timeout_s = 1.3
    done = threading.Event()
    stop = time.monotonic() + timeout_s + 3.0

    def always_busy() -> None:
        while not done.is_set() and time.monotonic() < stop:
            if (got := worker.poll_recv(0.05)) is not None:
                worker.refuse(got[0], RefuseCode.BUSY, "stream cam0 is busy (pid 4242)")

    s = worker.script(always_busy)
    t0 = time.monotonic()
    try:
        with pytest.raises(CaptureError, match=r"busy \(pid 4242\)") as err:
            client.connect(timeout_s)
        elapsed = time.monotonic() - t0
    finally:
        done.set()
    s.join()
    assert "no answer" not in str(err.value)
    assert timeout_s <= elapsed < timeout_s + 1.0


@pytest.mark.timeout(30)
def test_stale_epoch_and_garbage_during_connect_are_ignored(
    worker: ScriptedWorker, make_client: Callable[..., CaptureClient]
) -> None:
    """Before any session, REFUSE STALE_EPOCH answers a FRAME of an old session and a
    malformed or foreign-version message is noise: neither aborts connect(); the WELCOME that
    follows completes it (protocol.md 5.4)."""
    client = make_client(worker.endpoint)

    def noise_then_welcome() -> None:
        ident, _ = worker.recv_hello()
        worker.refuse(ident, RefuseCode.STALE_EPOCH, "handshake again")
        worker.sock.send_multipart([ident, b"xx"])
        bad_version = bytearray(Welcome(1, 1, 0, 0, 0, "", LAYOUT).pack())
        bad_version[4] = VERSION + 1
        worker.sock.send_multipart([ident, bytes(bad_version)])
        worker.welcome(ident, EPOCH, 2)

    s = worker.script(noise_then_welcome)
    client.connect(5.0)
    s.join()
    assert client.epoch == EPOCH
    assert client.send(make_frame(1)) is True
    _, desc, _ = worker.recv_frame()
    assert (desc.epoch, desc.slot) == (EPOCH, 0)


@pytest.mark.timeout(30)
def test_welcome_with_another_frame_size_is_refused_by_the_client(
    worker: ScriptedWorker, make_client: Callable[..., CaptureClient]
) -> None:
    """A WELCOME whose frame_size differs from what the client computes for its format and
    size makes connect() fail (protocol.md 3.3): writing such frames would corrupt slots."""
    client = make_client(worker.endpoint)

    def wrong_size() -> None:
        ident, _ = worker.recv_hello()
        worker.welcome(ident, EPOCH, 2, size=FRAME_SIZE * 2)

    s = worker.script(wrong_size)
    with pytest.raises(CaptureError, match=f"{FRAME_SIZE * 2}.*{FRAME_SIZE}"):
        client.connect(5.0)
    s.join()


@pytest.mark.timeout(30)
def test_no_worker_bound_connect_times_out(
    ipc_dir: Path, make_client: Callable[..., CaptureClient]
) -> None:
    """With nothing at the endpoint, connect() raises a CaptureError naming the stream and
    the endpoint within its timeout (a capture started before the daemon must not hang)."""
    endpoint = f"ipc://{ipc_dir}/nobody.sock"
    client = make_client(endpoint)
    t0 = time.monotonic()
    with pytest.raises(CaptureError) as err:
        client.connect(0.6)
    elapsed = time.monotonic() - t0
    assert 0.6 <= elapsed < 1.6
    text = str(err.value)
    assert "no answer" in text and STREAM in text and endpoint in text


@pytest.mark.timeout(30)
def test_silent_worker_gets_repeated_hellos_then_connect_times_out(
    worker: ScriptedWorker, make_client: Callable[..., CaptureClient]
) -> None:
    """A worker that reads HELLO but never answers: the client repeats HELLO (every 0.5 s,
    protocol.md 5.4) and connect() fails with "no answer" within its timeout."""
    client = make_client(worker.endpoint)
    timeout_s = 1.8  # room for at least two HELLOs even if the connection is slow to come up
    t0 = time.monotonic()
    with pytest.raises(CaptureError, match="no answer") as err:
        client.connect(timeout_s)
    elapsed = time.monotonic() - t0
    assert timeout_s <= elapsed < timeout_s + 1.0
    assert worker.endpoint in str(err.value)
    hellos = []
    while (got := worker.poll_recv(0.05)) is not None:
        assert message_kind(got[1][0]) == Kind.HELLO
        hellos.append(Hello.unpack(got[1][0]))
    assert len(hellos) >= 2, f"only {len(hellos)} HELLO in {timeout_s} s"
    assert all(h == Hello(STREAM, W, H, FMT, Transport.SHM) for h in hellos)


# -- refusals and missing releases while sending ----------------------------------------------


@pytest.mark.timeout(30)
def test_stale_epoch_while_sending_handshakes_again_and_continues_on_the_new_ring(
    worker: ScriptedWorker, make_client: Callable[..., CaptureClient]
) -> None:
    """REFUSE STALE_EPOCH mid-session (the worker restarted) makes the client send HELLO again
    on the same connection, drop frames as "reconnecting" until the new WELCOME, then write
    into the new ring with the new epoch, starting again from slot 0 (protocol.md 5.4, 6)."""
    client = make_client(worker.endpoint)
    ident, _ = worker.handshake(client, EPOCH, slots=2)
    assert client.send(make_frame(0)) is True
    _, desc, _ = worker.recv_frame()
    worker.release(ident, desc)
    assert desc.slot == 0

    # The worker restarts: it forgets the session and refuses the next FRAME.
    worker.end_session(EPOCH)
    worker.refuse(ident, RefuseCode.STALE_EPOCH, "handshake again")
    new_epoch = EPOCH + 1
    # Well within STALL_S, so that the stall rule (test below) cannot be what saves the day.
    deadline = time.monotonic() + 1.0
    results: list[bool] = []
    hello_ident = None
    while hello_ident is None:
        assert time.monotonic() < deadline, "no HELLO after REFUSE STALE_EPOCH"
        results.append(client.send(make_frame(100 + len(results))))
        got = worker.poll_recv(0.02)
        if got is None:
            continue
        if message_kind(got[1][0]) == Kind.HELLO:
            hello_ident = got[0]
            assert Hello.unpack(got[1][0]) == Hello(STREAM, W, H, FMT, Transport.SHM)
        else:  # a FRAME sent before the REFUSE arrived: stale too, as a real worker says
            worker.refuse(got[0], RefuseCode.STALE_EPOCH, "handshake again")
    assert hello_ident == ident, "the client handshakes again without reconnecting"
    assert results[-1] is False, "the frame offered after the refusal is dropped"
    assert epoch_of(client) is None
    assert client.drops.get("reconnecting", 0) >= 1

    worker.welcome(ident, new_epoch, 2)
    frame = make_frame(999)
    calls, dropped = send_until_accepted(client, frame)
    _, desc, _ = worker.recv_frame()
    assert (desc.epoch, desc.slot) == (new_epoch, 0)
    assert desc.seq == len(results) + 1 + calls, "seq counts every frame offered, dropped too"
    assert np.array_equal(worker.slot_bytes(new_epoch, 0), frame.reshape(-1))
    assert client.epoch == new_epoch
    assert client.stats["reconnects"] == 1
    assert client.drops.get("reconnecting", 0) >= 1 + dropped
    assert client.stats["sent"] + client.stats["dropped"] == 1 + len(results) + calls


@pytest.mark.timeout(30)
def test_fatal_refusal_while_sending_drops_without_raising_and_retries_slowly(
    worker: ScriptedWorker, make_client: Callable[..., CaptureClient]
) -> None:
    """A config refusal in mid-session (the daemon reloaded another geometry) must not raise
    out of send() into the camera loop: frames are dropped as "reconnecting", the session is
    gone, and HELLO is not hammered at the 0.5 s repeat rate."""
    client = make_client(worker.endpoint)
    ident, _ = worker.handshake(client, EPOCH, slots=2)
    worker.refuse(ident, RefuseCode.GEOMETRY, "stream cam0 is now 1280x720")
    deadline = time.monotonic() + 3.0
    while client.epoch is not None:
        assert time.monotonic() < deadline, "the refusal never ended the session"
        if client.send(make_frame(1)):
            _, desc, _ = worker.recv_frame()
            worker.release(ident, desc)
        else:
            worker.poll_recv(0.01)
    assert client.drops.get("reconnecting", 0) >= 1
    assert client.stats["reconnects"] == 1
    # For 0.8 s (beyond the 0.5 s HELLO repeat) every frame is dropped and no HELLO goes out.
    until = time.monotonic() + 0.8
    while time.monotonic() < until:
        assert client.send(make_frame(2)) is False
        got = worker.poll_recv(0.05)
        assert got is None or message_kind(got[1][0]) != Kind.HELLO, "HELLO right after refusal"


@pytest.mark.timeout(30)
def test_no_release_drops_no_slot_never_overwrites_and_release_frees_the_slot(
    worker: ScriptedWorker, make_client: Callable[..., CaptureClient]
) -> None:
    """With every slot handed to the worker and no RELEASE, send() returns False at once and
    counts "no_slot" without touching the slots the worker owns (protocol.md 5.3); a RELEASE
    makes exactly that slot usable again."""
    client = make_client(worker.endpoint)  # on_full="drop" (the default)
    ident, _ = worker.handshake(client, EPOCH, slots=2)
    f1, f2 = make_frame(1), make_frame(2)
    assert client.send(f1) and client.send(f2)
    descs = [worker.recv_frame()[1], worker.recv_frame()[1]]
    assert [d.slot for d in descs] == [0, 1]

    for i in range(3):
        t0 = time.monotonic()
        assert client.send(make_frame(10 + i)) is False
        assert time.monotonic() - t0 < 0.25, "a drop must not block the camera"
    assert client.drops == {"no_slot": 3}
    assert client.stats == {"sent": 2, "dropped": 3, "reconnects": 0}
    worker.assert_silent()
    assert np.array_equal(worker.slot_bytes(EPOCH, 0), f1.reshape(-1))
    assert np.array_equal(worker.slot_bytes(EPOCH, 1), f2.reshape(-1))

    worker.release(ident, descs[0])
    f3 = make_frame(3)
    calls, dropped = send_until_accepted(client, f3)
    _, desc, _ = worker.recv_frame()
    assert (desc.epoch, desc.slot, desc.seq) == (EPOCH, 0, 5 + calls)
    assert np.array_equal(worker.slot_bytes(EPOCH, 0), f3.reshape(-1))
    assert np.array_equal(worker.slot_bytes(EPOCH, 1), f2.reshape(-1)), "slot 1 is still owned"
    assert client.drops == {"no_slot": 3 + dropped}
    # Slot 1 was never released and slot 0 is out again: the next frame is dropped.
    assert client.send(make_frame(4)) is False
    worker.assert_silent()


@pytest.mark.timeout(30)
def test_wait_mode_waits_bounded_and_honours_only_valid_releases(
    worker: ScriptedWorker, make_client: Callable[..., CaptureClient]
) -> None:
    """on_full="wait": send() waits at most max_wait_ms for a RELEASE, then drops "no_slot".
    A RELEASE of another epoch, or for a slot not handed over, frees nothing, and a DROPPED
    status still frees the slot but counts a "worker" drop (protocol.md 3.6, 5.3)."""
    client = make_client(worker.endpoint, on_full="wait", max_wait_ms=300)
    ident, _ = worker.handshake(client, EPOCH, slots=2)
    f1, f2 = make_frame(1), make_frame(2)
    assert client.send(f1) and client.send(f2)
    d1, d2 = worker.recv_frame()[1], worker.recv_frame()[1]

    t0 = time.monotonic()
    assert client.send(make_frame(3)) is False
    elapsed = time.monotonic() - t0
    assert 0.29 <= elapsed < 1.3, f"waited {elapsed:.2f} s for max_wait_ms=300"
    assert client.drops == {"no_slot": 1}

    # A RELEASE of an old epoch for slot 0, then a real one for slot 1 (status DROPPED).
    worker.sock.send_multipart(
        [ident, Release(EPOCH - 1, 0, d1.seq, ReleaseStatus.CONSUMED).pack()]
    )
    worker.release(ident, d2, ReleaseStatus.DROPPED)
    f4 = make_frame(4)
    assert client.send(f4) is True, "the RELEASE was waited for"
    _, d4, _ = worker.recv_frame()
    assert (d4.slot, d4.seq) == (1, 4), "only slot 1 was released"
    assert np.array_equal(worker.slot_bytes(EPOCH, 1), f4.reshape(-1))
    assert np.array_equal(worker.slot_bytes(EPOCH, 0), f1.reshape(-1))
    assert client.drops == {"no_slot": 1, "worker": 1}

    # A RELEASE naming a slot the client never handed over (here: outside the ring) frees
    # nothing: both slots are still the worker's, so the next frame waits and is dropped.
    worker.sock.send_multipart([ident, Release(EPOCH, 5, 99, ReleaseStatus.CONSUMED).pack()])
    assert client.send(make_frame(5)) is False
    assert client.drops == {"no_slot": 2, "worker": 1}
    assert np.array_equal(worker.slot_bytes(EPOCH, 0), f1.reshape(-1))
    assert np.array_equal(worker.slot_bytes(EPOCH, 1), f4.reshape(-1))


@pytest.mark.timeout(30)
def test_release_stall_makes_the_client_handshake_again(
    worker: ScriptedWorker, make_client: Callable[..., CaptureClient]
) -> None:
    """Every slot out and no RELEASE for 2 s: the worker is presumed gone and the client says
    HELLO again by itself (protocol.md 5.4), never before, and never writes the slot it
    handed over meanwhile. (Takes about 2.5 s: the 2 s are the protocol's.)"""
    client = make_client(worker.endpoint)
    t0 = time.monotonic()
    ident, _ = worker.handshake(client, EPOCH, slots=1)
    f1 = make_frame(1)
    assert client.send(f1) is True
    worker.recv_frame()

    deadline = time.monotonic() + STALL_S + 3.0
    while True:
        assert time.monotonic() < deadline, "no HELLO after 2 s without RELEASE"
        assert client.send(make_frame(2)) is False
        got = worker.poll_recv(0.02)
        if got is not None:
            assert message_kind(got[1][0]) == Kind.HELLO
            break
    waited = time.monotonic() - t0
    assert waited >= STALL_S, f"handshook again after {waited:.2f} s"
    assert got[0] == ident
    assert np.array_equal(worker.slot_bytes(EPOCH, 0), f1.reshape(-1)), "owned slot overwritten"
    assert client.drops.get("no_slot", 0) >= 1
    assert client.stats["reconnects"] == 1

    worker.end_session(EPOCH)
    worker.welcome(ident, EPOCH + 1, 1)
    frame = make_frame(3)
    send_until_accepted(client, frame)
    _, desc, _ = worker.recv_frame()
    assert (desc.epoch, desc.slot) == (EPOCH + 1, 0)
    assert np.array_equal(worker.slot_bytes(EPOCH + 1, 0), frame.reshape(-1))


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_wrong_shape_or_dtype_raises_value_error_naming_expected_and_actual(
    worker: ScriptedWorker, make_client: Callable[..., CaptureClient]
) -> None:
    """A frame of the wrong shape or dtype is a bug in the capture program: send() raises a
    ValueError saying what it takes and what it got, and sends nothing."""
    client = make_client(worker.endpoint)
    worker.handshake(client, EPOCH, slots=2)
    want = str(SHAPE)
    bad_arrays: list[npt.NDArray[Any]] = [
        np.zeros((H, W), np.uint8),  # the Y plane only
        np.zeros((W * 3 // 2, H), np.uint8),  # transposed
        np.zeros(SHAPE, np.uint16),
        np.zeros(SHAPE, np.float32),
    ]
    for bad in bad_arrays:
        with pytest.raises(ValueError) as err:
            client.send(bad)
        text = str(err.value)
        assert want in text and "uint8" in text, f"expected shape/dtype missing: {text}"
        assert str(bad.shape) in text and str(bad.dtype) in text, f"actual missing: {text}"

    planes_want = str([(H, W), (H // 2, W)])
    bad_planes: list[tuple[npt.NDArray[Any], ...]] = [
        (np.zeros((H, W), np.uint8),),  # one plane of two
        (np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)),  # UV too big
        (np.zeros((H, W), np.uint8), np.zeros((H // 2, W), np.int16)),
    ]
    for planes in bad_planes:
        with pytest.raises(ValueError) as err:
            client.send(planes)
        text = str(err.value)
        assert planes_want in text, f"expected planes missing: {text}"
        assert str(planes[-1].shape) in text and str(planes[-1].dtype) in text, text

    worker.assert_silent()
    assert client.stats == {"sent": 0, "dropped": 0, "reconnects": 0}
    # Nothing leaked: a good frame still goes to slot 0.
    assert client.send(make_frame(1)) is True
    assert worker.recv_frame()[1].slot == 0


# -- close ----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_close_disconnects_terminates_its_context_and_keeps_the_ring(
    worker: ScriptedWorker,
) -> None:
    """close() shuts the client's socket (the worker sees the peer go) and terminates the
    context it made, promptly; it unmaps but never unlinks the worker's ring (protocol.md
    5.1: only the creator unlinks). send() afterwards is an error, not a write to freed
    memory."""
    monitor = worker.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    # Not from make_client: if close() hangs, the teardown must not call it again and hang too.
    client = CaptureClient(worker.endpoint, STREAM, W, H, FMT)
    closer: Script | None = None
    try:
        worker.handshake(client, EPOCH, slots=2)
        frame = make_frame(1)
        assert client.send(frame)
        worker.recv_frame()

        closer = Script(client.close)  # a context left with open sockets would hang here
        closer.join(5.0)

        deadline = time.monotonic() + 3.0
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the worker never saw the client disconnect"
            polled = monitor.poll(int(remaining * 1000))
            if polled and recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED:
                break
        assert (SHM_DIR / worker.ring_name(EPOCH)).exists(), "close() unlinked the ring"
        assert np.array_equal(worker.slot_bytes(EPOCH, 0), frame.reshape(-1))
        with pytest.raises(CaptureError):
            client.send(make_frame(2))
        Script(client.close).join(5.0)  # twice is harmless
    finally:
        if closer is None:
            Script(client.close).thread.join(5.0)
        worker.sock.disable_monitor()
        monitor.close(linger=0)


@pytest.mark.timeout(30)
def test_close_with_a_shared_context_leaves_it_usable_and_free_of_sockets(
    worker: ScriptedWorker,
) -> None:
    """With a context passed in, close() closes the client's socket but leaves the context to
    its owner; the owner's term() then returns at once, which it would not if a socket of the
    client were still open. The context manager form connects and closes the same way."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        client = CaptureClient(worker.endpoint, STREAM, W, H, FMT, context=ctx)

        def answer() -> None:
            ident, _ = worker.recv_hello()
            worker.welcome(ident, EPOCH, 2)

        s = worker.script(answer)
        with client as entered:
            s.join()
            assert entered is client and client.epoch == EPOCH
            assert client.send(make_frame(1))
            worker.recv_frame()
        assert not ctx.closed, "the client terminated a context it does not own"
        assert (SHM_DIR / worker.ring_name(EPOCH)).exists()
        Script(ctx.term).join(5.0)
    finally:
        if not ctx.closed:
            ctx.destroy(linger=0)
