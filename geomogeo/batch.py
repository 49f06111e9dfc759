"""Batch localization: many photos, one reference, one GeoPackage, on Dask or in-process.

Input (:func:`read_clicks`):

- a *clicks table*, CSV (header row) or JSON Lines (``.jsonl``/``.ndjson``, one object per
  line), one row per click: ``photo`` (path relative to the table's folder, or absolute), ``x``,
  ``y`` (continuous photo pixels, origin at the top-left corner of the top-left pixel, EXIF
  orientation applied), optional ``target_id``, ``heading`` (degrees clockwise from true north),
  ``lon`` and ``lat`` (the window centre, EPSG:4326; default: the photo's EXIF GPS). Every other
  column is kept as an attribute of the target. The rows of one photo form one localization (all
  its clicks in one pass), in table order; ``heading``, ``lon`` and ``lat`` must agree between them.
- or a *folder of photos* (``.jpg``, ``.jpeg``, ``.png``, ``.tif``, ``.tiff``, not recursive),
  each with a *sidecar* ``PHOTO.clicks.csv`` next to it (e.g. ``IMG_0001.JPG.clicks.csv``): the
  same CSV without the ``photo`` column. Photos without a sidecar are skipped.

Reference (:func:`open_reference`): one raster or GDAL VRT (opened once: one stretch for all
photos), or a folder of tiles (:mod:`geomogeo.geo.mosaic`: a tile index built once, each photo's
window read from a VRT of the tiles around it, so windows across seams are whole).

Output: one GeoPackage (``*.gpkg``) with layers ``targets`` (polygons in the reference CRS, the
columns of :meth:`geomogeo.localize.LocalizationResult.to_geodataframe`, ``target_id`` when the
table has one, the table's extra columns and ``photo_sha256``), ``photo`` (photo positions, when
known) and ``errors`` (``photo``, ``photo_sha256``, ``stage``, ``message``, ``source``: the
table rows, and ``time``; no geometry). ``photo`` is the photo's path as written in the table
(relative to it).

Resuming: a photo is done when the output already holds it (``targets`` or ``errors``) under the
same path and sha256; a rerun skips it, so nothing is written twice. A photo whose file changed is
localized again (the rows of its old version stay). To retry photos that failed, delete their rows
of ``errors``, e.g. ``ogrinfo OUT.gpkg -sql "DELETE FROM errors"``.

Execution: tasks run where the model is: ``workers=0`` in this process; otherwise on Dask
(``dask.distributed``): a ``LocalCluster`` of worker processes with one thread each (one torch
thread each) by default, or an existing cluster (``scheduler="tcp://HOST:PORT"``, whose workers
must import geomogeo and see the photos and the reference at the same paths). The localizer and
the opened reference are installed once per worker by a worker plugin (not shipped with each
task); at most ``2 x`` the cluster's threads tasks are in flight, so neither side accumulates
photos.

Single writer: results come back to this (the client) process and only it appends them to the
GeoPackage, as they complete, grouped into one write about every second (:data:`FLUSH_SECONDS`;
sooner when :data:`FLUSH_RESULTS` results wait). SQLite allows one writer
at a time anyway; one writer means no lock contention between workers, no output path that
workers must share, and a resume state (which photos are in the file) that cannot race. A kill
loses at most the results not yet written, which the next run redoes.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from distributed.diagnostics.plugin import WorkerPlugin
from tqdm.auto import tqdm

from geomogeo.errors import (
    ClickError,
    GeomogeoError,
    GeoreferenceError,
    LocationError,
    OutputError,
    PhotoError,
    RasterError,
)
from geomogeo.geo import export, mosaic, photo, raster

if TYPE_CHECKING:
    import geopandas as gpd
    from distributed import Client, LocalCluster

    from geomogeo.localize import Localizer

__all__ = [
    "SIDECAR_SUFFIX",
    "BatchSummary",
    "ClickTable",
    "PhotoJob",
    "Reference",
    "default_workers",
    "local_cluster",
    "mosaic_cache_dir",
    "open_reference",
    "read_clicks",
    "run_batch",
]

log = logging.getLogger(__name__)

#: Suffix of a photo's sidecar clicks file: ``IMG_0001.JPG`` -> ``IMG_0001.JPG.clicks.csv``.
SIDECAR_SUFFIX = ".clicks.csv"
#: Photo file suffixes of a photo folder (case-insensitive).
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
#: Columns of a clicks table with a meaning; every other column is an attribute.
RESERVED_COLUMNS = ("photo", "x", "y", "target_id", "heading", "lon", "lat")
#: Column names a GeoPackage layer keeps for itself (compared lower-case).
_GPKG_RESERVED = ("fid", "geom", "geometry")
#: Memory one local worker process needs (torch, the model, a window, a photo), bytes.
WORKER_MEMORY = 1 << 30
#: GDAL block cache of each local worker, MB (bounds a worker's memory whatever the tiles read).
WORKER_GDAL_CACHEMAX_MB = 128
#: Environment of a local worker process: its native thread pools (OpenMP, OpenBLAS, MKL,
#: OpenCV) get one thread, set before they start; the worker's torch and OpenCV pools are set
#: again by :class:`_BatchPlugin` (for workers of a cluster started elsewhere).
_ONE_THREAD_ENV = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")}
#: The GeoPackage is written at most this often, seconds (and when this many results wait).
FLUSH_SECONDS = 1.0
FLUSH_RESULTS = 64
#: Layers of the output.
TARGETS, PHOTOS, ERRORS = "targets", "photo", "errors"


# ---- input -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhotoJob:
    """One photo to localize: all its clicks.

    Attributes:
        photo: the photo's path as written in the table (normalised), the output's key.
        path: the photo file (absolute).
        clicks: ``(x, y)`` continuous photo pixels (EXIF orientation applied), table order.
        target_ids: per click, the table's ``target_id`` (None without that column).
        heading: degrees clockwise from true north, or None (then EXIF, else none).
        center: where the photo was taken (the window centre), ``(lon, lat)`` EPSG:4326, or
            None (then EXIF GPS, else search).
        attributes: per click, the extra columns' values.
        source: where it was read, for messages (``clicks.csv:2-4``).
    """

    photo: str
    path: Path
    clicks: tuple[tuple[float, float], ...]
    target_ids: tuple[Any, ...] | None
    heading: float | None
    center: tuple[float, float] | None
    attributes: tuple[dict[str, Any], ...]
    source: str


@dataclass(frozen=True)
class ClickTable:
    """The photos of a clicks table (or photo folder) and the types of its extra columns.

    Attributes:
        path: the table file or photo folder.
        jobs: one per photo, in order of first appearance.
        columns: extra column name -> ``"bool"``, ``"int"``, ``"float"`` or ``"str"`` (the type
            all its non-empty values share).
        has_target_id: whether the table has a ``target_id`` column.
    """

    path: Path
    jobs: tuple[PhotoJob, ...]
    columns: dict[str, str]
    has_target_id: bool


@dataclass
class _Row:
    where: str
    photo: str
    x: float
    y: float
    target_id: Any
    heading: float | None
    center: tuple[float, float] | None
    extra: dict[str, Any]


def _number(value: Any, name: str, where: str, *, required: bool) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ClickError(f"{where}: {name} is missing")
        return None
    if isinstance(value, bool):
        raise ClickError(f"{where}: {name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ClickError(f"{where}: {name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ClickError(f"{where}: {name} must be finite, got {value!r}")
    return v


def _parse_row(rec: dict[str, Any], where: str, photo_name: str | None) -> _Row:
    if photo_name is None:
        raw = rec.get("photo")
        if not isinstance(raw, str) or not raw.strip():
            raise ClickError(f"{where}: photo is missing (a path relative to the table)")
        photo_name = os.path.normpath(raw.strip())
    x = _number(rec.get("x"), "x", where, required=True)
    y = _number(rec.get("y"), "y", where, required=True)
    heading = _number(rec.get("heading"), "heading", where, required=False)
    lon = _number(rec.get("lon"), "lon", where, required=False)
    lat = _number(rec.get("lat"), "lat", where, required=False)
    if (lon is None) != (lat is None):
        raise ClickError(f"{where}: give both lon and lat (EPSG:4326 degrees) or neither")
    if lon is not None and lat is not None and not (abs(lon) <= 180 and abs(lat) <= 90):
        raise ClickError(f"{where}: lon/lat ({lon}, {lat}) out of range (degrees, EPSG:4326)")
    target_id = rec.get("target_id")
    if isinstance(target_id, str):
        target_id = target_id.strip() or None
    extra = {k: v for k, v in rec.items() if k not in RESERVED_COLUMNS}
    for k, v in extra.items():
        if isinstance(v, (dict, list)):
            raise ClickError(f"{where}: column {k!r} holds {type(v).__name__}; attributes must "
                             "be numbers, strings, booleans or null")
    assert x is not None and y is not None
    return _Row(where, photo_name, x, y, target_id, heading,
                None if lon is None or lat is None else (lon, lat), extra)


def _csv_records(path: Path, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise ClickError(f"{path}: empty file; expected a header row")
    names = [n.strip() if n else "" for n in reader.fieldnames]
    if "" in names or len(set(names)) != len(names):
        raise ClickError(f"{path}:1: the header needs distinct, non-empty column names, got "
                         f"{reader.fieldnames}")
    reader.fieldnames = names
    for rec in reader:
        where = f"{path}:{reader.line_num}"
        if None in rec:
            raise ClickError(f"{where}: more cells than the {len(names)} header columns")
        if all(not (v or "").strip() for v in rec.values()):
            continue
        yield where, {k: (v.strip() if isinstance(v, str) else v) for k, v in rec.items()}


def _jsonl_records(path: Path, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise ClickError(f"{where}: not a JSON object ({exc})") from None
        if not isinstance(rec, dict):
            raise ClickError(f"{where}: expected a JSON object per line, got "
                             f"{type(rec).__name__}")
        yield where, rec


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClickError(f"{path}: cannot read the clicks file ({exc})") from None


def _column_kind(values: list[Any]) -> str:
    """The type shared by the non-empty values of a column (strings that all parse as
    numbers, as in CSV, count as numbers)."""
    vals = [v for v in values if v is not None and not (isinstance(v, str) and not v.strip())]
    if vals and all(isinstance(v, bool) for v in vals):
        return "bool"

    def parses(v: Any, kind: type) -> bool:
        if isinstance(v, bool):
            return False
        try:
            kind(v)
        except (TypeError, ValueError):
            return False
        return True

    if vals and all(isinstance(v, int) or (isinstance(v, str) and parses(v, int))
                    for v in vals):
        return "int"
    if vals and all(parses(v, float) for v in vals):
        return "float"
    return "str"


def _convert(value: Any, kind: str) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return float("nan") if kind == "float" else None
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "str" and not isinstance(value, str):
        return json.dumps(value)
    return value


def _group(path: Path, base: Path, rows: list[_Row]) -> ClickTable:
    if not rows:
        raise ClickError(f"{path}: no clicks found")
    names = sorted({k for r in rows for k in r.extra})
    bad = [n for n in names if n.lower() in _GPKG_RESERVED]
    if bad:
        raise ClickError(f"{path}: column(s) {bad} are reserved by the GeoPackage; rename them")
    kinds = {k: _column_kind([r.extra.get(k) for r in rows]) for k in names}
    has_tid = any(r.target_id is not None for r in rows)
    if has_tid:
        tid_kind = _column_kind([r.target_id for r in rows])
        for r in rows:
            r.target_id = _convert(r.target_id, "str" if tid_kind == "bool" else tid_kind)
    by_photo: dict[str, list[_Row]] = {}
    for r in rows:
        by_photo.setdefault(r.photo, []).append(r)
    jobs = []
    for name, group in by_photo.items():
        first = group[0]
        for r in group[1:]:
            for what in ("heading", "center"):
                if getattr(r, what) != getattr(first, what):
                    col = "heading" if what == "heading" else "lon/lat"
                    raise ClickError(f"{r.where}: {col} {getattr(r, what)} of photo {name!r} "
                                     f"differs from {getattr(first, what)} at {first.where}")
        if has_tid:
            seen: dict[Any, str] = {}
            for r in group:
                if r.target_id is not None and r.target_id in seen:
                    raise ClickError(f"{r.where}: target_id {r.target_id!r} of photo {name!r} "
                                     f"is already used at {seen[r.target_id]}")
                seen[r.target_id] = r.where
        where_file = first.where.rsplit(":", 1)[0]  # the table, or the photo's sidecar
        lines = [r.where.rsplit(":", 1)[1] for r in group]
        jobs.append(PhotoJob(
            photo=name,
            path=(base / name).resolve(),
            clicks=tuple((r.x, r.y) for r in group),
            target_ids=tuple(r.target_id for r in group) if has_tid else None,
            heading=first.heading,
            center=first.center,
            attributes=tuple({k: _convert(r.extra.get(k), kinds[k]) for k in names}
                             for r in group),
            source=f"{where_file}:{lines[0]}" + (f"-{lines[-1]}" if len(lines) > 1 else ""),
        ))
    return ClickTable(path=path, jobs=tuple(jobs), columns=kinds, has_target_id=has_tid)


def read_clicks(path: str | os.PathLike[str]) -> ClickTable:
    """Read a clicks table (CSV or JSON Lines) or a folder of photos with sidecar clicks files
    (format in the module docstring), and group the clicks by photo.

    Raises:
        ClickError: unreadable file, missing column or value, non-numeric or non-finite
            coordinate, disagreeing heading/centre within a photo, duplicate ``target_id``
            within a photo, a sidecar without its photo; the message names the file and line.
    """
    p = Path(path)
    if p.is_dir():
        return _read_photo_folder(p)
    if not p.is_file():
        raise ClickError(f"{p}: clicks table not found")
    text = _read_text(p)
    jsonl = p.suffix.lower() in (".jsonl", ".ndjson")
    records = _jsonl_records(p, text) if jsonl else _csv_records(p, text)
    rows = [_parse_row(rec, where, None) for where, rec in records]
    return _group(p, p.parent, rows)


def _read_photo_folder(folder: Path) -> ClickTable:
    rows: list[_Row] = []
    photos = {f.name for f in folder.iterdir()
              if f.is_file() and f.suffix.lower() in PHOTO_SUFFIXES}
    sidecars = sorted(f for f in folder.iterdir() if f.name.endswith(SIDECAR_SUFFIX))
    for sc in sidecars:
        name = sc.name[: -len(SIDECAR_SUFFIX)]
        if name not in photos:
            raise ClickError(f"{sc}: sidecar clicks file without its photo {name!r}")
        for where, rec in _csv_records(sc, _read_text(sc)):
            if "photo" in rec:
                raise ClickError(f"{where}: a sidecar has no photo column (it is the file "
                                 f"{name!r})")
            rows.append(_parse_row(rec, where, name))
    missing = len(photos) - len(sidecars)
    if missing:
        log.warning("%s: %d photo(s) without a %s sidecar skipped", folder, missing,
                    SIDECAR_SUFFIX)
    if not rows:
        raise ClickError(f"{folder}: no photo with clicks (expected PHOTO{SIDECAR_SUFFIX} "
                         "sidecar files next to the photos)")
    return _group(folder, folder, rows)


# ---- reference ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    """The reference of a batch, opened once and shipped once to each worker.

    Attributes:
        path: the raster/VRT file or the tile folder, as given.
        source: the opened raster (for a folder: the whole mosaic, with its stretch).
        mosaic: the tile index of a folder, else None.
    """

    path: Path
    source: raster.RasterSource
    mosaic: mosaic.Mosaic | None = None

    @property
    def crs(self) -> Any:
        """CRS of the output polygons (the raster's, or the mosaic's)."""
        return self.source.crs

    @contextlib.contextmanager
    def source_for(self, job: PhotoJob, half_side_m: float) -> Iterator[raster.RasterSource]:
        """The source to localize ``job`` on: the raster; for a mosaic, the tiles within
        ``half_side_m`` metres of the photo's position (table lon/lat, else EXIF GPS), or the
        whole mosaic when the position is unknown (the localizer then searches it)."""
        if self.mosaic is None:
            yield self.source
            return
        center = job.center
        if center is None:
            gps = photo.read_location(job.path)
            center = None if gps is None else (gps.lon, gps.lat)
        if center is None:
            yield self.source
            return
        with self.mosaic.window_source(center[0], center[1], half_side_m) as src:
            yield src


def mosaic_cache_dir(out: str | os.PathLike[str]) -> Path:
    """Where a batch writing ``out`` keeps the VRTs of a tile folder: ``OUT_STEM.mosaic/``
    next to the output."""
    o = Path(out)
    return o.with_name(f"{o.stem}.mosaic")


def open_reference(
    path: str | os.PathLike[str], cache_dir: str | os.PathLike[str], bands: Any = None
) -> Reference:
    """Open a raster/VRT file, or index a folder of tiles (VRTs written in ``cache_dir``).

    Raises:
        RasterError, GeoreferenceError: as :func:`geomogeo.geo.raster.open_raster` and
            :func:`geomogeo.geo.mosaic.open_mosaic`.
    """
    p = Path(path)
    if p.is_dir():
        m = mosaic.open_mosaic(p, cache_dir, bands=bands)
        return Reference(path=p, source=m.source, mosaic=m)
    return Reference(path=p, source=raster.open_raster(p, bands=bands))


# ---- one photo (runs on a worker) ---------------------------------------------------------
@dataclass(frozen=True)
class _Outcome:
    job: PhotoJob
    sha256: str
    targets: gpd.GeoDataFrame | None = None
    photo: gpd.GeoDataFrame | None = None
    stage: str = ""
    message: str = ""


#: Per process: batch key -> (localizer, reference), installed in-process or by the plugin.
_INSTALLED: dict[str, tuple[Localizer, Reference]] = {}


def _sha256(path: Path) -> str:
    """The file's hex sha256, or "" when it cannot be read. (Not
    :func:`geomogeo.engine.checkpoint.sha256_file`: that module imports torch, which resuming
    a finished batch does not need.)"""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return ""
    return h.hexdigest()


def _stage(exc: BaseException) -> str:
    if isinstance(exc, PhotoError):
        return "photo"
    if isinstance(exc, ClickError):
        return "clicks"
    if isinstance(exc, (LocationError, RasterError, GeoreferenceError)):
        return "reference"
    return "localize"


def _localize_job(job: PhotoJob, key: str) -> _Outcome:
    """Localize one photo with the localizer and reference installed under ``key``; every
    failure is returned as an outcome (stage, message), never raised."""
    localizer, reference = _INSTALLED[key]
    sha = _sha256(job.path)
    try:
        with reference.source_for(job, localizer.spec.ground_extent) as src:
            res = localizer.localize(job.path, src, job.clicks, job.center,  # type: ignore[arg-type]
                                     heading=job.heading, quiet=True, heatmaps=False)
        return _Outcome(job, sha, targets=res.to_geodataframe(),
                        photo=res.photo_geodataframe())
    except GeomogeoError as exc:
        return _Outcome(job, sha, stage=_stage(exc), message=str(exc))
    except Exception as exc:  # a bug or an unforeseen input: record it, the batch goes on
        log.exception("%s: localization failed", job.path)
        return _Outcome(job, sha, stage="localize", message=f"{type(exc).__name__}: {exc}")


def _set_threads(n: int) -> None:
    """One thread per task thread, in every pool a localization uses: torch's intra-op pool
    when torch is in use (an ONNX predictor never imports it) and OpenCV's (the registration's
    features and homography), which otherwise takes every core of the machine, so that one
    worker would borrow the cores of the others."""
    import cv2

    cv2.setNumThreads(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


class _BatchPlugin(WorkerPlugin):
    """Installs a batch's localizer and reference once per Dask worker (and on workers that
    join later), under the batch's key."""

    def __init__(self, key: str, localizer: Localizer, reference: Reference) -> None:
        self.name = key
        self.payload = (localizer, reference)

    def setup(self, worker: Any) -> None:
        _INSTALLED[self.name] = self.payload
        _set_threads(1)

    def teardown(self, worker: Any) -> None:
        _INSTALLED.pop(self.name, None)


