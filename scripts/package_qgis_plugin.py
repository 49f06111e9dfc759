"""Zip the QGIS plugin folder for "Install from ZIP": ``dist/geomogeo_qgis-<version>.zip``.

The archive holds one top-level folder, ``geomogeo_qgis/``, as QGIS's plugin installer expects;
caches are left out and every entry gets the same timestamp, so the archive is reproducible.

Usage: ``python scripts/package_qgis_plugin.py [-o OUT.zip]`` (prints the archive's path).
"""

from __future__ import annotations

import argparse
import configparser
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "qgis_plugin" / "geomogeo_qgis"
_STAMP = (2026, 1, 1, 0, 0, 0)


def plugin_version(folder: Path = PLUGIN) -> str:
    """The ``version`` of the plugin's ``metadata.txt``."""
    meta = configparser.ConfigParser()
    meta.read(folder / "metadata.txt", encoding="utf-8")
    return meta.get("general", "version")


def package(out: Path | None = None, folder: Path = PLUGIN) -> Path:
    """Write the plugin archive (default ``dist/geomogeo_qgis-<version>.zip``); return it."""
    out = out or REPO / "dist" / f"{folder.name}-{plugin_version(folder)}.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    tmp = out.with_name(out.name + ".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            info = zipfile.ZipInfo(f"{folder.name}/{path.relative_to(folder).as_posix()}",
                                   _STAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    tmp.replace(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=None, help="Archive path.")
    print(package(parser.parse_args().out))


if __name__ == "__main__":
    main()
