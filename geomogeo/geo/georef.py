"""The one owner of pixel <-> map and CRS conversions.

Terms used throughout:

- *Pixel coordinates* ``(col, row)`` are continuous: ``(0, 0)`` is the top-left CORNER of the
  top-left pixel, ``(1, 1)`` the bottom-right corner of that pixel, so the centre of pixel index
  ``(i, j)`` is ``(i + 0.5, j + 0.5)``. Functions here use coordinates as given; none adds a
  half-pixel offset. Boxes ``(x1, y1, x2, y2)`` are pixel EDGES.
- *Transform*: a rasterio/affine ``Affine`` mapping pixel coordinates to map ``(x, y)`` exactly as
  GDAL stores it; rotated, sheared and south-up (positive ``e``) transforms all work because every
  point goes through the full affine.
- *Map coordinates* are ``(x, y)`` in the axis order of ``always_xy=True``: x = easting or
  longitude, y = northing or latitude, in the CRS's own units.
- Every CRS argument accepts anything :func:`as_crs` accepts (EPSG string/int, WKT, PROJ string,
  ``pyproj.CRS``, ``rasterio.crs.CRS``). Every transformation runs with ``errcheck=True``, so a
  failing transformation raises instead of returning ``inf``.

Nothing else in geomogeo does arithmetic on transforms.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Geod, Transformer
from pyproj.exceptions import CRSError, ProjError
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient

from geomogeo.errors import GeoreferenceError

__all__ = [
    "WGS84",
    "as_crs",
    "bounds_lonlat",
    "boxes_to_polygons",
    "gcp_boxes_to_polygons",
    "get_transformer",
    "ground_sample_distance",
    "ground_scale",
    "linear_unit_factor",
    "local_metric_crs",
    "lonlat_to_crs",
    "map_to_pixel",
    "pixel_to_map",
    "reproject_geometries",
    "require_georeferenced",
    "scale_transform",
    "scaled_window_transform",
    "to_crs",
    "to_lonlat",
    "window_bounds_lonlat",
]

log = logging.getLogger(__name__)

WGS84 = CRS.from_epsg(4326)


def as_crs(crs: Any) -> CRS:
    """Return ``crs`` as a ``pyproj.CRS``.

    Accepts a ``pyproj.CRS``, a ``rasterio.crs.CRS`` (anything with ``to_wkt()``), an EPSG integer,
    or a string pyproj understands ("EPSG:32631", WKT, PROJ).

    Raises:
        GeoreferenceError: ``crs`` is None or not a valid CRS.
    """
    if isinstance(crs, CRS):
        return crs
    if crs is None:
        raise GeoreferenceError("a CRS is required, got None")
    try:
        if hasattr(crs, "to_wkt"):
            return CRS.from_wkt(crs.to_wkt())
        return CRS.from_user_input(crs)
    except CRSError as exc:
        raise GeoreferenceError(f"not a valid CRS: {crs!r} ({exc})") from exc


@lru_cache(maxsize=64)
def _transformer_from_wkt(src_wkt: str, dst_wkt: str) -> Transformer:
    return Transformer.from_crs(CRS.from_wkt(src_wkt), CRS.from_wkt(dst_wkt), always_xy=True)


def get_transformer(src_crs: Any, dst_crs: Any) -> Transformer:
    """A cached ``pyproj.Transformer`` from ``src_crs`` to ``dst_crs`` with ``always_xy=True``.

    Transformers are costly to build; this caches them on the WKT of both CRSs. Call its
    ``transform`` with ``errcheck=True`` (the helpers of this module do).
    """
    return _transformer_from_wkt(as_crs(src_crs).to_wkt(), as_crs(dst_crs).to_wkt())


def _transform_xy(tr: Transformer, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    try:
        ox, oy = tr.transform(xa, ya, errcheck=True)
    except ProjError as exc:
        raise GeoreferenceError(
            f"coordinate transformation {tr.source_crs.name!r} -> {tr.target_crs.name!r} failed "
            f"for x={xa.tolist()!r}, y={ya.tolist()!r}: {exc}"
        ) from exc
    return np.asarray(ox, dtype=np.float64), np.asarray(oy, dtype=np.float64)


def _out(x: Any, ox: np.ndarray, oy: np.ndarray) -> tuple[Any, Any]:
    """Scalars in, floats out; arrays in, arrays out."""
    if np.ndim(x) == 0:
        return float(ox), float(oy)
    return ox, oy


def to_crs(x: Any, y: Any, src_crs: Any, dst_crs: Any) -> tuple[Any, Any]:
    """Transform map coordinates ``(x, y)`` (scalars or arrays) from ``src_crs`` to ``dst_crs``.

    Axis order is always x = easting/longitude, y = northing/latitude. Scalars give floats,
    arrays give float64 arrays.

    Raises:
        GeoreferenceError: the transformation fails (e.g. outside the CRS's domain).
    """
    src, dst = as_crs(src_crs), as_crs(dst_crs)
    if src.equals(dst):
        xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        return _out(x, xa, ya)
    ox, oy = _transform_xy(get_transformer(src, dst), x, y)
    return _out(x, ox, oy)


def lonlat_to_crs(lon: Any, lat: Any, crs: Any) -> tuple[Any, Any]:
    """WGS84 longitude/latitude in degrees -> ``(x, y)`` in ``crs``."""
    return to_crs(lon, lat, WGS84, crs)


def to_lonlat(x: Any, y: Any, crs: Any) -> tuple[Any, Any]:
    """``(x, y)`` in ``crs`` -> WGS84 ``(lon, lat)`` in degrees."""
    return to_crs(x, y, crs, WGS84)


def pixel_to_map(transform: Affine, cols: Any, rows: Any) -> tuple[Any, Any]:
    """Continuous pixel coordinates -> map ``(x, y)`` through the full affine, used as given.

    Args:
        transform: pixel EDGES -> map affine.
        cols, rows: continuous pixel coordinates (pixel ``(0, 0)`` = top-left corner of the
            raster); pass ``i + 0.5`` for the centre of pixel index ``i``.

    Returns:
        ``(xs, ys)`` in the transform's CRS units; floats for scalars, arrays otherwise.
    """
    c = np.asarray(cols, dtype=np.float64)
    r = np.asarray(rows, dtype=np.float64)
    a, b, xoff, d, e, yoff = transform.a, transform.b, transform.c, transform.d, transform.e, \
        transform.f
    xs = a * c + b * r + xoff
    ys = d * c + e * r + yoff
    return _out(cols, np.asarray(xs), np.asarray(ys))


def map_to_pixel(transform: Affine, xs: Any, ys: Any) -> tuple[Any, Any]:
    """Map ``(x, y)`` -> continuous pixel ``(col, row)`` (the exact inverse of
    :func:`pixel_to_map`; no flooring, no centre offset).

    Raises:
        GeoreferenceError: the transform is degenerate (not invertible).
    """
    if transform.is_degenerate:
        raise GeoreferenceError(f"transform is not invertible: {transform!r}")
    return pixel_to_map(~transform, xs, ys)


def scale_transform(transform: Affine, factor: float | tuple[float, float]) -> Affine:
    """Transform of the same area sampled with pixels ``factor`` times as large.

    ``scale_transform(t, s) * (col, row) == t * (s * col, s * row)``: e.g. a heatmap of ``w``
    pixels covering a window of ``size`` pixels uses ``factor = size / w``.
    """
    sx, sy = (factor, factor) if np.isscalar(factor) else factor  # type: ignore[misc]
    return transform @ Affine.scale(float(sx), float(sy))


def scaled_window_transform(
    window_transform: Affine,
    window_size_px: tuple[float, float] | float,
    model_size_px: tuple[float, float] | float,
) -> Affine:
    """Compose a window transform with the resize of that window to a model input.

    Args:
        window_transform: pixel EDGES of the window -> map.
        window_size_px: (width, height) of the window in its own pixels (or one number).
        model_size_px: (width, height) of the model input (or one number).

    Returns:
        An affine from model-input pixel edges to map: model ``(0, 0)`` and ``(W, H)`` land on the
        window's corners ``(0, 0)`` and ``(window_w, window_h)``.
    """
    ww, wh = (window_size_px, window_size_px) if np.isscalar(window_size_px) else window_size_px  # type: ignore[misc]
    mw, mh = (model_size_px, model_size_px) if np.isscalar(model_size_px) else model_size_px  # type: ignore[misc]
    return scale_transform(window_transform, (float(ww) / float(mw), float(wh) / float(mh)))


def _as_boxes(boxes: Any) -> np.ndarray:
    """``boxes`` as an (n, 4) float64 array of ``(x1, y1, x2, y2)``; one box may be given flat.

    Raises:
        ValueError: not (n, 4) finite.
    """
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim == 1 and b.size == 4:
        b = b[None, :]
    if b.ndim != 2 or b.shape[1] != 4 or not np.all(np.isfinite(b)):
        raise ValueError(f"boxes must be (n, 4) finite x1, y1, x2, y2, got shape {b.shape}")
    return b


def boxes_to_polygons(boxes: Any, transform: Affine) -> list[Polygon]:
    """Boxes in pixel coordinates -> map polygons (one per box, counter-clockwise exterior).

    Args:
        boxes: (n, 4) ``(x1, y1, x2, y2)`` continuous pixel EDGES (x = column, y = row).
        transform: pixel -> map affine; all four corners go through it, so rotated, sheared and
            south-up transforms give the exact parallelogram.

    Returns:
        n shapely Polygons in the transform's CRS.

    Raises:
        ValueError: ``boxes`` is not (n, 4) finite.
    """
    b = _as_boxes(boxes)
    x1, y1, x2, y2 = b.T
    cols = np.stack([x1, x2, x2, x1], axis=1)
    rows = np.stack([y1, y1, y2, y2], axis=1)
    xs, ys = pixel_to_map(transform, cols, rows)
    return [orient(Polygon(np.column_stack([xs[i], ys[i]])), sign=1.0) for i in range(len(b))]


def gcp_boxes_to_polygons(boxes: Any, gcps: Sequence[Any], edge_pts: int = 8) -> list[Polygon]:
    """Boxes in pixel coordinates of a GCP-georeferenced image -> polygons in the GCPs' CRS.

    Pixels go through GDAL's GCP transformer (rasterio ``GCPTransformer``: the polynomial
    ``gdalwarp`` fits, its order chosen from the number of GCPs), each box edge sampled at
    ``edge_pts`` intermediate points since a polynomial of order > 1 bends straight edges.

    Args:
        boxes: (n, 4) ``(x1, y1, x2, y2)`` continuous pixel EDGES of the image (x = column).
        gcps: the image's ground control points (rasterio ``GroundControlPoint``s).
        edge_pts: intermediate points per edge.

    Raises:
        ValueError: ``boxes`` is not (n, 4) finite.
    """
    from rasterio.transform import GCPTransformer

    b = _as_boxes(boxes)
    u = np.linspace(0.0, 1.0, edge_pts + 2)[:-1]  # each edge without its end corner
    out = []
    with GCPTransformer(list(gcps)) as tr:
        for x1, y1, x2, y2 in b:
            cols = np.concatenate([x1 + (x2 - x1) * u, np.full(u.size, x2),
                                   x2 - (x2 - x1) * u, np.full(u.size, x1)])
            rows = np.concatenate([np.full(u.size, y1), y1 + (y2 - y1) * u,
                                   np.full(u.size, y2), y2 - (y2 - y1) * u])
            xs, ys = tr.xy(rows, cols, offset="ul")
            out.append(orient(Polygon(np.column_stack([xs, ys])), sign=1.0))
    return out


def reproject_geometries(
    geoms: Sequence[Any], src_crs: Any, dst_crs: Any, densify_pts: int = 21
) -> list[Any]:
    """Reproject shapely geometries, densifying their edges first.

    Each geometry's segments are split so its longest segment gets ``densify_pts`` intermediate
    vertices (shorter ones proportionally fewer), then every vertex is transformed in one
    vectorised pyproj call. Polygons stay valid lines of the true (curved) image of each edge.

    Args:
        geoms: shapely geometries in ``src_crs``.
        src_crs, dst_crs: CRSs (see :func:`as_crs`).
        densify_pts: intermediate points on the longest segment; 0 disables densification.

    Raises:
        GeoreferenceError: the transformation fails.
    """
    src, dst = as_crs(src_crs), as_crs(dst_crs)
    if src.equals(dst):
        return list(geoms)
    tr = get_transformer(src, dst)

    def fn(coords: np.ndarray) -> np.ndarray:
        ox, oy = _transform_xy(tr, coords[:, 0], coords[:, 1])
        return np.column_stack([ox, oy])

    out = []
    for g in geoms:
        if g is None or g.is_empty:
            out.append(g)
            continue
        if densify_pts > 0 and g.geom_type not in ("Point", "MultiPoint"):
            c = shapely.get_coordinates(g)
            if len(c) > 1:
                longest = float(np.max(np.hypot(*np.diff(c, axis=0).T)))
                if longest > 0:
                    g = shapely.segmentize(g, longest / (densify_pts + 1) * (1 + 1e-9))
        out.append(shapely.transform(g, fn))
    return out


def linear_unit_factor(crs: Any) -> float:
    """Metres per unit of the first axis of a projected CRS (1.0 for metres, 0.3048006... for
    US survey feet)."""
    c = as_crs(crs)
    for ax in c.axis_info:
        if ax.unit_conversion_factor:
            return float(ax.unit_conversion_factor)
    return 1.0


def _geodesic(
    crs: Any, x0: Any, y0: Any, x1: Any, y1: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Geodesic distance (metres) and forward azimuth (degrees clockwise from north) from the
    map points ``(x0, y0)`` to ``(x1, y1)`` of ``crs``, on the CRS's own ellipsoid (the points go
    through the CRS's inverse projection only, no datum change)."""
    c = as_crs(crs)
    geo = c.geodetic_crs or WGS84
    lon0, lat0 = to_crs(x0, y0, c, geo)
    lon1, lat1 = to_crs(x1, y1, c, geo)
    to_deg = math.degrees(linear_unit_factor(geo))  # 1 for degrees; grads/radians otherwise
    geod = c.get_geod() or Geod(ellps="WGS84")
    az, _, dist = geod.inv(np.asarray(lon0) * to_deg, np.asarray(lat0) * to_deg,
                           np.asarray(lon1) * to_deg, np.asarray(lat1) * to_deg)
    return np.asarray(dist, dtype=np.float64), np.asarray(az, dtype=np.float64)


