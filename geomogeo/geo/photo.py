"""Query photos: loading with EXIF orientation, EXIF GPS position/heading, click validation.

Photo pixel coordinates are continuous ``(x, y)``: origin at the top-left CORNER of the top-left
pixel of the photo as displayed (after its EXIF orientation is applied), x to the right, y down;
valid clicks lie in ``[0, width] x [0, height]``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from geomogeo.errors import ClickError, PhotoError

__all__ = [
    "Photo",
    "PhotoLocation",
    "load_photo",
    "parse_point",
    "read_location",
    "read_points_file",
    "validate_points",
]

log = logging.getLogger(__name__)

_GPS_IFD = 0x8825
_ORIENTATION = 274


@dataclass(frozen=True)
class PhotoLocation:
    """Where a photo was taken, from EXIF GPS.

    Attributes:
        lon, lat: WGS84 degrees (east and north positive).
        altitude: metres above sea level (negative below), or None.
        heading: direction the camera points (GPSImgDirection), degrees clockwise from north
            (true or magnetic per ``heading_ref`` "T"/"M"), or None.
        heading_ref: "T", "M" or None.
    """

    lon: float
    lat: float
    altitude: float | None = None
    heading: float | None = None
    heading_ref: str | None = None


@dataclass(frozen=True)
class Photo:
    """A loaded photo.

    Attributes:
        path: the file.
        image: (height, width, 3) uint8 RGB, EXIF orientation applied.
        width, height: pixels, after orientation.
        gps: EXIF GPS position, or None.
    """

    path: Path
    image: np.ndarray
    width: int
    height: int
    gps: PhotoLocation | None


def _rational(v: Any) -> float:
    if isinstance(v, tuple) and len(v) == 2:
        return float(v[0]) / float(v[1])
    return float(v)


def _dms(v: Any) -> float:
    parts = [_rational(x) for x in v] if isinstance(v, (tuple, list)) else [_rational(v)]
    parts += [0.0] * (3 - len(parts))
    return parts[0] + parts[1] / 60.0 + parts[2] / 3600.0


def _ref(v: Any) -> str:
    if isinstance(v, bytes):
        v = v.decode("ascii", "ignore")
    return str(v).strip("\x00 ").upper()


def _parse_gps(gps: dict[int, Any], path: Path) -> PhotoLocation | None:
    """EXIF GPS IFD -> PhotoLocation; None when latitude/longitude are absent or invalid."""
    if 2 not in gps or 4 not in gps:
        return None
    try:
        lat = _dms(gps[2]) * (-1.0 if _ref(gps.get(1, "N")) == "S" else 1.0)
        lon = _dms(gps[4]) * (-1.0 if _ref(gps.get(3, "E")) == "W" else 1.0)
        alt = None
        if 6 in gps:
            ref = gps.get(5, 0)
            below = (ref[0] if isinstance(ref, bytes) and ref else int(ref or 0)) == 1
            alt = _rational(gps[6]) * (-1.0 if below else 1.0)
        heading = _rational(gps[17]) if 17 in gps else None
        heading_ref = _ref(gps[16]) if 16 in gps else None
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        log.warning("%s: unreadable EXIF GPS (%s); ignoring it", path, exc)
        return None
    if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        log.warning("%s: EXIF GPS out of range (lat=%s, lon=%s); ignoring it", path, lat, lon)
        return None
    if heading is not None and not math.isfinite(heading):
        heading = None
    return PhotoLocation(lon=lon, lat=lat, altitude=alt, heading=heading,
                         heading_ref=heading_ref or None)


def load_photo(path: str | os.PathLike[str]) -> Photo:
    """Load a JPEG/PNG/TIFF photo as RGB with its EXIF orientation applied, and its EXIF GPS.

    Grayscale, palette and RGBA images are converted to RGB (alpha dropped).

    Raises:
        PhotoError: missing file or not an image PIL can decode.
    """
    p = Path(path)
    if not p.is_file():
        raise PhotoError(f"{p}: photo file not found")
    try:
        with Image.open(p) as im:
            im.load()
            exif = im.getexif()
            gps = _parse_gps(dict(exif.get_ifd(_GPS_IFD)), p) if exif else None
            oriented = ImageOps.exif_transpose(im)
            rgb = oriented.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise PhotoError(f"{p}: cannot read as an image ({exc})") from exc
    image = np.asarray(rgb, dtype=np.uint8).copy()
    h, w = image.shape[:2]
    log.debug("loaded photo %s: %dx%d, orientation %s, gps %s", p, w, h,
              exif.get(_ORIENTATION) if exif else None, gps)
    return Photo(path=p, image=image, width=w, height=h, gps=gps)


def read_location(path: str | os.PathLike[str]) -> PhotoLocation | None:
    """A photo's EXIF GPS position without decoding its pixels; None when it has none.

    Raises:
        PhotoError: missing file or not an image PIL can open.
    """
    p = Path(path)
    if not p.is_file():
        raise PhotoError(f"{p}: photo file not found")
    try:
        with Image.open(p) as im:
            exif = im.getexif()
            return _parse_gps(dict(exif.get_ifd(_GPS_IFD)), p) if exif else None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise PhotoError(f"{p}: cannot read as an image ({exc})") from exc


def validate_points(
    points: Any, width: int, height: int, path: str | os.PathLike[str] | None = None
) -> np.ndarray:
    """Check click points and return them as (m, 2) float64 ``(x, y)``.

    Args:
        points: (m, 2) or a single (x, y); continuous photo pixel coordinates (see module doc).
        width, height: the photo's size after orientation, pixels.
        path: the photo, for messages.

    Raises:
        ClickError: no point, wrong shape, non-finite, outside ``[0, width] x [0, height]``, or a
            duplicated point; the message names the point and the photo.
    """
    where = f"{os.fspath(path)}: " if path is not None else ""
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ClickError(f"{where}click points must be numbers (x, y), got {points!r}") from exc
    if pts.ndim == 1 and pts.size == 2:
        pts = pts[None, :]
    if pts.size == 0:
        raise ClickError(f"{where}at least one click point (x, y) is required")
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ClickError(f"{where}click points must be (m, 2) x, y pairs, got shape {pts.shape}")
    for i, (x, y) in enumerate(pts):
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ClickError(f"{where}click {i} ({x}, {y}) is not finite")
        if not (0.0 <= x <= width and 0.0 <= y <= height):
            raise ClickError(
                f"{where}click {i} ({x:g}, {y:g}) is outside the photo "
                f"[0, {width}] x [0, {height}] (x right, y down, pixels after EXIF orientation)"
            )
    _, first, counts = np.unique(pts, axis=0, return_index=True, return_counts=True)
    if np.any(counts > 1):
        k = int(first[np.argmax(counts > 1)])
        raise ClickError(f"{where}click {k} ({pts[k, 0]:g}, {pts[k, 1]:g}) is given twice")
    return pts


def parse_point(text: str) -> tuple[float, float]:
    """Parse ``"x,y"`` (photo pixels) into floats.

    Raises:
        ClickError: not two comma-separated finite numbers.
    """
    parts = [s.strip() for s in str(text).split(",")]
    try:
        if len(parts) != 2:
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
    except ValueError as exc:
        raise ClickError(f"click point must be 'x,y' (two numbers), got {text!r}") from exc
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ClickError(f"click point must be finite, got {text!r}")
    return x, y


def read_points_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Read click points from CSV or JSON, as (m, 2) float64 ``(x, y)`` photo pixels.

    CSV: one ``x,y`` per line, an optional header whose first two names are ``x,y``.
    JSON (``.json`` or content starting with ``[``/``{``): ``[[x, y], ...]``,
    ``[{"x": .., "y": ..}, ...]`` or ``{"points": <either>}``.

    Raises:
        ClickError: missing file or malformed content (the message names the file and line).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ClickError(f"{p}: cannot read points file ({exc})") from exc
    stripped = text.lstrip()
    pts: list[tuple[float, float]] = []
    if p.suffix.lower() == ".json" or stripped.startswith(("[", "{")):
        try:
            data = json.loads(text)
            if isinstance(data, dict):
                data = data["points"]
            for item in data:
                if isinstance(item, dict):
                    pts.append((float(item["x"]), float(item["y"])))
                else:
                    x, y = item
                    pts.append((float(x), float(y)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ClickError(
                f"{p}: expected JSON [[x, y], ...] or [{{\"x\": .., \"y\": ..}}, ...] ({exc})"
            ) from exc
    else:
        for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
            cells = [c.strip() for c in row]
            if not cells or all(not c for c in cells) or cells[0].startswith("#"):
                continue
            if len(cells) < 2:
                raise ClickError(f"{p}:{lineno}: expected 'x,y', got {row!r}")
            try:
                pts.append((float(cells[0]), float(cells[1])))
            except ValueError as exc:
                if not pts and [c.lower() for c in cells[:2]] == ["x", "y"]:
                    continue  # header
                raise ClickError(f"{p}:{lineno}: expected two numbers 'x,y', got {row!r}") \
                    from exc
    if not pts:
        raise ClickError(f"{p}: no click points found")
    return np.asarray(pts, dtype=np.float64)
