"""The worker's side of the fan-in: packets, end-of-stream markers, health and fatal notices,
framed as wire/fanin.py says and pushed to the main process."""

from __future__ import annotations

import threading
import time
from collections import deque

import zmq

from camingest.wire.fanin import FANIN_FATAL, FANIN_HEALTH, FANIN_PACKET, WorkerHealth
from camingest.wire.output import OUT_EOS, OUT_KEYFRAME, OUT_RESTART, Codec, OutputHeader
from camingest.worker.encoders.base import EncodedPacket
from camingest.worker.spec import WorkerSpec

FANIN_KINDS = (FANIN_PACKET, FANIN_HEALTH, FANIN_FATAL)
CODECS = {"h264": Codec.H264, "h265": Codec.H265}


class PacketSink:
    """Sends packets and health to the main process. Packets come from the encoder's callback
    thread, health from the worker loop, so one lock guards the one socket."""

    def __init__(
        self, context: zmq.Context[zmq.Socket[bytes]], spec: WorkerSpec, epoch: int
    ) -> None:
        self.spec = spec
        self.epoch = epoch
        self.codec = CODECS[spec.stream.encoder.codec.value]
        self.topic = spec.stream.name.encode()
        self._packet, self._health, self._fatal = (k + spec.run for k in FANIN_KINDS)
        self.seq = 0  # every packet the encoder delivered: a fan-in drop leaves a visible gap
        self.packets = 0  # packets handed to the main process
        self.bytes = 0
        self.keyframes = 0
        self.dropped = 0
        self.last_packet = time.monotonic()
        self.latencies: deque[float] = deque(maxlen=2048)
        self._lock = threading.Lock()
        self._closed = False
        self._sock = context.socket(zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, 2000)
        self._sock.setsockopt(zmq.LINGER, int(spec.stop_timeout_s * 1000))
        self._sock.connect(spec.fanin_endpoint)

    def on_packet(self, packet: EncodedPacket) -> None:
        now_mono = time.monotonic_ns()
        flags = OUT_KEYFRAME if packet.keyframe else 0
        with self._lock:
            header = self._header(flags, packet.seq, packet.timestamp_ns)
            self.seq += 1
            if self._send([self._packet, self.topic, header, packet.data]):
                self.packets += 1
                self.bytes += len(packet.data)
                self.keyframes += packet.keyframe
            self.last_packet = time.monotonic()
        self.latencies.append((now_mono - packet.submitted_ns) / 1e6)

    def send_eos(self, restart: bool = False) -> None:
        flags = OUT_EOS | (OUT_RESTART if restart else 0)
        with self._lock:
            self._send([self._packet, self.topic, self._header(flags, 0, 0), b""])

    def send_health(self, health: WorkerHealth) -> None:
        with self._lock:
            self._send([self._health, self.topic, health.pack()])

    def send_fatal(self, reason: str) -> None:
        with self._lock:
            self._send([self._fatal, self.topic, reason.encode()])

    def mute(self) -> None:
        """Send nothing more, and drop what is queued: the daemon this was for is gone."""
        with self._lock:
            self._closed = True
            self._sock.close(linger=0)

    def close(self) -> None:
        with self._lock:  # an encoder thread that was abandoned may still call on_packet
            self._closed = True
            self._sock.close()  # lingers up to stop_timeout_s: the last packets and eos get out

    def _header(self, flags: int, frame_seq: int, ts: int) -> bytes:
        s = self.spec.stream
        header = OutputHeader(
            self.codec,
            flags,
            self.epoch,
            s.width,
            s.height,
            self.seq,
            frame_seq,
            ts,
            time.time_ns(),
        )
        return header.pack()

    def _send(self, frames: list[bytes]) -> bool:
        if self._closed:
            return False
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK)
            return True
        except zmq.Again:
            self.dropped += 1
            return False
