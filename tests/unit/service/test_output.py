"""Output, the main process's fan-in (workers' PUSH -> our PULL) and fan-out (our XPUB ->
subscribers' SUB), with keyframe requests back to the workers on the command PUB.

Built as service/runtime.py builds it (Output(ctx, config, on_health, on_fatal), open(), then
handle() for whichever of `sockets` is readable), on ipc endpoints in a short tmp dir. The test
plays the workers with a PUSH socket sending wire/fanin.py messages as worker/sink.py frames
them, the subscribers with SUB sockets, and a worker's command SUB with a SUB on the command
endpoint. Real sockets throughout; every wait is a bounded poll.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from camingest.config.model import DaemonConfig, OutputConfig, StreamConfig
from camingest.service.output import Output
from camingest.wire.fanin import CMD_KEYFRAME, FANIN_FATAL, FANIN_HEALTH, FANIN_PACKET, WorkerHealth
from camingest.wire.output import OUT_EOS, OUT_KEYFRAME, OUT_RESTART, Codec, OutputHeader

STREAMS = ("cam1", "cam10", "cam2")
RUN = b"run00001"  # this daemon run's fan-in token
TIMEOUT_S = 2.0
WARMUP = "warmup"  # keyframe requests the rig sends itself to sync the command socket
SENTINEL = "sentinel"

Msg = list[bytes]


def header(seq: int, flags: int = 0, epoch: int = 7) -> bytes:
    return OutputHeader(Codec.H264, flags, epoch, 32, 16, seq, seq + 100, seq, seq + 1).pack()


def packet(stream: str, seq: int, payload: bytes | None = None) -> Msg:
    """A fan-in packet as worker/sink.py sends it."""
    data = payload if payload is not None else f"{stream}-{seq}".encode()
    return [FANIN_PACKET, stream.encode(), header(seq), data]


def health(stream: str = "cam1", frames_in: int = 5) -> WorkerHealth:
    return WorkerHealth(
        stream=stream,
        pid=4242,
        epoch=7,
        healthy=True,
        frames_in=frames_in,
        frames_encoded=4,
        packets_out=4,
        bytes_out=1234,
        keyframes=1,
        drops={"malformed": 2},
        latency_p50_ms=1.5,
        latency_p99_ms=9.25,
        capture_connected=True,
        detail="",
    )


class Rig:
    def __init__(self, tmp: Path, sndhwm: int = 200, endpoints: int = 1) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        outs = tuple(f"ipc://{tmp}/out{i}.sock" for i in range(endpoints))
        self.config = DaemonConfig(
            runtime_dir=tmp,
            instance="t" + secrets.token_hex(4),
            output=OutputConfig(endpoints=outs, sndhwm=sndhwm),
            streams=tuple(StreamConfig(name=n, width=32, height=16) for n in STREAMS),
        )
        self.health: list[WorkerHealth] = []
        self.fatal: list[tuple[str, str]] = []
        self.output = Output(
            self.ctx,
            self.config,
            self.health.append,
            lambda s, r: self.fatal.append((s, r)),
            RUN,
        )
        self.output.open()
        self.socks: list[zmq.Socket[bytes]] = []
        self.push = self._sock(zmq.PUSH)
        self.push.connect(self.config.fanin_endpoint)
        self.cmd = self._sock(zmq.SUB)
        self.cmd.setsockopt(zmq.SUBSCRIBE, b"")
        self.cmd.connect(self.config.command_endpoint)
        self._sync_commands()

    def _sock(self, kind: int) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        self.socks.append(sock)
        return sock

    def _sync_commands(self) -> None:
        """PUB drops until the SUB's subscription arrived: ask until a request comes through."""
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            assert time.monotonic() < deadline, "the command socket never connected"
            self.output.request_keyframe(WARMUP)
            if self.cmd.poll(20):
                return

    def pump(self, pred: Callable[[], object], what: str) -> None:
        """Serve the output's sockets, as the daemon's loop does, until `pred()` holds."""
        poller = zmq.Poller()
        for sock in self.output.sockets:
            poller.register(sock, zmq.POLLIN)
        deadline = time.monotonic() + TIMEOUT_S
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            for sock, _ in poller.poll(20):
                self.output.handle(sock)

    def subscriber(
        self, *topics: bytes, endpoint: int = 0, rcvhwm: int | None = None, wait: str = ""
    ) -> zmq.Socket[bytes]:
        """A SUB on output endpoint `endpoint`; waits until the output has counted its
        subscriptions for stream `wait` (so that packets sent next reach it)."""
        before = self.output.subscribers(wait) if wait else 0
        sub = self._sock(zmq.SUB)
        if rcvhwm is not None:
            sub.setsockopt(zmq.RCVHWM, rcvhwm)
        sub.connect(self.config.output_endpoints[endpoint])
        for t in topics:
            sub.setsockopt(zmq.SUBSCRIBE, t)
        if wait:
            n = sum(1 for t in topics if wait.encode().startswith(t))
            self.pump(lambda: self.output.subscribers(wait) == before + n, f"subscribers of {wait}")
        return sub

    def keyframe_requests(self) -> list[Msg]:
        """Every keyframe request sent since the last call (warm-ups left out): a sentinel
        request is sent last, and the command PUB is FIFO, so all earlier ones come before."""
        self.output.request_keyframe(SENTINEL)
        got: list[Msg] = []
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            assert time.monotonic() < deadline, "the sentinel request never came"
            if not self.cmd.poll(20):
                continue
            msg = self.cmd.recv_multipart()
            if msg[0] == SENTINEL.encode():
                return got
            if msg[0] != WARMUP.encode():
                got.append(msg)

    def send(self, *msgs: Msg, run: bytes = b"") -> None:
        """Send fan-in messages as a worker of this run (or of `run`) would: the run's token
        after the kind in the first frame."""
        for m in msgs:
            self.push.send_multipart([m[0] + (run or RUN), *m[1:]] if m else m)

    def close(self) -> None:
        for sock in self.socks:
            sock.close(linger=0)
        self.output.close()
        self.ctx.term()