# ---- output ------------------------------------------------------------------------------
def _done_keys(out: Path) -> dict[str, dict[str, set[str]]]:
    """Per layer (targets, errors): photo -> sha256s already in ``out``."""
    import pyogrio

    found: dict[str, dict[str, set[str]]] = {TARGETS: {}, ERRORS: {}}
    if not out.exists():
        return found
    if not export.is_geopackage(out):
        raise OutputError(f"{out}: exists but is not a GeoPackage; choose another output file")
    layers = export.list_layers(out)
    for layer, done in found.items():
        if layer not in layers:
            continue
        info = pyogrio.read_info(out, layer=layer)
        if not {"photo", "photo_sha256"} <= set(map(str, info["fields"])):
            raise OutputError(f"{out}: layer {layer!r} was not written by geomogeo batch (no "
                              "photo/photo_sha256 columns); choose another output file")
        df = pyogrio.read_dataframe(out, layer=layer, columns=["photo", "photo_sha256"],
                                    read_geometry=False)
        for name, sha in zip(df["photo"], df["photo_sha256"], strict=True):
            done.setdefault(str(name), set()).add("" if sha is None else str(sha))
    return found


def _check_output(out: Path, crs: Any) -> None:
    """Fail before any work when ``out`` (checked to be a GeoPackage by :func:`_done_keys`)
    cannot take this batch's layers."""
    import pyogrio
    from pyproj import CRS

    if not out.exists():
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the folder of {out}: {exc}") from exc
        return
    layers = export.list_layers(out)
    for layer in (TARGETS, PHOTOS, ERRORS):
        if layer in layers:
            have = pyogrio.read_info(out, layer=layer)["crs"]
            if not have or not CRS.from_user_input(have).equals(crs):
                raise OutputError(f"{out}: layer {layer!r} is in {have!r}, not in the "
                                  f"reference's CRS {crs.name!r}; write to another file")


