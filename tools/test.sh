#!/usr/bin/env bash
# Quick start, part 2: set up, then every check CI runs: format, lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/ruff format --check daemon tests tools
.venv/bin/ruff check daemon tests tools
.venv/bin/mypy
exec .venv/bin/pytest "$@"