def recv(sock: zmq.Socket[bytes], n: int) -> list[Msg]:
    """Exactly `n` messages from `sock` (bounded)."""
    got: list[Msg] = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(got) < n:
        assert time.monotonic() < deadline, f"got {len(got)} of {n} messages"
        if sock.poll(20):
            got.append(sock.recv_multipart())
    return got


def recv_until(rig: Rig, sock: zmq.Socket[bytes], last: Msg) -> list[Msg]:
    """Serve the output and read `sock` until `last` arrives; returns all read, `last` included."""
    got: list[Msg] = []

    def done() -> bool:
        while sock.poll(0):
            got.append(sock.recv_multipart())
        return bool(got) and got[-1] == last

    rig.pump(done, f"{last[:1]!r} on a subscriber")
    return got


@pytest.fixture
def tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cgo-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_rig(tmp: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(**kw: int) -> Rig:
        rig = Rig(tmp, **kw)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig()


# -- packets -----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_packets_are_forwarded_unchanged_to_the_subscribers_of_their_topic(rig: Rig) -> None:
    """Each fan-in packet reaches, byte for byte and in order, the subscribers whose topic is a
    prefix of its stream name, and no one else. ZeroMQ matches by prefix and the output does
    nothing about it: a subscriber of "cam1" also gets "cam10" (docs/protocol.md tells
    subscribers to check the topic frame themselves), while "cam10" does not get "cam1"."""
    subs = {
        "cam1": rig.subscriber(b"cam1", wait="cam1"),
        "cam10": rig.subscriber(b"cam10", wait="cam10"),
        "cam2": rig.subscriber(b"cam2", wait="cam2"),
        "all": rig.subscriber(b"", wait="cam2"),
    }
    sent = [
        packet("cam1", 0),
        packet("cam10", 1),
        packet("cam2", 2, b"\x00\x00\x00\x01" + bytes(range(256)) * 40),
        packet("cam1", 3, b""),
        packet("cam10", 4),
        packet("cam2", 5),
    ]
    rig.send(*sent)
    out = [m[1:] for m in sent]  # the fan-in kind goes; topic, header and payload stay
    want = {
        "cam1": [out[0], out[1], out[3], out[4]],
        "cam10": [out[1], out[4]],
        "cam2": [out[2], out[5]],
        "all": out,
    }
    for name, sub in subs.items():
        assert recv_until(rig, sub, want[name][-1]) == want[name], name
    assert rig.output.packets == len(sent)
    assert rig.health == [] and rig.fatal == []


@pytest.mark.timeout(30)
def test_packets_go_out_on_every_output_endpoint(make_rig: Callable[..., Rig]) -> None:
    """The one XPUB is bound to every configured endpoint: subscribers on either get the
    stream."""
    rig = make_rig(endpoints=2)
    a = rig.subscriber(b"cam2", endpoint=0, wait="cam2")
    b = rig.subscriber(b"cam2", endpoint=1, wait="cam2")
    msg = packet("cam2", 0)
    rig.send(msg)
    assert recv_until(rig, a, msg[1:]) == [msg[1:]]
    assert recv(b, 1) == [msg[1:]]


@pytest.mark.timeout(30)
def test_packets_without_subscribers_are_counted_and_go_nowhere(rig: Rig) -> None:
    """Packets of a stream nobody watches are taken off the fan-in (workers are never held
    up) and counted; a subscriber that comes later does not get them."""
    rig.send(*(packet("cam1", i) for i in range(5)))
    rig.pump(lambda: rig.output.packets == 5, "5 packets")
    sub = rig.subscriber(b"cam1", wait="cam1")
    later = packet("cam1", 5)
    rig.send(later)
    assert recv_until(rig, sub, later[1:]) == [later[1:]]


# -- subscriptions and keyframe requests -------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_new_subscription_asks_the_matching_workers_for_a_keyframe(rig: Rig) -> None:
    """A subscription makes the output send [stream, CMD_KEYFRAME] on the command socket for
    every configured stream its topic is a prefix of, so a new viewer gets an IDR at once. The
    second subscriber of a topic asks too (XPUB_VERBOSER); an unsubscription asks nothing."""
    assert rig.keyframe_requests() == []
    rig.subscriber(b"cam2", wait="cam2")
    assert rig.keyframe_requests() == [[b"cam2", CMD_KEYFRAME]]
    second = rig.subscriber(b"cam2", wait="cam2")
    assert rig.keyframe_requests() == [[b"cam2", CMD_KEYFRAME]]
    rig.subscriber(b"cam1", wait="cam1")
    assert sorted(rig.keyframe_requests()) == [[b"cam1", CMD_KEYFRAME], [b"cam10", CMD_KEYFRAME]]
    rig.subscriber(b"", wait="cam1")
    assert sorted(rig.keyframe_requests()) == [[s.encode(), CMD_KEYFRAME] for s in sorted(STREAMS)]
    # Topics that match no stream ask nothing ("cam2" last, on the same connection, to sync).
    rig.subscriber(b"nothing", b"cam3", b"cam20", b"cam2", wait="cam2")
    assert rig.keyframe_requests() == [[b"cam2", CMD_KEYFRAME]]
    second.setsockopt(zmq.UNSUBSCRIBE, b"cam2")
    rig.pump(lambda: rig.output.subscribers("cam2") == 3, "the unsubscription")
    assert rig.keyframe_requests() == []


@pytest.mark.timeout(30)
def test_subscription_churn_asks_once_per_subscribe(rig: Rig) -> None:
    """The output does not merge requests: every subscribe (here a subscriber toggling its
    subscription 5 times) sends one request, every unsubscribe none. Merging them to at most
    one forced IDR per 0.5 s is the worker's job (worker/idr.py, tests/unit/worker/test_idr.py),
    so the output must pass each one on and never hold one back."""
    sub = rig.subscriber(b"cam2", wait="cam2")
    for _ in range(5):
        sub.setsockopt(zmq.UNSUBSCRIBE, b"cam2")
        sub.setsockopt(zmq.SUBSCRIBE, b"cam2")
    requests: list[Msg] = []

    def six() -> bool:
        requests.extend(rig.keyframe_requests())
        return len(requests) >= 6

    rig.pump(six, "6 keyframe requests")
    assert requests == [[b"cam2", CMD_KEYFRAME]] * 6
    assert rig.output.subscribers("cam2") == 1
    assert rig.keyframe_requests() == []


@pytest.mark.timeout(30)
def test_streams_removed_by_a_reload_are_not_asked_for_keyframes(rig: Rig) -> None:
    """After set_streams (a reload), only the current streams get keyframe requests."""
    rig.output.set_streams(["cam2"])
    rig.subscriber(b"", wait="cam1")
    assert rig.keyframe_requests() == [[b"cam2", CMD_KEYFRAME]]
    rig.output.request_keyframe("cam1")  # the control verb checks the name, not the output
    assert rig.keyframe_requests() == [[b"cam1", CMD_KEYFRAME]]


@pytest.mark.timeout(30)
def test_subscribers_counts_the_subscriptions_matching_a_stream(rig: Rig) -> None:
    """subscribers(stream) counts the subscriptions whose topic is a prefix of the stream name
    (what reaches that stream's packets), follows unsubscriptions, and drops a subscriber
    that disconnects (its subscriptions go with its connection)."""
    assert [rig.output.subscribers(s) for s in STREAMS] == [0, 0, 0]
    a = rig.subscriber(b"cam1", wait="cam1")
    b = rig.subscriber(b"cam1", wait="cam1")
    c = rig.subscriber(b"", wait="cam2")
    rig.subscriber(b"cam10", wait="cam10")
    assert [rig.output.subscribers(s) for s in STREAMS] == [3, 4, 1]
    assert rig.output.subscribers("cam") == 1  # not a stream: only "" matches it
    a.setsockopt(zmq.UNSUBSCRIBE, b"cam1")
    rig.pump(lambda: rig.output.subscribers("cam1") == 2, "a's unsubscription")
    b.close(linger=0)
    rig.pump(lambda: rig.output.subscribers("cam1") == 1, "b's disconnection")
    c.close(linger=0)
    rig.pump(lambda: rig.output.subscribers("cam2") == 0, "c's disconnection")
    assert [rig.output.subscribers(s) for s in STREAMS] == [0, 1, 0]


@pytest.mark.timeout(30)
def test_a_subscriber_that_subscribed_twice_is_counted_until_the_daemon_restarts(rig: Rig) -> None:
    """A known limit of the count (not of delivery): a SUB that subscribes to one topic twice
    sends two subscribes but, as libzmq refcounts topics in the SUB, only one unsubscribe, and
    the XPUB names no peer, so `subscribers` keeps counting it. camingest's Subscriber never
    subscribes twice; docs/protocol.md tells other clients not to."""
    sub = rig.subscriber(b"cam2", wait="cam2")
    sub.setsockopt(zmq.SUBSCRIBE, b"cam2")
    rig.pump(lambda: rig.output.subscribers("cam2") == 2, "the second subscribe")
    sub.setsockopt(zmq.UNSUBSCRIBE, b"cam2")
    sub.setsockopt(zmq.UNSUBSCRIBE, b"cam2")
    sub.setsockopt(zmq.SUBSCRIBE, b"cam1")  # same connection: handled after the unsubscribes
    rig.pump(lambda: rig.output.subscribers("cam1") == 1, "the probe subscription")
    assert rig.output.subscribers("cam2") == 1


@pytest.mark.timeout(30)
def test_messages_from_subscribers_that_are_not_subscriptions_are_ignored(rig: Rig) -> None:
    """An XSUB can send anything upstream; what is not a (un)subscription is ignored: no
    count, no keyframe request, no error, and the real subscription after it still works."""
    xsub = rig._sock(zmq.XSUB)
    xsub.connect(rig.config.output_endpoints[0])
    xsub.send(b"\x01cam2")
    rig.pump(lambda: rig.output.subscribers("cam2") == 1, "the xsub's subscription")
    assert rig.keyframe_requests() == [[b"cam2", CMD_KEYFRAME]]
    for junk in (b"", b"\x02cam2", b"cam2", b"\xffcam2", b"\x02", b"hello"):
        xsub.send(junk)
    xsub.send(b"\x01cam1")  # same connection: handled after the junk
    rig.pump(lambda: rig.output.subscribers("cam1") == 1, "the xsub's second subscription")
    assert sorted(rig.keyframe_requests()) == [[b"cam1", CMD_KEYFRAME], [b"cam10", CMD_KEYFRAME]]
    assert [rig.output.subscribers(s) for s in STREAMS] == [1, 1, 1]


# -- health, fatal, malformed ------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_health_and_fatal_messages_reach_the_callbacks(rig: Rig) -> None:
    """A worker's heartbeat reaches on_health as the WorkerHealth it packed (the supervisor's
    liveness and the status depend on it); a fatal notice reaches on_fatal as (stream,
    reason), with undecodable bytes replaced rather than raising. Neither is published."""
    sub = rig.subscriber(b"", wait="cam1")
    h1, h2 = health("cam1", 5), health("cam10", 6)
    rig.send(
        [FANIN_HEALTH, b"cam1", h1.pack()],
        [FANIN_FATAL, b"cam10", "encoder gone: \u00e9".encode() + b"\xff"],
        [FANIN_HEALTH, b"cam10", h2.pack()],
    )
    rig.pump(lambda: len(rig.health) == 2 and rig.fatal, "health and fatal")
    assert rig.health == [h1, h2]
    assert rig.fatal == [("cam10", "encoder gone: \u00e9\ufffd")]
    marker = packet("cam2", 0)
    rig.send(marker)
    assert recv_until(rig, sub, marker[1:]) == [marker[1:]]
    assert rig.output.packets == 1


MALFORMED: dict[str, Msg] = {
    "packet without payload": [FANIN_PACKET, b"cam1", header(0)],
    "packet with an extra frame": [*packet("cam1", 1), b"extra"],
    "bare packet kind": [FANIN_PACKET],
    "health without body": [FANIN_HEALTH, b"cam1"],
    "health with an extra frame": [FANIN_HEALTH, b"cam1", health().pack(), b"x"],
    "health not json": [FANIN_HEALTH, b"cam1", b"not json"],
    "health not utf-8": [FANIN_HEALTH, b"cam1", b"\xff\xfe{}"],
    "health a list": [FANIN_HEALTH, b"cam1", b"[1, 2]"],
    "health null": [FANIN_HEALTH, b"cam1", b"null"],
    "health missing fields": [FANIN_HEALTH, b"cam1", b'{"stream": "cam1"}'],
    "health unknown field": [
        FANIN_HEALTH,
        b"cam1",
        health().pack()[:-1] + b', "bogus": 1}',
    ],
    "fatal without reason": [FANIN_FATAL, b"cam1"],
    "fatal with an extra frame": [FANIN_FATAL, b"cam1", b"why", b"x"],
    "unknown kind": [b"X", b"cam1", header(0), b"data"],
    "empty kind": [b"", b"cam1", header(0), b"data"],
    "lowercase kind": [b"p", b"cam1", header(0), b"data"],
    "long kind": [b"PP", b"cam1", header(0), b"data"],
    "single empty frame": [b""],
}


@pytest.mark.timeout(30)
def test_malformed_fanin_messages_are_dropped_without_raising(rig: Rig) -> None:
    """Fan-in messages of the wrong shape or with a health body that is not a WorkerHealth
    are dropped (logged): nothing is published, no callback runs, handle() does not raise,
    and the packet sent after them is forwarded as usual."""
    sub = rig.subscriber(b"", wait="cam1")
    rig.send(*MALFORMED.values())
    good = packet("cam1", 9)
    rig.send(good)
    assert recv_until(rig, sub, good[1:]) == [good[1:]]
    assert rig.output.packets == 1
    assert rig.health == [] and rig.fatal == []


@pytest.mark.timeout(30)
def test_deeply_nested_health_json_is_dropped(rig: Rig) -> None:
    """A health body json.loads cannot parse for depth is dropped like any malformed one."""
    sub = rig.subscriber(b"", wait="cam1")
    rig.send([FANIN_HEALTH, b"cam1", b"[" * 100_000])
    good = packet("cam1", 1)
    rig.send(good)
    assert recv_until(rig, sub, good[1:]) == [good[1:]]
    assert rig.health == []


@pytest.mark.timeout(30)
def test_messages_of_another_daemon_run_are_not_heard(rig: Rig) -> None:
    """A worker of a crashed daemon whose socket reconnected to this run's fan-in is ignored:
    its packets, its end of stream and its health are dropped and counted."""
    sub = rig.subscriber(b"cam1", wait="cam1")
    stale = packet("cam1", 7)
    rig.send(stale, [FANIN_HEALTH, b"cam1", health().pack()], run=b"run00000")
    good = packet("cam1", 8)
    rig.send(good)
    assert recv_until(rig, sub, good[1:]) == [good[1:]]
    assert rig.health == []
    assert rig.output.foreign == 2


def test_a_run_token_has_its_size(rig: Rig) -> None:
    with pytest.raises(ValueError, match="8 bytes"):
        Output(rig.ctx, rig.config, rig.health.append, lambda s, r: None, b"short")


# -- slow subscribers --------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_subscriber_that_never_reads_does_not_hold_up_another(
    make_rig: Callable[..., Rig],
) -> None:
    """With a small send high-water mark, a subscriber that never reads loses messages at its
    own mark while the output goes on: a reading subscriber gets every packet, in order, with
    consecutive packet_seq. The stalled one is shown to have lost packets, so the mark was
    really passed."""
    hwm, total, batch = 8, 400, 4  # batches under the mark: the reader itself never drops
    rig = make_rig(sndhwm=hwm)
    stalled = rig.subscriber(b"cam1", rcvhwm=1, wait="cam1")
    reader = rig.subscriber(b"cam1", wait="cam1")
    payload = bytes(range(256)) * 64  # 16 KiB: the kernel's socket buffers fill quickly
    got: list[Msg] = []

    def forwarded(n: int) -> Callable[[], bool]:
        return lambda: rig.output.packets == n

    for start in range(0, total, batch):
        rig.send(*(packet("cam1", i, payload) for i in range(start, start + batch)))
        rig.pump(forwarded(start + batch), "the batch on the fan-in")
        got += recv(reader, batch)
    seqs = [OutputHeader.unpack(m[1]).packet_seq for m in got]
    assert seqs == list(range(total))
    assert all(m[0] == b"cam1" and m[2] == payload for m in got)
    assert rig.output.packets == total
    # The stalled subscriber: whatever reached it is in order, but far from everything.
    late: list[int] = []
    while stalled.poll(100):
        late.append(OutputHeader.unpack(stalled.recv_multipart()[1]).packet_seq)
        assert len(late) <= total
    assert late == sorted(late)
    assert len(late) < total // 2, f"the stalled subscriber got {len(late)} of {total}"


