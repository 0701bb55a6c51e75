"""The package's architecture, pinned: which subpackage may import which, no import circle at
import time, no module past the size limit, and the light modules stay light.

docs/architecture.md explains the layers; this test keeps the code to them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "daemon" / "camingest"
MAX_LINES = 450

# What each part of the package may import of camingest (besides itself). Dependencies point
# one way: cli -> service / worker / clients -> config -> wire.
ALLOWED: dict[str, set[str]] = {
    "wire": {"errors"},
    "config": {"wire", "errors"},
    "worker": {"config", "wire", "errors", "log"},
    "clients": {"config", "wire", "errors", "log"},
    # The main process spawns the workers: it names their entry point and spec.
    "service": {"config", "wire", "errors", "log", "signals", "worker", "__init__"},
    "cli": {
        *("service", "clients", "capture", "subscribe", "config", "wire"),
        *("errors", "log", "signals", "__init__"),
    },
    "capture": {"clients"},
    "subscribe": {"clients"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def imports(path: Path, top_level_only: bool) -> set[str]:
    """camingest modules imported by `path`; with top_level_only, only those imported when the
    module itself is imported (not inside functions or `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "camingest":  # a submodule, or a name of the package itself
                for a in node.names:
                    sub = (PKG / a.name).is_dir() or (PKG / f"{a.name}.py").exists()
                    found.add(f"camingest.{a.name}" if sub else "camingest")
            elif node.module.startswith("camingest."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("camingest.")}
    return found


MODULES = sorted(PKG.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_follow_the_layers(path: Path) -> None:
    here = part(module_name(path))
    allowed = ALLOWED.get(here)
    if allowed is None:
        return  # errors, log, signals, __init__, __main__: the package's own base
    wrong = {m for m in imports(path, top_level_only=False) if part(m) not in allowed | {here}}
    assert not wrong, f"{here}/ may import only {sorted(allowed)}; {path.name} imports {wrong}"


def test_no_import_circle() -> None:
    """Module-level imports only: a lazy import inside a function is how a light module
    reaches a heavy one on demand, and cannot deadlock the import system."""
    graph = {module_name(p): imports(p, top_level_only=True) for p in MODULES}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                cycle = [*trail[trail.index(dep) :], dep] if dep in trail else [node, dep]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*trail, dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_module_size(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; split it along a seam"


@pytest.mark.timeout(60)
def test_config_and_client_libraries_do_not_load_encoders() -> None:
    """`camingest check`, capture programs and subscribers must not pay for PyAV or pyACL."""
    code = (
        "import sys, camingest.config.load, camingest.capture, camingest.subscribe\n"
        "heavy = sorted(m for m in ('av', 'acl', 'prometheus_client') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=50, check=True
    )
    assert out.stdout.strip() == ""
