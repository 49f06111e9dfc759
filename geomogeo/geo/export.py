"""GIS writers: GeoPackage, GeoJSON and heatmap GeoTIFF, all atomic.

Terms and conventions used in this module:

- *Atomic write*: the output is written to a temporary file in the SAME folder as the target,
  flushed with ``fsync`` and moved over the target with :func:`os.replace`. A reader therefore
  sees either the old file or the complete new one, never a half-written one; on any error the
  original file is left byte-identical and the temporary file is removed.
- *Native CRS*: a GeoPackage keeps every layer in the CRS of its GeoDataFrame (normally the
  reference raster's CRS, e.g. a UTM zone in metres). Nothing is reprojected.
- *RFC 7946 GeoJSON*: WGS 84 longitude/latitude in degrees with x = longitude, exterior rings
  counter-clockwise and holes clockwise, coordinates rounded to 7 decimals (about 1 cm), and no
  ``crs`` member. Polygons from a projected CRS are densified (edges split to at most
  ``densify_m`` metres) before reprojection so long straight edges follow the true curve.
- *Heatmap transform*: a rasterio ``Affine`` mapping pixel EDGES (col, row) to map x/y, exactly
  as rasterio stores it in a GeoTIFF; pixel (0, 0) is the top-left corner of the first pixel.

This module does no affine or CRS arithmetic of its own beyond GeoPandas' ``to_crs`` on output
frames; pixel <-> map conversion belongs to :mod:`geomogeo.geo.georef`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import rasterio.crs
import shapely
from affine import Affine
from pyproj import CRS

from geomogeo.errors import GeoreferenceError, OutputError

__all__ = [
    "GEOPACKAGE_VERSION",
    "atomic_write",
    "is_geopackage",
    "list_layers",
    "to_rfc7946_frame",
    "write_geojson",
    "write_geopackage",
    "write_heatmap",
]

logger = logging.getLogger(__name__)

#: GeoPackage version written for new files. GDAL 3.6 (Debian) warns when it opens 1.4 files,
#: which recent GDAL writes by default, so new files are created as 1.3.
GEOPACKAGE_VERSION = "1.3"

_SQLITE_MAGIC = b"SQLite format 3\x00"
_GPKG_USER_VERSION_13 = 10300

#: Default densification length (metres) applied to projected geometries before reprojecting
#: them to lon/lat.
DEFAULT_DENSIFY_M = 100.0


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    # Persist the rename itself; not supported on every platform (e.g. Windows), hence best effort.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_temp(tmp: Path) -> None:
    # GDAL/SQLite may leave journal side-files next to a temp database.
    sidecars = ("-journal", "-wal", "-shm", ".aux.xml")
    for p in (tmp, *(tmp.with_name(tmp.name + s) for s in sidecars)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path`` atomically.

    The temporary file lives in the same folder (so :func:`os.replace` is a rename on one file
    system) and keeps the target's suffix (so drivers that look at the extension still work).
    The caller writes the complete new content to the yielded path. On normal exit the file is
    fsynced and renamed over ``path``; if the block raises, the temporary file is removed, the
    original ``path`` is left untouched and the exception propagates.

    Raises:
        OutputError: the target's folder does not exist, nothing was written to the temporary
            path, or the final rename fails.
    """
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(
            f"cannot write {str(target)!r}: folder {str(folder)!r} does not exist; create it first"
        )
    tmp = folder / f".{target.stem}.{uuid.uuid4().hex[:12]}.tmp{target.suffix}"
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"cannot write {str(target)!r}: the writer produced no file")
        _fsync_file(tmp)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise OutputError(f"cannot move the new file over {str(target)!r}: {exc}") from exc
        _fsync_dir(folder)
    except BaseException:
        _remove_temp(tmp)
        raise
    # A successful write may still leave SQLite side-files of the temp name behind.
    _remove_temp(tmp)


def is_geopackage(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an SQLite database that contains a ``gpkg_contents`` table.

    The file is opened read-only; it is never modified. A missing file returns False.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            if fh.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
                return False
    except OSError:
        return False
    try:
        con = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        row = con.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'gpkg_contents'"
        ).fetchone()
        return bool(row and row[0] == 1)
    except sqlite3.Error:
        return False
    finally:
        con.close()


