"""Interactive result maps (folium / Leaflet) that work without a network.

Conventions:

- Every coordinate handed to this module is WGS 84 (EPSG:4326) in degrees. Points are
  ``(lon, lat)`` (x = lon, as everywhere in geomogeo); bounds are Leaflet-style
  ``(south, west, north, east)`` = ``(min lat, min lon, max lat, max lon)``.
- Near the antimeridian, longitudes form one continuous range: bounds may have ``east > 180``
  (e.g. west 179.9, east 180.1, as :func:`geomogeo.geo.georef.bounds_lonlat` gives them), and
  every target polygon and the photo point are drawn in that same range (each longitude
  shifted by a multiple of 360 to lie within 180 degrees of the window's centre, or of the
  geometry's first vertex without a window), so nothing on the map spans the globe.
- Images are (h, w, 3|4) uint8 arrays, row 0 at the NORTH edge of their bounds. Leaflet's
  ``ImageOverlay`` stretches an image linearly between its bounds in Web Mercator, so an image
  is placed exactly only if it is north-up in EPSG:4326/EPSG:3857; a window of a UTM raster is
  off by the grid convergence (a fraction of a degree of rotation): fine for display, never
  used for measurements (the GeoPackage/GeoJSON outputs are the exact ones).
- *Offline* maps (the default) load Leaflet 1.9.4 from a ``leaflet/`` folder copied next to the
  HTML from the installed ``django-js-lib-leaflet`` package, have no tile layer and reference no
  http(s) script or stylesheet; images are embedded as PNG data URLs, so the HTML plus its
  ``leaflet/`` folder is self-contained.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import shutil
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import folium
import geopandas as gpd
import numpy as np
import shapely
from PIL import Image

from geomogeo.errors import OutputError
from geomogeo.geo.export import atomic_write, to_rfc7946_frame

__all__ = [
    "LEAFLET_DIRNAME",
    "TARGET_CLASS",
    "heatmap_rgba",
    "make_map",
    "offline_leaflet_assets",
    "remote_references",
]

logger = logging.getLogger(__name__)

#: Folder (next to the HTML) that receives the offline Leaflet files.
LEAFLET_DIRNAME = "leaflet"
#: CSS class of every target polygon's SVG path (``path.geomogeo-target`` in the DOM).
TARGET_CLASS = "geomogeo-target"
PHOTO_CLASS = "geomogeo-photo"
WINDOW_CLASS = "geomogeo-window"
HEATMAP_CLASS = "geomogeo-heatmap"
FOOTPRINT_CLASS = "geomogeo-footprint"

_TARGET_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
                   "#f032e6", "#bfef45", "#fabed4", "#469990")
_POPUP_FIELDS = ("target", "score", "click_x", "click_y")

_REMOTE_TAG = re.compile(
    r"""<script\b[^>]*\bsrc\s*=\s*["']?(?:https?:)?//[^>]*>\s*</script>"""
    r"""|<link\b[^>]*\bhref\s*=\s*["']?(?:https?:)?//[^>]*>""",
    re.IGNORECASE,
)

Bounds = tuple[float, float, float, float]


def _leaflet_source() -> Path:
    try:
        root = resources.files("js_lib_leaflet") / "static" / "js_lib_leaflet"
    except ModuleNotFoundError as exc:
        raise OutputError(
            "offline maps need Leaflet from the package django-js-lib-leaflet; "
            "install it with `pip install django-js-lib-leaflet` or pass offline=False"
        ) from exc
    src = Path(str(root))
    if not (src / "leaflet.js").is_file():
        raise OutputError(f"Leaflet files not found in {str(src)!r} (django-js-lib-leaflet)")
    return src


