"""camingest-record: subscribe to one stream and write it to .h264/.h265, or remux to mp4/mkv."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import av

from camingest.clients.recording import Recorder, check_path
from camingest.config.load import load_config
from camingest.config.model import DaemonConfig
from camingest.errors import DaemonError, ExitCode
from camingest.signals import STOP, SignalQueue
from camingest.subscribe import Subscriber

log = logging.getLogger("camingest.cli.record")

PROG = "camingest-record"
DEFAULT_FPS = 30.0  # only for files without usable timestamps, when no config says better
POLL_S = 0.2  # how often the loop looks at signals and deadlines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Record one camingest stream: .h264/.h265 (raw Annex-B, written as it "
        "comes) or .mp4/.mkv/.mov (remuxed at the end, never re-encoded).",
    )
    parser.add_argument("--stream", required=True, help="the stream's name")
    parser.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    parser.add_argument(
        "-c", "--config", metavar="FILE", help="camingest.yaml (needed unless --endpoint is given)"
    )
    parser.add_argument(
        "--endpoint",
        action="append",
        metavar="EP",
        help="output endpoint to connect to, repeatable (default: the config's, ipc:// first)",
    )
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--frames", type=int, metavar="N", help="stop after N frames")
    limit.add_argument(
        "--seconds", type=float, metavar="S", help="stop S seconds after the first frame"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="stop when nothing arrives for S seconds (default: 10)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="default: info",
    )
    return parser


def connectable(endpoint: str) -> str:
    """A bind address (tcp://0.0.0.0:5600, tcp://*:5600) as an address to connect to."""
    for wildcard in ("tcp://0.0.0.0:", "tcp://*:"):
        if endpoint.startswith(wildcard):
            return "tcp://127.0.0.1:" + endpoint[len(wildcard) :]
    return endpoint


def pick_endpoints(config: DaemonConfig) -> list[str]:
    """The config's ipc:// output when it has one (local, cheapest), else its first one.

    Only one: the same packets on two endpoints would be recorded twice.
    """
    endpoints = config.output_endpoints
    local = [ep for ep in endpoints if ep.startswith("ipc://")]
    return [connectable(local[0] if local else endpoints[0])]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed by argparse
        return int(exc.code or 0)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    problem = _check_args(args)
    if problem:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return ExitCode.USAGE
    fps = DEFAULT_FPS
    control_path: str | None = None
    endpoints: list[str] = args.endpoint or []
    if args.config:
        try:
            config = load_config(args.config)
        except DaemonError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return int(exc.exit_code)
        try:
            fps = config.stream(args.stream).fps
        except KeyError:
            known = ", ".join(s.name for s in config.streams)
            print(
                f"{PROG}: error: unknown stream {args.stream!r} in {args.config} "
                f"(configured: {known})",
                file=sys.stderr,
            )
            return ExitCode.USAGE
        endpoints = endpoints or pick_endpoints(config)
        if config.control_path.exists():
            # Lets the subscriber ask for a keyframe instead of waiting for the next GOP.
            control_path = str(config.control_path)
    try:
        return _record(args, endpoints, fps, control_path)
    except DaemonError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except (OSError, ValueError, av.FFmpegError) as exc:
        print(f"{PROG}: error: {args.out}: {exc}", file=sys.stderr)
        return ExitCode.FAILURE


def _check_args(args: argparse.Namespace) -> str | None:
    if not args.config and not args.endpoint:
        return "give -c FILE or --endpoint EP"
    if args.frames is not None and args.frames <= 0:
        return "--frames must be positive"
    if args.seconds is not None and args.seconds <= 0:
        return "--seconds must be positive"
    if args.timeout <= 0:
        return "--timeout must be positive"
    try:
        check_path(args.out)
    except ValueError as exc:
        return str(exc)
    return None


def _record(
    args: argparse.Namespace, endpoints: list[str], fps: float, control_path: str | None
) -> int:
    out = Path(args.out)
    log.info("recording stream %s from %s to %s", args.stream, ", ".join(endpoints), out)
    recorder: Recorder | None = None
    reason = "stopped"
    with (
        SignalQueue(STOP) as stop,
        Subscriber(endpoints, [args.stream], control_path=control_path) as sub,
    ):
        started = last_arrival = time.monotonic()
        first_at: float | None = None
        try:
            while True:
                if stop.requested():
                    reason = "interrupted"
                    break
                now = time.monotonic()
                recorded_s = now - first_at if first_at is not None else 0.0
                if args.seconds is not None and recorded_s >= args.seconds:
                    reason = f"{args.seconds:g} s recorded"
                    break
                if now - last_arrival >= args.timeout:
                    reason = f"nothing for {args.timeout:g} s"
                    break
                packet = sub.recv(POLL_S)
                if packet is None:
                    continue
                last_arrival = time.monotonic()
                header = packet.header
                if packet.data:
                    if recorder is None:
                        recorder = Recorder(out, header.codec, fps)
                        first_at = last_arrival
                        log.info(
                            "first keyframe: %s %dx%d",
                            header.codec.name,
                            header.width,
                            header.height,
                        )
                    elif header.codec is not recorder.codec:
                        log.error("the stream changed codec to %s; stopping", header.codec.name)
                        reason = "codec changed"
                        break
                    recorder.write(packet.data, header.capture_ts_ns)
                if header.eos and header.restart:
                    log.info("the stream's worker is being replaced; recording on")
                elif header.eos:
                    reason = "end of stream"
                    break
                if args.frames is not None and recorder and recorder.frames >= args.frames:
                    reason = f"{args.frames} frames recorded"
                    break
        finally:
            if recorder is not None:
                recorder.close()
    if recorder is None or recorder.frames == 0:
        waited = time.monotonic() - started
        print(
            f"{PROG}: error: nothing received for stream {args.stream} from "
            f"{', '.join(endpoints)} in {waited:.1f} s ({reason})",
            file=sys.stderr,
        )
        return ExitCode.FAILURE
    log.info("stopping: %s", reason)
    print(
        f"{PROG}: {args.stream}: {recorder.frames} frames, {recorder.bytes_written} bytes, "
        f"{recorder.duration_s:.2f} s -> {out}"
    )
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
