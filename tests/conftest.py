"""Fixtures: short runtime dirs (ipc paths are limited to 107 bytes), daemons in real
subprocesses that are always stopped, and a check that no shared memory outlives a test."""

from __future__ import annotations

import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers import ACL_SIM, DaemonProc, kill_group, shm_segments, start_daemon

ACL_SIM_ENV = (
    "ACL_SIM_FAIL_CREATE",
    "ACL_SIM_BAD_RET_AT",
    "ACL_SIM_HANG_AT",
    "ACL_SIM_SOC",
    "ACL_SIM_RUN_MODE",
    "ACL_SIM_LEAK_REPORT",
)


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cgt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def stream_cfg(
    name: str,
    width: int = 160,
    height: int = 120,
    pixel_format: str = "nv12",
    codec: str = "h264",
    **extra: Any,
) -> dict[str, Any]:
    encoder = {"codec": codec, **extra.pop("encoder", {})}
    return {
        "name": name,
        "width": width,
        "height": height,
        "pixel_format": pixel_format,
        "fps": 30,
        "encoder": encoder,
        **extra,
    }


def daemon_cfg(workdir: Path, streams: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "runtime_dir": str(workdir / "run"),
        "instance": "t" + secrets.token_hex(4),
        "defaults": {
            "encoder": {
                "backend": "pyav",
                "preset": "ultrafast",
                "rate_control": "cqp",
                "qp": 22,
                "gop": 30,
            },
        },
        "supervision": {
            "heartbeat_interval_s": 0.2,
            "hang_timeout_s": 3.0,
            "backoff_initial_s": 0.2,
            "stop_timeout_s": 5.0,
        },
        "streams": streams,
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = config[key] | value
        else:
            config[key] = value
    return config


@pytest.fixture
def make_daemon(workdir: Path) -> Iterator[Callable[..., DaemonProc]]:
    """Start a daemon on a config; at teardown stop it and check it left nothing behind."""
    started: list[DaemonProc] = []

    def make(
        streams: list[dict[str, Any]],
        env: dict[str, str] | None = None,
        wait: bool = True,
        **extra: Any,
    ) -> DaemonProc:
        config = daemon_cfg(workdir, streams, **extra)
        daemon = start_daemon(config, workdir, env)
        started.append(daemon)
        if wait:
            daemon.wait_running()
        return daemon

    yield make
    for daemon in started:
        try:
            daemon.stop()
        finally:
            kill_group(daemon.proc)
        left = shm_segments(daemon.config["instance"])
        assert not left, f"shared memory left behind: {left}\n{daemon.log()}"
        sockets = list(daemon.runtime_dir.rglob("*.sock")) if daemon.runtime_dir.exists() else []
        assert not sockets, f"socket files left behind: {sockets}"


@pytest.fixture
def stream() -> Callable[..., dict[str, Any]]:
    return stream_cfg


@pytest.fixture
def acl(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The pyACL simulator (tests/acl_sim) as `acl`, without faults; forgotten afterwards."""
    monkeypatch.syspath_prepend(str(ACL_SIM))
    for name in ACL_SIM_ENV:
        monkeypatch.delenv(name, raising=False)
    import acl as sim

    yield sim
    if sim.state.STATE.initialized:  # a test that failed half-way: do not poison the next one
        sim.finalize()
    # Forget the module, so that nothing after this test finds a pyACL (encoders/auto.py).
    for name in [m for m in sys.modules if m == "acl" or m.startswith("acl.")]:
        monkeypatch.delitem(sys.modules, name)
