"""GIS writers: GeoPackage (in place, transactional), GeoJSON and heatmap GeoTIFF (atomic).

Terms and conventions used in this module:

- *Atomic write*: the output is written to a temporary file in the SAME folder as the target,
  flushed with ``fsync`` and moved over the target with :func:`os.replace`. A reader therefore
  sees either the old file or the complete new one, never a half-written one; on any error the
  original file is left byte-identical and the temporary file is removed. GeoJSON, heatmaps and
  maps are written this way.
- *In-place GeoPackage write*: an existing GeoPackage is never replaced (a GIS desktop or
  another writer may have it open); the new features are added inside one SQLite transaction
  that waits for the write lock (see :mod:`geomogeo.geo.gpkg`). Several processes may append
  to one file at once; a write killed half-way leaves the file as it was before that write.
- *Temporary files* are named ``.<stem>.<host>-<pid>-<random>.tmp<suffix>``. A write first
  deletes the temporary files in the target's folder whose process (same host) is gone: the
  leftovers of a killed write.
- *Symbolic links*: a target that is a symbolic link is written through (the file it points to
  is updated or created); the link stays a link.
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
import errno
import io
import logging
import os
import re
import secrets
import socket
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import rasterio.crs
import shapely
from affine import Affine
from pyproj import CRS

from geomogeo.errors import GeoreferenceError, OutputError
from geomogeo.geo import gpkg

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

_GPKG_USER_VERSION_13 = 10300

#: Default densification length (metres) applied to projected geometries before reprojecting
#: them to lon/lat.
DEFAULT_DENSIFY_M = 100.0

_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:32] or "host"
_TEMP_RE = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[0-9a-f]{8}\.tmp")
_SIDECARS = ("-journal", "-wal", "-shm", ".aux.xml")


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
    for p in (tmp, *(tmp.with_name(tmp.name + s) for s in _SIDECARS)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _temp_path(target: Path) -> Path:
    """A fresh temporary name next to ``target``, tagged with this host and process id."""
    tag = f"{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"
    return target.with_name(f".{target.stem}.{tag}.tmp{target.suffix}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists but belongs to another user
        return True
    return True


def _sweep_temps(folder: Path) -> None:
    """Delete temporary files (and their SQLite side-files) left in ``folder`` by dead writers.

    Only files named by :func:`_temp_path` on this host whose process no longer exists are
    removed; a concurrent writer's temporary file is left alone.
    """
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            m = _TEMP_RE.match(entry.name)
            if m and m["host"] == _HOST and not _process_alive(int(m["pid"])):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    logger.info("removed %s, left by a killed write", entry.path)


def _real_target(path: str | os.PathLike[str]) -> Path:
    """``path`` with symbolic links resolved (so writes go through them); its folder must exist."""
    real = Path(os.path.realpath(path))
    if not real.parent.is_dir():
        raise OutputError(
            f"cannot write {str(path)!r}: folder {str(real.parent)!r} does not exist; "
            "create it first"
        )
    if real.is_dir():
        raise OutputError(f"cannot write {str(path)!r}: it is a folder")
    return real


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path`` atomically.

    The temporary file lives in the same folder (so :func:`os.replace` is a rename on one file
    system) and keeps the target's suffix (so drivers that look at the extension still work).
    The caller writes the complete new content to the yielded path. On normal exit the file is
    fsynced and renamed over ``path``; if the block raises, the temporary file is removed, the
    original ``path`` is left untouched and the exception propagates. A symbolic link is
    written through (the file it points to is replaced; the link stays). Temporary files of
    killed writes in the folder are deleted first.

    Raises:
        OutputError: the target's folder does not exist, nothing was written to the temporary
            path, or the final rename fails.
    """
    target = Path(path)
    real = _real_target(target)
    _sweep_temps(real.parent)
    tmp = _temp_path(real)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"cannot write {str(target)!r}: the writer produced no file")
        _fsync_file(tmp)
        try:
            os.replace(tmp, real)
        except OSError as exc:
            raise OutputError(f"cannot move the new file over {str(target)!r}: {exc}") from exc
        _fsync_dir(real.parent)
    except BaseException:
        _remove_temp(tmp)
        raise
    # A successful write may still leave SQLite side-files of the temp name behind.
    _remove_temp(tmp)


