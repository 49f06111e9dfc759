"""A folder of raster tiles used as one reference: a tile index and VRT mosaics built from it.

Terms:

- *Tile*: one raster file of the folder (``*.tif``, ``*.tiff``, ``*.vrt``, ``*.img``, ``*.jp2``,
  searched recursively), each with its own CRS and geotransform. All tiles have the same band
  count and data type.
- *Mosaic CRS and grid*: the CRS most tiles share (ties: the first tile in path order) and the
  pixel grid of the first tile in that CRS (its pixel size and its pixel edges, north-up). The
  mosaic covers the union of the tile footprints, snapped outward to the grid.
- *On-grid tile*: a tile in the mosaic CRS, north-up, with the grid's pixel size and pixel edges
  on the grid lines (to 1e-6 pixel). The mosaic reads it as it is (no resampling), so a window
  read across the seams of on-grid tiles is identical to the same window read from the raster
  they were cut from. Other tiles (another CRS, rotated, another pixel size or offset) are first
  warped onto the grid (bilinear) into a GDAL warped VRT in the cache folder.
- *Footprint*: a tile's outline (its four pixel-edge corners, edges densified) in the mosaic CRS.
  The footprints form a spatial index (``shapely.STRtree``) built once per folder.
- *Validity*: a mosaic pixel is valid when it lies on a tile and is valid there (tile nodata, mask
  or alpha band; outside a warped tile's source is invalid). The VRTs carry it as a dataset mask
  band, so gaps between tiles are invalid, as off-raster pixels are for a single raster.
- *Stretch*: one per mosaic, computed by :func:`geomogeo.geo.raster.open_raster` on the whole
  mosaic VRT, so each window of a photo is stretched as it would be in a single raster.

Reading a photo's window: :meth:`Mosaic.window_source` queries the index with a square around the
photo's position and writes a small VRT holding only the intersecting tiles, on the whole
mosaic's grid (so pixel coordinates and the validity of everything else are the same as in the
whole mosaic), and returns a :class:`~geomogeo.geo.raster.RasterSource` for it that keeps the
mosaic's stretch. Memory and time per window therefore depend on the window, not on the number of
tiles.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import rasterio
import rasterio.crs
import rasterio.errors
import rasterio.shutil
import shapely
from affine import Affine
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from geomogeo.errors import LocationError, RasterError
from geomogeo.geo import georef, raster

__all__ = ["TILE_SUFFIXES", "Mosaic", "Tile", "open_mosaic"]

log = logging.getLogger(__name__)

#: File suffixes taken as tiles (case-insensitive), searched recursively.
TILE_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
#: Tolerance, in grid pixels, for a tile's pixel size and edges to count as on the grid.
GRID_TOLERANCE_PX = 1e-6
#: Name of the whole-mosaic VRT written in the cache folder.
MOSAIC_VRT = "mosaic.vrt"


@dataclass(frozen=True)
class Tile:
    """One tile of a mosaic.

    Attributes:
        path: the tile file.
        crs: its own CRS.
        footprint: its outline in the mosaic CRS (pixel-edge corners, densified edges).
        source: the file the mosaic reads: ``path`` for an on-grid tile, else its warped VRT.
        offset: ``(col, row)`` of the source's top-left pixel edge on the mosaic grid.
        size: ``(width, height)`` of the source, pixels.
        block: ``(width, height)`` of the source's blocks, pixels.
    """

    path: Path
    crs: CRS
    footprint: Any
    source: Path
    offset: tuple[int, int]
    size: tuple[int, int]
    block: tuple[int, int]

    @property
    def warped(self) -> bool:
        """Whether the tile was warped onto the mosaic grid (not read as it is)."""
        return self.source != self.path


@dataclass(frozen=True)
class Mosaic:
    """A folder of tiles as one raster (see the module docstring).

    Attributes:
        folder: the tile folder.
        crs: the mosaic CRS.
        transform: mosaic pixel EDGES -> mosaic CRS (north-up).
        width, height: mosaic size, pixels.
        count: bands per tile.
        dtype: numpy data type name of the tiles' bands.
        nodata: the tiles' nodata value when they all share one, else None (validity is then
            carried by the mask band only).
        tiles: the tiles, in path order.
        index: ``shapely.STRtree`` of the tile footprints (same order as ``tiles``).
        source: the whole mosaic VRT opened with :func:`geomogeo.geo.raster.open_raster`
            (its stretch is the mosaic's).
    """

    folder: Path
    crs: CRS
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    tiles: tuple[Tile, ...]
    index: Any
    source: raster.RasterSource

    def tiles_intersecting(self, area: Any) -> list[Tile]:
        """Tiles whose footprint intersects ``area`` (a shapely geometry in the mosaic CRS),
        in path order."""
        hits = self.index.query(area, predicate="intersects")
        return [self.tiles[i] for i in sorted(int(i) for i in hits)]

    def area_around(self, lon: float, lat: float, half_side_m: float) -> Any:
        """The square of ``2 * half_side_m`` metres centred on ``(lon, lat)`` (EPSG:4326), laid
        out in the local metric CRS there, as a polygon in the mosaic CRS (densified edges)."""
        local = georef.local_metric_crs(lon, lat)
        cx, cy = georef.lonlat_to_crs(lon, lat, local)
        square = shapely.box(cx - half_side_m, cy - half_side_m, cx + half_side_m,
                             cy + half_side_m)
        return georef.reproject_geometries([square], local, self.crs, densify_pts=21)[0]

    @contextlib.contextmanager
    def window_source(
        self, lon: float, lat: float, half_side_m: float
    ) -> Iterator[raster.RasterSource]:
        """A source for windows near ``(lon, lat)``: the tiles intersecting the square of
        :meth:`area_around`, as a temporary VRT on the whole mosaic's grid with the mosaic's
        stretch. The VRT is removed on exit.

        Raises:
            LocationError: no tile intersects the square.
        """
        tiles = self.tiles_intersecting(self.area_around(lon, lat, half_side_m))
        if not tiles:
            raise LocationError(
                f"{self.folder}: no tile lies within {half_side_m:g} m of lon/lat "
                f"({lon:.7f}, {lat:.7f}); the tiles cover lon/lat "
                f"{georef.bounds_lonlat(self.transform, self.crs, self.width, self.height)}"
            )
        fd, name = tempfile.mkstemp(prefix="geomogeo_window_", suffix=".vrt")
        path = Path(name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(_vrt_xml(self, tiles))
            yield dataclasses.replace(self.source, path=path)
        finally:
            path.unlink(missing_ok=True)


def _tile_files(folder: Path, exclude: Path) -> list[Path]:
    files = []
    for p in sorted(folder.rglob("*")):
        if exclude in p.resolve().parents:
            continue
        if p.is_file() and p.suffix.lower() in TILE_SUFFIXES:
            files.append(p)
    return files


@dataclass(frozen=True)
class _TileMeta:
    path: Path
    crs: CRS
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    block: tuple[int, int]


def _read_meta(path: Path) -> _TileMeta:
    try:
        with rasterio.open(path) as ds:
            crs = georef.as_crs(ds.crs) if ds.crs else None
            georef.require_georeferenced(crs, ds.transform, path)
            assert crs is not None
            if len(set(ds.dtypes)) != 1:
                raise RasterError(f"{path}: tile bands have different data types {ds.dtypes}")
            bh, bw = ds.block_shapes[0]
            return _TileMeta(path, crs, ds.transform, ds.width, ds.height, ds.count,
                             ds.dtypes[0], None if ds.nodata is None else float(ds.nodata),
                             (int(bw), int(bh)))
    except rasterio.errors.RasterioError as exc:
        raise RasterError(f"{path}: cannot open this tile as a raster ({exc})") from exc


def _on_grid(meta: _TileMeta, crs: CRS, grid: Affine) -> tuple[int, int] | None:
    """The tile's (col, row) offset on the grid when it is on it, else None."""
    t = meta.transform
    if not meta.crs.equals(crs) or t.b != 0 or t.d != 0:
        return None
    if abs(t.a / grid.a - 1) > GRID_TOLERANCE_PX or abs(t.e / grid.e - 1) > GRID_TOLERANCE_PX:
        return None
    col, row = georef.map_to_pixel(grid, t.c, t.f)
    icol, irow = round(float(col)), round(float(row))
    if abs(col - icol) > GRID_TOLERANCE_PX or abs(row - irow) > GRID_TOLERANCE_PX:
        return None
    return icol, irow


def _snap_out(grid: Affine, bounds: Sequence[float]) -> tuple[int, int, int, int]:
    """``(col0, row0, col1, row1)`` grid pixel edges covering map ``bounds`` (north-up grid)."""
    xmin, ymin, xmax, ymax = bounds
    c0, r0 = georef.map_to_pixel(grid, xmin, ymax)
    c1, r1 = georef.map_to_pixel(grid, xmax, ymin)
    eps = GRID_TOLERANCE_PX
    return (math.floor(float(c0) + eps), math.floor(float(r0) + eps),
            math.ceil(float(c1) - eps), math.ceil(float(r1) - eps))


def _warp_onto_grid(meta: _TileMeta, crs: CRS, grid: Affine, footprint: Any, out: Path) -> Tile:
    """Warp a tile onto the grid (bilinear) into a GDAL warped VRT ``out``; alpha = validity."""
    c0, r0, c1, r1 = _snap_out(grid, footprint.bounds)
    transform = grid @ Affine.translation(c0, r0)
    with rasterio.open(meta.path) as ds, WarpedVRT(
        ds, crs=rasterio.crs.CRS.from_wkt(crs.to_wkt()), transform=transform,
        width=c1 - c0, height=r1 - r0, resampling=Resampling.bilinear, add_alpha=True,
    ) as vrt:
        rasterio.shutil.copy(vrt, out, driver="VRT")
        bh, bw = vrt.block_shapes[0]
    log.info("tile %s is not on the mosaic grid: warped into %s", meta.path, out)
    return Tile(meta.path, meta.crs, footprint, out, (c0, r0), (c1 - c0, r1 - r0),
                (int(bw), int(bh)))


def _srs_xml(crs: CRS) -> str:
    # GDAL keeps x = easting/longitude in the geotransform; say so for lat-first CRSs.
    first = crs.axis_info[0].direction.lower() if crs.axis_info else "east"
    mapping = "2,1" if first in ("north", "south") else "1,2"
    return f'  <SRS dataAxisToSRSAxisMapping="{mapping}">{escape(crs.to_wkt())}</SRS>\n'


def _source_xml(tile: Tile, band: str, dtype: str) -> str:
    (ox, oy), (w, h), (bw, bh) = tile.offset, tile.size, tile.block
    return (
        "    <SimpleSource>\n"
        f"      <SourceFilename relativeToVRT=\"0\">{escape(str(tile.source))}</SourceFilename>\n"
        f"      <SourceBand>{band}</SourceBand>\n"
        f'      <SourceProperties RasterXSize="{w}" RasterYSize="{h}" DataType={quoteattr(dtype)}'
        f' BlockXSize="{bw}" BlockYSize="{bh}"/>\n'
        f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>\n'
        f'      <DstRect xOff="{ox}" yOff="{oy}" xSize="{w}" ySize="{h}"/>\n'
        "    </SimpleSource>\n"
    )


def _vrt_xml(mosaic: Mosaic, tiles: Sequence[Tile]) -> str:
    """A GDAL VRT of ``tiles`` on the whole ``mosaic`` grid, with a dataset mask band."""
    gdal_dtype = _gdal_dtype(mosaic.dtype)
    t = mosaic.transform
    parts = [
        f'<VRTDataset rasterXSize="{mosaic.width}" rasterYSize="{mosaic.height}">\n',
        _srs_xml(mosaic.crs),
        f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>\n",
    ]
    for b in range(1, mosaic.count + 1):
        parts.append(f'  <VRTRasterBand dataType="{gdal_dtype}" band="{b}">\n')
        if mosaic.nodata is not None:
            parts.append(f"    <NoDataValue>{mosaic.nodata!r}</NoDataValue>\n")
        parts += [_source_xml(tile, str(b), gdal_dtype) for tile in tiles]
        parts.append("  </VRTRasterBand>\n")
    parts.append('  <MaskBand>\n  <VRTRasterBand dataType="Byte">\n')
    parts += [_source_xml(tile, "mask,1", "Byte") for tile in tiles]
    parts.append("  </VRTRasterBand>\n  </MaskBand>\n</VRTDataset>\n")
    return "".join(parts)


def _gdal_dtype(dtype: str) -> str:
    names = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
             "uint32": "UInt32", "int32": "Int32", "uint64": "UInt64", "int64": "Int64",
             "float32": "Float32", "float64": "Float64"}
    if dtype not in names:
        raise RasterError(f"tiles of data type {dtype!r} cannot be mosaicked; use one of "
                          f"{sorted(names)}")
    return names[dtype]


