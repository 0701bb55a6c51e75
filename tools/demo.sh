#!/usr/bin/env bash
# Quick start, part 1: set up, then run the daemon on the shipped config with a synthetic
# camera per stream, record a few seconds of each, print the status table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python tools/demo.py "$@"
