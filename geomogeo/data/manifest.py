"""The multi-object cross-view manifest: one JSON object per line (JSON Lines).

Each line is one query photo and its reference image::

    {"id": "vegas-000017",
     "query": "queries/vegas-000017.jpg",         # relative to the manifest's folder
     "reference": "references/vegas-000017.png",  # RGB, at the model's GSD and size
     "clicks": [[x, y], ...],                     # query pixels, origin top-left corner
     "boxes": [[x1, y1, x2, y2], ...],            # reference pixels (edges), k-th <-> k-th click
     "georef": {"crs": "EPSG:32631", "transform": [a, b, c, d, e, f]},   # optional
     "split": "train",                              # optional: train / val / test
     "meta": {...}}                                 # optional, free-form (camera pose, tile...)

``georef.transform`` is the affine (rasterio/GDAL ``Affine`` order a, b, c, d, e, f) mapping
reference pixel (col, row) edges to map x, y in ``georef.crs`` (any string pyproj accepts).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from geomogeo.errors import ConfigError

__all__ = ["Georef", "ManifestError", "Record", "iter_manifest", "read_manifest", "write_manifest"]


class ManifestError(ConfigError):
    """A manifest line is malformed, or names an image that is missing or that its clicks or
    boxes lie outside of; the message names the file and line."""


@dataclass(frozen=True)
class Georef:
    """Georeference of a reference image: CRS string and affine (a, b, c, d, e, f)."""

    crs: str
    transform: tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class Record:
    """One query/reference pair with m >= 1 targets.

    ``query`` and ``reference`` are absolute paths once read (relative in the file).
    ``clicks`` are (x, y) query pixels; ``boxes`` (x1, y1, x2, y2) reference pixels (edges).
    """

    id: str
    query: Path
    reference: Path
    clicks: tuple[tuple[float, float], ...]
    boxes: tuple[tuple[float, float, float, float], ...]
    georef: Georef | None = None
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_targets(self) -> int:
        return len(self.clicks)


def _finite(values: Iterable[Any]) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _image_size(path: Path, role: str, where: str) -> tuple[int, int]:
    """(width, height) of an image from its header (the pixels are not decoded)."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise ManifestError(f"{where}: {role} image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ManifestError(f"{where}: {role} image {path} cannot be read ({e})") from e


def _check_inside(rec: Record, where: str) -> None:
    """Clicks must lie on the query photo, ``[0, W] x [0, H]``; at least half of each box's
    area must lie on the reference image (a box cut by the border is kept: training clamps
    it to the image)."""
    qw, qh = _image_size(rec.query, "query", where)
    for k, (x, y) in enumerate(rec.clicks):
        if not (0 <= x <= qw and 0 <= y <= qh):
            raise ManifestError(
                f"{where}: click {k} ({x:g}, {y:g}) is outside the query photo {rec.query.name} "
                f"[0, {qw}] x [0, {qh}] (pixels, origin at the top-left corner)"
            )
    rw, rh = _image_size(rec.reference, "reference", where)
    for k, (x1, y1, x2, y2) in enumerate(rec.boxes):
        inside = max(min(x2, rw) - max(x1, 0), 0) * max(min(y2, rh) - max(y1, 0), 0)
        if inside < 0.5 * (x2 - x1) * (y2 - y1):
            raise ManifestError(
                f"{where}: box {k} ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies (mostly) outside the "
                f"reference image {rec.reference.name} [0, {rw}] x [0, {rh}] (pixel edges)"
            )


