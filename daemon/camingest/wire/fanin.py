"""The main process and its workers: worker -> main PUSH/PULL "fan-in" (packets, health,
fatal notices) and main -> worker PUB/SUB commands."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# The first frame of every fan-in message is its kind followed by the daemon run's token
# (RUN_BYTES bytes, new at every start): a worker of an earlier, crashed run whose socket
# reconnected to this run's fan-in is not heard (its end of stream would end recordings).
FANIN_PACKET = b"P"  # then the three output frames, forwarded as they are
FANIN_HEALTH = b"H"  # then stream name, JSON of WorkerHealth
FANIN_FATAL = b"F"  # then stream name, UTF-8 reason: the worker is about to exit with an error
RUN_BYTES = 8

# Main process -> workers (PUB -> SUB, topic = stream name): [stream, command]
CMD_KEYFRAME = b"K"


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """A worker's heartbeat; the counters are totals since the worker started."""

    stream: str
    pid: int
    epoch: int
    healthy: bool
    frames_in: int
    frames_encoded: int
    packets_out: int
    bytes_out: int
    keyframes: int
    drops: dict[str, int]
    latency_p50_ms: float
    latency_p99_ms: float
    capture_connected: bool
    detail: str = ""

    def pack(self) -> bytes:
        return json.dumps({f: getattr(self, f) for f in self.__slots__}).encode()

    @classmethod
    def unpack(cls, buf: bytes) -> WorkerHealth:
        data: dict[str, Any] = json.loads(buf)
        return cls(**data)
