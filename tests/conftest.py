"""Fixtures: short runtime dirs (ipc paths are limited to 107 bytes), daemons in real
subprocesses that are always stopped, and a check that no shared memory outlives a test."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers import (
    ACL_SIM,
    DaemonProc,
    daemon_cfg,
    kill_group,
    shm_segments,
    start_daemon,
    stream_cfg,
)

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