class _Writer:
    """Buffers outcomes and appends them to the GeoPackage (the only writer)."""

    def __init__(self, out: Path, table: ClickTable, reference: Reference) -> None:
        self.out, self.table, self.reference = out, table, reference
        self.pending: list[_Outcome] = []
        self.last = time.monotonic()
        self.targets = 0

    def add(self, outcome: _Outcome) -> None:
        self.pending.append(outcome)
        if (len(self.pending) >= FLUSH_RESULTS
                or time.monotonic() - self.last >= FLUSH_SECONDS):
            self.flush()

    def _targets_frame(self, o: _Outcome) -> gpd.GeoDataFrame:
        assert o.targets is not None
        gdf = o.targets.copy()
        gdf["photo"] = o.job.photo
        gdf["raster"] = str(self.reference.path)
        new: dict[str, Any] = {}
        if self.table.has_target_id:
            new["target_id"] = list(o.job.target_ids or ())
        for name in self.table.columns:
            new[name] = [a[name] for a in o.job.attributes]
        new["photo_sha256"] = o.sha256
        clash = sorted(n for n in new if n.lower() in {str(c).lower() for c in gdf.columns})
        if clash:
            raise ClickError(f"{self.table.path}: column(s) {clash} clash with output columns "
                             f"of layer {TARGETS!r}; rename them")
        for name, values in new.items():
            gdf[name] = values
        return gdf

    def flush(self) -> None:
        import geopandas as gpd

        self.last = time.monotonic()
        if not self.pending:
            return
        targets, photos, errors = [], [], []
        for o in self.pending:
            if o.stage:
                errors.append({"photo": o.job.photo, "photo_sha256": o.sha256,
                               "stage": o.stage, "message": o.message, "source": o.job.source,
                               "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
                continue
            targets.append(self._targets_frame(o))
            if o.photo is not None and len(o.photo):
                p = o.photo.copy()
                p["photo"] = o.job.photo
                p["photo_sha256"] = o.sha256
                photos.append(p)
        crs = self.reference.crs
        layers: dict[str, gpd.GeoDataFrame] = {}
        if targets:
            layers[TARGETS] = gpd.GeoDataFrame(pd.concat(targets, ignore_index=True), crs=crs)
        if photos:
            layers[PHOTOS] = gpd.GeoDataFrame(pd.concat(photos, ignore_index=True), crs=crs)
        if errors:
            layers[ERRORS] = gpd.GeoDataFrame(errors, geometry=[None] * len(errors), crs=crs)
        export.write_geopackage(self.out, layers, append=True)
        self.targets += len(layers[TARGETS]) if TARGETS in layers else 0
        self.pending = []


# ---- the batch ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchSummary:
    """What a batch did.

    Attributes:
        out: the GeoPackage.
        photos: photos in the input.
        skipped: photos already in the output (same path and sha256), not redone.
        succeeded, failed: photos localized / recorded in ``errors`` by this run.
        targets: target rows this run wrote.
        seconds: wall time of the run.
        failed_before: skipped photos that an earlier run recorded in ``errors``.
        failures: ``(photo, stage, message)`` of this run's failures.
    """

    out: Path
    photos: int
    skipped: int
    succeeded: int
    failed: int
    targets: int
    seconds: float
    failed_before: int = 0
    failures: tuple[tuple[str, str, str], ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when no photo of the input is in ``errors`` (from this run or an earlier
        one)."""
        return self.failed == 0 and self.failed_before == 0


def default_workers(n_photos: int) -> int:
    """Local worker processes for ``n_photos``: one per CPU core, no more than the available
    memory holds (:data:`WORKER_MEMORY` each) or than there are photos; at least 1."""
    import psutil

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    by_memory = psutil.virtual_memory().available // WORKER_MEMORY
    return max(1, min(cores or 1, int(by_memory), n_photos))


def local_cluster(workers: int) -> LocalCluster:
    """The local Dask cluster of a batch: ``workers`` processes of one thread each (and one
    thread in each of their native pools, :data:`_ONE_THREAD_ENV`), on 127.0.0.1, no dashboard
    port of its own, GDAL's block cache bounded to :data:`WORKER_GDAL_CACHEMAX_MB` per
    worker."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=":0", silence_logs=logging.ERROR, death_timeout=60,
        env={"GDAL_CACHEMAX": str(WORKER_GDAL_CACHEMAX_MB), **_ONE_THREAD_ENV},
    )


@contextlib.contextmanager
def _dask_client(workers: int, scheduler: str | None) -> Iterator[Client]:
    from distributed import Client

    dlog = logging.getLogger("distributed")
    level = dlog.level
    # Dask's own INFO lines (cluster start/stop) are noise in a CLI run; keep its errors.
    dlog.setLevel(max(logging.ERROR, logging.getLogger("geomogeo").getEffectiveLevel()))
    try:
        if scheduler is not None:
            with Client(scheduler) as client:
                yield client
            return
        with local_cluster(workers) as cluster, Client(cluster) as client:
            yield client
    finally:
        dlog.setLevel(level)


def _run_dask(
    jobs: Sequence[PhotoJob], key: str, localizer: Localizer, reference: Reference,
    workers: int, scheduler: str | None,
) -> Iterator[_Outcome]:
    from distributed import as_completed

    with _dask_client(workers, scheduler) as client:
        client.register_plugin(_BatchPlugin(key, localizer, reference), name=key)
        try:
            slots = max(1, sum(client.nthreads().values()))
            todo = iter(jobs)
            running: dict[str, PhotoJob] = {}
            done_iter = as_completed()

            def submit() -> None:
                job = next(todo, None)
                if job is not None:
                    fut = client.submit(_localize_job, job, key, pure=False,
                                        key=f"geomogeo-photo-{uuid.uuid4().hex}")
                    running[fut.key] = job
                    done_iter.add(fut)

            for _ in range(2 * slots):
                submit()
            for fut in done_iter:
                job = running.pop(fut.key)
                try:
                    outcome = fut.result()
                except Exception as exc:  # the task was lost: worker died, cluster gone
                    outcome = _Outcome(job, _sha256(job.path), stage="worker",
                                       message=f"{type(exc).__name__}: {exc}")
                fut.release()
                yield outcome
                submit()
        finally:
            with contextlib.suppress(Exception):
                client.unregister_worker_plugin(key)


def run_batch(
    clicks: str | os.PathLike[str] | ClickTable,
    reference: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    localizer: Localizer | Callable[[], Localizer],
    workers: int | None = None,
    scheduler: str | None = None,
    bands: Any = None,
    quiet: bool = False,
) -> BatchSummary:
    """Localize every photo of a clicks table on a reference into one GeoPackage (module
    docstring: formats, resuming, execution).

    Args:
        clicks: a clicks table, a folder of photos with sidecars, or a :class:`ClickTable`.
        reference: a raster, a GDAL VRT, or a folder of tiles.
        out: the GeoPackage (created, or resumed: photos already in it are skipped).
        localizer: a :class:`~geomogeo.localize.Localizer`, or a function making one (called
            only when some photo is left to do).
        workers: local Dask worker processes (1 thread each); 0 runs in this process without
            Dask; None: :func:`default_workers`. Ignored with ``scheduler``.
        scheduler: address of an existing Dask scheduler (``tcp://HOST:PORT``).
        bands: 1-based raster bands for the model's R, G, B (default: the raster's first three).
        quiet: no progress bar.

    Returns:
        A :class:`BatchSummary`; photos that failed are in its ``failures`` and in ``errors``.

    Raises:
        ClickError: a malformed clicks table (nothing is run).
        RasterError, GeoreferenceError: the reference cannot be opened.
        OutputError: ``out`` cannot take the results (not a GeoPackage, other CRS, unwritable).
    """
    start = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() != ".gpkg":
        raise OutputError(f"{out}: the output of a batch is a GeoPackage; name it *.gpkg")
    table = clicks if isinstance(clicks, ClickTable) else read_clicks(clicks)
    done = _done_keys(out)
    pending: list[PhotoJob] = []
    failed_before = 0
    for job in table.jobs:
        if job.photo in done[TARGETS] or job.photo in done[ERRORS]:
            sha = _sha256(job.path)
            if sha in done[TARGETS].get(job.photo, ()):
                continue
            if sha in done[ERRORS].get(job.photo, ()):
                failed_before += 1
                continue
        pending.append(job)
    skipped = len(table.jobs) - len(pending)
    log.info("%s: %d photo(s), %d already in %s (%d of them failed), %d to do", table.path,
             len(table.jobs), skipped, out, failed_before, len(pending))
    if not pending:
        return BatchSummary(out, len(table.jobs), skipped, 0, 0, 0,
                            time.perf_counter() - start, failed_before=failed_before)

    loc = localizer if not callable(localizer) else localizer()
    ref = open_reference(reference, mosaic_cache_dir(out), bands=bands)
    _check_output(out, ref.crs)
    writer = _Writer(out, table, ref)
    key = f"geomogeo-batch-{uuid.uuid4().hex}"
    n_workers = default_workers(len(pending)) if workers is None else workers
    if scheduler is None and n_workers == 0:
        _INSTALLED[key] = (loc, ref)
        outcomes: Iterator[_Outcome] = (_localize_job(job, key) for job in pending)
    else:
        outcomes = _run_dask(pending, key, loc, ref, n_workers, scheduler)
    failures: list[tuple[str, str, str]] = []
    try:
        with tqdm(total=len(pending), desc="photos", unit="photo", disable=quiet,
                  smoothing=0.1) as bar:
            for outcome in outcomes:
                writer.add(outcome)
                if outcome.stage:
                    failures.append((outcome.job.photo, outcome.stage, outcome.message))
                    bar.set_postfix(failed=len(failures), refresh=False)
                bar.update()
    except BaseException:
        with contextlib.suppress(Exception):  # keep what was done (Ctrl-C), then stop
            writer.flush()
        raise
    else:
        writer.flush()
    finally:
        with contextlib.suppress(Exception):
            outcomes.close()  # type: ignore[attr-defined]
        _INSTALLED.pop(key, None)
    for name, stage, message in failures:
        log.warning("%s failed (%s): %s", name, stage, message)
    return BatchSummary(out, len(table.jobs), skipped, len(pending) - len(failures),
                        len(failures), writer.targets, time.perf_counter() - start,
                        failed_before, tuple(failures))
