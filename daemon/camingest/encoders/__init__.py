"""Encoder backends, loaded by name so that choosing one never imports the others."""

from __future__ import annotations

import importlib

from camingest.encoders.base import (
    ChannelFactory,
    ChannelParams,
    EncoderChannel,
    FrameErrorCallback,
    PacketCallback,
)
from camingest.errors import EncoderError

BACKENDS: dict[str, str] = {
    "pyav": "camingest.encoders.pyav:PyAVChannel",
    "acl": "camingest.encoders.acl:AclChannel",
    # A benchmark instrument: consumes frames and produces nothing.
    "null": "camingest.encoders.null:NullChannel",
}


def channel_factory(backend: str) -> ChannelFactory:
    if backend == "auto":
        from camingest.encoders.auto import resolve_backend

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
