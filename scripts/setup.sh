#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: a virtual environment in .venv with the CPU torch wheel
# first (an unpinned torch would pull a multi-GB CUDA build), then geomogeo itself.
# With --test-tools, also the Debian tools the tests use as independent oracles
# (GDAL CLI, Chromium, QGIS). Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q "torch==2.13.0"
fi
# (Re)install the project whenever pyproject.toml changed since the last install, so a venv
# made before a new dependency gets it too.
stamp=.venv/.geomogeo-pyproject.sha256
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import geomogeo" 2>/dev/null; then
  .venv/bin/pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi
if [ "${1:-}" = "--test-tools" ]; then
  need=()
  command -v gdaltransform >/dev/null || need+=(gdal-bin)
  command -v chromium >/dev/null || need+=(chromium)
  [ -f /usr/lib/python3/dist-packages/osgeo_utils/samples/validate_gpkg.py ] || need+=(python3-gdal)
  /usr/bin/python3 -c "import qgis.core" 2>/dev/null || need+=(python3-qgis qgis-providers)
  if [ ${#need[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
  fi
fi
