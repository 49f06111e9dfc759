"""Fixtures of the geo tests: tiny GeoTIFFs generated in ``tmp_path`` and the gdaltransform oracle.

``write_raster(path, array, transform, crs, nodata=None)`` writes a (bands, rows, cols) or
(rows, cols) array as a GeoTIFF. ``gdaltransform`` runs Debian's GDAL 3.6 command (an independent
build from the GDAL inside the rasterio wheel) and returns its x/y output as an (n, 2) array;
tests using it skip with a clear reason when the command is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.errors
from affine import Affine

REPO = Path(__file__).resolve().parents[2]
SAMPLE_TILES = REPO / "sample_tiles"


def write_raster(
    path: Path,
    array: np.ndarray,
    transform: Affine | None,
    crs: Any,
    nodata: float | None = None,
    **profile: Any,
) -> Path:
    """Write ``array`` ((rows, cols) or (bands, rows, cols)) as a GeoTIFF; returns ``path``."""
    arr = array[None] if array.ndim == 2 else array
    kw: dict[str, Any] = dict(
        driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
        dtype=arr.dtype.name,
    )
    if crs is not None:
        kw["crs"] = crs
    if transform is not None:
        kw["transform"] = transform
    if nodata is not None:
        kw["nodata"] = nodata
    kw.update(profile)
    with warnings.catch_warnings():  # writing a deliberately ungeoreferenced file
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **kw) as ds:
            ds.write(arr)
    return path


@pytest.fixture
def make_raster(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_raster(name, array, transform, crs, nodata=None)`` -> path in tmp_path."""

    def make(name: str, array: np.ndarray, transform: Affine | None, crs: Any,
             nodata: float | None = None, **profile: Any) -> Path:
        return write_raster(tmp_path / name, array, transform, crs, nodata, **profile)

    return make


def _run_gdaltransform(args: list[str], points: np.ndarray) -> np.ndarray:
    exe = shutil.which("gdaltransform")
    if exe is None:
        pytest.skip("Debian's gdaltransform (package gdal-bin) is not installed: no oracle")
    text = "".join(f"{float(x)!r} {float(y)!r}\n" for x, y in np.asarray(points, dtype=np.float64))
    res = subprocess.run([exe, *args], input=text, capture_output=True, text=True, check=True,
                         timeout=60)
    rows = [line.split() for line in res.stdout.strip().splitlines()]
    out = np.array([[float(r[0]), float(r[1])] for r in rows], dtype=np.float64)
    assert out.shape == (len(points), 2), res.stdout + res.stderr
    return out


@pytest.fixture
def gdaltransform() -> Callable[[list[str], np.ndarray], np.ndarray]:
    """``gdaltransform(args, points)`` -> (n, 2) x/y from Debian's GDAL command."""
    return _run_gdaltransform


#: The custom Albers Equal Area CRS (no EPSG code) of
#: /work/shared/data/nebraska_albers_30m_int16.tif, copied here so the tests do not need that file.
ALBERS_WKT = (
    'PROJCS["unnamed",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,'
    'AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0],'
    'UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],AUTHORITY["EPSG","4326"]],'
    'PROJECTION["Albers_Conic_Equal_Area"],PARAMETER["latitude_of_center",23],'
    'PARAMETER["longitude_of_center",-96],PARAMETER["standard_parallel_1",29.5],'
    'PARAMETER["standard_parallel_2",45.5],PARAMETER["false_easting",0],'
    'PARAMETER["false_northing",0],UNIT["metre",1,AUTHORITY["EPSG","9001"]],'
    'AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
)


@pytest.fixture(scope="session")
def albers_wkt() -> str:
    """WKT of the custom Albers Equal Area CRS (no EPSG code)."""
    return ALBERS_WKT


@pytest.fixture(scope="session")
def sample_tile() -> Callable[[str], Path]:
    """``sample_tile(name)`` -> path of a committed sample tile (skips if absent)."""

    def get(name: str) -> Path:
        p = SAMPLE_TILES / name
        if not p.exists():
            pytest.skip(f"sample tile {p} is missing")
        return p

    return get
