"""Georeference pixel boxes detected elsewhere.

Boxes are (x1, y1, x2, y2) pixel EDGES of the raster itself (column, row; origin at the
top-left corner of the top-left pixel, so a raster of W x H pixels spans x in [0, W] and y in
[0, H]), read from CSV (header with ``x1,y1,x2,y2`` and any other columns, kept as attributes)
or JSON (a list of objects with those keys, or of ``[x1, y1, x2, y2]`` lists). All four corners
go through the raster's full affine, so rotated, sheared and south-up rasters are handled.

Rules for the input:

- A box that lies wholly outside the raster (no overlap with [0, W] x [0, H]) is an error that
  names the file and the row: it is a wrong raster or wrong coordinates, never a detection. A
  box that only sticks out (a detector's box at the border) is kept and a warning says so.
- Attribute types are inferred per column from the values: whole numbers become Integer
  columns, other numbers Real, ISO 8601 date-times (``2024-05-01T10:30:00Z``,
  ``2024-05-01 12:30+02:00``) DateTime in UTC, JSON booleans Boolean; anything else, or a
  column mixing kinds, stays text. A GeoPackage DateTime is UTC, so date-times without an
  offset are taken as UTC, with a warning. Numbers written with a leading zero
  (``007``) stay text so codes keep their zeros. An empty CSV cell is a missing value.
- The output has provenance columns ``box`` (0-based index in the file), ``x1``, ``y1``,
  ``x2``, ``y2`` (the pixel box) and ``raster`` (the raster's path). A user column with one of
  these names, or with a name the GeoPackage itself uses (``fid``, ``geom``, ``geometry``),
  compared case-insensitively, is kept under the name ``user_<name>`` and a warning says so.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geomogeo.errors import GeomogeoError, LocationError
from geomogeo.geo import raster

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

__all__ = [
    "PROVENANCE_COLUMNS",
    "BoxesFileError",
    "georeference_boxes",
    "georeference_boxes_file",
    "read_boxes_file",
]

logger = logging.getLogger(__name__)

_KEYS = ("x1", "y1", "x2", "y2")
#: Columns :func:`georeference_boxes` adds to every box.
PROVENANCE_COLUMNS = ("box", *_KEYS, "raster")
_RESERVED = {c.lower() for c in (*PROVENANCE_COLUMNS, "fid", "geom", "geometry")}

_INT_RE = re.compile(r"[+-]?(0|[1-9]\d*)")
_NUM_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_LEADING_ZERO_RE = re.compile(r"[+-]?0\d")
_DATETIME_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(?P<tz>Z|[+-]\d{2}:?\d{2})?")


class BoxesFileError(GeomogeoError, ValueError):
    """A boxes file is malformed; the message names the file and the row."""


def _check_box(values: list[float], where: str) -> list[float]:
    if len(values) != 4 or not all(np.isfinite(values)):
        raise BoxesFileError(f"{where}: expected four finite numbers x1, y1, x2, y2")
    if values[2] <= values[0] or values[3] <= values[1]:
        raise BoxesFileError(f"{where}: box {values} needs x2 > x1 and y2 > y1")
    return values


def _read(path: Path) -> tuple[list[list[float]], list[dict[str, Any]], list[str]]:
    """Boxes, attributes and a label naming the file and row of each box."""
    if not path.is_file():
        raise BoxesFileError(f"boxes file not found: {path}")
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise BoxesFileError(f"{path}: not a text file (not UTF-8 at byte {e.start})") from e
    boxes: list[list[float]] = []
    attrs: list[dict[str, Any]] = []
    wheres: list[str] = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise BoxesFileError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(data, list) or not data:
            raise BoxesFileError(f"{path}: expected a non-empty JSON list of boxes")
        for i, item in enumerate(data):
            where = f"{path}: box {i}"
            if isinstance(item, dict):
                try:
                    values = [float(item[k]) for k in _KEYS]
                except (KeyError, TypeError, ValueError) as e:
                    raise BoxesFileError(f"{where}: needs numeric keys {_KEYS}") from e
                attrs.append({k: v for k, v in item.items() if k not in _KEYS})
            elif isinstance(item, list):
                try:
                    values = [float(v) for v in item]
                except (TypeError, ValueError) as e:
                    raise BoxesFileError(f"{where}: not numbers: {item!r}") from e
                attrs.append({})
            else:
                raise BoxesFileError(f"{where}: expected an object or a list, got {item!r}")
            boxes.append(_check_box(values, where))
            wheres.append(where)
    else:
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                names = reader.fieldnames
                if names is None or not set(_KEYS) <= set(names):
                    raise BoxesFileError(f"{path}: CSV header must contain {', '.join(_KEYS)}")
                lowered = [n.lower() for n in names]
                dups = sorted({n for n in names if lowered.count(n.lower()) > 1})
                if dups:
                    raise BoxesFileError(f"{path}: CSV header repeats the column(s) {dups} "
                                         "(names are compared case-insensitively)")
                for row in reader:
                    where = f"{path}: line {reader.line_num}"
                    try:
                        values = [float(row[k]) for k in _KEYS]
                    except (TypeError, ValueError) as e:
                        raise BoxesFileError(f"{where}: not numbers: {row}") from e
                    boxes.append(_check_box(values, where))
                    attrs.append({k: (None if v == "" else v) for k, v in row.items()
                                  if k not in _KEYS})
                    wheres.append(where)
        except UnicodeDecodeError as e:
            raise BoxesFileError(f"{path}: not a UTF-8 text CSV file ({e})") from e
        if not boxes:
            raise BoxesFileError(f"{path}: no boxes")
    return boxes, attrs, wheres


def read_boxes_file(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Read boxes and their extra attributes from a CSV or JSON file.

    Returns:
        boxes: (n, 4) float64 raster pixel edges.
        attributes: one dict per box with every other column/key, values as read (CSV values
            are strings, an empty cell is None); :func:`georeference_boxes` types them.
    """
    boxes, attrs, _ = _read(Path(path))
    return np.asarray(boxes, dtype=np.float64), attrs


