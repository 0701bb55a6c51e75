"""`camingest check -c FILE`: load and validate a config, then run the preflight checks.

cli.py prints the lines and exits with ExitCode.CONFIG when `ok` is false.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from camingest.config.load import format_path, line_of, load_config
from camingest.errors import ConfigError
from camingest.service.preflight import preflight_problems, shm_free_bytes, summary_line


def check_config(
    path: str, *, shm_free: Callable[[], int] = shm_free_bytes
) -> tuple[bool, list[str]]:
    """(ok, lines): `ok: FILE: N streams` and one summary line per stream, or the problems,
    each as `FILE:LINE: path: message`."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        return False, list(exc.problems)
    problems = preflight_problems(config, shm_free=shm_free)
    if problems:
        text = _read(path)
        lines = []
        for loc, msg in problems:
            line = line_of(text, loc) if loc and text is not None else None
            where = f"{path}:{line}" if line else path
            lines.append(f"{where}: {format_path(loc)}: {msg}" if loc else f"{where}: {msg}")
        return False, lines
    n = len(config.streams)
    head = f"ok: {path}: {n} stream{'s' if n != 1 else ''}"
    return True, [head, *(summary_line(s) for s in config.streams)]


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
