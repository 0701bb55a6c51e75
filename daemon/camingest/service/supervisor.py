"""Supervision: one spawned worker per stream, heartbeats, restarts with backoff, staged stops.

A stream's life is an explicit state machine (StreamState). A worker that exits or stops
beating is reaped, its ring swept, and restarted after an exponential backoff; a stream that
crashes `max_restarts` times within `restart_window_s` is marked failed and left alone, and
no other stream notices any of it.
"""

from __future__ import annotations

import enum
import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any

from camingest.config.model import StreamConfig, SupervisionConfig
from camingest.service.restart import RestartPolicy
from camingest.wire.fanin import WorkerHealth
from camingest.wire.ring import ring_prefix, sweep
from camingest.worker.main import worker_main
from camingest.worker.spec import WorkerSpec

logger = logging.getLogger(__name__)

SpecFactory = Callable[[StreamConfig], WorkerSpec]

# Workers are forked from a server process that has already imported what a worker needs
# (PyAV, numpy, pyzmq, pydantic, the pyav backend): a restart costs a fork, not a new
# interpreter and its imports. The server is a fresh interpreter of its own (not a fork of
# this threaded process), started on the first worker. pyACL is not preloaded: it is
# initialised per channel, in the worker.
PRELOAD = ["camingest.worker.main", "camingest.worker.encoders.pyav"]


def worker_context() -> ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


class StreamState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class StreamSlot:
    """Everything the supervisor knows about one stream."""

    config: StreamConfig
    state: StreamState = StreamState.STOPPED
    process: BaseProcess | None = None
    started_at: float = 0.0
    last_beat: float = 0.0
    backoff_until: float = 0.0
    restarts: int = 0
    crashes: deque[float] = field(default_factory=deque)
    health: WorkerHealth | None = None
    detail: str = ""  # the last error, shown in status until the stream runs again
    fatal: str = ""  # what the current worker said before exiting with an error


