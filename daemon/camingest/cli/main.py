"""`camingest run | check | status | reload | keyframe`: the only module that picks exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from camingest import __version__
from camingest.errors import DaemonError, ExitCode

logger = logging.getLogger("camingest")

DEFAULT_CONFIG = "/etc/camingest/camingest.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="camingest", description=__doc__)
    parser.add_argument("--version", action="version", version=f"camingest {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-target", choices=["auto", "journal", "stderr"], default="auto")

    check = sub.add_parser("check", help="validate a config file")
    check.add_argument("-c", "--config", default=DEFAULT_CONFIG)

    for name, text in (
        ("status", "per-stream status table"),
        ("reload", "reload the config"),
        ("keyframe", "force a keyframe on a stream"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "-c",
            "--config",
            default=DEFAULT_CONFIG,
            help="config of the daemon to ask (for its control socket)",
        )
        p.add_argument("--socket", help="the control socket path, instead of -c")
        if name == "status":
            p.add_argument("--json", action="store_true", help="print the raw JSON")
        if name == "keyframe":
            p.add_argument("stream")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "check":
            return cmd_check(args)
        return cmd_control(args)
    except DaemonError as exc:
        print(f"camingest: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.OK)


def cmd_run(args: argparse.Namespace) -> int:
    from camingest.config.load import load_config
    from camingest.log import configure_parent
    from camingest.service.runtime import Daemon
    from camingest.service.sdnotify import Notifier

    config = load_config(args.config)
    logs = configure_parent(args.log_level or config.logging.level, args.log_target)
    try:
        daemon = Daemon(config, Path(args.config), Notifier(), log_target=logs.target)
        return daemon.run()
    except DaemonError as exc:
        logger.error("%s", exc)
        return int(exc.exit_code)
    finally:
        logs.stop()


def cmd_check(args: argparse.Namespace) -> int:
    from camingest.cli.check import check_config

    ok, lines = check_config(args.config)
    for line in lines:
        print(line, file=sys.stdout if ok else sys.stderr)
    return int(ExitCode.OK if ok else ExitCode.CONFIG)


def cmd_control(args: argparse.Namespace) -> int:
    from camingest.service.control import call

    path = args.socket or _control_path(args.config)
    if args.command == "status":
        from camingest.service.status import render_table

        result = call(path, "status")
        print(json.dumps(result, indent=2) if args.json else render_table(result))
    elif args.command == "reload":
        print(json.dumps(call(path, "reload", timeout_s=30.0)))
    else:
        call(path, "keyframe", stream=args.stream)
        print(f"keyframe requested on {args.stream}")
    return int(ExitCode.OK)


def _control_path(config_file: str) -> Path:
    from camingest.config.load import load_config

    return load_config(config_file).control_path