@pytest.mark.timeout(30)
def test_packets_are_forwarded_without_parsing(rig: Rig) -> None:
    """The output forwards without parsing (no copy, no check on the hot path): a keyframe,
    an end-of-stream marker with an empty payload, even a header that is not one, goes out
    exactly as the worker framed it."""
    sub = rig.subscriber(b"cam2", wait="cam2")
    msgs = [
        [FANIN_PACKET, b"cam2", header(0, OUT_KEYFRAME), b"\x00\x00\x00\x01\x65"],
        [FANIN_PACKET, b"cam2", header(0, OUT_EOS | OUT_RESTART), b""],
        [FANIN_PACKET, b"cam2", b"not a header", b""],
    ]
    rig.send(*msgs)
    assert recv_until(rig, sub, msgs[-1][1:]) == [m[1:] for m in msgs]


# -- close -------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_close_leaves_no_sockets(tmp: Path) -> None:
    """close() closes all three sockets (fan-in, command, XPUB), even with a subscriber
    connected and packets sent, so the context terminates at once; closing twice is
    harmless."""
    rig = Rig(tmp)
    try:
        sub = rig.subscriber(b"cam1", wait="cam1")
        rig.send(packet("cam1", 0))
        recv_until(rig, sub, packet("cam1", 0)[1:])
        assert len(rig.output.sockets) == 2  # what the loop polls: fan-in and XPUB
        rig.output.close()
        assert rig.output.sockets == []
        assert (rig.output.fanin, rig.output.xpub, rig.output.commands) == (None, None, None)
        rig.output.close()
        rig.output.request_keyframe("cam1")  # after close: a no-op, not an error
    finally:
        for sock in rig.socks:
            sock.close(linger=0)
    done = threading.Event()

    def terminate() -> None:
        rig.ctx.term()
        done.set()

    term = threading.Thread(target=terminate, daemon=True)
    term.start()
    term.join(5)
    assert done.is_set(), "the context did not terminate: a socket was left open"
