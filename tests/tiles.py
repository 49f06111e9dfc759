"""Rasters derived from a test raster: tiles cut with rasterio windows (the mosaic and batch
tests) and reprojected copies (the GIS tests)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import rasterio
import rasterio.windows
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject


def cut_tiles(raster: Path, folder: Path, col_cuts: Sequence[int],
              row_cuts: Sequence[int]) -> list[Path]:
    """Write the pieces of ``raster`` between the given column and row cuts (pixel edges,
    0 and the raster's size implied) as GeoTIFFs ``tile_<row0>_<col0>.tif`` in ``folder``,
    each with the window's own geotransform and the raster's CRS, dtype and nodata."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    with rasterio.open(raster) as ds:
        cols = [0, *col_cuts, ds.width]
        rows = [0, *row_cuts, ds.height]
        profile = {k: v for k, v in ds.profile.items() if k not in ("blockxsize", "blockysize",
                                                                   "tiled")}
        for r0, r1 in pairwise(rows):
            for c0, c1 in pairwise(cols):
                win = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
                path = folder / f"tile_{r0:05d}_{c0:05d}.tif"
                meta = {**profile, "width": c1 - c0, "height": r1 - r0,
                        "transform": ds.transform @ Affine.translation(c0, r0)}
                with rasterio.open(path, "w", **meta) as o:
                    o.write(ds.read(window=win))
                out.append(path)
    return out


def warp_copy(src: Path, dst: Path, crs: str) -> Path:
    """Band 1 of ``src`` reprojected into ``crs`` and written to ``dst`` (bilinear, GDAL's
    default output grid, nodata 0)."""
    with rasterio.open(src) as s:
        t, w, h = calculate_default_transform(s.crs, crs, s.width, s.height, *s.bounds)
        prof = s.profile | {"crs": crs, "transform": t, "width": w, "height": h, "nodata": 0}
        with rasterio.open(dst, "w", **prof) as d:
            reproject(rasterio.band(s, 1), rasterio.band(d, 1), resampling=Resampling.bilinear,
                      dst_nodata=0)
    return dst
