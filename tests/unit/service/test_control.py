"""The control socket's request handling: hostile input gets an error reply, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq

from camingest.errors import ControlError, ResourceError
from camingest.service.control import ControlServer, call


def server(handlers=None) -> ControlServer:
    return ControlServer(zmq.Context.instance(), Path("/nonexistent"), handlers or {})


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"[" * 30000, "invalid_json"),  # deep nesting: RecursionError in json
        (b"\xff\xfe", "invalid_json"),
        (b"[1, 2]", "bad_request"),
        (b'{"cmd": 5}', "bad_request"),
        (b'{"cmd": "nope"}', "unknown_command"),
    ],
)
def test_bad_requests_get_error_replies(body: bytes, code: str) -> None:
    reply = server({"status": lambda req: {}}).dispatch(body)
    assert reply["ok"] is False and reply["code"] == code


def test_handler_errors_become_replies() -> None:
    def boom(req: dict) -> None:
        raise RuntimeError("kaput")

    srv = server({"a": lambda req: req["missing"], "b": boom})
    assert srv.dispatch(b'{"cmd": "a"}')["code"] == "command_error"
    reply = srv.dispatch(b'{"cmd": "b"}')
    assert reply["code"] == "internal" and "kaput" in reply["error"]


@pytest.mark.timeout(30)
def test_round_trip_and_bind_failure(tmp_path: Path) -> None:
    ctx = zmq.Context()
    path = tmp_path / "control.sock"
    srv = ControlServer(ctx, path, {"echo": lambda req: req.get("x")})
    srv.open()
    try:
        assert oct(path.stat().st_mode & 0o777) == "0o660"
        import threading

        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                if srv.sock is not None and srv.sock.poll(50):
                    srv.handle()

        t = threading.Thread(target=serve)
        t.start()
        try:
            assert call(path, "echo", x=[1, "a"]) == [1, "a"]
            with pytest.raises(ControlError, match="unknown command"):
                call(path, "nope")
        finally:
            stop.set()
            t.join(5)
    finally:
        srv.close()
    assert not path.exists()
    blocked = tmp_path / "file"
    blocked.write_text("")
    bad = ControlServer(ctx, blocked / "control.sock", {})
    with pytest.raises(ResourceError, match="cannot bind the control socket"):
        bad.open()
    bad.close()
    ctx.term()
