"""What every message shares: the protocol version, its errors and fixed-width names."""

from __future__ import annotations

VERSION = 1


class ProtocolError(ValueError):
    """A message that does not follow this module's layouts."""


class VersionError(ProtocolError):
    """A message of another protocol version."""


def pad(text: str, size: int) -> bytes:
    raw = text.encode()
    if len(raw) >= size:
        raise ProtocolError(f"{text!r} is longer than {size - 1} bytes")
    return raw


def unpad(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")