def open_mosaic(
    folder: str | os.PathLike[str], cache_dir: str | os.PathLike[str], bands: Any = None
) -> Mosaic:
    """Index the tiles of ``folder`` and build its mosaic (see the module docstring).

    Args:
        folder: folder of tiles, searched recursively (``cache_dir`` excluded).
        cache_dir: folder for the whole-mosaic VRT (:data:`MOSAIC_VRT`) and the warped VRTs of
            off-grid tiles; created if needed, files in it are overwritten. It must stay readable
            (at the same path) by whatever reads the mosaic, e.g. the workers of a batch.
        bands: 1-based band mapping, as for :func:`geomogeo.geo.raster.open_raster`.

    Raises:
        RasterError: no tiles, a tile that cannot be read, tiles with different band counts or
            data types.
        GeoreferenceError: a tile without CRS or geotransform.
    """
    root = Path(folder)
    if not root.is_dir():
        raise RasterError(f"{root}: not a folder of tiles")
    cache = Path(cache_dir)
    files = _tile_files(root, cache.resolve())
    if not files:
        raise RasterError(f"{root}: no raster tiles ({', '.join(TILE_SUFFIXES)}) in this folder")
    metas = [_read_meta(f) for f in files]
    first = metas[0]
    for m in metas[1:]:
        if (m.count, m.dtype) != (first.count, first.dtype):
            raise RasterError(
                f"{m.path}: {m.count} band(s) of {m.dtype}, but {first.path} has {first.count} "
                f"band(s) of {first.dtype}; all tiles of a mosaic need the same bands"
            )
    wkts = Counter(m.crs.to_wkt() for m in metas)
    top = max(wkts.values())
    crs = next(m.crs for m in metas if wkts[m.crs.to_wkt()] == top)
    ref = next(m for m in metas if m.crs.equals(crs))
    t = ref.transform
    if t.b == 0 and t.d == 0 and t.a > 0 and t.e < 0:
        grid = Affine(t.a, 0.0, t.c, 0.0, t.e, t.f)
    else:  # a rotated/south-up first tile: a north-up grid of its pixel size at its corner
        side = math.sqrt(abs(t.determinant))
        xs, ys = georef.pixel_to_map(t, [0, ref.width, ref.width, 0], [0, 0, ref.height,
                                                                         ref.height])
        grid = Affine(side, 0.0, float(np.min(xs)), 0.0, -side, float(np.max(ys)))

    footprints = [
        georef.reproject_geometries(
            georef.boxes_to_polygons([[0, 0, m.width, m.height]], m.transform), m.crs, crs,
            densify_pts=21)[0]
        for m in metas
    ]
    cache.mkdir(parents=True, exist_ok=True)
    tiles: list[Tile] = []
    for i, (m, fp) in enumerate(zip(metas, footprints, strict=True)):
        offset = _on_grid(m, crs, grid)
        if offset is None:
            tiles.append(_warp_onto_grid(m, crs, grid, fp, cache / f"warped_{i:05d}.vrt"))
        else:
            tiles.append(Tile(m.path, m.crs, fp, m.path, offset, (m.width, m.height), m.block))

    c0, r0, c1, r1 = _snap_out(grid, shapely.union_all(footprints).bounds)
    transform = grid @ Affine.translation(c0, r0)
    tiles = [dataclasses.replace(tl, offset=(tl.offset[0] - c0, tl.offset[1] - r0))
             for tl in tiles]
    nodatas = {m.nodata for m in metas}
    nodata = nodatas.pop() if len(nodatas) == 1 and not any(tl.warped for tl in tiles) else None
    draft = Mosaic(root, crs, transform, c1 - c0, r1 - r0, first.count, first.dtype, nodata,
                   tuple(tiles), shapely.STRtree(footprints), source=None)  # type: ignore[arg-type]
    vrt = cache / MOSAIC_VRT
    vrt.write_text(_vrt_xml(draft, draft.tiles), encoding="utf-8")
    mosaic = dataclasses.replace(draft, source=raster.open_raster(vrt, bands=bands))
    log.info("mosaic of %d tile(s) in %s (%d warped): %dx%d px, %s", len(tiles), root,
             sum(tl.warped for tl in tiles), mosaic.width, mosaic.height, crs.name)
    return mosaic
