"""`null` backend: a benchmark instrument that consumes frames and publishes nothing.

It exists to measure what the daemon itself costs per frame (tools/bench_transport.py); it is
never used to claim that an encode works."""

from __future__ import annotations

from camingest.wire.pixels import PixelFormat
from camingest.worker.encoders.base import (
    ChannelParams,
    FrameErrorCallback,
    PacketCallback,
    RawFrame,
)


class NullChannel:
    def __init__(
        self, params: ChannelParams, on_packet: PacketCallback, on_error: FrameErrorCallback
    ) -> None:
        self.params = params
        self.frames = 0

    def input_formats(self) -> frozenset[PixelFormat]:
        return frozenset(PixelFormat)

    def open(self) -> None:
        pass

    def send_frame(self, frame: RawFrame, *, force_idr: bool = False) -> None:
        self.frames += 1

    def send_eos(self, timeout_s: float) -> None:
        pass

    def pending(self) -> int:
        return 0

    def close(self) -> None:
        pass
