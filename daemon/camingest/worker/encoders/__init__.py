"""Encoder backends, loaded by name so that choosing one never imports the others."""

from __future__ import annotations

import importlib

from camingest.errors import EncoderError
from camingest.worker.encoders.base import (
    ChannelFactory,
    ChannelParams,
    EncoderChannel,
    FrameErrorCallback,
    PacketCallback,
)

BACKENDS: dict[str, str] = {
    "pyav": "camingest.worker.encoders.pyav:PyAVChannel",
    "acl": "camingest.worker.encoders.acl:AclChannel",
    # A benchmark instrument: consumes frames and produces nothing.
    "null": "camingest.worker.encoders.null:NullChannel",
}


def channel_factory(backend: str) -> ChannelFactory:
    if backend == "auto":
        from camingest.worker.encoders.auto import resolve_backend

        backend = resolve_backend()
    try:
        module_name, _, attr = BACKENDS[backend].partition(":")
    except KeyError:
        raise EncoderError(f"unknown encoder backend {backend!r}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EncoderError(f"encoder backend {backend!r} is not available: {exc}") from exc
    factory: ChannelFactory = getattr(module, attr)
    return factory


def open_channel(
    backend: str, params: ChannelParams, on_packet: PacketCallback, on_error: FrameErrorCallback
) -> EncoderChannel:
    channel = channel_factory(backend)(params, on_packet, on_error)
    channel.open()
    return channel