def _gpkg_user_version(path: Path) -> int:
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(con.execute("PRAGMA user_version").fetchone()[0])
    finally:
        con.close()


def list_layers(path: str | os.PathLike[str]) -> dict[str, str]:
    """Layers of a vector file as ``{layer name: OGR geometry type}`` (e.g. ``"Polygon"``).

    Raises:
        OutputError: the file does not exist or cannot be read as a vector dataset.
    """
    p = Path(path)
    if not p.exists():
        raise OutputError(f"{str(p)!r} does not exist")
    try:
        rows = pyogrio.list_layers(p)
    except Exception as exc:  # pyogrio raises its own DataSourceError family
        raise OutputError(f"cannot list the layers of {str(p)!r}: {exc}") from exc
    return {str(name): str(gtype) for name, gtype in rows}


def _geom_kind(name: str) -> str:
    """Normalise an OGR/shapely geometry type name: 'Polygon Z'/'3D Polygon' -> 'Polygon'."""
    return name.replace("3D ", "").replace(" Z", "").replace(" M", "").strip()


def _check_frame(path: Path, layer: str, gdf: Any) -> None:
    if not isinstance(gdf, gpd.GeoDataFrame):
        raise OutputError(
            f"cannot write layer {layer!r} to {str(path)!r}: expected a GeoDataFrame, "
            f"got {type(gdf).__name__}"
        )
    if gdf.crs is None:
        raise GeoreferenceError(
            f"cannot write layer {layer!r} to {str(path)!r}: the GeoDataFrame has no CRS; "
            "set it (gdf.set_crs(...)) to the reference raster's CRS"
        )


def _check_append(path: Path, layer: str, gdf: gpd.GeoDataFrame) -> bool:
    """Raise OutputError if ``gdf`` cannot be appended to the existing ``layer`` of ``path``.

    Returns True when single geometries must be promoted to the layer's multi type (Polygons
    appended to a MultiPolygon layer).
    """
    info = pyogrio.read_info(path, layer=layer)
    existing_crs = CRS.from_user_input(info["crs"]) if info["crs"] else None
    if existing_crs is None or not existing_crs.equals(CRS.from_user_input(gdf.crs)):
        raise OutputError(
            f"cannot append to layer {layer!r} of {str(path)!r}: its CRS is "
            f"{info['crs']!r} but the new features are in {gdf.crs.to_string()!r}; "
            "write them to another layer or file"
        )
    fields = set(map(str, info["fields"]))
    extra = [str(c) for c in gdf.columns if c != gdf.geometry.name and str(c) not in fields]
    if extra:
        raise OutputError(
            f"cannot append to layer {layer!r} of {str(path)!r}: columns {extra} are not in "
            f"the layer (it has {sorted(fields)}); write them to another layer or file"
        )
    layer_kind = _geom_kind(str(info["geometry_type"]))
    if layer_kind not in ("Unknown", "Geometry", ""):
        new_kinds = {_geom_kind(t) for t in gdf.geom_type.dropna().unique()}
        allowed = {layer_kind}
        if layer_kind.startswith("Multi"):
            allowed.add(layer_kind[len("Multi"):])
        bad = sorted(new_kinds - allowed)
        if bad:
            raise OutputError(
                f"cannot append to layer {layer!r} of {str(path)!r}: it holds {layer_kind} "
                f"geometries but the new features contain {bad}"
            )
        return layer_kind.startswith("Multi") and bool(new_kinds - {layer_kind})
    return False


