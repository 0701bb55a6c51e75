"""Notifier against a real AF_UNIX datagram socket standing in for systemd's notify socket."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import systemd.daemon as sd_daemon

from camingest.service.sdnotify import Notifier


@pytest.fixture
def notify_sock(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


@pytest.fixture
def abstract_sock() -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"camingest-test-{uuid.uuid4().hex}"
    sock.bind("\0" + name)
    sock.settimeout(5)
    yield sock, "@" + name
    sock.close()


def recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def assert_nothing_queued(sock: socket.socket) -> None:
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)


def exercise(n: Notifier, sock: socket.socket) -> None:
    assert n.enabled
    assert n.ready()
    assert recv(sock) == "READY=1"
    assert n.ready("2/2 streams running")
    assert recv(sock) == "READY=1\nSTATUS=2/2 streams running"
    assert n.status("1/2 running, cam1 failed: boom\nREADY=1")
    # A newline in the text must not smuggle in another assignment.
    assert recv(sock) == "STATUS=1/2 running, cam1 failed: boom READY=1"
    assert n.watchdog()
    assert recv(sock) == "WATCHDOG=1"
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    lines = recv(sock).split("\n")  # one datagram carries both fields
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert lines[0] == "RELOADING=1"
    key, _, usec = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(usec) <= after
    assert len(lines) == 2
    assert n.stopping()
    assert recv(sock) == "STOPPING=1"
    assert_nothing_queued(sock)


def test_injected_environment(notify_sock: tuple[socket.socket, str]) -> None:
    """An env mapping that is not the process's: the datagrams are sent directly."""
    sock, path = notify_sock
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"}
    n = Notifier(env)
    assert n.watchdog_interval_s == pytest.approx(5.0)
    exercise(n, sock)


def test_process_environment_goes_through_libsystemd(
    notify_sock: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = notify_sock
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    calls: list[str] = []
    real = sd_daemon.notify

    def spy(message: str) -> bool:
        calls.append(message)
        return bool(real(message))

    monkeypatch.setattr(sd_daemon, "notify", spy)
    n = Notifier()
    assert n.watchdog_interval_s == pytest.approx(1.5)
    exercise(n, sock)
    assert calls[0] == "READY=1"
    assert len(calls) == 6


def test_abstract_socket_injected(abstract_sock: tuple[socket.socket, str]) -> None:
    sock, address = abstract_sock
    exercise(Notifier({"NOTIFY_SOCKET": address}), sock)


def test_abstract_socket_through_libsystemd(
    abstract_sock: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = abstract_sock
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    exercise(Notifier(os.environ), sock)


def test_no_socket_is_a_noop() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.watchdog_interval_s is None
    assert not n.ready()
    assert not n.status("x")
    assert not n.watchdog()
    assert not n.reloading()
    assert not n.stopping()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "junk"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "20000000"}, 10.0),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}, None),  # meant for pid 1
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert Notifier({"NOTIFY_SOCKET": "@x", **env}).watchdog_interval_s == expected


def test_own_watchdog_pid() -> None:
    env = {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(env).watchdog_interval_s == pytest.approx(10.0)


def test_gone_socket_does_not_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    assert not n.ready()
    assert not n.watchdog()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1  # warned once, not on every watchdog ping
    assert "missing.sock" in warnings[0].getMessage()
