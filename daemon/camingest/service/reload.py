"""Reload planning: which settings a running daemon can take, and which streams a new config
adds, removes or changes. Pure functions over two configs; the runtime applies the plan."""

from __future__ import annotations

from dataclasses import dataclass

from camingest.config.model import DaemonConfig, StreamConfig
from camingest.errors import ConfigError

# Settings every worker and socket was built from: changing them means a restart.
FIXED_ON_RELOAD = (
    "runtime_dir",
    "instance",
    "output",
    "control",
    "metrics",
    "supervision",
    "logging",
)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    added: tuple[StreamConfig, ...]
    removed: tuple[str, ...]
    changed: tuple[StreamConfig, ...]  # same name, new settings: the worker is replaced

    def summary(self) -> dict[str, list[str]]:
        return {
            "added": [s.name for s in self.added],
            "removed": list(self.removed),
            "changed": [s.name for s in self.changed],
        }


def check_reloadable(old: DaemonConfig, new: DaemonConfig) -> None:
    moved = [k for k in FIXED_ON_RELOAD if getattr(new, k) != getattr(old, k)]
    if moved:
        raise ConfigError(
            [f"{', '.join(moved)} changed: these take effect only on a restart"],
            hint="restart the service to apply them",
        )


def plan_reload(old: DaemonConfig, new: DaemonConfig) -> ReloadPlan:
    """Unchanged streams are not in the plan at all: their workers keep running untouched."""
    before = {s.name: s for s in old.streams}
    after = {s.name: s for s in new.streams}
    return ReloadPlan(
        added=tuple(s for n, s in after.items() if n not in before),
        removed=tuple(n for n in before if n not in after),
        changed=tuple(s for n, s in after.items() if n in before and before[n] != s),
    )
