"""Tests of geomogeo.geo.maps, rendered by headless Chromium (an independent reader)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from oracles import chromium_render
from PIL import Image

from geomogeo.geo.maps import TARGET_CLASS, make_map, offline_leaflet_assets, remote_references

S, W, N, E = 41.380, 2.160, 41.390, 2.175  # window bounds (south, west, north, east), degrees
WINDOW_RGB = (20, 120, 20)
TARGET_COLOURS = [(0xE6, 0x19, 0x4B), (0x3C, 0xB4, 0x4B), (0x43, 0x63, 0xD8)]


def _targets() -> gpd.GeoDataFrame:
    polys = [shapely.box(W + 0.002 + 0.004 * i, S + 0.002 + 0.002 * i,
                         W + 0.004 + 0.004 * i, S + 0.003 + 0.002 * i) for i in range(3)]
    return gpd.GeoDataFrame(
        {"target": [0, 1, 2], "score": [0.91, 0.82, 0.73],
         "click_x": [101.0, 202.0, 303.0], "click_y": [44.0, 55.0, 66.0]},
        geometry=polys, crs="EPSG:4326",
    )


def _heat(value: int) -> np.ndarray:
    hm = np.zeros((50, 60, 4), np.uint8)
    hm[..., 0] = value
    hm[..., 3] = np.linspace(0, 255, 60, dtype=np.uint8)[None, :]
    return hm


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("map")
    window = np.empty((200, 300, 3), np.uint8)
    window[:] = WINDOW_RGB
    html = make_map(
        folder / "result.html",
        window_image=window,
        window_bounds_lonlat=(S, W, N, E),
        targets=_targets(),
        photo_location=(2.1705, 41.3851),
        heatmaps=[("heat target 0", _heat(255), (S, W, N, E)),
                  ("heat target 1", _heat(128), (S, W, N, E))],
    )
    result = chromium_render(html, folder / "result.png")
    return html, result


def test_offline_html_has_no_remote_resources(rendered) -> None:
    html, _ = rendered
    text = html.read_text(encoding="utf-8")
    assert remote_references(text) == []
    assert not re.search(r"<(script|link)\b[^>]*(src|href)\s*=\s*[\"']?(https?:)?//", text, re.I)
    assert "L.tileLayer" not in text
    # Every local script/stylesheet it references exists next to it.
    refs = re.findall(r"<script\b[^>]*\bsrc=\"([^\"]+)\"", text)
    refs += re.findall(r"<link\b[^>]*\bhref=\"([^\"]+)\"", text)
    assert sorted(refs) == ["leaflet/leaflet.css", "leaflet/leaflet.js"]
    for ref in refs:
        assert (html.parent / ref).is_file(), ref
    assert (html.parent / "leaflet" / "images" / "layers.png").is_file()
    assert not list(html.parent.glob(".*tmp*")), "temporary file left behind"


def test_chromium_builds_the_map(rendered) -> None:
    _, res = rendered
    dom = res.dom
    assert res.js_errors == [], res.js_errors
    assert "leaflet-container" in dom
    imgs = re.findall(r"<img\b[^>]*class=\"([^\"]*leaflet-image-layer[^\"]*)\"", dom)
    assert len(imgs) == 1 and "geomogeo-window" in imgs[0]  # heatmaps hidden at start
    target_paths = re.findall(rf"<path\b[^>]*class=\"[^\"]*\b{TARGET_CLASS}\b", dom)
    assert len(target_paths) == 3
    assert len(re.findall(r"<path\b[^>]*class=\"[^\"]*\bgeomogeo-photo\b", dom)) == 1
    assert "leaflet-control-layers" in dom
    labels = re.findall(r"<span> ([^<]+)</span>", dom)
    assert labels == ["Reference window", "heat target 0", "heat target 1", "Targets",
                      "Photo location"]


def _mask(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 6) -> np.ndarray:
    return (np.abs(img[..., :3].astype(int) - np.asarray(rgb)) <= tol).all(axis=-1)


def _merc_y(lat: float) -> float:
    return math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


def test_screenshot_places_targets_on_the_window(rendered) -> None:
    _, res = rendered
    img = np.asarray(Image.open(res.screenshot).convert("RGB"))
    assert img.shape[:2] == (800, 1000)
    assert img.std() > 20, "screenshot looks blank"

    # The window overlay: the bounding box of its (uniform) colour.
    win = _mask(img, WINDOW_RGB)
    assert win.sum() > 10_000, "reference window not drawn"
    rows, cols = np.nonzero(win)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    # fitBounds: the window fills most of the 1000 x 800 view.
    assert (right - left) > 500 or (bottom - top) > 500

    # Each target's outline sits where Web Mercator puts it inside the window, to 3 px.
    y_n, y_s = _merc_y(N), _merc_y(S)
    for colour, geom in zip(TARGET_COLOURS, _targets().geometry, strict=True):
        m = _mask(img, colour, tol=10)
        assert m.sum() > 50, f"target outline {colour} not drawn"
        r, c = np.nonzero(m)
        minx, miny, maxx, maxy = geom.bounds
        exp_left = left + (minx - W) / (E - W) * (right - left)
        exp_right = left + (maxx - W) / (E - W) * (right - left)
        exp_top = top + (y_n - _merc_y(maxy)) / (y_n - y_s) * (bottom - top)
        exp_bottom = top + (y_n - _merc_y(miny)) / (y_n - y_s) * (bottom - top)
        # The 3 px stroke is centred on the edge: its pixel bbox extends ~1.5 px outside.
        got = np.array([c.min(), c.max() + 1, r.min(), r.max() + 1], float)
        exp = np.array([exp_left - 1.5, exp_right + 1.5, exp_top - 1.5, exp_bottom + 1.5])
        np.testing.assert_allclose(got, exp, atol=3.0, err_msg=str(colour))


def test_offline_assets_are_leaflet_1_9(tmp_path: Path) -> None:
    urls = offline_leaflet_assets(tmp_path)
    assert urls == {"js": "leaflet/leaflet.js", "css": "leaflet/leaflet.css"}
    head = (tmp_path / urls["js"]).read_text(encoding="utf-8")[:300]
    assert "1.9" in head
    assert {p.name for p in (tmp_path / "leaflet" / "images").iterdir()} >= {
        "layers.png", "layers-2x.png"}


def test_online_map_uses_tiles_and_cdn(tmp_path: Path) -> None:
    html = make_map(tmp_path / "online.html", targets=_targets(), offline=False)
    text = html.read_text(encoding="utf-8")
    assert "L.tileLayer" in text and "openstreetmap" in text.lower()
    assert remote_references(text)
    assert not (tmp_path / "leaflet").exists()


def test_bad_inputs_raise(tmp_path: Path) -> None:
    window = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="south, west, north, east"):
        make_map(tmp_path / "m.html", window_image=window, window_bounds_lonlat=(S, E, N, W))
    with pytest.raises(ValueError, match="uint8"):
        make_map(tmp_path / "m.html", window_image=window.astype(float),
                 window_bounds_lonlat=(S, W, N, E))
    with pytest.raises(ValueError, match="together"):
        make_map(tmp_path / "m.html", window_image=window)
    with pytest.raises(ValueError, match="click_x"):
        make_map(tmp_path / "m.html", targets=_targets().drop(columns="click_x"))
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the Leaflet folder


def test_antimeridian_window_and_targets_stay_together(tmp_path: Path) -> None:
    # A 200 m UTM 60S window over Fiji straddling the 180th meridian, with a target polygon
    # that straddles it too: both are drawn as one small shape, the polygon inside the window.
    from affine import Affine

    from geomogeo.geo import georef

    x0, y0 = georef.lonlat_to_crs(179.999, -16.5, "EPSG:32760")
    t = Affine(1.0, 0, x0, 0, -1.0, y0)
    s, w, n, e = georef.window_bounds_lonlat(t, "EPSG:32760", 200)
    assert w < 180.0 < e and e - w < 0.003
    poly = shapely.Polygon([t @ (60, 50), t @ (160, 50), t @ (160, 120), t @ (60, 120)])
    targets = gpd.GeoDataFrame({"target": [0], "score": [0.9], "click_x": [1.0], "click_y": [2.0]},
                               geometry=[poly], crs="EPSG:32760")
    lon, _ = georef.to_lonlat(*(t @ (160, 50)), "EPSG:32760")
    assert lon < -179.99  # east of the meridian: pyproj gives -179.99..., the map must not
    window = np.empty((200, 200, 3), np.uint8)
    window[:] = WINDOW_RGB
    html = make_map(tmp_path / "fiji.html", window_image=window, window_bounds_lonlat=(s, w, n, e),
                    targets=targets, photo_location=(-179.9995, -16.5005))
    coords = [float(v) for v in re.findall(r"\[(-?1[0-9]{2}\.[0-9]+), -16\.[0-9]+\]",
                                           html.read_text(encoding="utf-8"))]
    assert coords and all(w - 0.01 < c < e + 0.01 for c in coords), coords
    res = chromium_render(html, tmp_path / "fiji.png")
    assert res.js_errors == [], res.js_errors
    img = np.asarray(Image.open(res.screenshot).convert("RGB"))
    rows, cols = np.nonzero(_mask(img, WINDOW_RGB))
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    # fitted to the small window (Leaflet's zoom 18 maximum: ~350 px for 200 m), not the globe
    assert (right - left) > 300 and (bottom - top) > 300
    m = _mask(img, TARGET_COLOURS[0], tol=10)
    assert m.sum() > 50, "target outline not drawn"
    r, c = np.nonzero(m)
    plon, plat = georef.to_lonlat(*np.asarray(poly.exterior.coords).T, "EPSG:32760")
    plon = np.where(plon < 0, plon + 360, plon)
    exp_left = left + (plon.min() - w) / (e - w) * (right - left)
    exp_right = left + (plon.max() - w) / (e - w) * (right - left)
    y_n, y_s = _merc_y(n), _merc_y(s)
    exp_top = top + (y_n - _merc_y(plat.max())) / (y_n - y_s) * (bottom - top)
    exp_bottom = top + (y_n - _merc_y(plat.min())) / (y_n - y_s) * (bottom - top)
    got = np.array([c.min(), c.max() + 1, r.min(), r.max() + 1], float)
    exp = np.array([exp_left - 1.5, exp_right + 1.5, exp_top - 1.5, exp_bottom + 1.5])
    np.testing.assert_allclose(got, exp, atol=3.0)