def ground_sample_distance(
    transform: Affine, crs: Any, at: tuple[float, float] = (0.5, 0.5)
) -> tuple[float, float]:
    """Ground size of one pixel, metres: ``(along a row, along a column)``.

    Measured on the ground for every CRS: the geodesic distance, on the CRS's ellipsoid, between
    the midpoints of opposite pixel edges. So it includes the projection's scale at that pixel
    (Web Mercator at 52 N: a 0.81 m map-unit pixel is 0.50 m on the ground; a geographic
    pixel's width depends on latitude; US survey feet are converted).

    Args:
        transform: pixel -> map affine.
        crs: the raster's CRS.
        at: continuous pixel coordinate ``(col, row)`` where the pixel is measured; the default
            is the centre of the top-left pixel.
    """
    col, row = float(at[0]), float(at[1])
    xs, ys = pixel_to_map(
        transform, [col - 0.5, col + 0.5, col, col], [row, row, row - 0.5, row + 0.5]
    )
    dists, _ = _geodesic(crs, xs[[0, 2]], ys[[0, 2]], xs[[1, 3]], ys[[1, 3]])
    return float(dists[0]), float(dists[1])


def ground_scale(crs: Any, x: float, y: float) -> tuple[float, float, float]:
    """The map grid of ``crs`` on the ground at map point ``(x, y)``.

    Measured geodesically over about one metre around the point (central differences), so it
    is the true local scale of any projection, conformal or not.

    Returns:
        ``(mx, my, angle)``: ground metres per map unit along the x axis and along the y axis,
        and the ground angle between the two axes in degrees (90 where the grid is not sheared).
        A projected CRS in metres without distortion gives ``(1, 1, 90)``; Web Mercator gives
        about ``cos(lat)`` for both; a geographic CRS in degrees about ``111 km * cos(lat)`` and
        ``111 km``.
    """
    c = as_crs(crs)
    f = linear_unit_factor(c)
    # about one metre, in map units (geographic: radians per unit -> one metre of arc)
    s = 1.0 / f if not c.is_geographic else 1.0 / (6_371_000.0 * f)
    x, y = float(x), float(y)
    d, az = _geodesic(c, [x - s / 2, x], [y, y - s / 2], [x + s / 2, x], [y, y + s / 2])
    angle = abs((float(az[0] - az[1]) + 180.0) % 360.0 - 180.0)
    return float(d[0] / s), float(d[1] / s), angle


