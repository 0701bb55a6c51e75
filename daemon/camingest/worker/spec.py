"""What the supervisor hands to a spawned worker (pickled by multiprocessing's spawn)."""

from __future__ import annotations

from dataclasses import dataclass

from camingest.config.model import StreamConfig


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    stream: StreamConfig
    backend: str  # resolved: pyav, acl or null
    ingest_endpoints: tuple[str, ...]
    fanin_endpoint: str
    command_endpoint: str
    instance: str
    run: bytes  # the daemon run's token, first frame of every fan-in message (wire/fanin.py)
    parent_pid: int
    heartbeat_interval_s: float
    hang_timeout_s: float
    stop_timeout_s: float
    log_level: str
    log_target: str  # "journal" or "stderr", as the parent resolved it
