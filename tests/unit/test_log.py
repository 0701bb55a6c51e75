"""Logging: parent and worker handlers, STREAM fields, rate limiting."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from systemd.journal import JournalHandler

from camingest.log import (
    RateLimitedLog,
    StderrFormatter,
    configure_parent,
    journal_is_stderr,
    make_handler,
    parse_level,
)

CHILD = """
import logging, os
from camingest.log import configure_child
configure_child("stderr", "info", "cam7")
log = logging.getLogger("camingest.worker.main")
log.debug("below the level: never shown")
log.info("hello from %d", os.getpid())
log.warning("explicit stream wins", extra={"STREAM": "other"})
try:
    raise RuntimeError("boom")
except RuntimeError:
    log.exception("failed")
"""


@pytest.mark.process
@pytest.mark.timeout(30)
def test_child_logs_on_its_own_with_its_stream() -> None:
    """A worker logs with a handler of its own (no queue to the parent: its semaphores would
    outlive a SIGKILL of the process group), every record tagged with its stream."""
    env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID", "JOURNAL_STREAM")}
    result = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=20, env=env
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    ts = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
    assert re.fullmatch(ts + r"INFO camingest.worker.main \[cam7\] hello from \d+", lines[0]), lines
    assert re.fullmatch(
        ts + r"WARNING camingest.worker.main \[other\] explicit stream wins", lines[1]
    )
    assert re.fullmatch(ts + r"ERROR camingest.worker.main \[cam7\] failed", lines[2])
    assert "RuntimeError: boom" in result.stderr
    assert "never shown" not in result.stderr


def test_configure_parent_stderr_and_restore(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before = root.handlers[:]
    setup = configure_parent("info", "stderr", env={})
    try:
        assert setup.target == "stderr"
        assert len(root.handlers) == 1
        logging.getLogger("camingest.service.runtime").info("parent here", extra={"STREAM": "cam0"})
        logging.getLogger("camingest.service.runtime").debug("not shown")
    finally:
        setup.stop()
    assert root.handlers == before
    err = capsys.readouterr().err.splitlines()
    ts = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "  # not under systemd: timestamps
    assert re.fullmatch(ts + r"INFO camingest.service.runtime \[cam0\] parent here", err[0]), err
    assert not any("not shown" in line for line in err)


def test_stderr_format_without_timestamps_or_stream() -> None:
    fmt = StderrFormatter(timestamps=False)
    record = logging.LogRecord("camingest.x", logging.WARNING, __file__, 1, "a %s", ("b",), None)
    assert fmt.format(record) == "WARNING camingest.x a b"
    record.STREAM = "cam2"
    assert fmt.format(record) == "WARNING camingest.x [cam2] a b"


def test_under_systemd_stderr_has_no_timestamps() -> None:
    handler = make_handler("stderr", {"INVOCATION_ID": "abc"})
    record = logging.LogRecord("n", logging.INFO, __file__, 1, "m", None, None)
    assert handler.format(record) == "INFO n m"


def test_auto_target_is_stderr_unless_stderr_is_the_journal() -> None:
    # JOURNAL_STREAM inherited by a shell whose stderr is elsewhere: still stderr.
    handler = make_handler("auto", {"JOURNAL_STREAM": "1:2"})
    assert isinstance(handler, logging.StreamHandler)
    assert isinstance(make_handler("journal", {}), JournalHandler)


def test_journal_handler_sends_stream_field() -> None:
    handler = make_handler("journal", {})
    sent: list[dict[str, Any]] = []

    def sender(MESSAGE: str, **fields: Any) -> None:  # the signature of systemd.journal.send
        sent.append({"MESSAGE": MESSAGE, **fields})

    setattr(handler, "send", sender)  # JournalHandler's injectable sender  # noqa: B010
    log = logging.getLogger("camingest.test_journal")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("drop storm on %s", "cam3", extra={"STREAM": "cam3"})
    finally:
        log.removeHandler(handler)
        log.propagate = True
    (fields,) = sent
    assert fields["MESSAGE"] == "drop storm on cam3"
    assert fields["STREAM"] == "cam3"
    assert fields["SYSLOG_IDENTIFIER"] == "camingest"
    assert fields["PRIORITY"] == "4"


def test_journal_stream_detection(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as f:
        st = os.fstat(f.fileno())
        assert journal_is_stderr({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f)
        assert not journal_is_stderr({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, f)
        assert not journal_is_stderr({"JOURNAL_STREAM": "junk:x"}, f)
        assert not journal_is_stderr({}, f)


def test_parse_level() -> None:
    assert parse_level("debug") == logging.DEBUG
    assert parse_level("WARNING") == logging.WARNING
    with pytest.raises(ValueError, match="verbose"):
        parse_level("verbose")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_log(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    log = logging.getLogger("camingest.test_ratelimit")
    limited = RateLimitedLog(log, limit=2, interval_s=10.0, clock=clock)
    caplog.set_level(logging.INFO, logger=log.name)

    results = [limited.warning(("cam0", "malformed"), "bad descriptor %d", i) for i in range(5)]
    assert results == [True, True, False, False, False]
    assert limited.suppressed(("cam0", "malformed")) == 3
    # Another key has its own budget.
    assert limited.warning(("cam1", "malformed"), "bad descriptor on cam1 100%")
    clock.now += 10.0
    assert limited.warning(("cam0", "malformed"), "bad descriptor %d", 5)
    assert limited.warning(("cam1", "malformed"), "no args, 100%")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "bad descriptor 0",
        "bad descriptor 1",
        "bad descriptor on cam1 100%",
        "bad descriptor 5 … (3 more suppressed)",
        "no args, 100%",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_rate_limited_flush_reports_a_storm_that_stopped(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    log = logging.getLogger("camingest.test_ratelimit_flush")
    limited = RateLimitedLog(log, limit=1, interval_s=5.0, clock=clock)
    caplog.set_level(logging.INFO, logger=log.name)
    for _ in range(4):
        limited.log(logging.WARNING, "cam0", "no slot", extra={"STREAM": "cam0"})
    limited.flush()
    assert len(caplog.records) == 1  # window not over yet
    clock.now += 5.0
    limited.flush(extra={"STREAM": "cam0"})
    assert [r.getMessage() for r in caplog.records] == ["no slot", "cam0: … (3 more suppressed)"]
    assert vars(caplog.records[1])["STREAM"] == "cam0"
    limited.flush()
    assert len(caplog.records) == 2  # reported once


def test_rate_limited_log_rejects_bad_limits() -> None:
    with pytest.raises(ValueError, match="limit"):
        RateLimitedLog(logging.getLogger("x"), limit=0)
