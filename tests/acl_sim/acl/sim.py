"""Simulator-only controls for tests (not part of pyACL): reports, violations, the dmesg log."""

from __future__ import annotations

from typing import Any

from acl.state import STATE


def report() -> dict[str, Any]:
    """What is allocated right now, and every misuse seen since acl.init()."""
    return STATE.report(finalized=not STATE.initialized)


def last_report() -> dict[str, Any] | None:
    """The report written by the last acl.finalize()."""
    return STATE.last_report


def violations() -> list[str]:
    return list(STATE.violations)


def dmesg() -> list[str]:
    return list(STATE.dmesg)


def clear_violations() -> None:
    with STATE.lock:
        STATE.violations.clear()
        STATE.callback_errors.clear()
