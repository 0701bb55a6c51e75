"""RestartPolicy and the reload plan: the supervisor's and the runtime's decisions, on their own."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import pytest

from camingest.config.model import DaemonConfig
from camingest.errors import ConfigError
from camingest.service.reload import check_reloadable, plan_reload
from camingest.service.restart import RestartPolicy

POLICY = RestartPolicy(
    max_restarts=3, window_s=60.0, backoff_initial_s=0.5, backoff_max_s=3.0, stable_after_s=5.0
)


def test_the_first_crash_restarts_at_once_then_backoff_doubles_then_the_stream_fails() -> None:
    crashes: deque[float] = deque()
    delays = [POLICY.after_crash(crashes, float(t), 1.0) for t in range(5)]
    assert delays == [0.0, 0.5, 1.0, None, None]


def test_backoff_is_capped() -> None:
    policy = RestartPolicy(
        max_restarts=10, window_s=60, backoff_initial_s=1, backoff_max_s=4, stable_after_s=5
    )
    crashes: deque[float] = deque()
    assert [policy.after_crash(crashes, float(t), 1.0) for t in range(6)] == [0, 1, 2, 4, 4, 4]


def test_crashes_outside_the_window_are_forgotten() -> None:
    """A camera that fails once an hour is restarted every time, never marked failed."""
    crashes: deque[float] = deque()
    for hour in range(10):
        assert POLICY.after_crash(crashes, hour * 3600.0, 1.0) == 0.0
    assert len(crashes) == 1


def test_a_worker_that_ran_stably_restarts_at_once_until_the_flap_limit() -> None:
    """Killed every 10 s after running 10 s: each restart is immediate, and the fourth crash in
    the window still marks the stream failed."""
    crashes: deque[float] = deque()
    delays = [POLICY.after_crash(crashes, t * 10.0, 10.0) for t in range(4)]
    assert delays == [0.0, 0.0, 0.0, None]


def stream(name: str, width: int = 160) -> dict[str, object]:
    return {"name": name, "width": width, "height": 120, "fps": 10}


def config(*streams: dict[str, object], **top: object) -> DaemonConfig:
    return DaemonConfig.model_validate({"runtime_dir": "/tmp/x", "streams": list(streams), **top})


def test_plan_names_added_removed_and_changed_streams_only() -> None:
    old = config(stream("a"), stream("b"), stream("c"))
    new = config(stream("a"), stream("c", width=320), stream("d"))
    plan = plan_reload(old, new)
    assert plan.summary() == {"added": ["d"], "removed": ["b"], "changed": ["c"]}
    assert plan.changed[0].width == 320


def test_unchanged_config_plans_nothing() -> None:
    old = config(stream("a"))
    assert plan_reload(old, config(stream("a"))).summary() == {
        "added": [],
        "removed": [],
        "changed": [],
    }


def test_settings_fixed_at_start_are_refused_on_reload() -> None:
    old = config(stream("a"))
    check_reloadable(old, config(stream("a"), stream("b")))  # streams may change
    with pytest.raises(ConfigError, match="runtime_dir changed"):
        check_reloadable(old, config(stream("a"), runtime_dir=str(Path("/tmp/y"))))