def write_geopackage(
    path: str | os.PathLike[str],
    layers: Mapping[str, gpd.GeoDataFrame],
    append: bool = True,
) -> Path:
    """Write GeoDataFrames as layers of a GeoPackage, each in its native CRS, atomically.

    Args:
        path: the ``.gpkg`` file.
        layers: ``{layer name: GeoDataFrame}``; each frame must have a CRS. Datetime columns
            are stored as GeoPackage DateTime; geometry types are taken from the data (a frame
            of Polygons gives a ``Polygon`` layer).
        append: if True and ``path`` exists, keep all its layers and features, append the new
            features to layers that already exist (same CRS, geometry type and no new columns)
            and add the other layers. If False, ``path`` is replaced by a new file holding
            only ``layers``.

    New files are GeoPackage 1.3 (see :data:`GEOPACKAGE_VERSION`). The existing file is
    copied to a temporary file in the same folder, the copy is written, then moved over
    ``path``; a failure at any step leaves ``path`` byte-identical.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputError: ``path`` exists but is not a GeoPackage, a frame cannot be appended to
            the existing layer, or writing fails. Nothing is written in these cases.
        GeoreferenceError: a frame has no CRS.
    """
    target = Path(path)
    if not layers:
        raise OutputError(f"cannot write {str(target)!r}: no layers given")
    for name, gdf in layers.items():
        _check_frame(target, name, gdf)

    existing: dict[str, str] = {}
    promote: set[str] = set()
    use_existing = append and target.exists()
    if use_existing:
        if not is_geopackage(target):
            raise OutputError(
                f"cannot append to {str(target)!r}: it exists but is not a GeoPackage "
                "(no SQLite header or no gpkg_contents table); choose another file name"
            )
        existing = list_layers(target)
        for name, gdf in layers.items():
            if name in existing and _check_append(target, name, gdf):
                promote.add(name)
        if _gpkg_user_version(target) > _GPKG_USER_VERSION_13:
            logger.warning(
                "%s is a GeoPackage newer than %s; GDAL < 3.7 may warn when opening it",
                target,
                GEOPACKAGE_VERSION,
            )

    with atomic_write(target) as tmp:
        if use_existing:
            shutil.copy2(target, tmp)
        created = use_existing
        for name, gdf in layers.items():
            kwargs: dict[str, Any] = {"layer": name, "driver": "GPKG"}
            if created:
                # Appending to an existing dataset: existing layer -> add features, else new layer.
                kwargs["append"] = True
                if name in promote:
                    kwargs["promote_to_multi"] = True
            else:
                kwargs["dataset_options"] = {"VERSION": GEOPACKAGE_VERSION}
            try:
                pyogrio.write_dataframe(gdf, tmp, **kwargs)
            except Exception as exc:
                raise OutputError(
                    f"cannot write layer {name!r} to {str(target)!r}: {exc}"
                ) from exc
            created = True
            logger.debug("wrote %d features to layer %r of %s", len(gdf), name, target)
    logger.info("wrote GeoPackage %s (layers: %s)", target, ", ".join(layers))
    return target


def to_rfc7946_frame(
    gdf: gpd.GeoDataFrame, densify_m: float | None = DEFAULT_DENSIFY_M
) -> gpd.GeoDataFrame:
    """Return ``gdf`` in EPSG:4326 lon/lat (x = lon), densified first when projected.

    When the source CRS is projected and ``densify_m`` is not None, every edge is split
    (``shapely.segmentize``) into pieces of at most ``densify_m`` metres, measured in the
    source CRS's linear unit, before GeoPandas' ``to_crs``. Winding and rounding are NOT done
    here (the GeoJSON writer does them).

    Raises:
        GeoreferenceError: ``gdf`` has no CRS.
    """
    if gdf.crs is None:
        raise GeoreferenceError(
            "the GeoDataFrame has no CRS; set it to the reference raster's CRS before export"
        )
    out = gdf
    crs = CRS.from_user_input(gdf.crs)
    if crs.is_projected and densify_m is not None:
        if densify_m <= 0:
            raise ValueError(f"densify_m must be > 0 metres, got {densify_m}")
        unit_m = crs.axis_info[0].unit_conversion_factor or 1.0
        out = gdf.copy()
        out[gdf.geometry.name] = shapely.segmentize(
            np.asarray(gdf.geometry.values), densify_m / unit_m
        )
        out = gpd.GeoDataFrame(out, geometry=gdf.geometry.name, crs=gdf.crs)
    lonlat = CRS.from_epsg(4326)
    if crs.equals(lonlat):
        return out
    return out.to_crs(lonlat)


