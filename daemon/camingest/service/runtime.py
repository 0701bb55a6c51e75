"""Daemon: composes output, supervisor, control, systemd notification and metrics; runs the loop.

Start-up pushes each component's teardown onto an ExitStack, so shutdown always runs in the
reverse order: workers drain (their last packets and end-of-stream markers still flow to the
subscribers), then the output and control sockets close, then leftovers are swept.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import zmq

from camingest import __version__
from camingest.config.load import load_config
from camingest.config.model import Backend, DaemonConfig, StreamConfig
from camingest.errors import ConfigError
from camingest.service.control import ControlServer
from camingest.service.metrics import Metrics
from camingest.service.output import Output
from camingest.service.preflight import preflight, ring_bytes, shm_free_bytes
from camingest.service.reload import check_reloadable, plan_reload
from camingest.service.rundir import lock_runtime_dir, sweep_leftovers
from camingest.service.sdnotify import Notifier
from camingest.service.stats import StatusBook
from camingest.service.status import summary_line
from camingest.service.supervisor import Supervisor
from camingest.signals import SignalQueue
from camingest.wire.fanin import RUN_BYTES, WorkerHealth
from camingest.wire.ring import instance_id
from camingest.worker.spec import WorkerSpec

logger = logging.getLogger(__name__)

TICK_S = 0.1
STATUS_EVERY_S = 2.0


class Daemon:
    def __init__(
        self,
        config: DaemonConfig,
        config_path: Path | None,
        notifier: Notifier,
        log_target: str = "stderr",
        signals: SignalQueue | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = notifier
        self.signals = signals or SignalQueue()
        self.instance = instance_id(config.runtime_dir, config.instance)
        self.run_token = secrets.token_hex(RUN_BYTES // 2).encode()  # new at every start
        self._log_target = log_target
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._output: Output | None = None
        self._supervisor: Supervisor | None = None
        self._control: ControlServer | None = None
        self._metrics: Metrics | None = None
        self._book = StatusBook()
        self._started = time.monotonic()
        self._ready = False
        self._stopping = False
        self._last_status = ""

    # -- composition -----------------------------------------------------------------------

    def run(self) -> int:
        with ExitStack() as stack:
            stack.enter_context(self.signals)
            problems = preflight(self.config)
            if problems:
                raise ConfigError(problems)
            stack.callback(lock_runtime_dir(self.config.runtime_dir))
            ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
            self._ctx = ctx
            stack.callback(ctx.term)
            stack.callback(self._sweep_leftovers)
            sweep_leftovers(self.config, self.instance)  # what a crashed earlier run left
            output = Output(ctx, self.config, self._on_health, self._on_fatal, self.run_token)
            self._output = output
            stack.callback(output.close)
            output.open()
            control = ControlServer(ctx, self.config.control_path, self._handlers())
            self._control = control
            stack.callback(control.close)
            control.open()
            if self.config.metrics.enabled:
                metrics = Metrics()
                metrics.serve(self.config.metrics.address, self.config.metrics.port)
                self._metrics = metrics
                stack.callback(metrics.close)
            supervisor = Supervisor(
                self.config.supervision, self._spec, self.instance, idle=self._pump_output
            )
            self._supervisor = supervisor
            stack.callback(self._stop_workers)
            supervisor.start(self.config.streams)
            self._loop()
        return 0

    def _spec(self, stream: StreamConfig) -> WorkerSpec:
        backend = stream.encoder.backend.value
        if stream.encoder.backend is Backend.AUTO:
            from camingest.worker.encoders.auto import resolve_backend

            backend = resolve_backend()
        sup = self.config.supervision
        return WorkerSpec(
            stream=stream,
            backend=backend,
            ingest_endpoints=self.config.ingest_endpoints(stream),
            fanin_endpoint=self.config.fanin_endpoint,
            command_endpoint=self.config.command_endpoint,
            instance=self.instance,
            run=self.run_token,
            parent_pid=os.getpid(),
            heartbeat_interval_s=sup.heartbeat_interval_s,
            hang_timeout_s=sup.hang_timeout_s,
            stop_timeout_s=sup.stop_timeout_s * 0.5,
            log_level=self.config.logging.level,
            log_target=self._log_target,
        )

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        assert self._supervisor is not None
        watchdog = self.notifier.watchdog_interval_s
        next_watchdog = 0.0
        next_status = 0.0
        while True:
            for sig in self.signals.pop_all():
                if sig == signal.SIGHUP:
                    self.handle_hup()
                else:
                    logger.info("%s received: stopping", sig.name)
                    return
            self._pump(TICK_S)
            now = time.monotonic()
            self._supervisor.tick(now)
            if not self._ready and self._supervisor.all_up():
                self._ready = True
                self.notifier.ready()
                logger.info("all %d streams running", len(self._supervisor.slots))
            # systemd arms the watchdog once start-up is complete (READY=1).
            due = self._ready and now >= next_watchdog
            if watchdog is not None and due and self._supervisor.healthy(now):
                self.notifier.watchdog()
                next_watchdog = now + watchdog
            if now >= next_status:
                next_status = now + STATUS_EVERY_S
                self._publish_status()

    def _pump(self, timeout_s: float, control: bool = True) -> None:
        """Wait up to `timeout_s` for output (and control) traffic, and handle it. A worker's
        exit ends the wait too (its sentinel), so the loop's tick replaces it at once."""
        socks: list[zmq.Socket[bytes] | int] = [*(self._output.sockets if self._output else [])]
        if control and self._control is not None and self._control.sock is not None:
            socks.append(self._control.sock)
        if self._supervisor is not None:
            socks += self._supervisor.sentinels
        if not socks:
            time.sleep(timeout_s)
            return
        ready, _, _ = zmq.select(socks, [], [], timeout_s)
        for sock in ready:
            if isinstance(sock, int):
                continue  # a worker exited: the tick after this handles it
            if self._control is not None and sock is self._control.sock:
                self._control.handle()
            elif self._output is not None:
                self._output.handle(sock)

    def _pump_output(self, timeout_s: float) -> None:
        """While workers stop: keep their packets flowing, but serve no control request (a
        reload inside a stop or inside another reload would act on half-changed state)."""
        self._pump(timeout_s, control=False)

    def _publish_status(self) -> None:
        status = self.status()
        line = summary_line(status)
        if line != self._last_status:
            self._last_status = line
            self.notifier.status(line)
        if self._metrics is not None:
            self._metrics.update(status["streams"])

    # -- actions (signals and control verbs share them) ------------------------------------

    def handle_hup(self) -> None:
        try:
            self.reload()
        except ConfigError as exc:
            logger.error("reload refused, keeping the running config:\n%s", exc)
        except Exception:
            logger.exception("reload failed")
            self.notifier.ready()

    def reload(self) -> dict[str, list[str]]:
        assert self._supervisor is not None
        assert self._output is not None
        if self.config_path is None:
            raise ConfigError(["no config file to reload from"])
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
            check_reloadable(self.config, new)
            # The rings of the running streams are already in /dev/shm and will be given back.
            held = sum(ring_bytes(s) for s in self.config.streams)
            problems = preflight(new, shm_free=lambda: shm_free_bytes() + held)
            if problems:
                raise ConfigError(problems)
        except ConfigError:
            self.notifier.ready()
            raise
        plan = plan_reload(self.config, new)
        self.config = new
        self._output.set_streams(s.name for s in new.streams)
        self._supervisor.remove(plan.removed)
        self._supervisor.replace(list(plan.changed))
        self._supervisor.start(plan.added)
        self._book.forget(list(plan.removed))
        summary = plan.summary()
        logger.info("reloaded %s: %s", self.config_path, summary)
        self.notifier.ready()
        return summary

    def keyframe(self, stream: str) -> None:
        assert self._output is not None
        if stream not in {s.name for s in self.config.streams}:
            raise KeyError(f"no stream {stream!r}")
        self._output.request_keyframe(stream)

    def status(self) -> dict[str, Any]:
        assert self._supervisor is not None
        streams = []
        for slot in self._supervisor.snapshot():
            name = slot["name"]
            subs = self._output.subscribers(name) if self._output else None
            streams.append(self._book.stream_status(slot, subs))
        return {
            "daemon": {
                "pid": os.getpid(),
                "uptime_s": round(time.monotonic() - self._started, 1),
                "config": str(self.config_path) if self.config_path else None,
                "state": "stopping"
                if self._stopping
                else ("running" if self._ready else "starting"),
                "version": __version__,
            },
            "streams": streams,
        }

    def _handlers(self) -> dict[str, Any]:
        return {
            "status": lambda req: self.status(),
            "stats": lambda req: self.status()["streams"],
            "reload": lambda req: self.reload(),
            "keyframe": lambda req: self.keyframe(str(req["stream"])),
        }

    # -- reports from the output -----------------------------------------------------------

    def _on_health(self, health: WorkerHealth) -> None:
        if self._supervisor is not None:
            self._supervisor.on_health(health)
        self._book.record(health)

    def _on_fatal(self, stream: str, reason: str) -> None:
        if self._supervisor is not None:
            self._supervisor.on_fatal(stream, reason)

    # -- teardown --------------------------------------------------------------------------

    def _stop_workers(self) -> None:
        self._stopping = True
        self.notifier.stopping()
        if self._supervisor is not None:
            self._supervisor.stop()
        # The workers' last packets and end-of-stream markers may still be queued.
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            self._pump(0.05)

    def _sweep_leftovers(self) -> None:
        sweep_leftovers(self.config, self.instance)