def local_metric_crs(lon: float, lat: float) -> CRS:
    """A metric CRS with square pixels near ``(lon, lat)`` (degrees, WGS84).

    The WGS84 UTM zone containing the point (north or south), or, beyond 84 N / 80 S where
    UTM is undefined, an azimuthal equidistant projection centred on the point.
    """
    if not (math.isfinite(lon) and math.isfinite(lat)) or abs(lat) > 90:
        raise GeoreferenceError(f"invalid lon/lat ({lon}, {lat})")
    if -80.0 <= lat <= 84.0:
        lon_n = (lon + 180.0) % 360.0 - 180.0
        zone = min(int((lon_n + 180.0) // 6.0) + 1, 60)
        return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)
    return CRS.from_proj4(
        f"+proj=aeqd +lat_0={lat:.9f} +lon_0={lon:.9f} +x_0=0 +y_0=0 +datum=WGS84 +units=m"
    )


def bounds_lonlat(
    transform: Affine, crs: Any, width: float, height: float, densify_pts: int = 21
) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` degrees of the raster area ``[0, width] x [0, height]``
    (pixel edges), with each edge densified before the transformation.

    Always ``west < east``, as one continuous range of longitudes: an area that crosses the
    antimeridian gets ``east > 180`` (e.g. ``(179.9, s, 180.1, n)``) instead of bounds spanning
    the globe (``(-179.9, s, 179.9, n)``). Add or subtract 360 to a longitude to compare it;
    Leaflet draws such ranges as they are. (RFC 7946 expresses the same box as
    ``west > east``: ``(179.9, s, -179.9, n)``.) Only when the longitudes cannot be brought
    within 180 degrees of each other (a global or polar area) are they left as they are.
    """
    ring = boxes_to_polygons([[0.0, 0.0, float(width), float(height)]], transform)[0]
    ll = reproject_geometries([ring], crs, WGS84, densify_pts=densify_pts)[0]
    coords = np.asarray(ll.exterior.coords)
    lon, lat = coords[:, 0], coords[:, 1]
    if np.ptp(lon) > 180.0:
        shifted = np.where(lon < 0.0, lon + 360.0, lon)
        if np.ptp(shifted) < 180.0:
            lon = shifted
    return float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())


def window_bounds_lonlat(
    transform: Affine, crs: Any, size: float | tuple[float, float]
) -> tuple[float, float, float, float]:
    """Leaflet-style ``(south, west, north, east)`` degrees of a window of ``size`` pixels
    (one number for square windows, or (width, height))."""
    w_px, h_px = (size, size) if np.isscalar(size) else size  # type: ignore[misc]
    w, s, e, n = bounds_lonlat(transform, crs, float(w_px), float(h_px))
    return s, w, n, e


def require_georeferenced(
    crs: Any, transform: Affine | None, path: str | os.PathLike[str] | None = None
) -> None:
    """Raise :class:`GeoreferenceError` naming ``path`` when ``crs`` is missing or ``transform``
    is missing, the identity (GDAL's default for an ungeoreferenced image) or degenerate."""
    where = f"{os.fspath(path)}: " if path is not None else ""
    if crs is None or (isinstance(crs, str) and not crs.strip()):
        raise GeoreferenceError(
            f"{where}raster has no CRS; it is not georeferenced (pass crs=... explicitly if you "
            "know it)"
        )
    if transform is None or transform.is_identity:
        raise GeoreferenceError(
            f"{where}raster has no geotransform (identity {transform!r}); it is not "
            "georeferenced (pass transform=... explicitly if you know it)"
        )
    if transform.is_degenerate:
        raise GeoreferenceError(f"{where}raster geotransform is degenerate: {transform!r}")