def offline_leaflet_assets(dest_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Copy Leaflet's js, css and images into ``dest_dir/leaflet/``.

    Returns:
        ``{"js": "leaflet/leaflet.js", "css": "leaflet/leaflet.css"}``: URLs relative to
        ``dest_dir`` (POSIX separators), to use from an HTML file saved in ``dest_dir``.
        Leaflet's css finds its control images in ``leaflet/images/`` by itself.

    Raises:
        OutputError: Leaflet is not installed or ``dest_dir`` cannot be written.
    """
    src = _leaflet_source()
    dest = Path(dest_dir) / LEAFLET_DIRNAME
    try:
        (dest / "images").mkdir(parents=True, exist_ok=True)
        for name in ("leaflet.js", "leaflet.css"):
            shutil.copyfile(src / name, dest / name)
        for img in sorted((src / "images").glob("*.png")):
            shutil.copyfile(img, dest / "images" / img.name)
    except OSError as exc:
        raise OutputError(f"cannot copy Leaflet assets into {str(dest)!r}: {exc}") from exc
    return {"js": f"{LEAFLET_DIRNAME}/leaflet.js", "css": f"{LEAFLET_DIRNAME}/leaflet.css"}


#: Colour ramp of heatmaps (value 0 -> 1): dark purple, red, orange, pale yellow.
_RAMP = np.array(
    [[40, 11, 84], [120, 28, 109], [187, 55, 84], [237, 105, 37], [251, 180, 26],
     [252, 255, 164]], dtype=np.float64,
)


def heatmap_rgba(heatmap: np.ndarray, max_alpha: int = 200) -> np.ndarray:
    """A (h, w) heatmap in [0, 1] -> (h, w, 4) uint8 RGBA for an overlay: colour from a
    perceptual ramp, alpha growing with the value so the imagery shows through weak areas.
    NaN is fully transparent."""
    v = np.asarray(heatmap, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"heatmap must be 2-D, got shape {v.shape}")
    nan = ~np.isfinite(v)
    v = np.clip(np.where(nan, 0.0, v), 0.0, 1.0)
    pos = v * (len(_RAMP) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_RAMP) - 2)
    frac = (pos - lo)[..., None]
    rgb = _RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac
    alpha = np.where(nan, 0.0, 40 + (max_alpha - 40) * v)
    return np.dstack([rgb, alpha]).round().astype(np.uint8)


def remote_references(html: str) -> list[str]:
    """The ``<script src>``/``<link href>`` tags of ``html`` that point to http(s) URLs."""
    return _REMOTE_TAG.findall(html)


def _png_data_url(image: np.ndarray, what: str) -> str:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.size == 0:
        raise ValueError(
            f"{what} must be an (h, w, 3) or (h, w, 4) uint8 array, "
            f"got dtype {arr.dtype} shape {arr.shape}"
        )
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr), "RGB" if arr.shape[2] == 3 else "RGBA").save(
        buf, format="PNG", optimize=True
    )
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _check_bounds(bounds: Sequence[float], what: str) -> Bounds:
    try:
        s, w, n, e = (float(v) for v in bounds)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be (south, west, north, east) degrees, got {bounds!r}") \
            from exc
    if not (-90 <= s < n <= 90 and -180 <= w < e and w <= 180 and e - w <= 360):
        raise ValueError(
            f"{what} must be (south, west, north, east) in degrees with south < north and "
            f"west < east (east may pass 180 across the antimeridian), got {bounds!r} (did you "
            "pass (west, south, east, north)?)"
        )
    return s, w, n, e


def _near_lon(lon: Any, ref: float) -> Any:
    """``lon`` shifted by multiples of 360 degrees into ``[ref - 180, ref + 180)``."""
    return ref + (np.asarray(lon, dtype=np.float64) - ref + 180.0) % 360.0 - 180.0


def _continuous(geom: Any, ref: float | None) -> Any:
    """``geom`` with every longitude within 180 degrees of ``ref`` (None: of its first vertex),
    so a polygon crossing the antimeridian is drawn as one small shape."""

    def fn(c: np.ndarray) -> np.ndarray:
        out = c.copy()
        out[:, 0] = _near_lon(c[:, 0], float(c[0, 0]) if ref is None else ref)
        return out

    return shapely.transform(geom, fn)


def _union(a: Bounds | None, b: Bounds) -> Bounds:
    if a is None:
        return b
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _targets_layer(targets: gpd.GeoDataFrame,
                   ref_lon: float | None) -> tuple[folium.GeoJson, Bounds]:
    missing = [c for c in _POPUP_FIELDS if c not in targets.columns]
    if missing:
        raise ValueError(f"targets lack the columns {missing} (needs {list(_POPUP_FIELDS)})")
    frame = to_rfc7946_frame(targets)  # no-op for EPSG:4326 input
    shown = gpd.GeoDataFrame(
        {
            "target": frame["target"].astype(int).to_numpy(),
            "score": np.round(frame["score"].astype(float).to_numpy(), 3),
            "click_x": np.round(frame["click_x"].astype(float).to_numpy(), 1),
            "click_y": np.round(frame["click_y"].astype(float).to_numpy(), 1),
        },
        geometry=[_continuous(g, ref_lon) for g in frame.geometry.to_numpy()],
        crs=frame.crs,
    )

    def style(feature: dict[str, Any]) -> dict[str, Any]:
        colour = _TARGET_COLOURS[int(feature["properties"]["target"]) % len(_TARGET_COLOURS)]
        return {"className": TARGET_CLASS, "color": colour, "weight": 3,
                "fillColor": colour, "fillOpacity": 0.15}

    layer = folium.GeoJson(
        shown,
        name="Targets",
        style_function=style,
        highlight_function=lambda _f: {"weight": 5},
        popup=folium.GeoJsonPopup(
            fields=list(_POPUP_FIELDS),
            aliases=["Target", "Score", "Click x (photo px)", "Click y (photo px)"],
        ),
        tooltip=folium.GeoJsonTooltip(fields=["target"], aliases=["Target"]),
    )
    minx, miny, maxx, maxy = (float(v) for v in shown.total_bounds)
    return layer, (miny, minx, maxy, maxx)


def make_map(
    path: str | os.PathLike[str],
    *,
    window_image: np.ndarray | None = None,
    window_bounds_lonlat: Sequence[float] | None = None,
    targets: gpd.GeoDataFrame | None = None,
    photo_location: tuple[float, float] | None = None,
    heatmaps: Sequence[tuple[str, np.ndarray, Sequence[float]]] = (),
    offline: bool | None = None,
    title: str = "geomogeo",
    footprint: gpd.GeoDataFrame | None = None,
) -> Path:
    """Write an interactive Leaflet map of one localization result as HTML, atomically.

    Args:
        path: the ``.html`` file. For offline maps a ``leaflet/`` folder is written beside it.
        window_image: the reference window as an (h, w, 3|4) uint8 image (row 0 = north),
            shown as an image overlay embedded as a PNG data URL.
        window_bounds_lonlat: the window's ``(south, west, north, east)`` in degrees; needed
            with ``window_image``; the map view is fitted to it.
        targets: polygons with columns ``target``, ``score``, ``click_x``, ``click_y``
            (photo pixels), in EPSG:4326 (other CRSs are reprojected); drawn as SVG paths of
            class :data:`TARGET_CLASS` with a popup showing those columns.
        photo_location: where the photo was taken, ``(lon, lat)`` degrees; drawn as a circle
            marker (no icon images or icon fonts needed).
        heatmaps: ``(name, rgba (h, w, 4) uint8, (south, west, north, east))`` per heatmap,
            each a toggleable overlay, hidden at start.
        offline: True or None (default): local Leaflet, no tile layer, no remote references.
            False: folium's CDN scripts and an OpenStreetMap tile layer.
        title: the page title.
        footprint: the photo's registered ground footprint (polygons with numeric quality
            columns, any CRS, reprojected to EPSG:4326), drawn as the layer "Photo footprint"
            (SVG paths of class ``geomogeo-footprint``) with a popup of its columns.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: malformed images, bounds or target columns.
        OutputError: the HTML or the Leaflet assets cannot be written, or an offline page
            would still reference a remote script or stylesheet.
    """
    target = Path(path)
    offline = True if offline is None else bool(offline)
    if (window_image is None) != (window_bounds_lonlat is None):
        raise ValueError("window_image and window_bounds_lonlat must be given together")

    m = folium.Map(tiles=None if offline else "OpenStreetMap", control_scale=True,
                   zoom_start=2, location=(0.0, 0.0))

    fit: Bounds | None = None
    ref_lon: float | None = None
    if window_image is not None and window_bounds_lonlat is not None:
        s, w, n, e = _check_bounds(window_bounds_lonlat, "window_bounds_lonlat")
        ref_lon = (w + e) / 2
        folium.raster_layers.ImageOverlay(
            image=_png_data_url(window_image, "window_image"),
            bounds=[[s, w], [n, e]],
            name="Reference window",
            overlay=True,
            show=True,
            className=WINDOW_CLASS,
        ).add_to(m)
        fit = (s, w, n, e)

    other: Bounds | None = None
    for i, item in enumerate(heatmaps):
        try:
            name, rgba, hb = item
        except (TypeError, ValueError) as exc:
            raise ValueError(f"heatmaps[{i}] must be (name, rgba image, bounds)") from exc
        if np.asarray(rgba).ndim != 3 or np.asarray(rgba).shape[2] != 4:
            raise ValueError(f"heatmaps[{i}] ({name!r}) must be an (h, w, 4) uint8 RGBA image")
        s, w, n, e = _check_bounds(hb, f"bounds of heatmaps[{i}] ({name!r})")
        folium.raster_layers.ImageOverlay(
            image=_png_data_url(rgba, f"heatmap {name!r}"),
            bounds=[[s, w], [n, e]],
            name=str(name),
            overlay=True,
            show=False,
            opacity=0.7,
            className=HEATMAP_CLASS,
        ).add_to(m)
        other = _union(other, (s, w, n, e))

    if footprint is not None and len(footprint):
        fp = footprint.to_crs("EPSG:4326")
        fields = [c for c in fp.columns if c != "geometry"]
        folium.GeoJson(
            fp.__geo_interface__, name="Photo footprint",
            style_function=lambda _f: {"className": FOOTPRINT_CLASS, "color": "#ffd700",
                                       "weight": 2, "fillOpacity": 0.05},
            popup=folium.GeoJsonPopup(fields=fields) if fields else None,
        ).add_to(m)
        w, s_, e, n = (float(v) for v in fp.total_bounds)
        other = _union(other, (s_, w, n, e))

    if targets is not None and len(targets):
        layer, tb = _targets_layer(targets, ref_lon)
        layer.add_to(m)
        other = _union(other, tb)

    if photo_location is not None:
        lon, lat = (float(v) for v in photo_location)
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise ValueError(f"photo_location must be (lon, lat) degrees, got {photo_location!r}")
        drawn_lon = lon if ref_lon is None else float(_near_lon(lon, ref_lon))
        # A GeoJson point drawn as a circle marker: its popup needs neither jQuery (which
        # folium.Popup uses) nor icon images/fonts (which folium.Marker uses).
        photo = {
            "type": "FeatureCollection",
            "features": [{
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [drawn_lon, lat]},
                "properties": {"what": "photo location", "lon": round(lon, 7),
                               "lat": round(lat, 7)},
            }],
        }
        folium.GeoJson(
            photo,
            name="Photo location",
            marker=folium.CircleMarker(radius=8, weight=2, fill=True),
            style_function=lambda _f: {"className": PHOTO_CLASS, "color": "#000000",
                                       "fillColor": "#ffd700", "fillOpacity": 0.9},
            popup=folium.GeoJsonPopup(fields=["what", "lon", "lat"],
                                      aliases=["", "Lon", "Lat"]),
        ).add_to(m)
        other = _union(other, (lat, drawn_lon, lat, drawn_lon))

    folium.LayerControl(collapsed=False).add_to(m)
    view = fit if fit is not None else other
    if view is not None:
        s, w, n, e = view
        m.fit_bounds([[s, w], [n, e]])

    if offline:
        assets = offline_leaflet_assets(target.parent)
        # Per-instance lists: only Leaflet itself, from the local copy. jQuery, bootstrap,
        # awesome-markers and font-awesome are not needed by the layers used here (no
        # folium.Marker, no folium.Popup: both would need them).
        m.default_js = [("leaflet", assets["js"])]
        m.default_css = [("leaflet_css", assets["css"])]
    html = m.get_root().render()
    html = html.replace("<head>", f"<head>\n    <title>{_escape(title)}</title>", 1)
    if offline:
        leftovers = remote_references(html)
        if leftovers:
            logger.warning("removing remote references from the offline map: %s", leftovers)
            html = _REMOTE_TAG.sub("", html)
        if remote_references(html):  # pragma: no cover - defensive
            raise OutputError(f"offline map {str(target)!r} still references remote resources")
    with atomic_write(target) as tmp:
        try:
            tmp.write_text(html, encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write map {str(target)!r}: {exc}") from exc
    logger.info("wrote %s map %s", "offline" if offline else "online", target)
    return target


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
