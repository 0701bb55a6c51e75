"""camingest-capture: feed one stream from testsrc, a file, a V4L2 device or an RTSP URL."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Generator

import av

from camingest.capture import CaptureClient
from camingest.clients.sources import SourceItem, open_source
from camingest.config.load import load_config
from camingest.config.model import DaemonConfig, StreamConfig
from camingest.errors import DaemonError, ExitCode
from camingest.signals import STOP, SignalQueue

log = logging.getLogger("camingest.cli.capture")

PROG = "camingest-capture"
FAST_WAIT_MS = 1000  # --fps 0: wait this long for a free slot rather than drop
RECONNECT_INITIAL_S = 0.5
RECONNECT_MAX_S = 10.0
MAX_LAG_S = 1.0  # behind the pacing schedule by more than this: restart it instead of bursting


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Feed one camingest stream with frames from a test pattern, a video file, "
        "a V4L2 device or an RTSP URL (decoded with PyAV, scaled to the stream's geometry).",
    )
    parser.add_argument("--stream", required=True, help="the stream's name in the config")
    parser.add_argument(
        "--source",
        required=True,
        metavar="SRC",
        help="testsrc, a video file, /dev/videoN, or rtsp://...",
    )
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="camingest.yaml")
    parser.add_argument(
        "--endpoint", help="ingest endpoint (default: the stream's first one in the config)"
    )
    parser.add_argument(
        "--fps",
        type=float,
        help="pace testsrc/files at this rate (default: the stream's fps); 0 = as fast as the "
        "daemon takes frames. Live sources are never paced.",
    )
    parser.add_argument("--frames", type=int, metavar="N", help="stop after N frames")
    parser.add_argument("--loop", action="store_true", help="restart a file at its end")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="default: info",
    )
    return parser


def _frames(
    spec: str, stream: StreamConfig, loop: bool, stop: SignalQueue
) -> Generator[SourceItem, None, None]:
    """Frames from the source; an RTSP source that fails is reopened with a backoff."""
    reopen = spec.startswith(("rtsp://", "rtsps://"))
    backoff = RECONNECT_INITIAL_S
    while not stop.requested():
        try:
            source = open_source(
                spec, stream.width, stream.height, stream.pixel_format, stream.fps, loop=loop
            )
        except Exception as exc:
            if not reopen:
                raise
            log.warning("%s: %s; retrying in %.1f s", spec, exc, backoff)
            stop.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_S)
            continue
        try:
            for item in source:
                backoff = RECONNECT_INITIAL_S
                yield item
                if stop.requested():
                    return
            if not reopen:
                return
            log.warning("%s: the stream ended; reopening in %.1f s", spec, backoff)
        except Exception as exc:
            if not reopen:
                raise
            log.warning("%s: %s; reopening in %.1f s", spec, exc, backoff)
        finally:
            source.close()
        stop.sleep(backoff)
        backoff = min(backoff * 2, RECONNECT_MAX_S)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _resolve(config: DaemonConfig, name: str) -> StreamConfig | None:
    try:
        return config.stream(name)
    except KeyError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed by argparse
        return int(exc.code or 0)
    _configure_logging(args.log_level)
    if args.frames is not None and args.frames < 0:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: --frames must not be negative", file=sys.stderr)
        return ExitCode.USAGE
    if args.fps is not None and args.fps < 0:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: --fps must not be negative", file=sys.stderr)
        return ExitCode.USAGE
    try:
        config = load_config(args.config)
    except DaemonError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    stream = _resolve(config, args.stream)
    if stream is None:
        known = ", ".join(s.name for s in config.streams)
        print(
            f"{PROG}: error: unknown stream {args.stream!r} in {args.config} (configured: {known})",
            file=sys.stderr,
        )
        return ExitCode.USAGE
    endpoint = args.endpoint or config.ingest_endpoints(stream)[0]
    try:
        return _run(args, stream, endpoint)
    except DaemonError as exc:  # CaptureError and friends: one line, no traceback
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except (OSError, ValueError, av.FFmpegError) as exc:
        print(f"{PROG}: error: {args.source}: {exc}", file=sys.stderr)
        return ExitCode.FAILURE


def _run(args: argparse.Namespace, stream: StreamConfig, endpoint: str) -> int:
    live = args.source.startswith(("rtsp://", "rtsps://", "/dev/video"))
    fps = stream.fps if args.fps is None else args.fps
    paced = not live and fps > 0
    if not live and fps == 0:
        # As fast as the daemon takes them: wait (bounded) for a slot instead of dropping.
        on_full, max_wait_ms = "wait", max(stream.max_wait_ms, FAST_WAIT_MS)
    else:
        on_full, max_wait_ms = stream.on_full.value, stream.max_wait_ms
    log.info(
        "stream %s (%dx%d %s) from %s to %s, %s",
        stream.name,
        stream.width,
        stream.height,
        stream.pixel_format.value,
        args.source,
        endpoint,
        f"paced at {fps:g} fps" if paced else "unpaced",
    )
    client = CaptureClient(
        endpoint,
        stream.name,
        stream.width,
        stream.height,
        stream.pixel_format,
        on_full=on_full,
        max_wait_ms=max_wait_ms,
    )
    sent = 0
    started = time.monotonic()
    stats: dict[str, int] = {}
    with SignalQueue(STOP) as stop:
        frames = _frames(args.source, stream, args.loop, stop)
        try:
            # The first frame before the handshake: a bad source fails before the daemon sees us.
            pending = next(frames, None) if args.frames != 0 else None
            if pending is None:
                return _summary(stream.name, {}, 0, time.monotonic() - started)
            client.connect()
            period = 1.0 / fps if paced else 0.0
            schedule_start = time.monotonic()
            scheduled = 0  # frames since schedule_start
            while args.frames is None or sent < args.frames:
                if pending is None:
                    pending = next(frames, None)
                if pending is None or stop.requested():
                    break
                array, pending = pending[0], None
                if paced:
                    # Deadlines from one start point, so rounding never accumulates into drift.
                    deadline = schedule_start + scheduled * period
                    lag = time.monotonic() - deadline
                    if lag > MAX_LAG_S:
                        log.warning("%.1f s behind the %g fps schedule; restarting it", lag, fps)
                        schedule_start, scheduled = time.monotonic(), 0
                    elif lag < 0:
                        stop.sleep(-lag)
                        if stop.requested():
                            break
                    scheduled += 1
                client.send(array)
                sent += 1
            stats = dict(client.stats)
        finally:
            frames.close()
            client.close()
    return _summary(stream.name, stats, sent, time.monotonic() - started)


def _summary(name: str, stats: dict[str, int], sent: int, elapsed: float) -> int:
    print(
        f"{PROG}: {name}: {stats.get('sent', sent)} frames sent, "
        f"{stats.get('dropped', 0)} dropped, in {elapsed:.1f} s"
    )
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
