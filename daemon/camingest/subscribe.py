"""The public subscriber library (README): `from camingest.subscribe import Subscriber`."""

from camingest.clients.subscribe import Packet, Subscriber

__all__ = ["Packet", "Subscriber"]
