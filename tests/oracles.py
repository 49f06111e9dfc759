"""Independent readers ("oracles") for what geomogeo writes.

Each helper runs a tool that is NOT the project's own stack: Debian's GDAL 3.6 command-line
tools (a different build from the GDAL inside the rasterio/pyogrio wheels), QGIS 3.22 under
Debian's ``/usr/bin/python3`` (never the venv), and headless Chromium. A helper calls
``pytest.skip`` only when its tool is not installed; any other failure is a test failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = [
    "ChromiumResult",
    "OgrSummary",
    "chromium_render",
    "gdalinfo_json",
    "gdaltransform_points",
    "ogrinfo_features",
    "ogrinfo_summary",
    "qgis_layer_check",
    "qgis_python",
    "validate_gpkg",
]

SYSTEM_PYTHON = "/usr/bin/python3"
_TIMEOUT_S = 180


def _require(tool: str) -> str:
    exe = shutil.which(tool) if not os.path.isabs(tool) else (tool if Path(tool).exists() else None)
    if exe is None:
        pytest.skip(f"independent oracle {tool!r} is not installed")
    return exe


def _clean_env() -> dict[str, str]:
    """Environment without the venv's variables, so Debian tools use Debian's libraries."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "GDAL_DATA", "PROJ_LIB",
                        "PROJ_DATA", "GDAL_DRIVER_PATH")}
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if ".venv" not in p)
    return env


@dataclass
class OgrSummary:
    """What ``ogrinfo -so -al`` says about one layer."""

    layer: str
    geometry: str
    feature_count: int
    extent: tuple[float, float, float, float]  # (minx, miny, maxx, maxy) in the layer's CRS
    srs_wkt: str
    epsg: int | None  # the last ID["EPSG", n] of the WKT (the CRS's own code)
    fields: dict[str, str] = field(default_factory=dict)
    stderr: str = ""
    stdout: str = ""


def ogrinfo_summary(path: str | os.PathLike[str], layer: str) -> OgrSummary:
    """Run Debian's ``ogrinfo -so -al`` on ``path`` restricted to ``layer`` and parse it.

    ``stderr`` is captured verbatim so tests can assert that GDAL printed no warning.
    """
    exe = _require("ogrinfo")
    proc = subprocess.run(
        [exe, "-so", "-al", "-wkt_format", "WKT2", str(path), layer],
        capture_output=True, text=True, timeout=_TIMEOUT_S, env=_clean_env(), check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"ogrinfo failed on {path} ({proc.returncode}): {proc.stderr}")
    out = proc.stdout
    name = re.search(r"^Layer name: (.+)$", out, re.M)
    geom = re.search(r"^Geometry: (.+)$", out, re.M)
    count = re.search(r"^Feature Count: (\d+)$", out, re.M)
    num = r"(-?[\d.]+(?:e[-+]?\d+)?)"
    ext = re.search(rf"^Extent: \({num}, {num}\) - \({num}, {num}\)$", out, re.M)
    if not (name and geom and count and ext):
        raise AssertionError(f"cannot parse ogrinfo output for {path}:{layer}:\n{out}")
    wkt_m = re.search(r"^Layer SRS WKT:\n(.*?)\n(?:Data axis|FID Column|Geometry Column)",
                      out, re.M | re.S)
    wkt = wkt_m.group(1) if wkt_m else ""
    codes = re.findall(r'ID\["EPSG",(\d+)\]\]*\s*$', wkt.strip())
    fields = dict(re.findall(r"^(\w+): (\w+) \(", out, re.M))
    return OgrSummary(
        layer=name.group(1).strip(),
        geometry=geom.group(1).strip(),
        feature_count=int(count.group(1)),
        extent=(float(ext.group(1)), float(ext.group(2)), float(ext.group(3)),
                float(ext.group(4))),
        srs_wkt=wkt,
        epsg=int(codes[-1]) if codes else None,
        fields=fields,
        stderr=proc.stderr,
        stdout=out,
    )


_VALIDATE_GPKG = "/usr/lib/python3/dist-packages/osgeo_utils/samples/validate_gpkg.py"


