"""Who may feed a stream: the checks of a capture's HELLO, and the session it gets.

One capture session at a time owns the stream. Each accepted HELLO starts a session with a new
epoch and a new ring, so a capture that was replaced (or a worker that restarted) can never
write into a slot the current session owns: its descriptors carry a stale epoch and its bytes
land in a segment nobody reads any more.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from camingest.config.model import StreamConfig
from camingest.wire.ingest import Hello, RefuseCode, Transport, Welcome
from camingest.wire.pixels import frame_size, plane_layout
from camingest.wire.ring import RING_FIRST_SLOT_OFFSET, FrameRing, ring_name

# A capture whose last frame is older than this may be replaced by another one, and one that
# has said nothing for this long is not shown as connected.
TAKEOVER_S = 2.0


@dataclass
class CaptureSession:
    peer: bytes
    epoch: int
    transport: Transport
    ring: FrameRing | None
    welcome: Welcome
    frames: int = 0
    last_frame: float = 0.0  # monotonic time of its last frame (0: none yet)
    last_seen: float = field(default_factory=time.monotonic)  # of any message from the peer
    disconnected: bool = False  # its connection closed; what it queued is still taken

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()


def refusal(
    stream: StreamConfig,
    hello: Hello,
    remote: bool,
    current: CaptureSession | None,
    peer: bytes,
    now: float,
) -> tuple[RefuseCode, str] | None:
    """Why this HELLO is refused, or None when it may start a session. `remote`: it came on a
    tcp endpoint, where the peer may be on another host and cannot map our shared memory."""
    problem = _mismatch(stream, hello)
    if problem is None and hello.transport is Transport.SHM and remote:
        problem = (
            RefuseCode.TRANSPORT,
            "shared memory is offered on ipc:// endpoints only; over tcp:// send frames inline",
        )
    busy = (
        current is not None
        and not current.disconnected
        and current.peer != peer
        and now - current.last_frame < TAKEOVER_S
    )
    if problem is None and busy:
        # Two live captures would take the stream from each other forever; one that died
        # is replaced as soon as its frames stop.
        problem = (RefuseCode.BUSY, f"another capture is sending to stream {stream.name}")
    return problem


def open_session(
    stream: StreamConfig, instance: str, epoch: int, peer: bytes, transport: Transport
) -> CaptureSession:
    """A new session; for shared memory with a new ring (ShmError when it cannot be made)."""
    size = frame_size(stream.pixel_format, stream.width, stream.height)
    ring = None
    if transport is Transport.SHM:
        name = ring_name(instance, stream.name, epoch)
        ring = FrameRing.create(name, stream.slots, size, epoch, mode=0o660)
    welcome = Welcome(
        epoch=epoch,
        slot_count=stream.slots if ring else 0,
        first_slot_offset=RING_FIRST_SLOT_OFFSET if ring else 0,
        slot_stride=ring.slot_stride if ring else 0,
        frame_size=size,
        ring_name=ring.name if ring else "",
        planes=plane_layout(stream.pixel_format, stream.width, stream.height),
    )
    return CaptureSession(peer, epoch, transport, ring, welcome)


def _mismatch(st: StreamConfig, hello: Hello) -> tuple[RefuseCode, str] | None:
    if hello.stream != st.name:
        return RefuseCode.UNKNOWN_STREAM, (
            f"this is the ingest socket of stream {st.name!r}, not {hello.stream!r}"
        )
    if (hello.width, hello.height) != (st.width, st.height):
        return RefuseCode.GEOMETRY, (
            f"stream {st.name} is {st.width}x{st.height}, the capture sends "
            f"{hello.width}x{hello.height}"
        )
    if hello.pixel_format != st.pixel_format:
        return RefuseCode.PIXEL_FORMAT, (
            f"stream {st.name} takes {st.pixel_format.value}, the capture sends "
            f"{hello.pixel_format.value}"
        )
    return None
