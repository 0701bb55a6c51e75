"""CaptureClient: the library a capture program uses to hand frames to a camingest worker.

Local endpoints (ipc://) carry only descriptors; the frame bytes go into a shared-memory slot
that the client owns until it sends the descriptor and gets back with the worker's release.
tcp:// endpoints carry the frame inline. The caller is never blocked beyond `max_wait_ms`; a
frame that cannot be handed over is dropped and counted. A worker restart (new epoch) is
handled here: the client says HELLO again and maps the new ring, the caller notices nothing
but a few counted drops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from types import TracebackType

import numpy as np
import numpy.typing as npt
import zmq

from camingest.errors import CaptureError, ShmError
from camingest.wire.framing import ProtocolError
from camingest.wire.ingest import (
    FLAG_FORCE_KEYFRAME,
    INLINE_SLOT,
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
from camingest.wire.pixels import PixelFormat, frame_size, packed_shape, plane_layout
from camingest.wire.ring import FrameRing

logger = logging.getLogger(__name__)

Frame = npt.NDArray[np.uint8] | Sequence[npt.NDArray[np.uint8]]

# Without any release for this long while frames are outstanding, the worker is presumed
# gone (killed or restarted) and the client handshakes again.
STALL_S = 2.0
HELLO_RETRY_S = 0.5
REFUSED_RETRY_S = 5.0
BUSY_RETRY_S = 1.0


class CaptureClient:
    def __init__(
        self,
        endpoint: str,
        stream: str,
        width: int,
        height: int,
        pixel_format: PixelFormat | str,
        *,
        on_full: str = "drop",
        max_wait_ms: int = 0,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.stream = stream
        self.width = width
        self.height = height
        self.pixel_format = PixelFormat(pixel_format)
        self.layout = plane_layout(self.pixel_format, width, height)
        self.frame_size = frame_size(self.pixel_format, width, height)
        self.transport = Transport.INLINE if endpoint.startswith("tcp://") else Transport.SHM
        self.max_wait_s = max_wait_ms / 1000 if on_full == "wait" else 0.0
        self._ctx = context
        self._own_ctx = context is None
        self._sock: zmq.Socket[bytes] | None = None
        self._ring: FrameRing | None = None
        self._welcome: Welcome | None = None
        self._free: list[int] = []
        self._outstanding: dict[int, float] = {}  # slot -> monotonic time sent
        self._hello_sent_at: float | None = None
        self._busy = ""  # the last BUSY refusal, for the error connect() raises
        self._last_release = time.monotonic()
        self._seq = 0
        self.stats: dict[str, int] = {"sent": 0, "dropped": 0, "reconnects": 0}
        self.drops: dict[str, int] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def connect(self, timeout_s: float = 5.0) -> None:
        """Handshake with the worker; raises CaptureError on refusal or silence."""
        if self._ctx is None:
            self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # frames for a worker that is not there are dropped
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        if self.transport is Transport.INLINE:
            sock.setsockopt(zmq.SNDHWM, 4)
        sock.connect(self.endpoint)
        self._sock = sock
        deadline = time.monotonic() + timeout_s
        while self._welcome is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if self._busy:
                    raise CaptureError(f"stream {self.stream}: {self._busy}")
                raise CaptureError(
                    f"no answer from the worker of stream {self.stream} at {self.endpoint} "
                    f"within {timeout_s:g} s",
                    hint="is camingest running, and is the stream in its config?",
                )
            self._maybe_hello(time.monotonic())
            if sock.poll(int(min(remaining, HELLO_RETRY_S) * 1000), zmq.POLLIN):
                self._handle(sock.recv_multipart(), raise_refusal=True)

    def close(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._own_ctx and self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def __enter__(self) -> CaptureClient:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def epoch(self) -> int | None:
        return self._welcome.epoch if self._welcome else None

    # -- sending ---------------------------------------------------------------------------

    def send(
        self, frame: Frame, timestamp_ns: int | None = None, force_keyframe: bool = False
    ) -> bool:
        """Hand one frame over. Returns False (and counts why) if it was dropped."""
        planes = self._check(frame)
        if self._sock is None:
            raise CaptureError("send() before connect()")
        ts = time.time_ns() if timestamp_ns is None else timestamp_ns
        flags = FLAG_FORCE_KEYFRAME if force_keyframe else 0
        self._seq += 1
        self._pump(0)
        if self._welcome is None:
            return self._drop(DropReason.RECONNECTING)
        if self.transport is Transport.INLINE:
            return self._send_inline(planes, ts, flags)
        slot = self._take_slot()
        if slot is None:
            return self._drop(DropReason.NO_SLOT)
        assert self._ring is not None
        dest = self._ring.slot(slot)
        if len(planes) == 1:
            np.copyto(dest, planes[0].reshape(-1))
        else:
            for plane, view in zip(planes, self._ring.planes(slot, self.layout), strict=True):
                np.copyto(view, plane)
        desc = FrameDesc(self._welcome.epoch, slot, self._seq, ts, flags)
        try:
            self._sock.send(desc.pack(), zmq.NOBLOCK)
        except zmq.Again:
            # IMMEDIATE: nobody to queue for, i.e. the worker is gone (restarting).
            self._free.append(slot)
            return self._drop(DropReason.RECONNECTING)
        self._outstanding[slot] = time.monotonic()
        self.stats["sent"] += 1
        return True

    def _send_inline(self, planes: list[npt.NDArray[np.uint8]], ts: int, flags: int) -> bool:
        assert self._sock is not None
        assert self._welcome is not None
        payload = planes[0] if len(planes) == 1 else np.concatenate([p.reshape(-1) for p in planes])
        desc = FrameDesc(self._welcome.epoch, INLINE_SLOT, self._seq, ts, flags)
        if self.max_wait_s and not self._sock.poll(int(self.max_wait_s * 1000), zmq.POLLOUT):
            return self._drop(DropReason.SEND_QUEUE)
        try:
            self._sock.send_multipart(
                [desc.pack(), np.ascontiguousarray(payload).data], zmq.NOBLOCK
            )
        except zmq.Again:
            return self._drop(DropReason.SEND_QUEUE)
        self.stats["sent"] += 1
        return True

    def _take_slot(self) -> int | None:
        if not self._free and self.max_wait_s:
            self._pump(self.max_wait_s, until_free=True)
        return self._free.pop(0) if self._free else None

    def _drop(self, reason: str) -> bool:
        self.stats["dropped"] += 1
        self.drops[reason] = self.drops.get(reason, 0) + 1
        return False

    # -- incoming messages -----------------------------------------------------------------

    def _pump(self, wait_s: float, until_free: bool = False) -> None:
        """Read releases and handshake answers; wait up to `wait_s` for a free slot."""
        assert self._sock is not None
        deadline = time.monotonic() + wait_s
        while True:
            while self._sock.poll(0, zmq.POLLIN):
                self._handle(self._sock.recv_multipart(), raise_refusal=False)
            now = time.monotonic()
            self._check_stall(now)
            if not until_free or self._free or now >= deadline:
                return
            self._sock.poll(int(min(deadline - now, 0.05) * 1000) + 1, zmq.POLLIN)

    def _check_stall(self, now: float) -> None:
        stalled = self._outstanding and not self._free and now - self._last_release > STALL_S
        if self._welcome is not None and stalled:
            logger.warning(
                "stream %s: no release for %.1f s, handshaking again",
                self.stream,
                now - self._last_release,
            )
            self._reset_session()
        self._maybe_hello(now)

    def _maybe_hello(self, now: float) -> None:
        if self._welcome is not None or self._sock is None:
            return
        if self._hello_sent_at is None or now - self._hello_sent_at > HELLO_RETRY_S:
            hello = Hello(self.stream, self.width, self.height, self.pixel_format, self.transport)
            try:
                self._sock.send(hello.pack(), zmq.NOBLOCK)
            except zmq.Again:
                pass  # not connected yet (IMMEDIATE); retried after HELLO_RETRY_S
            self._hello_sent_at = now

    def _reset_session(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self._welcome = None
        self._free = []
        self._outstanding.clear()
        self._hello_sent_at = None
        self.stats["reconnects"] += 1

    def _handle(self, frames: list[bytes], raise_refusal: bool) -> None:
        try:
            kind = message_kind(frames[0])
            if kind == Kind.RELEASE:
                self._on_release(Release.unpack(frames[0]))
            elif kind == Kind.WELCOME:
                self._on_welcome(Welcome.unpack(frames[0]))
            elif kind == Kind.REFUSE:
                code, reason = unpack_refuse(frames)
                if code == RefuseCode.STALE_EPOCH:
                    if self._welcome is not None:
                        logger.info("stream %s: worker asks for a new handshake", self.stream)
                        self._reset_session()
                    return
                if code == RefuseCode.BUSY:
                    self._busy = reason
                    logger.info("stream %s: %s; retrying", self.stream, reason)
                    self._reset_session()
                    self._hello_sent_at = time.monotonic() + BUSY_RETRY_S - HELLO_RETRY_S
                    return
                if raise_refusal:
                    raise CaptureError(f"stream {self.stream}: refused by the worker: {reason}")
                logger.error("stream %s: refused by the worker: %s", self.stream, reason)
                self._reset_session()
                # The worker's config changed under us (a reload); ask again, but slowly.
                self._hello_sent_at = time.monotonic() + REFUSED_RETRY_S - HELLO_RETRY_S
        except ProtocolError as exc:
            logger.warning("stream %s: ignoring a malformed message: %s", self.stream, exc)
        except ShmError as exc:
            # The ring went away between WELCOME and here (the worker died): start over.
            logger.warning("stream %s: %s; handshaking again", self.stream, exc)
            self._reset_session()

    def _on_welcome(self, welcome: Welcome) -> None:
        if self._welcome is not None and welcome.epoch == self._welcome.epoch:
            return  # an answer to a repeated HELLO
        if welcome.frame_size != self.frame_size:
            raise CaptureError(
                f"worker expects {welcome.frame_size}-byte frames, "
                f"this client sends {self.frame_size}"
            )
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self.transport is Transport.SHM:
            self._ring = FrameRing.attach(
                welcome.ring_name, welcome.slot_count, welcome.frame_size, welcome.epoch
            )
            self._free = list(range(welcome.slot_count))
        self._outstanding.clear()
        self._welcome = welcome
        self._last_release = time.monotonic()
        logger.info("stream %s: connected, epoch %08x", self.stream, welcome.epoch)

    def _on_release(self, release: Release) -> None:
        if self._welcome is None or release.epoch != self._welcome.epoch:
            return
        if self._outstanding.pop(release.slot, None) is not None:
            self._free.append(release.slot)
            self._last_release = time.monotonic()
        if release.status is not ReleaseStatus.CONSUMED:
            self.drops["worker"] = self.drops.get("worker", 0) + 1

    # -- validation ------------------------------------------------------------------------

    def _check(self, frame: Frame) -> list[npt.NDArray[np.uint8]]:
        want = packed_shape(self.pixel_format, self.width, self.height)
        plane_shapes = [(p.rows, p.row_bytes) for p in self.layout]
        expected = (
            f"stream {self.stream} takes {self.pixel_format.value} {self.width}x{self.height}: "
            f"a uint8 array of shape {want} or planes {plane_shapes}"
        )
        if isinstance(frame, np.ndarray):
            if frame.dtype != np.uint8 or frame.shape != want:
                raise ValueError(f"{expected}; got an array of shape {frame.shape} {frame.dtype}")
            return [np.ascontiguousarray(frame)]
        planes = list(frame)
        got = [
            (getattr(p, "shape", None), str(getattr(p, "dtype", type(p).__name__))) for p in planes
        ]
        if len(planes) != len(self.layout):
            raise ValueError(f"{expected}; got {len(planes)} planes {got}")
        out = []
        for plane, layout in zip(planes, self.layout, strict=True):
            if not isinstance(plane, np.ndarray) or plane.dtype != np.uint8:
                raise ValueError(f"{expected}; got planes {got}")
            if plane.size != layout.rows * layout.row_bytes or plane.shape[0] != layout.rows:
                raise ValueError(f"{expected}; got planes {got}")
            out.append(plane.reshape(layout.rows, layout.row_bytes))
        return out