def _parse(obj: Any, root: Path, where: str) -> Record:
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("id", "query", "reference", "clicks", "boxes"):
        if key not in obj:
            raise ManifestError(f"{where}: missing key {key!r}")
    clicks, boxes = obj["clicks"], obj["boxes"]
    if not isinstance(clicks, list) or not clicks:
        raise ManifestError(f"{where}: 'clicks' must be a non-empty list of [x, y]")
    if not isinstance(boxes, list) or len(boxes) != len(clicks):
        raise ManifestError(
            f"{where}: {len(clicks)} clicks but "
            f"{len(boxes) if isinstance(boxes, list) else 'no'} boxes; they must pair up"
        )
    for c in clicks:
        if not isinstance(c, list) or len(c) != 2 or not _finite(c):
            raise ManifestError(f"{where}: bad click {c!r}, expected [x, y]")
    for b in boxes:
        if not (isinstance(b, list) and len(b) == 4 and _finite(b)) or b[2] <= b[0] or b[3] <= b[1]:
            raise ManifestError(
                f"{where}: bad box {b!r}, expected [x1, y1, x2, y2] with x2 > x1, y2 > y1"
            )
    georef = None
    if obj.get("georef") is not None:
        g = obj["georef"]
        t = g.get("transform") if isinstance(g, dict) else None
        if not isinstance(g, dict) or not isinstance(g.get("crs"), str) or not (
            isinstance(t, list) and len(t) == 6 and _finite(t)
        ):
            raise ManifestError(f"{where}: 'georef' must be {{crs: str, transform: [6 numbers]}}")
        georef = Georef(g["crs"], tuple(float(v) for v in t))  # type: ignore[arg-type]
    for key in ("query", "reference"):
        if not isinstance(obj[key], str) or not obj[key]:
            raise ManifestError(f"{where}: {key!r} must be an image path (a string)")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise ManifestError(f"{where}: 'meta' must be a JSON object")
    if meta.get("heading") is not None and not _finite([meta["heading"]]):
        raise ManifestError(f"{where}: meta.heading {meta['heading']!r} must be a finite "
                            "number of degrees clockwise from north")
    rec = Record(
        id=str(obj["id"]),
        query=(root / obj["query"]).resolve(),
        reference=(root / obj["reference"]).resolve(),
        clicks=tuple((float(x), float(y)) for x, y in clicks),
        boxes=tuple(tuple(float(v) for v in b) for b in boxes),  # type: ignore[misc]
        georef=georef,
        split=obj.get("split"),
        meta=dict(obj.get("meta") or {}),
    )
    _check_inside(rec, where)
    return rec


def iter_manifest(path: str | os.PathLike[str]) -> Iterator[Record]:
    """Yield the records of a manifest file, validating each line: keys and types, and that
    both images exist, the clicks lie on the query photo and the boxes on the reference.

    Raises:
        FileNotFoundError: no manifest at ``path``.
        ManifestError: a malformed line (the message names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    root = path.parent
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ManifestError(f"{where}: not UTF-8 text ({e.reason})") from e
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{where}: not valid JSON ({e.msg})") from e
            except RecursionError as e:
                raise ManifestError(f"{where}: not valid JSON (nested too deeply)") from e
            yield _parse(obj, root, where)


def read_manifest(
    path: str | os.PathLike[str], split: str | None = None
) -> list[Record]:
    """Read a manifest; with ``split``, keep only the records of that split."""
    return [r for r in iter_manifest(path) if split is None or r.split == split]


def _to_obj(r: Record, root: Path) -> dict[str, Any]:
    def rel(p: Path) -> str:
        return os.path.relpath(p, root).replace(os.sep, "/")

    obj: dict[str, Any] = {
        "id": r.id,
        "query": rel(r.query),
        "reference": rel(r.reference),
        "clicks": [list(c) for c in r.clicks],
        "boxes": [list(b) for b in r.boxes],
    }
    if r.georef is not None:
        obj["georef"] = {"crs": r.georef.crs, "transform": list(r.georef.transform)}
    if r.split is not None:
        obj["split"] = r.split
    if r.meta:
        obj["meta"] = r.meta
    return obj


def write_manifest(path: str | os.PathLike[str], records: Iterable[Record]) -> None:
    """Write records atomically (temporary file in the same folder, then rename); paths are
    stored relative to the manifest's folder."""
    path = Path(path)
    root = path.parent.resolve()
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(_to_obj(r, root), sort_keys=True) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
