"""The worker process of one stream: ingest -> (conversion) -> encoder channel -> fan-in.

Started with the spawn method by the supervisor; everything it uses (ZeroMQ context, sockets,
the ring, the encoder) is created here, in the child.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import time

import zmq

from camingest.errors import DaemonError, EncoderError, ExitCode
from camingest.log import RateLimitedLog, configure_child
from camingest.wire.avframes import convert
from camingest.wire.fanin import CMD_KEYFRAME, WorkerHealth
from camingest.wire.ingest import DropReason, ReleaseStatus
from camingest.wire.pixels import PixelFormat
from camingest.worker.encoders import open_channel
from camingest.worker.encoders.base import ChannelParams, EncoderChannel, RawFrame
from camingest.worker.idr import IdrRequests
from camingest.worker.ingest import IngestServer
from camingest.worker.parent import ParentWatch
from camingest.worker.sink import PacketSink
from camingest.worker.spec import WorkerSpec

logger = logging.getLogger(__name__)

MIN_IDR_INTERVAL_S = 0.5  # forced IDRs (subscriptions, requests) are merged to this rate


class Worker:
    def __init__(self, spec: WorkerSpec, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.spec = spec
        self.stream = spec.stream
        self.topic = spec.stream.name.encode()
        self._ctx = context
        self._term = False
        self._restart = False  # stopped to be replaced: the end-of-stream says so
        self._idr = IdrRequests(MIN_IDR_INTERVAL_S)
        self._busy_since = 0.0  # when the encoder last went from idle to having frames
        self._last_submit = 0.0
        self._channel: EncoderChannel | None = None
        self._target: PixelFormat | None = None
        self._encoder_errors = 0
        self._warn = RateLimitedLog(logger)
        self._parent = ParentWatch(spec.parent_pid)
        self._orphaned = False  # the daemon died: stop without a word to anyone

    def handle_term(self, signum: int, frame: object) -> None:
        """SIGTERM: stop for good. SIGUSR1: stop because a new worker replaces this one."""
        self._term = True
        self._restart = signum == signal.SIGUSR1

    def run(self) -> int:
        epoch = secrets.randbits(32) or 1
        sink = PacketSink(self._ctx, self.spec, epoch)
        self._parent.open()
        try:
            return self._run(sink, epoch)
        except DaemonError as exc:
            logger.error("stream %s: %s", self.stream.name, exc)
            sink.send_fatal(str(exc))
            return int(exc.exit_code) or ExitCode.FAILURE
        except Exception as exc:  # a bug or a misbehaving library: still say what it was
            logger.exception("stream %s: worker failed", self.stream.name)
            sink.send_fatal(f"{type(exc).__name__}: {exc}")
            return ExitCode.FAILURE
        finally:
            sink.close()
            self._parent.close()

    def _run(self, sink: PacketSink, epoch: int) -> int:
        s = self.stream
        params = ChannelParams(s.name, s.width, s.height, s.pixel_format, s.fps, s.encoder)
        channel = open_channel(self.spec.backend, params, sink.on_packet, self._on_frame_error)
        self._channel = channel
        accepted = channel.input_formats()
        if s.pixel_format not in accepted:
            self._target = PixelFormat.NV12 if PixelFormat.NV12 in accepted else min(accepted)
        ingest = IngestServer(
            self._ctx, s, self.spec.ingest_endpoints, self.spec.instance, epoch, self._encode
        )
        commands = self._ctx.socket(zmq.SUB)
        try:
            ingest.open()
            commands.setsockopt(zmq.LINGER, 0)
            commands.setsockopt(zmq.SUBSCRIBE, self.stream.name.encode())
            commands.connect(self.spec.command_endpoint)
            logger.info(
                "stream %s: worker %d up (%s %s, epoch %08x)",
                s.name,
                os.getpid(),
                self.spec.backend,
                s.encoder.codec.value,
                epoch,
            )
            self._loop(ingest, commands, sink, epoch)
        finally:
            ingest.close()
            commands.close(linger=0)
            self._shutdown(channel, sink)
        return ExitCode.OK

    def _loop(
        self, ingest: IngestServer, commands: zmq.Socket[bytes], sink: PacketSink, epoch: int
    ) -> None:
        poller = zmq.Poller()
        for sock in (*ingest.sockets, *ingest.monitors):
            poller.register(sock, zmq.POLLIN)
        poller.register(commands, zmq.POLLIN)
        if self._parent.fd is not None:
            poller.register(self._parent.fd, zmq.POLLIN)
        interval = self.spec.heartbeat_interval_s
        next_beat = 0.0
        while not self._term:
            if self._parent.gone():
                # Quietly: an end of stream now would reach the restarted daemon's subscribers.
                logger.error("stream %s: the daemon is gone; stopping", self.stream.name)
                self._orphaned = True
                break
            for sock, _ in poller.poll(timeout=int(min(100, interval * 1000))):
                if sock is commands:
                    self._on_command(commands)
                elif isinstance(sock, zmq.Socket):
                    ingest.handle(sock, deadline=next_beat)
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + interval
                self._warn.flush()  # report the size of a warning storm once it is over
                ingest.flush_warnings()
                ingest.expire(now)
                health = self._health(ingest, sink, epoch, now)
                if health.healthy:
                    sink.send_health(health)
                else:
                    # Silence is the signal: the supervisor kills a worker that stops beating.
                    self._warn.warning("stall", "stream %s: %s", self.stream.name, health.detail)

    def _on_command(self, commands: zmq.Socket[bytes]) -> None:
        while True:
            try:
                frames = commands.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            # SUB matches prefixes: a request for cam10 also reaches cam1's socket.
            if len(frames) == 2 and frames[0] == self.topic and frames[1] == CMD_KEYFRAME:
                self.request_idr()

    def request_idr(self) -> None:
        self._idr.request(time.monotonic())

    def _encode(self, frame: RawFrame, force: bool) -> ReleaseStatus:
        assert self._channel is not None
        now = time.monotonic()
        if force:
            self._idr.request(now)
        force = self._idr.due(now)
        if self._channel.pending() == 0:
            self._busy_since = now
        self._last_submit = now
        if self._target is not None:
            planes = convert(
                frame.pixel_format, frame.width, frame.height, frame.planes, self._target
            )
            frame = RawFrame(
                self._target, frame.width, frame.height, planes, frame.seq, frame.timestamp_ns
            )
        try:
            self._channel.send_frame(frame, force_idr=force)
        except EncoderError as exc:
            self._encoder_errors += 1
            self._warn.warning(
                "send", "stream %s: frame %d refused: %s", self.stream.name, frame.seq, exc
            )
            return ReleaseStatus.ENCODER_ERROR  # a requested IDR stays due for the next one
        if force:
            self._idr.sent(now)
        return ReleaseStatus.CONSUMED

    def _on_frame_error(self, seq: int, message: str) -> None:
        self._encoder_errors += 1
        self._warn.warning(
            "frame", "stream %s: frame %d failed: %s", self.stream.name, seq, message
        )

    def _health(
        self, ingest: IngestServer, sink: PacketSink, epoch: int, now: float
    ) -> WorkerHealth:
        assert self._channel is not None
        pending = self._channel.pending()
        # Stalled: frames keep going in and nothing has come out for a while. An encoder that
        # holds frames back (lookahead) while the camera pauses is not stalled.
        limit = self.spec.hang_timeout_s / 2
        progress = max(sink.last_packet, self._busy_since)
        stalled = pending > 0 and now - progress > limit and now - self._last_submit < limit
        lat = sorted(sink.latencies)
        drops = dict(ingest.counters.drops)
        if self._encoder_errors:
            drops[DropReason.ENCODER_ERROR.value] = self._encoder_errors
        if sink.dropped:
            drops["fanin_full"] = sink.dropped
        drops.update(ingest.capture_drops)
        return WorkerHealth(
            stream=self.stream.name,
            pid=os.getpid(),
            epoch=epoch,
            healthy=not stalled,
            frames_in=ingest.counters.frames_in,
            frames_encoded=sink.seq,
            packets_out=sink.packets,
            bytes_out=sink.bytes,
            keyframes=sink.keyframes,
            drops=drops,
            latency_p50_ms=lat[len(lat) // 2] if lat else 0.0,
            latency_p99_ms=lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0,
            capture_connected=ingest.connected,
            detail=f"encoder stalled with {pending} frames pending" if stalled else "",
        )

    def _shutdown(self, channel: EncoderChannel, sink: PacketSink) -> None:
        if self._orphaned:
            sink.mute()  # what the encoder still holds goes nowhere, and no end of stream
        try:
            channel.send_eos(self.spec.stop_timeout_s)
        except EncoderError as exc:
            logger.error("stream %s: %s", self.stream.name, exc)
        finally:
            channel.close()
        if not self._orphaned:
            sink.send_eos(restart=self._restart)
        logger.info("stream %s: worker stopped", self.stream.name)


def run_worker(spec: WorkerSpec) -> int:
    """Entry point of the spawned process."""
    configure_child(spec.log_target, spec.log_level, spec.stream.name)  # type: ignore[arg-type]
    # Ctrl-C reaches the whole process group; the daemon coordinates the stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    worker = Worker(spec, context)
    signal.signal(signal.SIGTERM, worker.handle_term)
    signal.signal(signal.SIGUSR1, worker.handle_term)
    try:
        return worker.run()
    finally:
        # Whatever an error left open goes with linger 0; the sink already lingered.
        context.destroy(linger=0)


def worker_main(spec: WorkerSpec) -> None:
    """multiprocessing target: the exit code becomes the process's exit status."""
    raise SystemExit(run_worker(spec))
