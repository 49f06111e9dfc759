"""Localize end to end on other kinds of rasters: Web Mercator, far-UTM and GCP copies of the
demo tile (the Las Vegas tile, EPSG:4326), an xarray DataArray, and the heatmaps as an xarray
Dataset read back by GDAL.

A stand-in predictor that finds image patches by template matching stands in for
the network where the question is "do the same objects land on the same ground": its boxes
depend on the window's pixels only, so any misplaced or mis-scaled window moves them. Its
templates are the tile's buildings (``geomogeo/data/footprints/``, read here as plain GeoJSON).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray
from oracles import gdalinfo_json
from PIL import Image
from pyproj import Geod
from scipy.signal import correlate
from tiles import warp_copy

from geomogeo import Localizer
from geomogeo.demo import polygon_iou
from geomogeo.geo import georef, raster
from geomogeo.predictor import InputSpec, Prediction

REPO = Path(__file__).resolve().parents[2]
DEMO = json.loads((REPO / "sample_tiles" / "demo.json").read_text())
TILE = REPO / "sample_tiles" / DEMO["raster"]
FOOTPRINTS = REPO / "geomogeo" / "data" / "footprints" / f"{TILE.stem}.geojson"
UTM = 32611  # the tile's local UTM zone: windows of this EPSG:4326 raster are read in it
PHOTO = REPO / "sample_tiles" / DEMO["photos"][0]["photo"]
CLICKS = DEMO["photos"][0]["clicks"]
SIZE, GSD = 256, 1.0
GEOD = Geod(ellps="WGS84")


def match_template(img: np.ndarray, tpl: np.ndarray) -> tuple[int, int, float]:
    """Top-left (x, y) of the best normalised cross-correlation of ``tpl`` in ``img`` (valid
    positions only) and its value."""
    h, w = tpl.shape
    t = tpl - tpl.mean()
    num = correlate(img, t, mode="valid", method="fft")
    c = np.pad(np.cumsum(np.cumsum(img, 0), 1), ((1, 0), (1, 0)))
    c2 = np.pad(np.cumsum(np.cumsum(img * img, 0), 1), ((1, 0), (1, 0)))

    def box(a: np.ndarray) -> np.ndarray:
        return a[h:, w:] - a[:-h, w:] - a[h:, :-w] + a[:-h, :-w]

    var = box(c2) - box(c) ** 2 / (h * w)
    ncc = num / np.sqrt(np.maximum(var, 1e-12) * (t * t).sum())
    y, x = np.unravel_index(np.argmax(ncc), ncc.shape)
    return int(x), int(y), float(ncc[y, x])


class TemplatePredictor:
    """Click k -> the box where template k matches best in the reference window (normalised
    cross-correlation); score = that correlation."""

    name = "template"
    sha256 = "cd" * 32
    spec = InputSpec(SIZE, (64, 64), GSD)

    def __init__(self, templates: list[np.ndarray]) -> None:
        self.templates = templates

    def predict(self, reference: np.ndarray, query: np.ndarray, points: np.ndarray) -> Prediction:
        img = reference[..., 0].astype(np.float64)
        boxes, scores = [], []
        for k in range(len(points)):
            tpl = self.templates[k].astype(np.float64)
            x, y, best = match_template(img, tpl)
            boxes.append((x, y, x + tpl.shape[1], y + tpl.shape[0]))
            scores.append(best)
        return Prediction(np.asarray(boxes, np.float64), np.asarray(scores),
                          np.zeros((len(points), 8, 8), np.float32))


@pytest.fixture(scope="module")
def centre() -> tuple[float, float]:
    with rasterio.open(TILE) as ds:
        assert ds.crs.to_epsg() == 4326
        return tuple(ds.transform @ (ds.width / 2, ds.height / 2))  # lon, lat


@pytest.fixture(scope="module")
def templates(centre) -> tuple[list[np.ndarray], list[tuple[int, int, int, int]]]:
    """The tile's building footprints cut (4 px margin) from the original tile's window."""
    win = raster.read_window(raster.open_raster(TILE), centre, SIZE, GSD, center_crs="EPSG:4326")
    assert win.crs.to_epsg() == UTM
    tpls, boxes = [], []
    for feat in json.loads(FOOTPRINTS.read_text())["features"]:
        lon, lat = np.asarray(feat["geometry"]["coordinates"][0]).T
        xs, ys = georef.to_crs(lon, lat, "EPSG:4326", win.crs)
        cols, rows = georef.map_to_pixel(win.transform, xs, ys)
        x1, y1 = int(np.floor(cols.min())) - 4, int(np.floor(rows.min())) - 4
        x2, y2 = int(np.ceil(cols.max())) + 4, int(np.ceil(rows.max())) + 4
        if x1 >= 0 and y1 >= 0 and x2 <= SIZE and y2 <= SIZE:
            tpls.append(np.ascontiguousarray(win.image[y1:y2, x1:x2, 0]))
            boxes.append((x1, y1, x2, y2))
    assert len(tpls) >= 8
    return tpls, boxes


def lonlat_centroids(res) -> np.ndarray:
    gdf = res.to_geodataframe(crs="EPSG:4326")
    return np.array([[g.centroid.x, g.centroid.y] for g in gdf.geometry])


@pytest.mark.parametrize("crs", ["EPSG:3857", "EPSG:32613"])  # 32613: 10 deg off, scale 1.012
def test_projected_copy_puts_the_same_objects_on_the_same_ground(tmp_path, centre, templates,
                                                                 crs):
    tpls, boxes = templates
    pts = [(10.0 + 5 * k, 10.0) for k in range(len(tpls))]  # any distinct clicks
    loc = Localizer(TemplatePredictor(tpls))
    # network alone: this checks the ground scale of the window read, not registration
    orig = loc.localize(PHOTO, TILE, pts, center=centre, joint=False)
    copy = loc.localize(PHOTO, warp_copy(TILE, tmp_path / "copy.tif", crs), pts, center=centre,
                        joint=False)
    assert copy.crs.equals(georef.as_crs(crs))  # polygons in the copy's own CRS
    assert orig.windows[0].crs.to_epsg() == copy.windows[0].crs.to_epsg() == UTM  # local UTM
    # the original finds each object where it was cut from
    assert [t.box for t in orig.targets] == [tuple(map(float, b)) for b in boxes]
    a, b = lonlat_centroids(orig), lonlat_centroids(copy)
    dist = GEOD.inv(a[:, 0], a[:, 1], b[:, 0], b[:, 1])[2]
    assert dist.max() < GSD  # the same lon/lat to within one window pixel
    # and the copy's polygons are the objects' size on the ground (not 1.62x or 0.62x)
    for t_o, t_c in zip(orig.targets, copy.targets, strict=True):
        p_o = georef.reproject_geometries([t_o.polygon], "EPSG:4326", f"EPSG:{UTM}")[0]
        p_c = georef.reproject_geometries([t_c.polygon], crs, f"EPSG:{UTM}")[0]
        assert p_c.area == pytest.approx(p_o.area, rel=1e-3)


def test_gcp_copy_gives_the_same_polygons(tmp_path, centre, templates):
    from rasterio.control import GroundControlPoint

    tpls, _ = templates
    with rasterio.open(TILE) as s:
        t, w, h, crs = s.transform, s.width, s.height, s.crs
        prof = {k: v for k, v in s.profile.items() if k not in ("transform", "crs")}
        arr = s.read()
    g = tmp_path / "gcp.tif"
    with rasterio.open(g, "w", **prof) as d:
        d.write(arr)
        d.gcps = ([GroundControlPoint(row=r, col=c, x=(t @ (c, r))[0], y=(t @ (c, r))[1])
                   for c, r in [(0, 0), (w, 0), (w, h), (0, h), (w / 2, h / 2)]], crs)
    pts = [(10.0 + 5 * k, 10.0) for k in range(len(tpls))]  # any distinct clicks
    loc = Localizer(TemplatePredictor(tpls))
    orig = loc.localize(PHOTO, TILE, pts, center=centre)
    res = loc.localize(PHOTO, g, pts, center=centre)
    assert res.crs.equals(orig.crs)
    for t_o, t_g in zip(orig.targets, res.targets, strict=True):
        assert t_g.box == t_o.box
        # lon/lat degrees: 1e-8 deg is about 1 mm (a window pixel is 1 m)
        assert t_g.polygon.hausdorff_distance(t_o.polygon) < 1e-8


@pytest.fixture(scope="module")
def model() -> Localizer:
    return Localizer.load(tta="none")


def test_dataarray_gives_the_same_result_as_its_file(model):
    a = model.localize(PHOTO, TILE, CLICKS, quiet=True)
    b = model.localize(PHOTO, rioxarray.open_rasterio(TILE), CLICKS, quiet=True)
    assert b.raster == TILE and b.crs.equals(a.crs)
    for t_a, t_b in zip(a.targets, b.targets, strict=True):
        assert polygon_iou(t_a.polygon, t_b.polygon) == 1.0
        assert t_b.score == t_a.score
        np.testing.assert_array_equal(t_b.heatmap, t_a.heatmap)


def test_heatmaps_dataset_writes_what_write_heatmaps_writes(model, tmp_path):
    res = model.localize(PHOTO, TILE, CLICKS, quiet=True)
    ds = res.heatmaps
    n = len(res.targets)
    hm = ds.heatmap
    assert hm.dims == ("target", "y", "x") and hm.shape[0] == n
    assert list(ds.target.values) == list(range(n))
    np.testing.assert_allclose(ds.score.values, [t.score for t in res.targets])
    assert ds.rio.crs.to_epsg() == UTM  # the window's CRS
    files = res.write_heatmaps(tmp_path / "ref")
    for k, ref in enumerate(files):
        out = tmp_path / f"xr_{k}.tif"
        hm.sel(target=k).rio.to_raster(out)
        with rasterio.open(ref) as r, rasterio.open(out) as o:
            assert o.crs == r.crs and o.shape == r.shape and o.count == 1
            np.testing.assert_allclose(np.array(o.transform)[:6], np.array(r.transform)[:6],
                                       rtol=0, atol=1e-9)
            np.testing.assert_array_equal(o.read(1), r.read(1))
        # Debian's GDAL reads the same grid and CRS from both
        gi_r, _ = gdalinfo_json(ref)
        gi_o, _ = gdalinfo_json(out)
        np.testing.assert_allclose(gi_o["geoTransform"], gi_r["geoTransform"], atol=1e-9)
        assert gi_o["stac"]["proj:epsg"] == gi_r["stac"]["proj:epsg"] == UTM
        # pixel centre coordinates of the Dataset = GDAL's pixel centres
        gt = gi_r["geoTransform"]
        assert float(hm.x[0]) == pytest.approx(gt[0] + gt[1] / 2, abs=1e-9)
        assert float(hm.y[0]) == pytest.approx(gt[3] + gt[5] / 2, abs=1e-9)
    # the whole stack: one band per target
    hm.rio.to_raster(tmp_path / "all.tif")
    with rasterio.open(tmp_path / "all.tif") as o:
        assert o.count == n
        np.testing.assert_array_equal(o.read(), hm.values)


class SplitPredictor:
    """Target 0 scores the brightest window best, target 1 the darkest: they end in different
    windows of a search."""

    name = "split"
    sha256 = "ef" * 32
    spec = InputSpec(64, (32, 32), 2.0)

    def predict(self, reference: np.ndarray, query: np.ndarray, points: np.ndarray) -> Prediction:
        m = float(reference.mean())
        return Prediction(np.tile([10.0, 10.0, 20.0, 20.0], (len(points), 1)),
                          np.array([m, 1 - m])[: len(points)],
                          np.tile(np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4),
                                  (len(points), 1, 1)))


def test_heatmaps_of_several_windows_need_a_window(tmp_path):
    arr = np.full((400, 400), 1000, np.uint16)
    arr[:100, :100] = 4000
    arr[300:, 300:] = 10
    p = tmp_path / "s.tif"
    with rasterio.open(p, "w", driver="GTiff", width=400, height=400, count=1, dtype="uint16",
                       crs="EPSG:32631",
                       transform=rasterio.Affine(1, 0, 593000, 0, -1, 5750400)) as d:
        d.write(arr, 1)
    photo = tmp_path / "no_gps.png"  # no EXIF GPS: the raster is searched
    Image.fromarray(np.full((60, 80, 3), 128, np.uint8)).save(photo)
    res = Localizer(SplitPredictor()).localize(photo, p, [(10, 10), (50, 30)], quiet=True)
    assert res.targets[0].window != res.targets[1].window
    with pytest.raises(ValueError, match=r"windows \[0, 1\].*window="):
        _ = res.heatmaps
    for t in res.targets:
        ds = res.heatmaps_dataset(window=t.window)
        assert list(ds.target.values) == [t.index]
        win = res.windows[t.window]
        # 4 x 4 heatmap over a 64 px window of 2 m: 32 m cells, first centre 16 m in
        assert float(ds.x[0]) == pytest.approx(win.transform.c + 16.0, abs=1e-9)
        assert float(ds.y[0]) == pytest.approx(win.transform.f - 16.0, abs=1e-9)
    with pytest.raises(ValueError, match=r"window must be in 0\.\.1"):
        res.heatmaps_dataset(window=5)

