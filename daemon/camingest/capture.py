"""The public capture library (README): `from camingest.capture import CaptureClient`."""

from camingest.clients.capture import CaptureClient, Frame

__all__ = ["CaptureClient", "Frame"]
