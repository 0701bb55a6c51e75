"""The control socket: JSON requests in, JSON replies out, over ipc in the runtime dir.

Request: {"cmd": "status" | "stats" | "reload" | "keyframe", ...}. Reply: {"ok": true,
"result": ...} or {"ok": false, "code": ControlCode, "error": "..."}. A bad request gets an
error reply; it never reaches the daemon as an exception.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from camingest.errors import ControlError, DaemonError, ResourceError
from camingest.wire.control import ControlCode

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Any]
MAX_REQUEST_BYTES = 64 * 1024


class ControlServer:
    def __init__(
        self, context: zmq.Context[zmq.Socket[bytes]], path: Path, handlers: dict[str, Handler]
    ) -> None:
        self.path = path
        self.handlers = handlers
        self._ctx = context
        self.sock: zmq.Socket[bytes] | None = None

    def open(self) -> None:
        sock = self._ctx.socket(zmq.ROUTER)
        self.sock = sock  # registered before bind, so close() releases it if bind fails
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            sock.bind(f"ipc://{self.path}")
        except (OSError, zmq.ZMQError) as exc:
            raise ResourceError(f"cannot bind the control socket {self.path}: {exc}") from exc
        os.chmod(self.path, 0o660)

    def handle(self) -> None:
        assert self.sock is not None
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            # REQ clients put an empty delimiter between their identity and the request.
            envelope, body = frames[:-1], frames[-1]
            reply = self.dispatch(body)
            try:
                payload = json.dumps(reply, default=str).encode()
            except (TypeError, ValueError) as exc:
                error = _error(ControlCode.INTERNAL, f"unencodable reply: {exc}")
                payload = json.dumps(error).encode()
            try:
                self.sock.send_multipart([*envelope, payload], zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                logger.debug("control reply not sent: %s", exc)

    def dispatch(self, body: bytes) -> dict[str, Any]:
        try:
            request = json.loads(body)
        except (ValueError, RecursionError):  # deep nesting is hostile, not a crash
            return _error(ControlCode.INVALID_JSON, "request is not JSON")
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return _error(ControlCode.BAD_REQUEST, 'request must be {"cmd": "...", ...}')
        handler = self.handlers.get(request["cmd"])
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return _error(ControlCode.UNKNOWN_COMMAND, f"unknown command; known: {known}")
        try:
            return {"ok": True, "result": handler(request)}
        except (KeyError, ValueError, DaemonError) as exc:
            return _error(ControlCode.COMMAND_ERROR, str(exc).strip("'\""))
        except Exception as exc:
            logger.exception("control command %s failed", request["cmd"])
            return _error(ControlCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:  # e.g. its directory was never there (open failed)
            logger.debug("control socket %s not removed: %s", self.path, exc)


def _error(code: ControlCode, message: str) -> dict[str, Any]:
    return {"ok": False, "code": code.value, "error": message}


def call(path: Path | str, cmd: str, timeout_s: float = 5.0, **args: Any) -> Any:
    """One request to a running daemon; raises ControlError on silence or an error reply."""
    if not Path(path).exists():
        raise ControlError(f"no control socket at {path}", hint="is camingest running?")
    with zmq.Context() as ctx, ctx.socket(zmq.REQ) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"ipc://{path}")
        sock.send(json.dumps({"cmd": cmd, **args}).encode())
        if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            raise ControlError(f"no answer from {path} within {timeout_s:g} s")
        reply = json.loads(sock.recv())
    if not reply.get("ok"):
        raise ControlError(f"{cmd}: {reply.get('error')} ({reply.get('code')})")
    return reply.get("result")
