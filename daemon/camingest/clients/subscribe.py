"""Subscriber: the library a recorder, restreamer or analytics job uses to receive streams.

It yields packets with their parsed header and guarantees that what it yields decodes: it
drops everything before a stream's first keyframe, and after a gap in the packet sequence (a
slow subscriber loses messages at its high-water mark) or a new worker epoch, until the next
keyframe. With a control socket path it asks the daemon for that keyframe instead of waiting
for the next GOP.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

import zmq

from camingest.wire.framing import ProtocolError
from camingest.wire.output import OutputHeader

logger = logging.getLogger(__name__)

# Large enough for a 4K IDR (which can exceed 2 MB); bigger messages are not ours.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Packet:
    stream: str
    header: OutputHeader
    data: bytes


@dataclass
class _StreamState:
    synced: bool = False
    epoch: int | None = None
    next_seq: int | None = None


class Subscriber:
    def __init__(
        self,
        endpoints: Sequence[str],
        streams: Sequence[str] | None = None,
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        control_path: str | None = None,
        rcvhwm: int = 1000,
    ) -> None:
        self.endpoints = list(endpoints)
        self.streams = set(streams) if streams else None
        self.control_path = control_path
        self.dropped = 0  # packets dropped here to keep the output decodable
        self.gaps = 0
        self._ctx = context or zmq.Context()
        self._own_ctx = context is None
        self._state: dict[str, _StreamState] = {}
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        for topic in sorted(self.streams) if self.streams else [""]:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        for ep in self.endpoints:
            self._sock.connect(ep)

    def recv(self, timeout_s: float | None = None) -> Packet | None:
        """The next decodable packet, or None when nothing came within `timeout_s`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sock.poll(wait, zmq.POLLIN):
                return None
            packet = self._accept(self._sock.recv_multipart())
            if packet is not None:
                return packet
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def __iter__(self) -> Iterator[Packet]:
        while True:
            packet = self.recv(None)
            if packet is not None:
                yield packet

    def _accept(self, frames: list[bytes]) -> Packet | None:
        if len(frames) != 3:
            self.dropped += 1
            return None
        stream = frames[0].decode(errors="replace")
        # Topics are prefix-matched by ZeroMQ: "cam1" also matches "cam10".
        if self.streams is not None and stream not in self.streams:
            return None
        try:
            header = OutputHeader.unpack(frames[1])
        except (ProtocolError, ValueError) as exc:  # ValueError: a codec this client lacks
            logger.warning("stream %s: bad output header: %s", stream, exc)
            self.dropped += 1
            return None
        state = self._state.setdefault(stream, _StreamState())
        if header.eos:
            state.synced = False
            state.epoch = None
            return Packet(stream, header, b"")
        if (
            state.epoch == header.epoch
            and state.next_seq is not None
            and header.packet_seq < state.next_seq
        ):
            return None  # a duplicate (the same daemon reached through two endpoints)
        if state.epoch != header.epoch or state.next_seq != header.packet_seq:
            if state.synced:
                self.gaps += 1
                logger.info("stream %s: gap or restart; waiting for a keyframe", stream)
                self.request_keyframe(stream)
            state.synced = False
        state.epoch = header.epoch
        state.next_seq = header.packet_seq + 1
        if not state.synced:
            if not header.keyframe:
                self.dropped += 1
                return None
            state.synced = True
        return Packet(stream, header, frames[2])

    def request_keyframe(self, stream: str) -> bool:
        """Ask the daemon's control socket for an IDR on `stream` (when we know the socket)."""
        if not self.control_path:
            return False
        sock = self._ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(f"ipc://{self.control_path}")
            sock.send(json.dumps({"cmd": "keyframe", "stream": stream}).encode())
            # Briefly: while we wait here our own queue fills, and it is what overflowed.
            return bool(sock.poll(100, zmq.POLLIN)) and json.loads(sock.recv()).get("ok", False)
        finally:
            sock.close()

    def close(self) -> None:
        self._sock.close(linger=0)
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
