"""The worker side of the ingest socket: the ROUTER sockets, message dispatch, descriptor
checks and the release of each slot once the encoder has its copy. Who may feed the stream is
decided in session.py. Bad input is dropped and counted, never fatal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import zmq
from zmq.utils.monitor import recv_monitor_message

from camingest.config.model import StreamConfig
from camingest.errors import ResourceError, ShmError
from camingest.log import RateLimitedLog
from camingest.wire.framing import ProtocolError, VersionError
from camingest.wire.ingest import (
    INLINE_SLOT,
    CaptureStats,
    DropReason,
    FrameDesc,
    Hello,
    Kind,
    RefuseCode,
    Release,
    ReleaseStatus,
    Transport,
    message_kind,
    pack_refuse,
)
from camingest.wire.pixels import frame_size, plane_layout
from camingest.worker.encoders.base import RawFrame
from camingest.worker.session import TAKEOVER_S, CaptureSession, open_session, refusal

logger = logging.getLogger(__name__)

PEER_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
DRAIN_S = 1.0

# Called with a frame whose planes are views that stay valid only during the call.
FrameHandler = Callable[[RawFrame, bool], ReleaseStatus]


@dataclass
class IngestCounters:
    frames_in: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    sessions: int = 0

    def drop(self, reason: DropReason) -> None:
        self.drops[reason.value] = self.drops.get(reason.value, 0) + 1


class IngestServer:
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        stream: StreamConfig,
        endpoints: tuple[str, ...],
        instance: str,
        epoch: int,
        on_frame: FrameHandler,
    ) -> None:
        self.stream = stream
        self.endpoints = endpoints
        self.instance = instance
        self.counters = IngestCounters()
        self.layout = plane_layout(stream.pixel_format, stream.width, stream.height)
        self.frame_size = frame_size(stream.pixel_format, stream.width, stream.height)
        self._ctx = context
        self._next_epoch = epoch
        self._on_frame = on_frame
        self._session: CaptureSession | None = None
        self.sockets: list[zmq.Socket[bytes]] = []
        # Connection events of each socket: a capture that died is seen at once, not after
        # a silence (the worker polls these beside `sockets` and hands them to handle()).
        self.monitors: list[zmq.Socket[bytes]] = []
        self._peers = 0  # connections open on all endpoints
        self._remote: dict[zmq.Socket[bytes], bool] = {}  # tcp: the peer may be on another host
        self.capture_drops: dict[str, int] = {}  # what the capture said it dropped (STATS)
        self._warn = RateLimitedLog(logger)

    def open(self) -> None:
        for ep in self.endpoints:
            sock = self._ctx.socket(zmq.ROUTER)
            self.sockets.append(sock)  # registered before bind: close() releases it on failure
            sock.setsockopt(zmq.LINGER, 0)
            # Inline frames are the largest legitimate message; anything bigger is hostile.
            sock.setsockopt(zmq.MAXMSGSIZE, self.frame_size + 4096)
            sock.setsockopt(zmq.RCVHWM, max(4, 2 * self.stream.slots))
            local = ep.startswith("ipc://")
            try:
                if local:
                    os.makedirs(os.path.dirname(ep[6:]), exist_ok=True)
                sock.bind(ep)
            except (OSError, zmq.ZMQError) as exc:
                raise ResourceError(f"cannot bind ingest endpoint {ep}: {exc}") from exc
            if local:
                os.chmod(ep[6:], 0o660)  # capture programs run as members of the group
            self._remote[sock] = not local
            self.monitors.append(sock.get_monitor_socket(PEER_EVENTS))

    @property
    def connected(self) -> bool:
        """A capture holds the session and is heard from: its connection is open and it sent
        something within TAKEOVER_S (a capture that stopped sending is not shown as live)."""
        s = self._session
        return s is not None and not s.disconnected and time.monotonic() - s.last_seen < TAKEOVER_S

    def expire(self, now: float) -> None:
        """End the session of a capture that disconnected once what it queued has been
        taken (nothing more from it for DRAIN_S): its ring goes back to /dev/shm."""
        s = self._session
        if s is not None and s.disconnected and now - s.last_seen > DRAIN_S:
            self._end_session()

    def flush_warnings(self) -> None:
        self._warn.flush()

    def close(self) -> None:
        self._end_session()
        # Stop the monitors before closing their PAIR ends: libzmq can block the context's
        # termination on a monitor whose reading end went away first.
        for sock in self.sockets:
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
        for mon in self.monitors:
            mon.close(linger=0)
        self.monitors = []
        for sock in self.sockets:
            sock.close(linger=0)
        self.sockets = []
        # libzmq leaves ipc socket files behind; a stream removed by a reload must not.
        for ep in self.endpoints:
            if ep.startswith("ipc://"):
                try:
                    Path(ep[6:]).unlink(missing_ok=True)
                except OSError as exc:  # e.g. open() failed because a parent is a file
                    logger.debug("cannot remove %s: %s", ep, exc)

    # -- messages --------------------------------------------------------------------------

    def handle(
        self, sock: zmq.Socket[bytes], budget: int = 64, deadline: float | None = None
    ) -> None:
        """Process up to `budget` waiting messages of one socket, and stop early once the
        monotonic `deadline` has passed: each frame may take the encoder a long time, and the
        worker must still beat on time (a busy encoder is not a hung one)."""
        if sock in self.monitors:
            self._on_peer_events(sock)
            return
        for _ in range(budget):
            if deadline is not None and time.monotonic() >= deadline:
                return
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 2:
                self.counters.drop(DropReason.MALFORMED)
                continue
            peer, body = frames[0], frames[1:]
            try:
                kind = message_kind(body[0])
                if kind == Kind.HELLO:
                    self._on_hello(sock, peer, body)
                elif kind == Kind.FRAME:
                    self._on_frame_desc(sock, peer, body)
                elif kind == Kind.STATS:
                    self._on_stats(peer, body)
                else:
                    raise ProtocolError(f"unexpected message kind {kind}")
            except VersionError as exc:
                self.counters.drop(DropReason.MALFORMED)
                self._reply(sock, peer, pack_refuse(RefuseCode.BAD_VERSION, str(exc)))
            except ProtocolError as exc:
                self.counters.drop(DropReason.MALFORMED)
                self._warn.warning(
                    "malformed", "stream %s: malformed ingest message: %s", self.stream.name, exc
                )

    def _on_peer_events(self, monitor: zmq.Socket[bytes]) -> None:
        while monitor.poll(0):
            event = recv_monitor_message(monitor)["event"]
            if event == zmq.EVENT_ACCEPTED:
                self._peers += 1
            elif event == zmq.EVENT_DISCONNECTED:
                self._peers = max(0, self._peers - 1)
                if self._peers == 0 and self._session is not None:
                    # Nobody is connected: the session's capture is gone (it died or closed).
                    # Its last frames may still be queued here: they are encoded, and the
                    # session ends once they are (expire).
                    logger.info("stream %s: capture disconnected", self.stream.name)
                    self._session.disconnected = True

    def _on_stats(self, peer: bytes, body: list[bytes]) -> None:
        if len(body) != 1:
            raise ProtocolError("STATS must be a single frame")
        stats = CaptureStats.unpack(body[0])
        s = self._session
        if s is not None and s.peer == peer and stats.epoch == s.epoch:
            s.last_seen = time.monotonic()
            self.capture_drops = stats.drops()

    def _on_hello(self, sock: zmq.Socket[bytes], peer: bytes, body: list[bytes]) -> None:
        if len(body) != 1:
            raise ProtocolError("HELLO must be a single frame")
        hello = Hello.unpack(body[0])
        s = self._session
        remote = self._remote.get(sock, False)
        problem = refusal(self.stream, hello, remote, s, peer, time.monotonic())
        if problem is not None:
            code, reason = problem
            self._warn.warning(
                ("refuse", code), "stream %s: refused a capture: %s", self.stream.name, reason
            )
            self._reply(sock, peer, pack_refuse(code, reason))
            return
        if s is not None and s.peer == peer and s.frames == 0 and s.transport == hello.transport:
            self._reply(sock, peer, [s.welcome.pack()])  # a repeated HELLO: same answer
            return
        self._end_session()
        epoch = self._next_epoch
        self._next_epoch = (self._next_epoch + 1) & 0xFFFFFFFF or 1
        try:
            self._session = open_session(self.stream, self.instance, epoch, peer, hello.transport)
        except ShmError as exc:
            reason = f"stream {self.stream.name}: {exc}"
            self._warn.log(logging.ERROR, "shm", "%s", reason)  # a capture retries every 5 s
            self._reply(sock, peer, pack_refuse(RefuseCode.TRANSPORT, reason))
            return
        self.counters.sessions += 1
        self._warn.log(
            logging.INFO,
            "connect",
            "stream %s: capture connected (%s), epoch %08x",
            self.stream.name,
            hello.transport.name.lower(),
            epoch,
        )
        self._reply(sock, peer, [self._session.welcome.pack()])

    def _end_session(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session = None

    def _on_frame_desc(self, sock: zmq.Socket[bytes], peer: bytes, body: list[bytes]) -> None:
        desc = FrameDesc.unpack(body[0])
        s = self._session
        if s is None or s.peer != peer or desc.epoch != s.epoch:
            self.counters.drop(DropReason.STALE_EPOCH)
            self._reply(sock, peer, pack_refuse(RefuseCode.STALE_EPOCH, "handshake again"))
            return
        if desc.slot == INLINE_SLOT:
            if s.transport is not Transport.INLINE or len(body) != 2:
                raise ProtocolError("inline frame outside an inline session")
            if len(body[1]) != self.frame_size:
                self.counters.drop(DropReason.WRONG_SIZE)
                self._warn.warning(
                    "size",
                    "stream %s: inline frame of %d bytes, expected %d",
                    self.stream.name,
                    len(body[1]),
                    self.frame_size,
                )
                return
            data = np.frombuffer(body[1], dtype=np.uint8)
            planes = tuple(
                data[p.offset : p.offset + p.size].reshape(p.rows, p.stride)[:, : p.row_bytes]
                for p in self.layout
            )
            self._submit(s, desc, planes)
            return
        if s.ring is None or len(body) != 1:
            raise ProtocolError("slot descriptor outside a shared-memory session")
        if desc.slot >= s.ring.slot_count:
            self.counters.drop(DropReason.BAD_SLOT)
            self._warn.warning(
                "slot",
                "stream %s: descriptor for slot %d of %d",
                self.stream.name,
                desc.slot,
                s.ring.slot_count,
            )
            return
        status = self._submit(s, desc, s.ring.planes(desc.slot, self.layout))
        # The encoder has its own copy now: the slot goes back to the capture.
        self._reply(sock, peer, [Release(s.epoch, desc.slot, desc.seq, status).pack()])

    def _submit(
        self, s: CaptureSession, desc: FrameDesc, planes: tuple[npt.NDArray[np.uint8], ...]
    ) -> ReleaseStatus:
        s.frames += 1
        s.last_frame = s.last_seen = time.monotonic()
        self.counters.frames_in += 1
        frame = RawFrame(
            self.stream.pixel_format,
            self.stream.width,
            self.stream.height,
            planes,
            desc.seq,
            desc.timestamp_ns,
        )
        status = self._on_frame(frame, desc.force_keyframe)
        if status is ReleaseStatus.ENCODER_ERROR:
            self.counters.drop(DropReason.ENCODER_ERROR)
        return status

    def _reply(self, sock: zmq.Socket[bytes], peer: bytes, frames: list[bytes]) -> None:
        try:
            sock.send_multipart([peer, *frames], zmq.NOBLOCK)
        except zmq.Again:
            self._warn.warning(
                "reply", "stream %s: capture is not reading replies", self.stream.name
            )