def is_geopackage(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an SQLite database that contains a ``gpkg_contents`` table.

    The file is opened read-only through SQLite only (never with a plain ``open()``, which would
    drop the SQLite locks another thread of this process may hold on it). A missing file
    returns False.
    """
    p = Path(os.path.realpath(path))
    if not p.is_file():
        return False
    try:
        con = sqlite3.connect(f"file:{quote(str(p))}?mode=ro", uri=True)
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


def _needs_promotion(path: Path, layer: gpkg.LayerInfo, gdf: gpd.GeoDataFrame) -> bool:
    """Whether ``gdf``'s single geometries must become the layer's multi type to be appended.

    Raises:
        OutputError: the frame holds geometry kinds the layer cannot take.
    """
    layer_kind = gpkg.ogr_type_name(layer.geometry_type)
    if layer_kind == "Geometry":
        return False
    new_kinds = {_geom_kind(t) for t in gdf.geom_type.dropna().unique()}
    allowed = {layer_kind}
    if layer_kind.startswith("Multi"):
        allowed.add(layer_kind[len("Multi"):])
    bad = sorted(new_kinds - allowed)
    if bad:
        raise OutputError(
            f"cannot append to layer {layer.table!r} of {str(path)!r}: it holds {layer_kind} "
            f"geometries but the new features contain {bad}"
        )
    return layer_kind.startswith("Multi") and bool(new_kinds - {layer_kind})


def _stage(target: Path, name: str, gdf: gpd.GeoDataFrame, promote: bool) -> bytes:
    """One layer written by GDAL as a GeoPackage 1.3 in memory; returns the file's bytes."""
    buf = io.BytesIO()
    try:
        # promote_to_multi=None: pyogrio's default, mixed single/multi frames become multi.
        pyogrio.write_dataframe(gdf, buf, layer=name, driver="GPKG",
                                promote_to_multi=True if promote else None,
                                dataset_options={"VERSION": GEOPACKAGE_VERSION})
    except Exception as exc:
        raise OutputError(f"cannot write layer {name!r} to {str(target)!r}: {exc}") from exc
    return buf.getvalue()


def _promotions(target: Path, existing: Mapping[str, gpkg.LayerInfo],
                layers: Mapping[str, gpd.GeoDataFrame]) -> set[str]:
    """Names of the frames whose geometries must be promoted to their layer's multi type."""
    return {name for name, gdf in layers.items()
            if (info := existing.get(name.lower())) is not None
            and _needs_promotion(target, info, gdf)}


def _publish_new(stage: Path, real: Path) -> bool:
    """Give the complete ``stage`` file the name ``real`` unless that name exists meanwhile.

    A hard link never replaces an existing file, so of two processes creating the same file
    one wins and the other sees False (and appends instead). On file systems without hard
    links (FAT, some network shares) the file is renamed if the name is still free, which
    leaves a short race between two creators there.
    """
    try:
        os.link(stage, real)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                             errno.EMLINK, errno.ENOSYS):
            raise OutputError(f"cannot create {str(real)!r}: {exc}") from exc
        if real.exists():
            return False
        os.replace(stage, real)
    _fsync_dir(real.parent)
    return True


def _create(target: Path, real: Path, staged: Mapping[str, bytes], *, replace: bool) -> bool:
    """Build the new GeoPackage in a temporary file, then publish it as ``real``.

    With ``replace`` the temporary file is renamed over ``real`` (used only when ``real`` is not
    a GeoPackage, so nobody can be reading it as one). Returns False when another process
    created ``real`` first.
    """
    tmp = _temp_path(real)
    try:
        first, *rest = staged.values()
        try:
            tmp.write_bytes(first)
        except OSError as exc:
            raise OutputError(f"cannot write {str(target)!r}: {exc}") from exc
        if rest:
            with gpkg.write_transaction(tmp) as tx:
                for data in rest:
                    tx.merge(data)
        _fsync_file(tmp)
        if not replace:
            return _publish_new(tmp, real)
        try:
            os.replace(tmp, real)
        except OSError as exc:
            raise OutputError(f"cannot move the new file over {str(target)!r}: {exc}") from exc
        _fsync_dir(real.parent)
        return True
    finally:
        _remove_temp(tmp)