def validate_gpkg(path: str | os.PathLike[str]) -> str:
    """Run GDAL's GeoPackage validator (Debian's python3-gdal) with warnings as errors.

    Returns its output (empty when the file is valid); a failed validation is a test failure.
    """
    exe = _require(SYSTEM_PYTHON)
    if not Path(_VALIDATE_GPKG).exists():
        pytest.skip("independent oracle validate_gpkg.py (python3-gdal) is not installed")
    proc = subprocess.run(
        [exe, _VALIDATE_GPKG, "-k", "--warning-as-error", str(path)],
        capture_output=True, text=True, timeout=_TIMEOUT_S, env=_clean_env(), check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"validate_gpkg.py rejects {path} ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def ogrinfo_features(path: str | os.PathLike[str], layer: str) -> list[dict[str, str]]:
    """Attribute values of every feature as Debian's ``ogrinfo -al`` prints them.

    One dict per feature: ``{field: "Type = value"}`` with GDAL's type name and its text form
    of the value (e.g. ``"DateTime = 2024/05/01 10:30:00+00"``, ``"Integer64 = (null)"``).
    """
    exe = _require("ogrinfo")
    proc = subprocess.run(
        [exe, "-al", "-q", "-geom=NO", str(path), layer],
        capture_output=True, text=True, timeout=_TIMEOUT_S, env=_clean_env(), check=False,
    )
    if proc.returncode != 0 or proc.stderr.strip():
        raise AssertionError(f"ogrinfo failed or warned on {path} ({proc.returncode}): "
                             f"{proc.stderr}")
    features: list[dict[str, str]] = []
    for line in proc.stdout.splitlines():
        if line.startswith("OGRFeature("):
            features.append({})
            continue
        m = re.match(r"^  (\S+) \((.+?)\) = (.*)$", line)
        if m and features:
            features[-1][m[1]] = f"{m[2]} = {m[3]}"
    return features


def gdalinfo_json(path: str | os.PathLike[str], checksum: bool = False) -> tuple[dict, str]:
    """Run Debian's ``gdalinfo -json`` (with ``-checksum``: each band's GDAL checksum) on a
    raster; return (parsed JSON, stderr)."""
    exe = _require("gdalinfo")
    proc = subprocess.run(
        [exe, "-json", *(["-checksum"] if checksum else []), str(path)],
        capture_output=True, text=True, timeout=_TIMEOUT_S, env=_clean_env(), check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"gdalinfo failed on {path} ({proc.returncode}): {proc.stderr}")
    return json.loads(proc.stdout), proc.stderr


def gdaltransform_points(
    points: list[tuple[float, float]], s_srs: str, t_srs: str
) -> list[tuple[float, float]]:
    """Convert (x, y) points with Debian's ``gdaltransform`` (GIS order: x = lon for lon/lat)."""
    exe = _require("gdaltransform")
    proc = subprocess.run(
        [exe, "-s_srs", s_srs, "-t_srs", t_srs],
        input="".join(f"{x!r} {y!r}\n" for x, y in points),
        capture_output=True, text=True, timeout=_TIMEOUT_S, env=_clean_env(), check=False,
    )
    if proc.returncode != 0 or proc.stderr.strip():
        raise AssertionError(f"gdaltransform failed ({proc.returncode}): {proc.stderr}")
    rows = [ln.split() for ln in proc.stdout.splitlines() if ln.strip()]
    return [(float(r[0]), float(r[1])) for r in rows]


_QGIS_SCRIPT = r"""
import json, sys
from qgis.core import (QgsApplication, QgsRasterLayer, QgsVectorLayer)
path, layer, kind = sys.argv[1], sys.argv[2], sys.argv[3]
qgs = QgsApplication([], False)
qgs.initQgis()
result = {}
try:
    if kind == "raster":
        lyr = QgsRasterLayer(path, "x")
    else:
        uri = f"{path}|layername={layer}" if layer else path
        lyr = QgsVectorLayer(uri, "x", "ogr")
    result["isValid"] = bool(lyr.isValid())
    crs = lyr.crs()
    result["authid"] = crs.authid()
    result["wkt"] = crs.toWkt()
    ext = lyr.extent()
    result["extent"] = [ext.xMinimum(), ext.yMinimum(), ext.xMaximum(), ext.yMaximum()]
    if kind == "raster":
        result["width"] = lyr.width()
        result["height"] = lyr.height()
        result["bandCount"] = lyr.bandCount()
        result["featureCount"] = None
    else:
        result["featureCount"] = int(lyr.featureCount())
        result["fields"] = [f.name() for f in lyr.fields()]
        result["field_types"] = {f.name(): f.typeName() for f in lyr.fields()}
    del crs, ext, lyr
finally:
    print("QGIS_JSON:" + json.dumps(result))
    qgs.exitQgis()
"""


def qgis_python(
    args: list[str], *, env: dict[str, str] | None = None, timeout: float = _TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run QGIS 3.22's Python (Debian's ``/usr/bin/python3``) headless with ``args``.

    ``QT_QPA_PLATFORM=offscreen``, the venv's variables removed, ``env`` added, and a
    throw-away ``HOME`` (QGIS writes its profile and settings there). Skips the test when
    QGIS is not installed; the caller checks the return code.
    """
    exe = _require(SYSTEM_PYTHON)
    run_env = {**_clean_env(), "QT_QPA_PLATFORM": "offscreen", **(env or {})}
    with tempfile.TemporaryDirectory() as home:
        run_env["HOME"] = home  # QGIS writes profile files; keep them out of the user's home
        run_env["XDG_RUNTIME_DIR"] = home
        probe = subprocess.run([exe, "-c", "import qgis.core"], capture_output=True,
                               env=run_env, timeout=_TIMEOUT_S, check=False)
        if probe.returncode != 0:
            pytest.skip("independent oracle QGIS (python3-qgis) is not installed")
        return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout,
                              env=run_env, check=False)


def qgis_layer_check(
    path: str | os.PathLike[str], layer: str | None = None, *, raster: bool = False
) -> dict:
    """Load ``path`` (a vector layer, or a raster when ``raster``) in QGIS 3.22, headless.

    Runs under Debian's ``/usr/bin/python3`` with ``QT_QPA_PLATFORM=offscreen``. Returns a dict
    with ``isValid``, ``authid`` (e.g. ``"EPSG:32631"``), ``wkt``, ``extent`` as
    [xmin, ymin, xmax, ymax] in the layer's CRS and ``featureCount`` (None for rasters; rasters
    also give ``width``, ``height``, ``bandCount``; vector layers ``fields`` and
    ``field_types``, name -> QGIS type name such as ``"Integer64"`` or ``"Real"``).
    """
    proc = qgis_python(
        ["-c", _QGIS_SCRIPT, str(path), layer or "", "raster" if raster else "vector"])
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("QGIS_JSON:")), None)
    if line is None:
        raise AssertionError(
            f"QGIS check of {path} produced no result (rc={proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}"
        )
    return json.loads(line[len("QGIS_JSON:"):])


@dataclass
class ChromiumResult:
    """The DOM after scripts ran and a screenshot of the page (1000 x 800 CSS pixels)."""

    dom: str
    screenshot: Path
    stderr: str
    #: JavaScript console messages of the --dump-dom run (e.g. "Uncaught ReferenceError: ...").
    console: list[str] = field(default_factory=list)

    @property
    def js_errors(self) -> list[str]:
        """Console messages that report an uncaught exception or a failed resource load."""
        return [c for c in self.console
                if "Uncaught" in c or "Failed to load" in c or "ERR_" in c]


def chromium_render(
    html_path: str | os.PathLike[str], out_png: str | os.PathLike[str]
) -> ChromiumResult:
    """Render a local HTML file with headless Chromium: ``--dump-dom`` then ``--screenshot``.

    Background networking is disabled; the page gets a 5 s virtual time budget to run its
    scripts. A fresh throw-away profile is used for each run.
    """
    exe = None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            break
    if exe is None:
        pytest.skip("independent oracle chromium is not installed")
    url = Path(html_path).resolve().as_uri()
    out_png = Path(out_png).resolve()
    base = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--disable-dev-shm-usage", "--virtual-time-budget=5000"]
    stderr = []
    with tempfile.TemporaryDirectory() as prof1, tempfile.TemporaryDirectory() as prof2:
        dom = subprocess.run(
            [exe, *base, f"--user-data-dir={prof1}", "--enable-logging=stderr", "--v=0",
             "--dump-dom", url],
            capture_output=True, text=True, timeout=_TIMEOUT_S, check=False,
        )
        stderr.append(dom.stderr)
        if dom.returncode != 0:
            raise AssertionError(f"chromium --dump-dom failed on {url}: {dom.stderr}")
        shot = subprocess.run(
            [exe, *base, f"--user-data-dir={prof2}", f"--screenshot={out_png}",
             "--window-size=1000,800", url],
            capture_output=True, text=True, timeout=_TIMEOUT_S, check=False,
        )
        stderr.append(shot.stderr)
        if shot.returncode != 0 or not out_png.exists():
            raise AssertionError(f"chromium --screenshot failed on {url}: {shot.stderr}")
    console = re.findall(r":CONSOLE[^\]]*\] (.*)$", dom.stderr, re.M)
    return ChromiumResult(dom=dom.stdout, screenshot=out_png, stderr="\n".join(stderr),
                          console=console)
