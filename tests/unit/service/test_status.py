"""Status rendering: the `camingest status` table, the STATUS= line, and RateMeter."""

from __future__ import annotations

import json
from typing import Any

import pytest

from camingest.service.status import (
    COLUMNS,
    RateMeter,
    format_duration,
    new_stream_status,
    render_table,
    summary_line,
)


def stream(name: str, **values: Any) -> dict[str, Any]:
    s: dict[str, Any] = dict(new_stream_status(name, "running"))
    s.update(values)
    return s


def status(*streams: dict[str, Any], state: str = "running") -> dict[str, Any]:
    doc = {
        "daemon": {
            "pid": 4242,
            "uptime_s": 3725.4,
            "config": "/etc/camingest/camingest.yaml",
            "state": state,
            "version": "0.1.0",
        },
        "streams": list(streams),
    }
    decoded: dict[str, Any] = json.loads(json.dumps(doc))  # as the CLI gets it from the socket
    return decoded


HEALTHY = [
    stream(
        "cam0",
        pid=11,
        fps_in=25.0,
        fps_out=25.0,
        bitrate_kbps=2000.4,
        subscribers=1,
        latency_p50_ms=4.25,
        latency_p99_ms=9.0,
    ),
    stream(
        "cam1",
        pid=12,
        fps_in=24.9,
        fps_out=24.9,
        bitrate_kbps=1998.0,
        subscribers=0,
        latency_p50_ms=3.0,
        latency_p99_ms=7.5,
    ),
    stream(
        "garage_long_name",
        pid=13,
        fps_in=25.0,
        fps_out=25.0,
        bitrate_kbps=512.0,
        subscribers=None,
        latency_p50_ms=1.0,
        latency_p99_ms=2.0,
    ),
]


def test_table_layout() -> None:
    failed = stream(
        "cam2",
        state="failed",
        restarts=5,
        drops={"encoder_error": 12},
        drops_total=12,
        detail="acl: aclvencSendFrame returned 507018",
    )
    text = render_table(status(*HEALTHY, failed))
    lines = text.splitlines()
    assert lines[0] == (
        "camingest 0.1.0, pid 4242, running, up 1h02m05s, 3/4 streams running, "
        "config /etc/camingest/camingest.yaml"
    )
    assert lines[1].split() == list(COLUMNS)
    assert lines[2].split() == [
        "cam0",
        "running",
        "25.0",
        "25.0",
        "0",
        "2000",
        "4.2",
        "9.0",
        "0",
        "1",
    ]
    assert lines[4].split()[-1] == "-"  # subscribers unknown
    assert lines[5].split() == ["cam2", "failed", "0.0", "0.0", "12", "0", "0.0", "0.0", "5", "-"]
    assert lines[6] == "    cam2: acl: aclvencSendFrame returned 507018"
    assert len(lines) == 7
    # Aligned: every column ends (numbers) or starts (names) at the same offset in each row.
    rows = lines[1:6]
    for header in ("FPS-IN", "SUBS", "RESTARTS"):
        end = lines[1].index(header) + len(header)
        assert all(row[end - 1] != " " for row in rows), header
    state_col = lines[1].index("STATE")
    assert all(row[state_col - 1] == " " and row[state_col] != " " for row in rows)
    assert text.endswith("\n")


def test_table_with_no_streams() -> None:
    lines = render_table(status()).splitlines()
    assert "0/0 streams running" in lines[0]
    assert lines[1].split() == list(COLUMNS)


def test_summary_all_running() -> None:
    s = status(*HEALTHY[:2], stream("cam9", fps_in=25.0, drops_total=3))
    assert summary_line(s) == "3/3 streams running, 74.9 fps in, 3 drops"


def test_summary_names_what_is_wrong() -> None:
    s = status(
        HEALTHY[0],
        stream("cam1", state="backoff", detail="exit code 1"),
        stream("cam2", state="failed", detail="line one\nline two"),
    )
    assert summary_line(s) == (
        "1/3 running, cam1 backoff: exit code 1, cam2 failed: line one line two"
    )


def test_summary_cuts_long_details_and_shows_daemon_state() -> None:
    s = status(stream("cam0", state="starting", detail="x" * 500), state="reloading")
    line = summary_line(s)
    assert line.startswith("reloading: 0/1 running, cam0 starting: xxx")
    assert line.endswith("…")
    assert len(line) < 200


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.9, "59s"), (61, "1m01s"), (3725, "1h02m05s"), (2 * 86400 + 3 * 3600, "2d03h")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_rate_meter_sliding_window() -> None:
    m = RateMeter(window_s=2.0)
    assert m.rate() == 0.0
    m.add(0.0, 0)
    assert m.rate() == 0.0  # one sample: no rate yet
    for i in range(1, 11):  # 30 per second for 5 s, sampled twice a second
        m.add(i * 0.5, i * 15)
    assert m.rate() == pytest.approx(30.0)
    for i in range(11, 15):  # then 10 per second; after 2 s the old rate is out of the window
        m.add(i * 0.5, 150 + (i - 10) * 5)
    assert m.rate() == pytest.approx(10.0)


def test_rate_meter_counter_reset_and_idle() -> None:
    m = RateMeter(window_s=5.0)
    m.add(0.0, 1000)
    m.add(1.0, 1100)
    assert m.rate() == pytest.approx(100.0)
    m.add(2.0, 10)  # the worker restarted: totals start again
    assert m.rate() == 0.0
    m.add(3.0, 60)
    assert m.rate() == pytest.approx(50.0)
    m.add(4.0, 60)
    m.add(9.0, 60)  # nothing new for a whole window
    assert m.rate() == 0.0
    with pytest.raises(ValueError, match="before"):
        m.add(8.0, 70)
    m.reset()
    assert m.rate() == 0.0
    m.add(8.0, 70)  # a fresh start accepts any time
    with pytest.raises(ValueError):
        RateMeter(window_s=0)
