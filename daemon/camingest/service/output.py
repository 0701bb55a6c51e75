"""Output, in the main process: workers' packets in (PULL), subscribers out (one XPUB bound to
every configured endpoint), and keyframe requests back to the workers (PUB).

A subscription is visible on the XPUB socket; XPUB_VERBOSER reports every subscribe and
unsubscribe (not only the first of a topic), so the second viewer of a camera also gets its
IDR and the subscriber count stays right. A slow subscriber loses its own messages at its
high-water mark; the socket never blocks, so it never slows the others.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable

import zmq

from camingest.config.model import DaemonConfig
from camingest.errors import ResourceError
from camingest.wire.fanin import (
    CMD_KEYFRAME,
    FANIN_FATAL,
    FANIN_HEALTH,
    FANIN_PACKET,
    RUN_BYTES,
    WorkerHealth,
)

logger = logging.getLogger(__name__)

HealthHandler = Callable[[WorkerHealth], None]
FatalHandler = Callable[[str, str], None]


class Output:
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        config: DaemonConfig,
        on_health: HealthHandler,
        on_fatal: FatalHandler,
        run: bytes,
    ) -> None:
        if len(run) != RUN_BYTES:
            raise ValueError(f"a run token is {RUN_BYTES} bytes, got {len(run)}")
        self.config = config
        self.run = run
        self._ctx = context
        self._on_health = on_health
        self._on_fatal = on_fatal
        self._topics: Counter[bytes] = Counter()
        self.streams: set[str] = {s.name for s in config.streams}
        self.fanin: zmq.Socket[bytes] | None = None
        self.xpub: zmq.Socket[bytes] | None = None
        self.commands: zmq.Socket[bytes] | None = None
        self.packets = 0
        self.foreign = 0  # fan-in messages of another run (workers of a crashed daemon)

    def open(self) -> None:
        ctx, cfg = self._ctx, self.config
        self.fanin = ctx.socket(zmq.PULL)
        self.fanin.setsockopt(zmq.LINGER, 0)
        self.fanin.setsockopt(zmq.RCVHWM, 10000)
        _bind(self.fanin, cfg.fanin_endpoint)
        self.commands = ctx.socket(zmq.PUB)
        self.commands.setsockopt(zmq.LINGER, 0)
        _bind(self.commands, cfg.command_endpoint)
        self.xpub = ctx.socket(zmq.XPUB)
        self.xpub.setsockopt(zmq.LINGER, 500)
        self.xpub.setsockopt(zmq.SNDHWM, cfg.output.sndhwm)
        self.xpub.setsockopt(zmq.XPUB_VERBOSER, 1)
        for ep in cfg.output_endpoints:
            _bind(self.xpub, ep)
            if ep.startswith("ipc://"):
                os.chmod(ep[6:], 0o660)

    def set_streams(self, names: Iterable[str]) -> None:
        self.streams = set(names)

    @property
    def sockets(self) -> list[zmq.Socket[bytes]]:
        return [s for s in (self.fanin, self.xpub) if s is not None]

    def handle(self, sock: zmq.Socket[bytes], budget: int = 256) -> None:
        if sock is self.fanin:
            self._pump_fanin(budget)
        elif sock is self.xpub:
            self._pump_subscriptions()

    def subscribers(self, stream: str) -> int:
        name = stream.encode()
        return sum(n for topic, n in self._topics.items() if name.startswith(topic))

    def request_keyframe(self, stream: str) -> None:
        if self.commands is not None:
            self.commands.send_multipart([stream.encode(), CMD_KEYFRAME])

    def close(self) -> None:
        for sock in (self.fanin, self.commands, self.xpub):
            if sock is not None:
                sock.close()
        self.fanin = self.commands = self.xpub = None

    def _pump_fanin(self, budget: int) -> None:
        assert self.fanin is not None
        assert self.xpub is not None
        for _ in range(budget):
            try:
                frames = self.fanin.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            head = frames[0].bytes
            kind, run = head[:1], head[1:]
            if run != self.run:
                self.foreign += 1
                if self.foreign == 1 or self.foreign % 1000 == 0:
                    logger.warning(
                        "ignored %d fan-in messages of another daemon run (an orphaned worker)",
                        self.foreign,
                    )
                continue
            if kind == FANIN_PACKET and len(frames) == 4:
                # Forwarded as received: no parsing and no copy on the hot path.
                self.xpub.send_multipart(frames[1:], zmq.NOBLOCK, copy=False)
                self.packets += 1
            elif kind == FANIN_HEALTH and len(frames) == 3:
                try:
                    self._on_health(WorkerHealth.unpack(frames[2].bytes))
                except (ValueError, TypeError, RecursionError) as exc:
                    logger.warning("bad health message: %s", type(exc).__name__)
            elif kind == FANIN_FATAL and len(frames) == 3:
                self._on_fatal(
                    frames[1].bytes.decode(errors="replace"),
                    frames[2].bytes.decode(errors="replace"),
                )
            else:
                logger.warning("ignoring a malformed fan-in message (%d frames)", len(frames))

    def _pump_subscriptions(self, budget: int = 256) -> None:
        assert self.xpub is not None
        for _ in range(budget):
            try:
                msg = self.xpub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not msg or msg[0] not in (0, 1):
                continue  # a subscriber sent something that is not a subscription
            topic = msg[1:]
            if msg[0] == 1:
                self._topics[topic] += 1
                for name in self.streams:
                    if name.encode().startswith(topic):
                        logger.debug("new subscriber of %s: asking for a keyframe", name)
                        self.request_keyframe(name)
            elif self._topics.get(topic, 0) > 1:
                self._topics[topic] -= 1
            else:
                self._topics.pop(topic, None)  # distinct topics must not pile up


def _bind(sock: zmq.Socket[bytes], endpoint: str) -> None:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise ResourceError(f"cannot bind {endpoint}: {exc}") from exc