def write_geojson(
    path: str | os.PathLike[str],
    gdf: gpd.GeoDataFrame,
    *,
    densify_m: float | None = DEFAULT_DENSIFY_M,
) -> Path:
    """Write ``gdf`` as an RFC 7946 GeoJSON FeatureCollection, atomically.

    Coordinates are WGS 84 lon/lat in degrees (x = longitude), rounded to 7 decimals;
    exterior rings are counter-clockwise and holes clockwise; the file has no ``crs`` member.
    Projected inputs are densified to ``densify_m`` metres before reprojection (see
    :func:`to_rfc7946_frame`). An existing file is replaced.

    Raises:
        GeoreferenceError: ``gdf`` has no CRS.
        OutputError: writing fails (the previous file, if any, is left untouched).
    """
    target = Path(path)
    _check_frame(target, target.stem, gdf)
    lonlat = to_rfc7946_frame(gdf, densify_m)
    with atomic_write(target) as tmp:
        try:
            pyogrio.write_dataframe(
                lonlat,
                tmp,
                driver="GeoJSON",
                layer=target.stem,
                layer_options={"RFC7946": "YES", "COORDINATE_PRECISION": 7},
            )
        except Exception as exc:
            raise OutputError(f"cannot write GeoJSON {str(target)!r}: {exc}") from exc
    logger.info("wrote GeoJSON %s (%d features)", target, len(gdf))
    return target


def write_heatmap(
    path: str | os.PathLike[str],
    heatmap: np.ndarray,
    transform: Affine,
    crs: str | CRS | rasterio.crs.CRS,
) -> Path:
    """Write a (h, w) heatmap as a single-band float32 GeoTIFF, atomically.

    Args:
        path: the ``.tif`` file (replaced if it exists).
        heatmap: array of shape (h, w) (rows, cols), cast to float32. NaN marks "no value";
            the nodata tag is NOT set, so NaN is the only no-value marker.
        transform: rasterio ``Affine`` mapping pixel EDGES (col, row) to map x/y in ``crs``
            (e.g. the reference window's transform scaled to the heatmap's size).
        crs: anything ``rasterio.crs.CRS.from_user_input`` accepts (``"EPSG:32631"``, a
            pyproj ``CRS``, WKT).

    The file is DEFLATE-compressed (floating-point predictor) and tiled 256 x 256 when both
    sides are at least 256 pixels, striped otherwise.

    Raises:
        ValueError: ``heatmap`` is not two-dimensional or is empty.
        GeoreferenceError: ``crs`` or ``transform`` is missing or invalid.
        OutputError: writing fails (the previous file, if any, is left untouched).
    """
    target = Path(path)
    arr = np.asarray(heatmap, dtype=np.float32)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"heatmap for {str(target)!r} must be a non-empty (h, w) array, "
                         f"got shape {arr.shape}")
    if not isinstance(transform, Affine) or transform.is_degenerate:
        raise GeoreferenceError(
            f"cannot write {str(target)!r}: transform must be a non-degenerate rasterio Affine, "
            f"got {transform!r}"
        )
    if crs is None:
        raise GeoreferenceError(f"cannot write {str(target)!r}: no CRS given")
    try:
        rio_crs = rasterio.crs.CRS.from_user_input(crs.to_wkt() if isinstance(crs, CRS) else crs)
    except Exception as exc:
        raise GeoreferenceError(f"cannot write {str(target)!r}: invalid CRS {crs!r}") from exc
    h, w = arr.shape
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": h,
        "width": w,
        "count": 1,
        "dtype": "float32",
        "crs": rio_crs,
        "transform": transform,
        "compress": "deflate",
        "predictor": 3,
    }
    if h >= 256 and w >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with atomic_write(target) as tmp:
        try:
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(arr, 1)
        except Exception as exc:
            raise OutputError(f"cannot write heatmap {str(target)!r}: {exc}") from exc
    logger.info("wrote heatmap %s (%d x %d)", target, w, h)
    return target
