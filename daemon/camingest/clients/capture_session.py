"""The capture side of one ingest session: the handshake, the slots this capture owns, and what
the worker says back (WELCOME, RELEASE, REFUSE). CaptureClient sends frames through it.

A worker restart (new epoch) is handled here: the session says HELLO again and maps the new
ring; the caller notices nothing but a few counted drops.
"""

from __future__ import annotations

import contextlib
import logging
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from camingest.errors import CaptureError, ShmError
from camingest.wire.framing import ProtocolError
from camingest.wire.ingest import (
    CaptureStats,
    DropReason,
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
from camingest.wire.ring import FrameRing

logger = logging.getLogger(__name__)

# Without any release for this long while frames are outstanding, the worker is presumed
# gone (killed or restarted) and the client handshakes again.
STALL_S = 2.0
HELLO_RETRY_S = 0.5
REFUSED_RETRY_S = 5.0
BUSY_RETRY_S = 1.0
STATS_EVERY_S = 0.5
STATS_REASONS = (DropReason.NO_SLOT, DropReason.SEND_QUEUE, DropReason.RECONNECTING)
LINK_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED


class CaptureSession:
    def __init__(
        self,
        sock: zmq.Socket[bytes],
        hello: Hello,
        frame_size: int,
        stats: dict[str, int],
        drops: dict[str, int],
    ) -> None:
        self.sock = sock
        self.hello = hello
        self.frame_size = frame_size
        self.stats = stats  # the client's counters: reconnects are counted here
        self.drops = drops  # and frames the worker released without encoding them
        self.ring: FrameRing | None = None
        self.welcome: Welcome | None = None
        self.free: list[int] = []
        self.outstanding: dict[int, float] = {}  # slot -> monotonic time sent
        self.busy = ""  # the last BUSY refusal, for the error connect() raises
        self._hello_sent_at: float | None = None
        self._last_release = time.monotonic()
        # The worker's death is seen as a disconnect at once (ipc), not after STALL_S.
        self._monitor: zmq.Socket[bytes] | None = sock.get_monitor_socket(LINK_EVENTS)
        self._stats_sent: tuple[int, ...] = ()  # (epoch, *drops) of the last STATS
        self._stats_at = 0.0

    @property
    def name(self) -> str:
        return self.hello.stream

    # -- slots -----------------------------------------------------------------------------

    def take_slot(self, max_wait_s: float) -> int | None:
        if not self.free and max_wait_s:
            self.pump(max_wait_s, until_free=True)
        return self.free.pop(0) if self.free else None

    def sent(self, slot: int) -> None:
        self.outstanding[slot] = time.monotonic()

    def give_back(self, slot: int) -> None:
        self.free.append(slot)

    # -- incoming messages -----------------------------------------------------------------

    def pump(self, wait_s: float, until_free: bool = False) -> None:
        """Read releases and handshake answers; wait up to `wait_s` for a free slot."""
        deadline = time.monotonic() + wait_s
        while True:
            self._link_events()
            while self.sock.poll(0, zmq.POLLIN):
                self.handle(self.sock.recv_multipart(), raise_refusal=False)
            now = time.monotonic()
            self._check_stall(now)
            if not until_free or self.free or now >= deadline:
                return
            self.sock.poll(int(min(deadline - now, 0.05) * 1000) + 1, zmq.POLLIN)

    def report(self, now: float, force: bool = False) -> bool:
        """Tell the worker what this capture dropped (STATS), when that changed, at most every
        STATS_EVERY_S (unless `force`), and once to every new worker. True if one was sent."""
        if self.welcome is None:
            return False
        key = (self.welcome.epoch, *(self.drops.get(r, 0) for r in STATS_REASONS))
        if key[1:] == (0, 0, 0) or key == self._stats_sent:
            return False
        recent = key[:1] == self._stats_sent[:1] and now - self._stats_at < STATS_EVERY_S
        if recent and not force:
            return False
        try:
            self.sock.send(CaptureStats(*key).pack(), zmq.NOBLOCK)
        except zmq.Again:
            return False  # the worker is not there; the next send tries again
        self._stats_sent, self._stats_at = key, now
        return True

    def _link_events(self) -> None:
        if self._monitor is None:
            return
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            if event == zmq.EVENT_DISCONNECTED and self.welcome is not None:
                logger.info("stream %s: the worker went away; handshaking again", self.name)
                self.reset()
            elif event == zmq.EVENT_CONNECTED and self.welcome is None:
                self._hello_sent_at = None  # say HELLO now, not at the next retry

    def hello_if_due(self, now: float) -> None:
        if self.welcome is not None:
            return
        if self._hello_sent_at is None or now - self._hello_sent_at > HELLO_RETRY_S:
            try:
                self.sock.send(self.hello.pack(), zmq.NOBLOCK)
            except zmq.Again:
                pass  # not connected yet (IMMEDIATE); retried after HELLO_RETRY_S
            self._hello_sent_at = now

    def reset(self) -> None:
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        self.welcome = None
        self.free = []
        self.outstanding.clear()
        self._hello_sent_at = None
        self.stats["reconnects"] += 1

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        if self._monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                self.sock.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None

    def handle(self, frames: list[bytes], raise_refusal: bool) -> None:
        try:
            kind = message_kind(frames[0])
            if kind == Kind.RELEASE:
                self._on_release(Release.unpack(frames[0]))
            elif kind == Kind.WELCOME:
                self._on_welcome(Welcome.unpack(frames[0]))
            elif kind == Kind.REFUSE:
                self._on_refuse(frames, raise_refusal)
        except ProtocolError as exc:
            logger.warning("stream %s: ignoring a malformed message: %s", self.name, exc)
        except ShmError as exc:
            # The ring went away between WELCOME and here (the worker died): start over.
            logger.warning("stream %s: %s; handshaking again", self.name, exc)
            self.reset()

    def _check_stall(self, now: float) -> None:
        stalled = self.outstanding and not self.free and now - self._last_release > STALL_S
        if self.welcome is not None and stalled:
            logger.warning(
                "stream %s: no release for %.1f s, handshaking again",
                self.name,
                now - self._last_release,
            )
            self.reset()
        self.hello_if_due(now)

    def _on_refuse(self, frames: list[bytes], raise_refusal: bool) -> None:
        code, reason = unpack_refuse(frames)
        if code == RefuseCode.STALE_EPOCH:
            if self.welcome is not None:
                logger.info("stream %s: worker asks for a new handshake", self.name)
                self.reset()
            return
        if code == RefuseCode.BUSY:
            self.busy = reason
            logger.info("stream %s: %s; retrying", self.name, reason)
            self.reset()
            self._hello_sent_at = time.monotonic() + BUSY_RETRY_S - HELLO_RETRY_S
            return
        if raise_refusal:
            raise CaptureError(f"stream {self.name}: refused by the worker: {reason}")
        logger.error("stream %s: refused by the worker: %s", self.name, reason)
        self.reset()
        # The worker's config changed under us (a reload); ask again, but slowly.
        self._hello_sent_at = time.monotonic() + REFUSED_RETRY_S - HELLO_RETRY_S

    def _on_welcome(self, welcome: Welcome) -> None:
        if self.welcome is not None and welcome.epoch == self.welcome.epoch:
            return  # an answer to a repeated HELLO
        if welcome.frame_size != self.frame_size:
            raise CaptureError(
                f"worker expects {welcome.frame_size}-byte frames, "
                f"this client sends {self.frame_size}"
            )
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        if self.hello.transport is Transport.SHM:
            self.ring = FrameRing.attach(
                welcome.ring_name, welcome.slot_count, welcome.frame_size, welcome.epoch
            )
            self.free = list(range(welcome.slot_count))
        self.outstanding.clear()
        self.welcome = welcome
        self._last_release = time.monotonic()
        logger.info("stream %s: connected, epoch %08x", self.name, welcome.epoch)

    def _on_release(self, release: Release) -> None:
        if self.welcome is None or release.epoch != self.welcome.epoch:
            return
        if self.outstanding.pop(release.slot, None) is not None:
            self.free.append(release.slot)
            self._last_release = time.monotonic()
        if release.status is not ReleaseStatus.CONSUMED:
            self.drops["worker"] = self.drops.get("worker", 0) + 1