def write_geopackage(
    path: str | os.PathLike[str],
    layers: Mapping[str, gpd.GeoDataFrame],
    append: bool = True,
    *,
    busy_timeout_s: float = gpkg.DEFAULT_BUSY_TIMEOUT_S,
) -> Path:
    """Write GeoDataFrames as layers of a GeoPackage, each in its native CRS, safely.

    Args:
        path: the ``.gpkg`` file (a symbolic link is written through).
        layers: ``{layer name: GeoDataFrame}``; each frame must have a CRS. Datetime columns
            are stored as GeoPackage DateTime, integers as Integer, floats as Real; geometry
            types are taken from the data (a frame of Polygons gives a ``Polygon`` layer).
        append: if True and ``path`` exists, keep all its layers and features, append the new
            features to layers that already exist (same CRS, geometry type, no new columns and
            storable column types) and add the other layers. If False, the file afterwards
            holds only ``layers`` (its previous feature layers are deleted in the same
            transaction).
        busy_timeout_s: how long to wait, in seconds, while another connection (another
            process, a GIS desktop) holds the file's write lock.

    The frames are first encoded by GDAL in memory, without any lock. A new file is
    GeoPackage 1.3 (see :data:`GEOPACKAGE_VERSION`): it is built in a temporary file and
    published under ``path`` only when complete; if another process created ``path``
    meanwhile, the features are appended to that file instead. An existing file is written IN
    PLACE, in one SQLite transaction that holds the write lock only while the rows are copied,
    so concurrent writers are serialised, readers keep a valid view (WAL mode included) and a
    failure or a killed process leaves the file as it was before the write. The file keeps its
    GeoPackage version and journal mode.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputError: ``path`` exists but is not a GeoPackage (unless ``append`` is False, which
            replaces such a file), a frame cannot be appended to the existing layer, the file
            stays locked longer than ``busy_timeout_s``, or writing fails. Nothing is written
            in these cases.
        GeoreferenceError: a frame has no CRS.
    """
    target = Path(path)
    if not layers:
        raise OutputError(f"cannot write {str(target)!r}: no layers given")
    for name, gdf in layers.items():
        _check_frame(target, name, gdf)
    real = _real_target(target)
    _sweep_temps(real.parent)

    exists = real.exists()  # once: another writer may create the file from now on
    if not exists or (not append and not is_geopackage(real)):
        staged = {name: _stage(target, name, gdf, False) for name, gdf in layers.items()}
        if _create(target, real, staged, replace=exists):
            logger.info("wrote GeoPackage %s (layers: %s)", target, ", ".join(layers))
            return target
        logger.debug("%s was created by another writer meanwhile; appending to it", target)

    # Encode without the lock, from a snapshot of the layers; checked again under the lock.
    promote = _promotions(target, gpkg.read_layers(real), layers) if append else set()
    staged = {name: _stage(target, name, gdf, name in promote) for name, gdf in layers.items()}
    added: dict[str, int] = {}
    with gpkg.write_transaction(real, busy_timeout_s=busy_timeout_s) as tx:
        if not append:
            tx.clear()
        elif tx.user_version > _GPKG_USER_VERSION_13:
            logger.warning("%s is a GeoPackage newer than %s; GDAL < 3.7 may warn when "
                           "opening it", target, GEOPACKAGE_VERSION)
        now = _promotions(target, tx.layers, layers)
        for name in now ^ promote:  # the file changed since the snapshot: encode again
            staged[name] = _stage(target, name, layers[name], name in now)
        for data in staged.values():
            added.update(tx.merge(data))
    logger.info("wrote GeoPackage %s in place (features added: %s)", target,
                ", ".join(f"{k}: {v}" for k, v in added.items()))
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
