"""The localize chain end to end with a fake predictor whose boxes are known, so every polygon
can be checked to the millimetre against independent arithmetic and Debian's GDAL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from oracles import gdalinfo_json, gdaltransform_points, ogrinfo_summary
from PIL import Image
from shapely.geometry import Polygon

from geomogeo import Localizer
from geomogeo.errors import ClickError, GeoreferenceError, LocationError, PhotoError, RasterError
from geomogeo.geo import georef
from geomogeo.predictor import InputSpec, Prediction

SIZE, GSD, GRID = 64, 2.0, 4  # fake model: 64 px reference at 2 m (128 m of ground)
BOX = (10.0, 20.0, 30.0, 44.0)  # what the fake model returns for every click, window pixels


class FakePredictor:
    """Returns BOX for every click; the score is the mean brightness of the window, so a
    search keeps the brightest window. Heatmaps: a known ramp."""

    name = "fake"
    sha256 = "ab" * 32
    spec = InputSpec(SIZE, (32, 32), GSD)

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def predict(self, reference: np.ndarray, query: np.ndarray, points: np.ndarray) -> Prediction:
        assert reference.shape == (SIZE, SIZE, 3) and reference.dtype == np.float32
        assert query.shape == (32, 32, 3) and query.dtype == np.float32
        self.calls.append((reference, query, points))
        m = len(points)
        heat = np.tile(np.linspace(0, 1, GRID * GRID, dtype=np.float32).reshape(GRID, GRID),
                       (m, 1, 1))
        return Prediction(np.tile(np.array(BOX), (m, 1)), np.full(m, float(reference.mean())),
                          heat)


def write_tif(path: Path, arr: np.ndarray, transform: Affine | None, crs: str | None,
              nodata: float | None = None) -> Path:
    arr = arr[None] if arr.ndim == 2 else arr
    kw = dict(driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
              dtype=arr.dtype.name)
    if crs:
        kw["crs"] = crs
    if transform is not None:
        kw["transform"] = transform
    if nodata is not None:
        kw["nodata"] = nodata
    with rasterio.open(path, "w", **kw) as ds:
        ds.write(arr)
    return path


# A 400 x 400 px, 1 m UTM 31N raster over Rotterdam.
X0, Y0 = 593000.0, 5750400.0


@pytest.fixture
def utm_raster(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    arr = rng.integers(100, 2000, (400, 400)).astype(np.uint16)
    return write_tif(tmp_path / "utm.tif", arr, Affine(1, 0, X0, 0, -1, Y0), "EPSG:32631")


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    p = tmp_path / "photo.png"
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(p)
    return p


def expected_polygon(cx: float, cy: float) -> Polygon:
    """BOX in a north-up window of SIZE px at GSD centred on (cx, cy), computed by hand."""
    ox, oy = cx - SIZE * GSD / 2, cy + SIZE * GSD / 2
    x1, y1, x2, y2 = BOX
    return Polygon([(ox + x1 * GSD, oy - y1 * GSD), (ox + x2 * GSD, oy - y1 * GSD),
                    (ox + x2 * GSD, oy - y2 * GSD), (ox + x1 * GSD, oy - y2 * GSD)])


def assert_same_ring(a: Polygon, b: Polygon, tol: float) -> None:
    ca = np.array(a.exterior.coords)[:-1]
    cb = np.array(b.exterior.coords)[:-1]
    assert len(ca) == len(cb)
    for p in cb:  # same corner set, order-independent
        assert np.min(np.hypot(*(ca - p).T)) < tol, (p, ca)


def test_center_in_lonlat_gives_polygons_to_the_millimetre(utm_raster: Path, photo: Path) -> None:
    lon, lat = 4.3540, 51.8962
    # The window centre in UTM, from Debian's gdaltransform (independent of pyproj).
    (cx, cy), = gdaltransform_points([(lon, lat)], "EPSG:4326", "EPSG:32631")
    fake = FakePredictor()
    res = Localizer(fake).localize(photo, utm_raster, [(16, 12), (80.5, 60.25)], center=(lon, lat))
    assert res.crs.to_epsg() == 32631
    assert res.windows_searched == 1
    assert res.photo_location == pytest.approx((lon, lat), abs=1e-9)
    for t in res.targets:
        assert_same_ring(t.polygon, expected_polygon(cx, cy), tol=1e-3)
        assert t.polygon.exterior.is_ccw
        assert t.score == pytest.approx(float(fake.calls[0][0].mean()))
        assert not t.on_nodata
    # clicks go to the model scaled to its 32 x 32 query input (photo is 160 x 120)
    np.testing.assert_allclose(fake.calls[0][2], [[3.2, 3.2], [16.1, 16.06666667]], atol=1e-6)
    assert [t.click for t in res.targets] == [(16.0, 12.0), (80.5, 60.25)]


def test_rotated_raster_gives_the_same_polygons(tmp_path: Path, photo: Path) -> None:
    # Same ground as a north-up raster, stored rotated by 30 degrees: the window is still read
    # north-up in map axes, so the polygon is the same.
    rot = Affine.translation(X0, Y0) @ Affine.rotation(30) @ Affine.scale(1, -1)
    arr = np.full((400, 400), 1000, np.uint16)
    path = write_tif(tmp_path / "rot.tif", arr, rot, "EPSG:32631")
    cx, cy = georef.pixel_to_map(rot, 200.0, 200.0)
    res = Localizer(FakePredictor()).localize(photo, path, [(5, 5)], center=(cx, cy),
                                              center_crs="EPSG:32631")
    assert_same_ring(res.targets[0].polygon, expected_polygon(cx, cy), tol=1e-3)


def test_geographic_raster_polygon_is_in_degrees_with_the_right_ground_size(
    tmp_path: Path, photo: Path
) -> None:
    # 0.3 m-ish pixels in EPSG:4326 near Las Vegas.
    t = Affine(2.7e-6, 0, -115.24, 0, -2.7e-6, 36.145)
    path = write_tif(tmp_path / "geo.tif", np.full((1200, 1200), 900, np.uint16), t, "EPSG:4326")
    lon, lat = georef.pixel_to_map(t, 600.0, 600.0)
    res = Localizer(FakePredictor()).localize(photo, path, [(5, 5)], center=(lon, lat))
    poly = res.targets[0].polygon
    assert res.crs.to_epsg() == 4326
    # Back in a local metric CRS the box is (30-10) x (44-20) px of 2 m: 40 m x 48 m.
    local = georef.local_metric_crs(lon, lat)
    metric = georef.reproject_geometries([poly], "EPSG:4326", local)[0]
    assert metric.area == pytest.approx(40 * 48, rel=1e-4)
    minx, miny, maxx, maxy = metric.bounds
    assert maxx - minx == pytest.approx(40, abs=0.01)
    assert maxy - miny == pytest.approx(48, abs=0.01)


def test_exif_gps_is_the_default_centre(utm_raster: Path, tmp_path: Path) -> None:
    lon, lat = 4.3545, 51.8960
    img = Image.fromarray(np.full((60, 80, 3), 90, np.uint8))
    exif = Image.Exif()

    def dms(v: float) -> tuple:
        d = int(v)
        m = int((v - d) * 60)
        s = (v - d - m / 60) * 3600
        return (d, m, s)

    exif[0x8825] = {1: "N", 2: dms(lat), 3: "E", 4: dms(lon)}
    p = tmp_path / "gps.jpg"
    img.save(p, exif=exif)
    res = Localizer(FakePredictor()).localize(p, utm_raster, [(40, 30)])
    cx, cy = georef.lonlat_to_crs(lon, lat, "EPSG:32631")
    assert res.photo_location == pytest.approx((lon, lat), abs=1e-7)
    assert_same_ring(res.targets[0].polygon, expected_polygon(cx, cy), tol=0.01)


def test_search_keeps_the_best_window_and_counts_windows(tmp_path: Path, photo: Path) -> None:
    arr = np.full((400, 400), 100, np.uint16)
    arr[300:380, 20:100] = 4000  # a bright block: the fake scores that window highest
    arr[0, 0] = 0  # keep a wide stretch so the block stays bright
    path = write_tif(tmp_path / "s.tif", arr, Affine(1, 0, X0, 0, -1, Y0), "EPSG:32631")
    res = Localizer(FakePredictor()).localize(photo, path, [(10, 10)], quiet=True)
    assert res.windows_searched >= 9
    win = res.windows[res.targets[0].window]
    bx, by = X0 + 60, Y0 - 340  # block centre
    # the kept window contains the whole block
    ox, oy = win.transform.c, win.transform.f
    assert ox <= bx - 40 and bx + 40 <= ox + SIZE * GSD
    assert oy - SIZE * GSD <= by - 40 and by + 40 <= oy
    assert_same_ring(res.targets[0].polygon, expected_polygon(*win.center), tol=1e-3)


def test_box_on_nodata_is_flagged(tmp_path: Path, photo: Path) -> None:
    arr = np.full((400, 400), 500, np.int16)
    arr[:, :150] = -9999
    path = write_tif(tmp_path / "nd.tif", arr, Affine(1, 0, X0, 0, -1, Y0), "EPSG:32631",
                     nodata=-9999)
    # window centred at col 100 -> box columns 10..30 px of 2 m = map x X0+56..X0+96 (nodata)
    res = Localizer(FakePredictor()).localize(photo, path, [(5, 5)], center=(X0 + 100, Y0 - 200),
                                              center_crs="EPSG:32631")
    assert res.targets[0].on_nodata
    res2 = Localizer(FakePredictor()).localize(photo, path, [(5, 5)],
                                               center=(X0 + 300, Y0 - 200),
                                               center_crs="EPSG:32631")
    assert not res2.targets[0].on_nodata


def test_outputs_read_back_by_gdal(utm_raster: Path, photo: Path, tmp_path: Path) -> None:
    cx, cy = X0 + 200, Y0 - 200
    res = Localizer(FakePredictor()).localize(photo, utm_raster, [(1, 2), (3, 4)],
                                              center=(cx, cy), center_crs="EPSG:32631")
    gpkg = tmp_path / "out.gpkg"
    res.to_file(gpkg)
    res.to_file(gpkg)  # appends
    s = ogrinfo_summary(gpkg, "targets")
    assert s.feature_count == 4
    assert s.epsg == 32631
    e = expected_polygon(cx, cy).bounds
    assert s.extent == pytest.approx(e, abs=1e-6)
    # GeoJSON: lon/lat of a corner agrees with gdaltransform
    gj = tmp_path / "out.geojson"
    res.to_file(gj)
    data = json.loads(gj.read_text())
    assert len(data["features"]) == 2
    props = data["features"][0]["properties"]
    assert props["model_sha256"] == "ab" * 32 and props["click_x"] == 1.0
    ring = np.array(data["features"][0]["geometry"]["coordinates"][0])
    ox, oy = cx - SIZE, cy + SIZE
    corner = (ox + BOX[0] * GSD, oy - BOX[3] * GSD)
    (clon, clat), = gdaltransform_points([corner], "EPSG:32631", "EPSG:4326")
    assert np.min(np.hypot(ring[:, 0] - clon, ring[:, 1] - clat)) < 2e-7
    # heatmaps: GRID x GRID pixels covering the window -> pixel size SIZE*GSD/GRID
    paths = res.write_heatmaps(tmp_path / "heat")
    assert len(paths) == 2
    info, _ = gdalinfo_json(paths[0])
    assert info["geoTransform"] == pytest.approx([ox, SIZE * GSD / GRID, 0, oy, 0,
                                                  -SIZE * GSD / GRID], abs=1e-6)
    with rasterio.open(paths[0]) as ds:
        np.testing.assert_allclose(ds.read(1), res.targets[0].heatmap)


@pytest.mark.parametrize(
    "case, error",
    [
        ("photo_not_image", PhotoError),
        ("click_outside", ClickError),
        ("duplicate_clicks", ClickError),
        ("no_clicks", ClickError),
        ("centre_outside", LocationError),
        ("no_crs", GeoreferenceError),
        ("truncated", RasterError),
    ],
)
def test_bad_inputs_raise_clear_errors(case: str, error: type, utm_raster: Path, photo: Path,
                                       tmp_path: Path) -> None:
    ph, ras, pts, centre = photo, utm_raster, [(5.0, 5.0)], (X0 + 200, Y0 - 200)
    named = None
    if case == "photo_not_image":
        ph = tmp_path / "notes.jpg"
        ph.write_text("not an image")
        named = ph.name
    elif case == "click_outside":
        pts = [(5.0, 5.0), (161.0, 5.0)]
    elif case == "duplicate_clicks":
        pts = [(5.0, 5.0), (5.0, 5.0)]
    elif case == "no_clicks":
        pts = []
    elif case == "centre_outside":
        centre = (X0 - 5000, Y0)
        named = utm_raster.name
    elif case == "no_crs":
        ras = write_tif(tmp_path / "nocrs.tif", np.ones((50, 50), np.uint8), None, None)
        named = ras.name
    elif case == "truncated":
        data = utm_raster.read_bytes()
        ras = tmp_path / "cut.tif"
        ras.write_bytes(data[: len(data) // 3])
        named = ras.name
    with pytest.raises(error) as exc:
        Localizer(FakePredictor()).localize(ph, ras, pts, center=centre, center_crs="EPSG:32631")
    if named:
        assert named in str(exc.value)


def test_heading_rotates_clicks_north_up_before_the_model(utm_raster: Path, photo: Path) -> None:
    # camera looks east: the left-edge midpoint of the 160 x 120 photo is north, i.e. the
    # top-edge midpoint of the rotated 120 x 160 canvas, then scaled to the 32 x 32 query.
    fake = FakePredictor()
    Localizer(fake).localize(photo, utm_raster, [(0.0, 60.0), (160.0, 60.0)],
                             center=(X0 + 200, Y0 - 200), center_crs="EPSG:32631", heading=90)
    np.testing.assert_allclose(fake.calls[0][2], [[16.0, 0.0], [16.0, 32.0]], atol=1e-9)
