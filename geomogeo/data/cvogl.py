"""Reader for the CVOGL cross-view object geo-localization dataset (DetGeo, Sun et al., TGRS 2023).

Layout on disk (``root`` is the folder holding both subsets)::

    root/CVOGL_DroneAerial/{query,satellite}/*.jpg
    root/CVOGL_DroneAerial/CVOGL_DroneAerial_{train,val,test}.pth
    root/CVOGL_SVI/{query,satellite}/*.jpg
    root/CVOGL_SVI/CVOGL_SVI_{train,val,test}.pth

Each ``.pth`` holds a plain list (written with ``torch.save``) of 8-field records, one target
per record. Fields 1, 2, 4, 5 and 7 are the ones the reference DetGeo data loader
(``dataset/data_loader.py`` of github.com/sunyuxi/DetGeo) unpacks as query name, satellite
name, click, box and class; the other meanings are inferred from a sample record
(``(131425, '131425_539733_4880095.jpg', '539827_4880079_300_32615.jpg', (383, 380),
(191, 190), [258.56, 325.97, 592.76, 657.03], [495.99, 325.97, 592.76, 558.05, 355.29,
657.03, 258.56, 424.96], 'building_retail')``) and are kept in ``meta`` only::

    0  sample id                         int            e.g. 131425
    1  query image name (in query/)      str            e.g. "131425_539733_4880095.jpg"
    2  satellite image name (satellite/) str            e.g. "539827_4880079_300_32615.jpg"
    3  (inferred) the click at another   (x, y)         e.g. (383, 380), twice field 4 in
       query resolution; unused by the reference loader -> meta["click_full_res"]
    4  click in the query image          (x, y)         pixels, x right, y down; the reference
                                                        loader draws it on a 256x256 (drone) or
                                                        256 rows x 512 cols (SVI) grid
    5  box in the satellite image        [x1,y1,x2,y2]  pixels, edges (1024x1024 images)
    6  (inferred) oriented polygon       [x1,y1,...,x4,y4]; field 5 is its axis-aligned bounds
                                                        -> meta["polygon"]
    7  class name                        str            e.g. "building_retail" -> meta["class"]

Satellite image names look like ``<easting>_<northing>_<extent>_<epsg>.<ext>``: a projected
(UTM, e.g. EPSG:32615) easting/northing in metres, a third number that we *interpret* as the
square image's ground side length in metres, and the EPSG code. The dataset does not document
this; the reading "easting/northing of the image centre, extent = side length" is an inference
from sample names (300 m over 1024 px would be ~0.29 m/px, plausible for this imagery; the
query name's easting/northing lies ~100 m from the satellite centre in the sample).
Hence :func:`read_cvogl` leaves ``georef`` as ``None`` by default and records the parsed
numbers in ``meta["satellite_name"]``; pass ``georef_from_name=True`` to build a
:class:`~geomogeo.data.manifest.Georef` from that interpretation (verify it on real data).

Security: the ``.pth`` files are loaded with ``torch.load(..., weights_only=True)`` only, which
restricts unpickling to plain containers, numbers, strings and tensors. A file that needs any
other object is refused with :class:`CvoglError` naming the file.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from geomogeo.data.manifest import Georef, Record
from geomogeo.errors import GeomogeoError

__all__ = [
    "CvoglError",
    "georef_from_satellite_name",
    "load_cvogl_pth",
    "parse_satellite_name",
    "read_cvogl",
]

logger = logging.getLogger(__name__)

SUBSETS: tuple[str, ...] = ("DroneAerial", "SVI")

_SAT_NAME = re.compile(r"^(-?\d+(?:\.\d+)?)_(-?\d+(?:\.\d+)?)_(\d+(?:\.\d+)?)_(\d{4,5})$")


class CvoglError(GeomogeoError, ValueError):
    """A CVOGL ``.pth`` file is unsafe, unreadable or holds a malformed record."""


def parse_satellite_name(name: str) -> dict[str, float | int] | None:
    """Parse ``<easting>_<northing>_<extent>_<epsg>.<ext>``; ``None`` when it does not match.

    Returns ``{"easting": m, "northing": m, "extent": m, "epsg": int}`` (see the module
    docstring for the interpretation of the numbers).
    """
    m = _SAT_NAME.match(Path(name).stem)
    if m is None:
        return None
    e, n, ext, epsg = m.groups()
    return {"easting": float(e), "northing": float(n), "extent": float(ext), "epsg": int(epsg)}


def georef_from_satellite_name(name: str, width: int, height: int) -> Georef | None:
    """Georeference of a satellite image from its name and pixel size, or ``None``.

    Interpretation (inferred, see module docstring): (easting, northing) is the image centre
    and ``extent`` the ground side length in metres, north up. Pixel size is
    ``extent / width`` by ``extent / height`` metres; the affine (a, b, c, d, e, f) maps pixel
    edges (col, row) to (x, y) in ``EPSG:<epsg>``.
    """
    parsed = parse_satellite_name(name)
    if parsed is None or width <= 0 or height <= 0 or parsed["extent"] <= 0:
        return None
    gx = float(parsed["extent"]) / width
    gy = float(parsed["extent"]) / height
    x0 = float(parsed["easting"]) - gx * width / 2.0
    y0 = float(parsed["northing"]) + gy * height / 2.0
    return Georef(f"EPSG:{int(parsed['epsg'])}", (gx, 0.0, x0, 0.0, -gy, y0))


def load_cvogl_pth(path: str | os.PathLike[str]) -> list[Any]:
    """Load a CVOGL ``.pth`` record list safely (``torch.load(weights_only=True)``).

    Raises ``FileNotFoundError`` when missing and :class:`CvoglError` (naming the file) when
    the file needs arbitrary unpickling, is corrupt, or does not hold a list/tuple.
    """
    import torch  # local import: the rest of the module works without torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CVOGL split file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CvoglError(
            f"{path}: refused to load; it needs objects beyond plain lists/numbers/strings "
            f"(weights_only=True). Only plain CVOGL record lists are accepted. ({e})"
        ) from e
    except Exception as e:  # corrupt or foreign file: torch raises assorted types here
        raise CvoglError(f"{path}: not a readable torch file ({e})") from e
    if not isinstance(data, (list, tuple)):
        raise CvoglError(f"{path}: expected a list of records, got {type(data).__name__}")
    return list(data)


def _number(v: Any) -> float | None:
    """Plain int/float (or 0-d tensor-like via ``item()``) -> finite float, else ``None``."""
    if isinstance(v, bool):
        return None
    if not isinstance(v, (int, float)) and hasattr(v, "item"):
        try:
            v = v.item()
        except (ValueError, RuntimeError):
            return None
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def _numbers(v: Any, n: int) -> tuple[float, ...] | None:
    if hasattr(v, "tolist") and not isinstance(v, (list, tuple)):
        v = v.tolist()
    if not isinstance(v, (list, tuple)) or len(v) != n:
        return None
    out = tuple(_number(x) for x in v)
    return None if any(x is None for x in out) else out  # type: ignore[return-value]


def _convert(
    rec: Any, idx: int, where: Path, qdir: Path, sdir: Path, subset: str, split: str
) -> tuple[Record, str]:
    def bad(msg: str) -> CvoglError:
        return CvoglError(f"{where}: record {idx}: {msg}")

    if not isinstance(rec, (list, tuple)) or len(rec) != 8:
        n = len(rec) if isinstance(rec, (list, tuple)) else type(rec).__name__
        raise bad(f"expected 8 fields, got {n}")
    sid, qname, sname, click_full, click, box, poly, cls = rec
    if not isinstance(qname, str) or not qname:
        raise bad(f"query image name must be a non-empty string, got {qname!r}")
    if not isinstance(sname, str) or not sname:
        raise bad(f"satellite image name must be a non-empty string, got {sname!r}")
    xy = _numbers(click, 2)
    if xy is None:
        raise bad(f"click must be (x, y) numbers, got {click!r}")
    bx = _numbers(box, 4)
    if bx is None or bx[2] <= bx[0] or bx[3] <= bx[1]:
        raise bad(f"box must be [x1, y1, x2, y2] with x2>x1, y2>y1, got {box!r}")
    sid_num = _number(sid)
    if isinstance(sid, str):
        rid = sid
    elif sid_num is not None and sid_num.is_integer():
        rid = str(int(sid_num))
    else:
        rid = f"{idx:06d}"
    meta: dict[str, Any] = {"dataset": f"CVOGL_{subset}", "index": idx}
    if isinstance(cls, str):
        meta["class"] = cls
    full = _numbers(click_full, 2)
    if full is not None:
        meta["click_full_res"] = list(full)
    pg = _numbers(poly, 8)
    if pg is not None:
        meta["polygon"] = list(pg)
    parsed = parse_satellite_name(sname)
    if parsed is not None:
        meta["satellite_name"] = parsed
    record = Record(
        id=f"{subset}-{split}-{rid}",
        query=(qdir / qname).resolve(),
        reference=(sdir / sname).resolve(),
        clicks=(xy,),  # type: ignore[arg-type]
        boxes=(bx,),  # type: ignore[arg-type]
        georef=None,
        split=split,
        meta=meta,
    )
    return record, sname


def read_cvogl(
    root: str | os.PathLike[str],
    subset: Literal["DroneAerial", "SVI"],
    split: str,
    *,
    georef_from_name: bool = False,
) -> list[Record]:
    """Read one CVOGL subset/split as :class:`~geomogeo.data.manifest.Record` objects.

    ``root`` holds ``CVOGL_<subset>/``; ``split`` is ``train``, ``val`` or ``test`` (any name
    whose ``CVOGL_<subset>_<split>.pth`` exists is accepted). Each record has one click (query
    pixels, x right, y down, as stored) and one box (satellite pixels, edges). Record ids are
    ``<subset>-<split>-<sample id>``; ``meta`` carries the class, the full-resolution click,
    the polygon, the parsed satellite name and the record index. ``georef`` is ``None`` unless
    ``georef_from_name`` is set, in which case it is derived from the satellite image name and
    the image's pixel size (the image is opened, header only; see
    :func:`georef_from_satellite_name`).

    Raises ``ValueError`` for an unknown subset or a split that is not a plain name,
    ``FileNotFoundError`` for a missing folder or file, and :class:`CvoglError` (naming the
    file and record index) for malformed content.
    """
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", split):
        raise ValueError(
            f"split must be a plain name such as 'train', 'val', 'test'; got {split!r}"
        )
    base = Path(root) / f"CVOGL_{subset}"
    if not base.is_dir():
        raise FileNotFoundError(f"CVOGL folder not found: {base}")
    qdir, sdir = base / "query", base / "satellite"
    for d in (qdir, sdir):
        if not d.is_dir():
            raise FileNotFoundError(f"CVOGL image folder not found: {d}")
    pth = base / f"CVOGL_{subset}_{split}.pth"
    if not pth.is_file():
        raise FileNotFoundError(f"CVOGL split file not found: {pth}")
    raw = load_cvogl_pth(pth)
    records: list[Record] = []
    sizes: dict[str, tuple[int, int]] = {}
    for idx, rec in enumerate(raw):
        record, sname = _convert(rec, idx, pth, qdir, sdir, subset, split)
        if georef_from_name:
            record = _with_georef(record, sname, sizes, pth, idx)
        records.append(record)
    logger.info("read %d CVOGL records from %s", len(records), pth)
    return records


def _with_georef(
    record: Record, sname: str, sizes: dict[str, tuple[int, int]], pth: Path, idx: int
) -> Record:
    from PIL import Image

    if sname not in sizes:
        try:
            with Image.open(record.reference) as im:
                sizes[sname] = im.size
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{pth}: record {idx}: satellite image not found: {record.reference}"
            ) from e
        except OSError as e:
            raise CvoglError(
                f"{pth}: record {idx}: cannot read satellite image {record.reference} ({e})"
            ) from e
    w, h = sizes[sname]
    georef = georef_from_satellite_name(sname, w, h)
    if georef is None:
        raise CvoglError(
            f"{pth}: record {idx}: satellite name {sname!r} does not follow "
            "<easting>_<northing>_<extent>_<epsg>; cannot derive a georeference"
        )
    return replace(record, georef=georef)
