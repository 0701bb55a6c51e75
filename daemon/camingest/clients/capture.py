"""CaptureClient: the library a capture program uses to hand frames to a camingest worker.

Local endpoints (ipc://) carry only descriptors; the frame bytes go into a shared-memory slot
that the client owns until it sends the descriptor and gets back with the worker's release.
tcp:// endpoints carry the frame inline. The caller is never blocked beyond `max_wait_ms`; a
frame that cannot be handed over is dropped and counted. The handshake, the slots and the
worker's answers are the session's (capture_session.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType

import numpy as np
import numpy.typing as npt
import zmq

from camingest.clients.capture_session import HELLO_RETRY_S, CaptureSession
from camingest.errors import CaptureError
from camingest.wire.ingest import (
    FLAG_FORCE_KEYFRAME,
    INLINE_SLOT,
    DropReason,
    FrameDesc,
    Hello,
    Transport,
)
from camingest.wire.pixels import PixelFormat, frame_size, packed_shape, plane_layout

Frame = npt.NDArray[np.uint8] | Sequence[npt.NDArray[np.uint8]]


CLOSE_LINGER_MS = 200  # for the final STATS to get out


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
        self._session: CaptureSession | None = None
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
        # A restarted worker is back within a few hundred ms: retry at a steady 100 ms (0: no
        # exponential backoff), so the capture does not sleep through its return.
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 0)
        if self.transport is Transport.INLINE:
            sock.setsockopt(zmq.SNDHWM, 4)
        sock.connect(self.endpoint)
        self._sock = sock
        hello = Hello(self.stream, self.width, self.height, self.pixel_format, self.transport)
        session = CaptureSession(sock, hello, self.frame_size, self.stats, self.drops)
        self._session = session
        deadline = time.monotonic() + timeout_s
        while session.welcome is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if session.busy:
                    raise CaptureError(f"stream {self.stream}: {session.busy}")
                raise CaptureError(
                    f"no answer from the worker of stream {self.stream} at {self.endpoint} "
                    f"within {timeout_s:g} s",
                    hint="is camingest running, and is the stream in its config?",
                )
            session.hello_if_due(time.monotonic())
            if sock.poll(int(min(remaining, HELLO_RETRY_S) * 1000), zmq.POLLIN):
                session.handle(sock.recv_multipart(), raise_refusal=True)

    def close(self) -> None:
        linger = 0
        if self._session is not None:
            # The last word on drops, so the daemon's count ends where this one does.
            if self._session.report(time.monotonic(), force=True):
                linger = CLOSE_LINGER_MS
            self._session.close()
            self._session = None
        if self._sock is not None:
            self._sock.close(linger=linger)
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
        welcome = self._session.welcome if self._session else None
        return welcome.epoch if welcome else None

    # -- sending ---------------------------------------------------------------------------

    def send(
        self, frame: Frame, timestamp_ns: int | None = None, force_keyframe: bool = False
    ) -> bool:
        """Hand one frame over. Returns False (and counts why) if it was dropped."""
        planes = self._check(frame)
        session = self._session
        if self._sock is None or session is None:
            raise CaptureError("send() before connect()")
        ts = time.time_ns() if timestamp_ns is None else timestamp_ns
        flags = FLAG_FORCE_KEYFRAME if force_keyframe else 0
        self._seq += 1
        session.pump(0)
        session.report(time.monotonic())
        welcome = session.welcome
        if welcome is None:
            return self._drop(DropReason.RECONNECTING)
        if self.transport is Transport.INLINE:
            return self._send_inline(planes, welcome.epoch, ts, flags)
        slot = session.take_slot(self.max_wait_s)
        if slot is None:
            return self._drop(DropReason.NO_SLOT)
        ring = session.ring
        assert ring is not None
        if len(planes) == 1:
            np.copyto(ring.slot(slot), planes[0].reshape(-1))
        else:
            for plane, view in zip(planes, ring.planes(slot, self.layout), strict=True):
                np.copyto(view, plane)
        desc = FrameDesc(welcome.epoch, slot, self._seq, ts, flags)
        try:
            self._sock.send(desc.pack(), zmq.NOBLOCK)
        except zmq.Again:
            # IMMEDIATE: nobody to queue for, i.e. the worker is gone (restarting).
            session.give_back(slot)
            return self._drop(DropReason.RECONNECTING)
        session.sent(slot)
        self.stats["sent"] += 1
        return True

    def _send_inline(
        self, planes: list[npt.NDArray[np.uint8]], epoch: int, ts: int, flags: int
    ) -> bool:
        assert self._sock is not None
        payload = planes[0] if len(planes) == 1 else np.concatenate([p.reshape(-1) for p in planes])
        desc = FrameDesc(epoch, INLINE_SLOT, self._seq, ts, flags)
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

    def _drop(self, reason: str) -> bool:
        self.stats["dropped"] += 1
        self.drops[reason] = self.drops.get(reason, 0) + 1
        return False

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
