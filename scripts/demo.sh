#!/usr/bin/env bash
# README command one: set up (idempotent), then localize the shipped sample photos on the
# shipped sample tile with the shipped model, on CPU. Outputs go to out/demo/ (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/geomogeo demo --out "${1:-out/demo}"
