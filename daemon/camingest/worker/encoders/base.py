"""The encoder channel interface, shaped after Ascend's VENC contract.

A channel is created with its parameters and callbacks; `send_frame` hands a frame over and
returns once the channel no longer reads the caller's buffer (the encode itself may still be
running); packets come back through `on_packet`, possibly on another thread, one access unit
per frame, in order; `send_eos` drains (every callback has run when it returns) and ends the
channel; `close` releases everything and may be called at any time, more than once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from camingest.config.model import EncoderConfig
from camingest.wire.output import CodecName
from camingest.wire.pixels import PixelFormat


@dataclass(frozen=True, slots=True)
class RawFrame:
    """One frame's planes (2-D uint8 arrays: rows x row bytes), possibly views of a ring slot."""

    pixel_format: PixelFormat
    width: int
    height: int
    planes: tuple[npt.NDArray[np.uint8], ...]
    seq: int
    timestamp_ns: int


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    data: bytes  # one Annex-B access unit; keyframes carry their parameter sets
    keyframe: bool
    seq: int  # the frame's sequence number, as sent
    timestamp_ns: int  # the frame's capture timestamp, as sent
    submitted_ns: int  # time.monotonic_ns() when send_frame was called


@dataclass(frozen=True, slots=True)
class ChannelParams:
    stream: str
    width: int
    height: int
    pixel_format: PixelFormat  # what send_frame will be given (one of the channel's inputs)
    fps: float
    encoder: EncoderConfig

    @property
    def codec(self) -> CodecName:
        return self.encoder.codec


PacketCallback = Callable[[EncodedPacket], None]
# A frame the encoder failed on: its sequence number and a message naming call and code.
FrameErrorCallback = Callable[[int, str], None]


class EncoderChannel(Protocol):
    def input_formats(self) -> frozenset[PixelFormat]:
        """Pixel formats send_frame takes as they are; the worker converts anything else."""
        ...

    def open(self) -> None:
        """Create the channel; raises EncoderError with the reason."""
        ...

    def send_frame(self, frame: RawFrame, *, force_idr: bool = False) -> None:
        """Hand one frame over (asynchronous). Raises EncoderError if the channel refuses it."""
        ...

    def send_eos(self, timeout_s: float) -> None:
        """Flush: on return every packet has been delivered and the channel has ended."""
        ...

    def pending(self) -> int:
        """Frames sent whose packet has not been delivered yet."""
        ...

    def close(self) -> None:
        """Destroy the channel and release every resource; idempotent."""
        ...


class ChannelFactory(Protocol):
    def __call__(
        self, params: ChannelParams, on_packet: PacketCallback, on_error: FrameErrorCallback
    ) -> EncoderChannel: ...