class Supervisor:
    def __init__(
        self,
        policy: SupervisionConfig,
        make_spec: SpecFactory,
        instance: str,
        mp_context: ForkServerContext | SpawnContext | None = None,
        idle: Callable[[float], None] | None = None,
    ) -> None:
        self.policy = policy
        self._restart = RestartPolicy.from_config(policy)
        self.instance = instance
        self._make_spec = make_spec
        # Called while waiting for workers to stop, so their last packets keep flowing.
        self._idle = idle or time.sleep
        self._mp = mp_context or worker_context()
        self.slots: dict[str, StreamSlot] = {}

    # -- starting and stopping -------------------------------------------------------------

    def start(self, streams: Iterable[StreamConfig]) -> None:
        for stream in streams:
            slot = StreamSlot(stream)
            self.slots[stream.name] = slot
            self._spawn(slot)

    def _spawn(self, slot: StreamSlot) -> None:
        name = slot.config.name
        sweep(ring_prefix(self.instance, name))  # rings of a previous worker of this stream
        proc = self._mp.Process(
            target=worker_main,
            args=(self._make_spec(slot.config),),
            name=f"camingest: worker {name}",
        )
        proc.start()
        slot.process = proc
        slot.state = StreamState.STARTING
        slot.started_at = time.monotonic()
        slot.health = None
        slot.fatal = ""
        logger.info("stream %s: worker started, pid %s", name, proc.pid, extra={"STREAM": name})

    def stop(
        self,
        names: Iterable[str] | None = None,
        timeout_s: float | None = None,
        restart: bool = False,
    ) -> None:
        """Staged and in parallel: SIGTERM (SIGUSR1 when the stream will be restarted, so its
        end-of-stream says so) -> join -> SIGKILL -> reap. The workers drain on the signal."""
        chosen = [self.slots[n] for n in (self.slots if names is None else names)]
        budget = self.policy.stop_timeout_s if timeout_s is None else timeout_s
        live = [s for s in chosen if s.process is not None and s.process.is_alive()]
        for s in live:
            s.state = StreamState.STOPPING
            _signal(s, signal.SIGUSR1 if restart else signal.SIGTERM)
        live = self._wait(live, time.monotonic() + budget)
        for s in live:
            logger.warning(
                "stream %s: worker %s did not stop within %.1f s; SIGKILL",
                s.config.name,
                _pid(s),
                budget,
            )
            _signal(s, signal.SIGKILL)
        self._wait(live, time.monotonic() + 2.0)
        for s in chosen:
            self._reap(s)
            s.state = StreamState.STOPPED

    def replace(self, streams: list[StreamConfig]) -> None:
        """Restart streams with new configs (a reload changed them), stopping them together."""
        self.stop([s.name for s in streams], restart=True)
        for stream in streams:
            self.slots[stream.name] = StreamSlot(stream)
            self._spawn(self.slots[stream.name])

    def _wait(self, slots: list[StreamSlot], deadline: float) -> list[StreamSlot]:
        """Wait until the deadline; returns the slots whose worker is still alive."""
        alive = [s for s in slots if s.process is not None and s.process.is_alive()]
        while alive and time.monotonic() < deadline:
            self._idle(0.02)
            alive = [s for s in alive if s.process is not None and s.process.is_alive()]
        return alive

    def remove(self, names: Iterable[str]) -> None:
        names = list(names)
        self.stop(names)
        for name in names:
            del self.slots[name]

    # -- the periodic check ----------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for slot in self.slots.values():
            if slot.state in (StreamState.STARTING, StreamState.RUNNING):
                self._check_worker(slot, now)
            elif slot.state is StreamState.BACKOFF and now >= slot.backoff_until:
                slot.restarts += 1
                self._spawn(slot)

    def _check_worker(self, slot: StreamSlot, now: float) -> None:
        proc = slot.process
        assert proc is not None
        name = slot.config.name
        if not proc.is_alive():
            code = proc.exitcode
            reason = f"worker exited with {_describe_exit(code)}"
            if slot.fatal:
                reason += f": {slot.fatal}"
            self._crashed(slot, now, reason)
            return
        if slot.state is StreamState.STARTING:
            limit, since = self.policy.start_timeout_s, slot.started_at
        else:
            limit, since = self.policy.hang_timeout_s, slot.last_beat
        if now - since > limit:
            logger.error(
                "stream %s: no heartbeat from worker %s for %.1f s; killing it",
                name,
                proc.pid,
                now - since,
                extra={"STREAM": name},
            )
            _signal(slot, signal.SIGKILL)
            proc.join(2.0)
            self._crashed(slot, now, f"worker hung (no heartbeat for {now - since:.1f} s)")

    def _crashed(self, slot: StreamSlot, now: float, reason: str) -> None:
        name = slot.config.name
        self._reap(slot)
        slot.health = None  # its numbers died with it
        slot.detail = reason
        delay = self._restart.after_crash(slot.crashes, now, now - slot.started_at)
        if delay is None:
            slot.state = StreamState.FAILED
            logger.error(
                "stream %s: failed after %d crashes in %.0f s: %s",
                name,
                len(slot.crashes),
                self._restart.window_s,
                reason,
                extra={"STREAM": name},
            )
            return
        if delay == 0:
            logger.warning("stream %s: %s; restarting", name, reason, extra={"STREAM": name})
            slot.restarts += 1
            self._spawn(slot)
            return
        slot.state = StreamState.BACKOFF
        slot.backoff_until = now + delay
        logger.warning(
            "stream %s: %s; restarting in %.1f s", name, reason, delay, extra={"STREAM": name}
        )

    def _reap(self, slot: StreamSlot) -> None:
        if slot.process is not None:
            slot.process.join(0.1)
            if not slot.process.is_alive():
                slot.process.close()
                slot.process = None
        # A worker killed with SIGKILL could not unlink its ring.
        sweep(ring_prefix(self.instance, slot.config.name))

    # -- reports from workers --------------------------------------------------------------

    def on_health(self, health: WorkerHealth) -> None:
        slot = self.slots.get(health.stream)
        if slot is None or slot.process is None or slot.process.pid != health.pid:
            return  # a late message from a worker that is already gone
        slot.health = health
        slot.last_beat = time.monotonic()
        if slot.state is StreamState.STARTING:
            slot.state = StreamState.RUNNING
            slot.detail = ""
            logger.info("stream %s: running", health.stream, extra={"STREAM": health.stream})

    def on_fatal(self, stream: str, reason: str) -> None:
        slot = self.slots.get(stream)
        if slot is not None:
            slot.fatal = reason

    # -- queries ---------------------------------------------------------------------------

    @property
    def sentinels(self) -> list[int]:
        """Readable when a worker exits: the loop waits on them to notice a death at once."""
        return [
            s.process.sentinel
            for s in self.slots.values()
            if s.process is not None and s.state in (StreamState.STARTING, StreamState.RUNNING)
        ]

    def all_up(self) -> bool:
        """Every stream has run, or has crashed at least once: a camera that keeps failing
        must not hold READY back (its state says what is wrong)."""
        return all(
            s.state in (StreamState.RUNNING, StreamState.FAILED) or s.crashes
            for s in self.slots.values()
        )

    def healthy(self, now: float | None = None) -> bool:
        """False while a running worker misses its heartbeats (hung). Starting, backing-off
        and failed streams are under the supervisor's control, which is what the watchdog
        vouches for; a crash-looping camera must not get the whole service killed."""
        now = time.monotonic() if now is None else now
        late = max(2 * self.policy.heartbeat_interval_s, 1.0)
        return all(
            s.state is not StreamState.RUNNING or now - s.last_beat <= late
            for s in self.slots.values()
        )

    def snapshot(self) -> list[dict[str, Any]]:
        out = []
        for name, s in self.slots.items():
            h = s.health
            out.append(
                {
                    "name": name,
                    "state": s.state.value,
                    "pid": s.process.pid if s.process else None,
                    "restarts": s.restarts,
                    "detail": s.detail,
                    "health": h,
                }
            )
        return out


def _signal(slot: StreamSlot, sig: int) -> None:
    if slot.process is not None and slot.process.pid is not None:
        try:
            os.kill(slot.process.pid, sig)
        except ProcessLookupError:
            pass


def _pid(slot: StreamSlot) -> int | None:
    return slot.process.pid if slot.process else None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"status {code}"
