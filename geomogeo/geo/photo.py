"""Query photos: loading with EXIF orientation, EXIF GPS position/heading, click validation.

Photo pixel coordinates are continuous ``(x, y)``: origin at the top-left CORNER of the top-left
pixel of the photo as displayed (after its EXIF orientation is applied), x to the right, y down;
valid clicks lie in ``[0, width] x [0, height]``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from geomogeo.errors import ClickError, PhotoError
from geomogeo.geo.declination import magnetic_declination

__all__ = [
    "Photo",
    "PhotoLocation",
    "focal_px_from_exif",
    "focal_px_from_fov",
    "load_photo",
    "parse_point",
    "read_location",
    "read_points_file",
    "scale_hint_from_exif",
    "validate_points",
]

log = logging.getLogger(__name__)

_GPS_IFD = 0x8825
_EXIF_IFD = 0x8769
_FOCAL_LENGTH = 0x920A
_FOCAL_35MM = 0xA405
_ORIENTATION = 274


@dataclass(frozen=True)
class PhotoLocation:
    """Where a photo was taken, from EXIF GPS.

    Attributes:
        lon, lat: WGS84 degrees (east and north positive).
        altitude: metres above sea level (negative below), or None.
        heading: direction the camera points (GPSImgDirection), degrees clockwise from north
            (true or magnetic per ``heading_ref`` "T"/"M"), or None. A magnetic heading is
            turned true on loading (``heading + declination``, see ``declination``) when the
            World Magnetic Model covers the photo's date and place; otherwise it stays
            magnetic, with a warning.
        heading_ref: "T", "M" or None.
        declination: the magnetic declination (degrees, east positive) added to a magnetic
            EXIF heading to make it true, or None when none was applied.
    """

    lon: float
    lat: float
    altitude: float | None = None
    heading: float | None = None
    heading_ref: str | None = None
    declination: float | None = None


@dataclass(frozen=True)
class Photo:
    """A loaded photo.

    Attributes:
        path: the file.
        image: (height, width, 3) uint8 RGB, EXIF orientation applied.
        width, height: pixels, after orientation.
        gps: EXIF GPS position, or None.
        focal_mm: EXIF ``FocalLength``, millimetres (of the real sensor), or None.
        focal_35mm: EXIF ``FocalLengthIn35mmFilm``, millimetres of the 35 mm equivalent (its
            field of view on a 36 x 24 mm frame, 43.27 mm diagonal), or None.
    """

    path: Path
    image: np.ndarray
    width: int
    height: int
    gps: PhotoLocation | None
    focal_mm: float | None = None
    focal_35mm: float | None = None


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


def _exif_date(exif: Image.Exif, gps: dict[int, Any]) -> dt.date | None:
    """The day the photo was taken: GPSDateStamp (UTC), else DateTimeOriginal, else DateTime."""
    for value in (gps.get(29), exif.get_ifd(_EXIF_IFD).get(36867), exif.get(306)):
        if isinstance(value, bytes):
            value = value.decode("ascii", "ignore")
        try:
            return dt.datetime.strptime(str(value).strip("\x00 ")[:10], "%Y:%m:%d").date()
        except ValueError:
            continue
    return None


def _true_north(loc: PhotoLocation | None, exif: Image.Exif, path: Path) -> PhotoLocation | None:
    """Turn a magnetic EXIF heading true with the WMM declination at the photo's position and
    date (today's date when the photo has none); warn and keep it magnetic when the model
    cannot give one."""
    if loc is None or loc.heading is None or loc.heading_ref != "M":
        return loc
    when = _exif_date(exif, dict(exif.get_ifd(_GPS_IFD)))
    if when is None:
        when = dt.datetime.now(dt.timezone.utc).date()
        log.info("%s: no EXIF date; magnetic declination for today, %s", path, when)
    decl = magnetic_declination(loc.lon, loc.lat, when, loc.altitude or 0.0)
    if decl is None:
        log.warning(
            "%s: the EXIF heading %.1f is magnetic and the World Magnetic Model gives no "
            "declination for %s at (%.5f, %.5f); it is used as if it were true north, so the "
            "photo may be turned by the local declination", path, loc.heading, when, loc.lon,
            loc.lat)
        return loc
    heading = (loc.heading + decl) % 360.0
    log.info("%s: magnetic heading %.2f + declination %.2f (WMM, %s) = true heading %.2f",
             path, loc.heading, decl, when, heading)
    return replace(loc, heading=heading, heading_ref="T", declination=decl)


def _to_rgb(im: Image.Image, path: Path) -> Image.Image:
    """8-bit RGB. 16-bit grayscale (PIL modes ``I;16*``, or ``I`` holding 0..65535) is scaled
    by its type's range, ``v >> 8`` (0 -> 0, 65535 -> 255), as Pillow itself reduces 16-bit
    RGB; PIL's own conversion would saturate it to white. Float or other 32-bit photos have no
    such range and are refused."""
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im)
        if a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
            raise PhotoError(
                f"{path}: 32-bit integer photo with values {int(a.min())}..{int(a.max())}; "
                "only 8- and 16-bit photos are read, convert it first"
            )
        return Image.fromarray((a.astype(np.uint16) >> 8).astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":
        raise PhotoError(
            f"{path}: floating-point photo (PIL mode F) has no defined brightness range; "
            "convert it to an 8- or 16-bit image first"
        )
    return im.convert("RGB")


def load_photo(path: str | os.PathLike[str]) -> Photo:
    """Load a JPEG/PNG/TIFF photo as RGB with its EXIF orientation applied, and its EXIF GPS.

    Grayscale, palette and RGBA images are converted to RGB (alpha dropped); 16-bit images
    are scaled by the 16-bit range (``v >> 8``). A magnetic EXIF heading is made true (see
    :class:`PhotoLocation`).

    Raises:
        PhotoError: missing file, not an image PIL can decode, a decompression bomb (more
            than twice PIL's ``Image.MAX_IMAGE_PIXELS``), or a float/32-bit image.
    """
    p = Path(path)
    if not p.is_file():
        raise PhotoError(f"{p}: photo file not found")
    try:
        with Image.open(p) as im:
            im.load()
            exif = im.getexif()
            gps = _parse_gps(dict(exif.get_ifd(_GPS_IFD)), p) if exif else None
            gps = _true_north(gps, exif, p)
            focal_mm, focal_35mm = _parse_focal(dict(exif.get_ifd(_EXIF_IFD)) if exif else {})
            oriented = ImageOps.exif_transpose(im)
            rgb = _to_rgb(oriented, p)
    except Image.DecompressionBombError as exc:
        raise PhotoError(f"{p}: image too large to decode safely ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, PhotoError):
            raise
        raise PhotoError(f"{p}: cannot read as an image ({exc})") from exc
    image = np.asarray(rgb, dtype=np.uint8).copy()
    h, w = image.shape[:2]
    log.debug("loaded photo %s: %dx%d, orientation %s, gps %s", p, w, h,
              exif.get(_ORIENTATION) if exif else None, gps)
    return Photo(path=p, image=image, width=w, height=h, gps=gps, focal_mm=focal_mm,
                 focal_35mm=focal_35mm)


def _parse_focal(exif: dict[int, Any]) -> tuple[float | None, float | None]:
    """EXIF IFD -> (FocalLength mm, FocalLengthIn35mmFilm mm); None for absent/invalid."""
    out: list[float | None] = []
    for tag in (_FOCAL_LENGTH, _FOCAL_35MM):
        try:
            v = _rational(exif[tag]) if tag in exif else None
        except (TypeError, ValueError, ZeroDivisionError):
            v = None
        out.append(v if v is not None and math.isfinite(v) and v > 0 else None)
    return out[0], out[1]


#: Diagonal of the 36 x 24 mm frame that ``FocalLengthIn35mmFilm`` refers to, millimetres.
_FRAME_35MM_DIAGONAL = math.hypot(36.0, 24.0)


def focal_px_from_exif(photo: Photo) -> float | None:
    """The focal length in photo pixels from EXIF ``FocalLengthIn35mmFilm`` (same diagonal
    field of view: ``f35 / 43.27 mm * photo diagonal in pixels``), or None when absent.

    Assumes square pixels and the full sensor in the photo (no digital crop beyond what the
    camera accounted for in the 35 mm value). E.g. for
    :meth:`geomogeo.geo.register.Registration.camera_position`.
    """
    if photo.focal_35mm is None:
        return None
    return photo.focal_35mm / _FRAME_35MM_DIAGONAL * math.hypot(photo.width, photo.height)


def focal_px_from_fov(extent_px: float, fov_deg: float) -> float:
    """The focal length, pixels, of a pinhole camera whose field of view across
    ``extent_px`` pixels through the principal point (a photo's width, or its diagonal) is
    ``fov_deg`` degrees: ``extent / (2 tan(fov / 2))``."""
    return extent_px / (2.0 * math.tan(math.radians(fov_deg) / 2.0))


def scale_hint_from_exif(
    photo: Photo,
    reference_gsd: float,
    *,
    ground_elevation: float = 0.0,
    height_above_ground: float | None = None,
) -> float | None:
    """The expected reference pixels per photo pixel from EXIF, for
    :func:`geomogeo.geo.register.register`'s ``scale_hint``; None when EXIF lacks the data.

    The photo's ground sample distance at nadir is ``height / focal``, with the focal length
    in pixels from :func:`focal_px_from_exif` (``FocalLength`` alone does not give it without
    the sensor size) and the height
    above the ground as ``height_above_ground`` when given, else EXIF ``GPSAltitude`` minus
    ``ground_elevation`` (metres; GPSAltitude is above sea level, and the ground's elevation
    is not in the photo, so the default 0 is right only near sea level). An oblique view is
    coarser than its nadir GSD away from the photo centre, and the altitude may be far off:
    use the result as a loose prior only (``register`` does: it falls back to a search over
    scales when the hinted scale fails), never as a hard constraint.

    Args:
        photo: from :func:`load_photo`.
        reference_gsd: metres per reference pixel.
        ground_elevation: metres above sea level of the ground below the camera.
        height_above_ground: metres; overrides the EXIF altitude.

    Returns:
        Reference pixels per photo pixel, or None (no 35 mm focal length, no altitude, or a
        height outside 2..3000 m).
    """
    if not (math.isfinite(reference_gsd) and reference_gsd > 0):
        raise ValueError(f"reference_gsd must be a positive number of metres, got "
                         f"{reference_gsd!r}")
    f_px = focal_px_from_exif(photo)
    if f_px is None:
        return None
    height = height_above_ground
    if height is None:
        if photo.gps is None or photo.gps.altitude is None:
            return None
        height = photo.gps.altitude - ground_elevation
    if not (math.isfinite(height) and 2.0 <= height <= 3000.0):
        log.info("%s: implausible height above ground %.1f m; no scale hint", photo.path,
                 height)
        return None
    return height / f_px / reference_gsd


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
    except UnicodeDecodeError as exc:
        raise ClickError(f"{p}: not a text file (not UTF-8 at byte {exc.start})") from exc
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
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ClickError(
                f"{p}: expected JSON [[x, y], ...] or [{{\"x\": .., \"y\": ..}}, ...] "
                f"({'nested too deeply' if isinstance(exc, RecursionError) else exc})"
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
