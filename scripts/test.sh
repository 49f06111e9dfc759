#!/usr/bin/env bash
# README command two: install everything the tests need, then run ruff and the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test-tools
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
.venv/bin/ruff check geomogeo tests benchmarks scripts qgis_plugin
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