# --------------------------------------------------------------------------- attribute typing


def _kind(value: Any) -> str:
    """'missing', 'bool', 'int', 'float', 'datetime', 'datetime_tz' or 'text' for one value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if -(2**63) <= value < 2**63 else "text"
    if isinstance(value, float):
        return "float" if math.isfinite(value) else "text"
    if not isinstance(value, str):
        return "text"
    s = value.strip()
    if _LEADING_ZERO_RE.match(s) and _NUM_RE.fullmatch(s):
        return "text"  # a code such as 007: keep its zeros
    if _INT_RE.fullmatch(s):
        return "int" if -(2**63) <= int(s) < 2**63 else "text"
    if _NUM_RE.fullmatch(s):
        return "float"
    m = _DATETIME_RE.fullmatch(s)
    if m:
        return "datetime_tz" if m["tz"] else "datetime"
    return "text"


def _typed_column(name: str, values: list[Any], source: str) -> pd.Series:
    """One attribute column with the type its values share (see the module docstring)."""
    import pandas as pd

    kinds = {_kind(v) for v in values} - {"missing"}
    missing = [_kind(v) == "missing" for v in values]
    if kinds == {"bool"}:
        return pd.Series([None if m else v for v, m in zip(values, missing, strict=True)],
                         name=name, dtype="boolean")
    if kinds == {"int"}:
        return pd.Series([None if m else int(v) for v, m in zip(values, missing, strict=True)],
                         name=name, dtype="Int64")
    if kinds and kinds <= {"int", "float"}:
        return pd.Series([None if m else float(v) for v, m in zip(values, missing, strict=True)],
                         name=name, dtype="float64")
    if kinds and kinds <= {"datetime", "datetime_tz"}:
        if "datetime" in kinds:
            logger.warning("%s: column %r has date-times without a UTC offset; they are stored "
                           "as UTC (a GeoPackage DateTime is UTC); end them with Z or +hh:mm "
                           "to say which time zone they are in", source, name)
        text = [None if m else str(v).strip() for v, m in zip(values, missing, strict=True)]
        return pd.Series(pd.to_datetime(text, format="ISO8601", utc=True), name=name)
    text = [None if m else (v if isinstance(v, str) else json.dumps(v))
            for v, m in zip(values, missing, strict=True)]
    return pd.Series(text, name=name, dtype=object)


def _user_columns(attributes: Sequence[dict[str, Any]], source: str) -> dict[str, str]:
    """Output name of every user attribute, renaming clashes with provenance/GeoPackage names."""
    names: list[str] = []
    for row in attributes:
        names.extend(k for k in row if k not in names)
    taken = {n.lower() for n in names} | _RESERVED
    out = {}
    for n in names:
        if n.lower() not in _RESERVED:
            out[n] = n
            continue
        new, k = f"user_{n}", 2
        while new.lower() in taken:
            new, k = f"user_{n}_{k}", k + 1
        taken.add(new.lower())
        out[n] = new
        logger.warning("%s: column %r clashes with a column geomogeo writes; kept as %r",
                       source, n, new)
    return out


# --------------------------------------------------------------------------- georeferencing


def _check_inside(boxes: np.ndarray, width: int, height: int, raster_path: Path,
                  labels: Sequence[str]) -> None:
    outside = ((boxes[:, 2] <= 0) | (boxes[:, 0] >= width)
               | (boxes[:, 3] <= 0) | (boxes[:, 1] >= height))
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise LocationError(
            f"{labels[i]}: box {boxes[i].tolist()} lies wholly outside raster {raster_path} "
            f"({width} x {height} pixels: boxes are pixel edges with x in [0, {width}] and "
            f"y in [0, {height}]); check the raster and the box coordinates"
            + (f" ({int(outside.sum())} such boxes)" if outside.sum() > 1 else ""))
    partly = ((boxes[:, 0] < 0) | (boxes[:, 1] < 0)
              | (boxes[:, 2] > width) | (boxes[:, 3] > height))
    if partly.any():
        logger.warning("%d box(es) stick out of raster %s (%d x %d pixels), e.g. %s; kept as "
                       "given", int(partly.sum()), raster_path, width, height,
                       labels[int(np.flatnonzero(partly)[0])])


def _georeference(raster_path: str | os.PathLike[str], boxes: np.ndarray,
                  attributes: Sequence[dict[str, Any]] | None, labels: Sequence[str] | None,
                  source: str) -> gpd.GeoDataFrame:
    import geopandas as gpd
    import pandas as pd

    src = raster.open_raster(raster_path)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    labels = list(labels) if labels is not None else [f"box {i}" for i in range(n)]
    attributes = list(attributes) if attributes is not None else [{} for _ in range(n)]
    if len(labels) != n or len(attributes) != n:
        raise BoxesFileError(f"{source}: {n} boxes but {len(attributes)} attribute rows and "
                             f"{len(labels)} labels")
    for b, where in zip(boxes, labels, strict=True):
        _check_box(b.tolist(), where)
    _check_inside(boxes, src.width, src.height, src.path, labels)
    polys = raster.pixel_boxes_to_polygons(src, boxes)
    columns: dict[str, pd.Series] = {
        "box": pd.Series(np.arange(n, dtype=np.int64)),
        **{k: pd.Series(boxes[:, j]) for j, k in enumerate(_KEYS)},
        "raster": pd.Series([str(src.path)] * n, dtype=object),
    }
    for name, out_name in _user_columns(attributes, source).items():
        columns[out_name] = _typed_column(out_name, [row.get(name) for row in attributes],
                                          source)
    return gpd.GeoDataFrame(pd.DataFrame(columns), geometry=polys, crs=src.crs)


def georeference_boxes(
    raster_path: str | os.PathLike[str],
    boxes: np.ndarray,
    attributes: Sequence[dict[str, Any]] | None = None,
    *,
    labels: Sequence[str] | None = None,
) -> gpd.GeoDataFrame:
    """Raster pixel boxes (edges) -> polygons in the raster's CRS, with typed attributes.

    Args:
        raster_path: the raster the boxes were detected on.
        boxes: (n, 4) x1, y1, x2, y2 pixel edges of that raster (x2 > x1, y2 > y1).
        attributes: one dict per box; columns are typed as the module docstring says.
        labels: one label per box for messages (e.g. ``"boxes.csv: line 3"``); default
            ``"box i"``.

    Returns:
        A GeoDataFrame in the raster's CRS with the provenance columns ``box``, ``x1``..``y2``
        and ``raster``, then the user attributes (clashing names prefixed ``user_``).

    Raises:
        LocationError: a box lies wholly outside the raster (the message names it).
        BoxesFileError: a box is not four finite numbers with x2 > x1 and y2 > y1, or
            ``attributes``/``labels`` do not have one entry per box.
    """
    return _georeference(raster_path, boxes, attributes, labels, "the box attributes")


def georeference_boxes_file(
    boxes_file: str | os.PathLike[str], raster_path: str | os.PathLike[str]
) -> gpd.GeoDataFrame:
    """Read a CSV/JSON boxes file (see :func:`read_boxes_file`) and georeference it.

    Messages about a box name the file and its CSV line or JSON index.
    """
    path = Path(boxes_file)
    boxes, attrs, wheres = _read(path)
    return _georeference(raster_path, np.asarray(boxes, dtype=np.float64), attrs, wheres,
                         str(path))
