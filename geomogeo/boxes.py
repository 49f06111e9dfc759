"""Georeference pixel boxes detected elsewhere.

Boxes are (x1, y1, x2, y2) pixel EDGES of the raster itself (column, row; origin at the
top-left corner of the top-left pixel), read from CSV (header with ``x1,y1,x2,y2`` and any
other columns, kept as attributes) or JSON (a list of objects with those keys, or of
``[x1, y1, x2, y2]`` lists). All four corners go through the raster's full affine, so rotated,
sheared and south-up rasters are handled.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geomogeo.errors import GeomogeoError
from geomogeo.geo import georef, raster

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["BoxesFileError", "georeference_boxes", "read_boxes_file"]

_KEYS = ("x1", "y1", "x2", "y2")


class BoxesFileError(GeomogeoError, ValueError):
    """A boxes file is malformed; the message names the file and the row."""


def _check_box(values: list[float], where: str) -> list[float]:
    if len(values) != 4 or not all(np.isfinite(values)):
        raise BoxesFileError(f"{where}: expected four finite numbers x1, y1, x2, y2")
    if values[2] <= values[0] or values[3] <= values[1]:
        raise BoxesFileError(f"{where}: box {values} needs x2 > x1 and y2 > y1")
    return values


def read_boxes_file(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Read boxes and their extra attributes from a CSV or JSON file.

    Returns:
        boxes: (n, 4) float64 raster pixel edges.
        attributes: one dict per box with every other column/key.
    """
    path = Path(path)
    if not path.is_file():
        raise BoxesFileError(f"boxes file not found: {path}")
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise BoxesFileError(f"{path}: not a text file (not UTF-8 at byte {e.start})") from e
    boxes: list[list[float]] = []
    attrs: list[dict[str, Any]] = []
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
    else:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not set(_KEYS) <= set(reader.fieldnames):
                raise BoxesFileError(f"{path}: CSV header must contain {', '.join(_KEYS)}")
            for row in reader:
                where = f"{path}: line {reader.line_num}"
                try:
                    values = [float(row[k]) for k in _KEYS]
                except (TypeError, ValueError) as e:
                    raise BoxesFileError(f"{where}: not numbers: {row}") from e
                boxes.append(_check_box(values, where))
                attrs.append({k: v for k, v in row.items() if k not in _KEYS})
        if not boxes:
            raise BoxesFileError(f"{path}: no boxes")
    return np.asarray(boxes, dtype=np.float64), attrs


def georeference_boxes(
    raster_path: str | os.PathLike[str],
    boxes: np.ndarray,
    attributes: list[dict[str, Any]] | None = None,
) -> gpd.GeoDataFrame:
    """Raster pixel boxes (edges) -> polygons in the raster's CRS, with their attributes."""
    import geopandas as gpd

    src = raster.open_raster(raster_path)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    polys = georef.boxes_to_polygons(boxes, src.transform)
    rows = []
    for i, b in enumerate(boxes):
        row: dict[str, Any] = {"box": i, "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3],
                               "raster": str(src.path)}
        if attributes is not None:
            row.update(attributes[i])
        rows.append(row)
    return gpd.GeoDataFrame(rows, geometry=polys, crs=src.crs)
