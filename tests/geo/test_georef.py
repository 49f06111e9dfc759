"""georef: pixel <-> map and CRS conversions, checked against Debian's gdaltransform (GDAL 3.6)
and known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import CRS, Geod, Proj
from shapely.geometry import LineString

from geomogeo.errors import GeoreferenceError
from geomogeo.geo import georef

# (name, crs, origin x, origin y, pixel size) in the CRS's units
CRS_CASES = [
    ("utm31n", "EPSG:32631", 592_000.0, 5_751_000.0, 0.5),
    ("utm33s", "EPSG:32733", 350_000.0, 7_600_000.0, 10.0),
    ("wgs84", "EPSG:4326", -115.2339, 36.1423, 2.7e-6),
    ("webmerc", "EPSG:3857", 484_000.0, 6_781_000.0, 0.3),
    ("polar_south", "EPSG:3031", 100_000.0, -1_500_000.0, 30.0),
    ("albers", "ALBERS", -670_000.0, 2_128_000.0, 30.0),
]


def _affines(x0: float, y0: float, s: float) -> dict[str, Affine]:
    """North-up, south-up, rotated and sheared pixel -> map affines of pixel size ``s``."""
    return {
        "north_up": Affine(s, 0, x0, 0, -s, y0),
        "south_up": Affine(s, 0, x0, 0, s, y0),
        "rotated": Affine.translation(x0, y0) @ Affine.rotation(27.5) @ Affine.scale(s, -s),
        "sheared": Affine(s, 0.3 * s, x0, 0.2 * s, -1.1 * s, y0),
    }


PIXELS = np.array(
    [[0, 0], [0.5, 0.5], [7, 5], [7.25, 3.75], [12, 10], [-3.5, 2], [100.125, -50.5]]
)


@pytest.mark.parametrize("kind", ["north_up", "south_up", "rotated", "sheared"])
@pytest.mark.parametrize("case", CRS_CASES, ids=[c[0] for c in CRS_CASES])
def test_pixel_to_map_matches_gdaltransform(case, kind, make_raster, gdaltransform, albers_wkt):
    name, crs, x0, y0, s = case
    crs = albers_wkt if crs == "ALBERS" else crs
    t = _affines(x0, y0, s)[kind]
    path = make_raster(f"{name}_{kind}.tif", np.zeros((10, 12), np.uint8), t, crs)

    xs, ys = georef.pixel_to_map(t, PIXELS[:, 0], PIXELS[:, 1])
    oracle = gdaltransform([str(path)], PIXELS)
    tol = 1e-6 * s
    np.testing.assert_allclose(xs, oracle[:, 0], rtol=0, atol=tol)
    np.testing.assert_allclose(ys, oracle[:, 1], rtol=0, atol=tol)

    # inverse: map -> pixel, against gdaltransform -i
    back = gdaltransform(["-i", str(path)], oracle)
    cols, rows = georef.map_to_pixel(t, oracle[:, 0], oracle[:, 1])
    np.testing.assert_allclose(cols, back[:, 0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(rows, back[:, 1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(cols, PIXELS[:, 0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(rows, PIXELS[:, 1], rtol=0, atol=1e-6)


def test_pixel_to_map_known_answer_no_centre_offset():
    t = Affine(0.5, 0, 1000.0, 0, -0.5, 2000.0)
    assert georef.pixel_to_map(t, 0, 0) == (1000.0, 2000.0)
    assert georef.pixel_to_map(t, 0.5, 0.5) == (1000.25, 1999.75)  # centre of pixel (0, 0)
    assert georef.map_to_pixel(t, 1001.0, 1999.0) == (2.0, 2.0)
    xs, ys = georef.pixel_to_map(t, np.array([[0, 2], [4, 6]]), np.array([[0, 2], [4, 6]]))
    assert xs.shape == (2, 2)
    np.testing.assert_array_equal(xs, [[1000, 1001], [1002, 1003]])
    np.testing.assert_array_equal(ys, [[2000, 1999], [1998, 1997]])


def test_map_to_pixel_degenerate_transform():
    with pytest.raises(GeoreferenceError, match="not invertible"):
        georef.map_to_pixel(Affine(0, 0, 0, 0, 0, 0), 1.0, 1.0)


# (src, dst, points in src)
REPROJ_CASES = [
    ("EPSG:4326", "EPSG:32631", [(4.35, 51.9), (3.0, 50.0), (5.9, 53.4)]),
    ("EPSG:4326", "EPSG:32733", [(15.2, -21.7), (12.0, -0.5), (17.9, -70.0)]),
    ("EPSG:4326", "EPSG:3857", [(-115.23, 36.14), (179.9, -84.0), (0.0, 0.0)]),
    ("EPSG:4326", "EPSG:3031", [(0.0, -75.0), (120.5, -89.0), (-60.0, -65.0)]),
    ("EPSG:4326", "ALBERS", [(-104.1, 41.8), (-96.0, 23.0), (-80.0, 45.0)]),
    ("EPSG:32631", "EPSG:3857", [(592_882.56, 5_750_777.19), (500_000.0, 0.0)]),
    ("EPSG:32611", "EPSG:4326", [(658_988.0, 4_001_065.0), (300_000.0, 4_500_000.0)]),
    ("ALBERS", "EPSG:32613", [(-670_865.0, 2_127_605.0), (-655_505.0, 2_112_245.0)]),
    ("EPSG:3413", "EPSG:4326", [(0.0, -2_000_000.0), (300_000.0, 100_000.0)]),
]


@pytest.mark.parametrize("case", REPROJ_CASES, ids=lambda c: f"{c[0]}->{c[1]}")
def test_to_crs_matches_gdaltransform(case, gdaltransform, albers_wkt):
    src, dst, pts = case
    src = albers_wkt if src == "ALBERS" else src
    dst = albers_wkt if dst == "ALBERS" else dst
    pts = np.array(pts, dtype=np.float64)
    ox, oy = georef.to_crs(pts[:, 0], pts[:, 1], src, dst)
    oracle = gdaltransform(["-s_srs", src, "-t_srs", dst, "-output_xy"], pts)
    tol = 1e-9 if CRS.from_user_input(dst).is_geographic else 1e-3
    np.testing.assert_allclose(ox, oracle[:, 0], rtol=0, atol=tol)
    np.testing.assert_allclose(oy, oracle[:, 1], rtol=0, atol=tol)


def test_lonlat_helpers_scalars_and_round_trip():
    x, y = georef.lonlat_to_crs(4.35, 51.9, "EPSG:32631")
    assert isinstance(x, float) and isinstance(y, float)
    lon, lat = georef.to_lonlat(x, y, CRS.from_epsg(32631))
    assert lon == pytest.approx(4.35, abs=1e-10)
    assert lat == pytest.approx(51.9, abs=1e-10)
    assert georef.to_crs(1.0, 2.0, "EPSG:32631", "EPSG:32631") == (1.0, 2.0)


def test_transform_error_raises_instead_of_inf():
    with pytest.raises(GeoreferenceError, match=r"failed for x=0\.0, y=91\.0"):
        georef.lonlat_to_crs(0.0, 91.0, "EPSG:32631")


def test_get_transformer_is_cached_and_always_xy():
    a = georef.get_transformer("EPSG:4326", "EPSG:32631")
    b = georef.get_transformer(CRS.from_epsg(4326), CRS.from_epsg(32631))
    assert a is b
    x, _ = a.transform(3.0, 0.0, errcheck=True)  # lon first
    assert x == pytest.approx(500_000.0, abs=1e-6)


def test_as_crs_rejects_garbage():
    with pytest.raises(GeoreferenceError, match="not-a-crs"):
        georef.as_crs("not-a-crs")
    with pytest.raises(GeoreferenceError):
        georef.as_crs(None)


@pytest.mark.parametrize(
    "t",
    [
        Affine(2, 0, 100, 0, -2, 500),
        Affine(2, 0, 100, 0, 2, 500),
        Affine.translation(100, 500) @ Affine.rotation(40) @ Affine.scale(2, -2),
        Affine(2, 0.5, 100, 0.3, -2, 500),
    ],
    ids=["north_up", "south_up", "rotated", "sheared"],
)
def test_boxes_to_polygons_corners_and_orientation(t):
    boxes = np.array([[1.0, 2.0, 4.0, 7.0], [0.0, 0.0, 0.5, 0.25]])
    polys = georef.boxes_to_polygons(boxes, t)
    assert len(polys) == 2
    for box, poly in zip(boxes, polys, strict=True):
        x1, y1, x2, y2 = box
        corners = np.array([t @ (x1, y1), t @ (x2, y1), t @ (x2, y2), t @ (x1, y2)])
        ring = np.asarray(poly.exterior.coords)[:-1]
        assert len(ring) == 4
        # same vertex set (order may be reversed to make the ring CCW)
        for c in corners:
            assert np.min(np.hypot(*(ring - c).T)) < 1e-9
        assert poly.exterior.is_ccw
        assert poly.is_valid
        # area = box area in pixels x |det| of the affine
        assert poly.area == pytest.approx((x2 - x1) * (y2 - y1) * abs(t.determinant), rel=1e-12)


def test_boxes_to_polygons_rejects_bad_shape():
    with pytest.raises(ValueError, match="boxes"):
        georef.boxes_to_polygons(np.zeros((2, 3)), Affine.identity())
    with pytest.raises(ValueError, match="boxes"):
        georef.boxes_to_polygons(np.array([[0, 0, np.nan, 1]]), Affine.identity())


def test_reproject_geometries_densifies_and_matches_points():
    line = LineString([(590_000.0, 5_740_000.0), (600_000.0, 5_760_000.0)])
    poly = georef.boxes_to_polygons([[0, 0, 100, 100]], Affine(100, 0, 590_000, 0, -100,
                                                                 5_760_000))[0]
    out_line, out_poly = georef.reproject_geometries([line, poly], "EPSG:32631", "EPSG:4326")
    coords = shapely.get_coordinates(out_line)
    assert len(coords) == 2 + 21  # 21 intermediate points on the (only, longest) segment
    # every vertex equals a point transform of the densified source vertex
    src_dense = shapely.get_coordinates(shapely.segmentize(line, line.length / 22 * (1 + 1e-9)))
    lon, lat = georef.to_lonlat(src_dense[:, 0], src_dense[:, 1], "EPSG:32631")
    np.testing.assert_allclose(coords, np.column_stack([lon, lat]), atol=1e-12)
    assert out_poly.is_valid and len(out_poly.exterior.coords) == 4 * 22 + 1
    # no densification -> only the original vertices
    (plain,) = georef.reproject_geometries([line], "EPSG:32631", "EPSG:4326", densify_pts=0)
    assert len(shapely.get_coordinates(plain)) == 2
    # same CRS -> unchanged
    assert georef.reproject_geometries([line], 32631, "EPSG:32631")[0].equals(line)


def test_ground_sample_distance_projected_includes_the_true_scale():
    # UTM 31N at map (0, 0), 500 km west of the central meridian: point scale k ~1.0027, from
    # PROJ's own derivatives (pyproj get_factors), an oracle independent of the geodesics used
    t = Affine.translation(0, 0) @ Affine.rotation(30) @ Affine.scale(0.5, -0.5)
    lon, lat = georef.to_lonlat(*(t @ (0.5, 0.5)), "EPSG:32631")
    k = Proj("EPSG:32631").get_factors(lon, lat).parallel_scale
    assert k == pytest.approx(1.0027, abs=1e-4)
    assert georef.ground_sample_distance(t, "EPSG:32631") == pytest.approx(
        (0.5 / k, 0.5 / k), rel=1e-7)
    # NAD83 / New York Long Island (ftUS): 1 ftUS = 1200/3937 m, divided by the LCC scale
    t2 = Affine(2, 0, 1_000_000, 0, -3, 200_000)
    lon, lat = georef.to_lonlat(*(t2 @ (0.5, 0.5)), "EPSG:2263")
    k = Proj("EPSG:2263").get_factors(lon, lat).parallel_scale
    gx, gy = georef.ground_sample_distance(t2, "EPSG:2263")
    assert gx == pytest.approx(2 * 1200 / 3937 / k, rel=1e-7)
    assert gy == pytest.approx(3 * 1200 / 3937 / k, rel=1e-7)


def test_ground_sample_distance_web_mercator_known_answer():
    # EPSG:3857 is spherical Mercator applied to WGS84 lon/lat, so on the ellipsoid one map unit
    # is N cos(lat) / a metres east-west and M cos(lat) / a north-south (N, M: radii of
    # curvature); at 51.9 N a 0.81 m map pixel is about 0.50 m on the ground.
    lat = 51.9
    x, y = georef.lonlat_to_crs(4.4, lat, "EPSG:3857")
    t = Affine(0.81, 0, x - 0.405, 0, -0.81, y + 0.405)
    e2 = 0.00669437999014  # WGS84 first eccentricity squared
    phi = math.radians(lat)
    w = math.sqrt(1 - e2 * math.sin(phi) ** 2)
    exp_x = 0.81 * math.cos(phi) / w
    exp_y = 0.81 * math.cos(phi) * (1 - e2) / w**3
    gx, gy = georef.ground_sample_distance(t, "EPSG:3857", at=(0.5, 0.5))
    assert gx == pytest.approx(exp_x, rel=1e-6) and gy == pytest.approx(exp_y, rel=1e-6)
    assert gx == pytest.approx(0.5, rel=0.01) and gy == pytest.approx(0.5, rel=0.01)
    mx, my, angle = georef.ground_scale("EPSG:3857", x, y)
    assert (mx, my) == pytest.approx((exp_x / 0.81, exp_y / 0.81), rel=1e-6)
    assert angle == pytest.approx(90.0, abs=1e-4)


def test_ground_sample_distance_geographic_known_answers():
    # On the equator 1e-5 deg of longitude = a * pi / 180 * 1e-5 on the WGS84 ellipsoid.
    t = Affine(1e-5, 0, -0.5e-5, 0, -1e-5, 0.5e-5)
    gx, gy = georef.ground_sample_distance(t, "EPSG:4326", at=(0.5, 0.5))
    assert gx == pytest.approx(6378137.0 * math.pi / 180 * 1e-5, rel=1e-9)
    # meridian radius of curvature at the equator: a (1 - e^2)
    e2 = 0.00669437999014
    assert gy == pytest.approx(6378137.0 * (1 - e2) * math.pi / 180 * 1e-5, rel=1e-8)
    # at 60 N a degree of longitude is about half that of the equator
    t60 = Affine(1e-5, 0, 10.0, 0, -1e-5, 60.0)
    gx60, gy60 = georef.ground_sample_distance(t60, "EPSG:4326", at=(0, 0))
    geod = Geod(ellps="WGS84")
    exp_x = geod.inv(10.0 - 0.5e-5, 60.0, 10.0 + 0.5e-5, 60.0)[2]
    exp_y = geod.inv(10.0, 60.0 + 0.5e-5, 10.0, 60.0 - 0.5e-5)[2]
    assert gx60 == pytest.approx(exp_x, rel=1e-9)
    assert gy60 == pytest.approx(exp_y, rel=1e-9)
    assert gx60 / gx == pytest.approx(0.5, abs=0.003)


@pytest.mark.parametrize(
    ("lon", "lat", "epsg"),
    [(4.35, 51.9, 32631), (-115.23, 36.14, 32611), (18.4, -33.9, 32734), (179.99, 10.0, 32660),
     (-180.0, 0.0, 32601)],
)
def test_local_metric_crs_utm(lon, lat, epsg):
    assert georef.local_metric_crs(lon, lat).to_epsg() == epsg


def test_local_metric_crs_polar_is_aeqd_centred():
    c = georef.local_metric_crs(20.0, 86.0)
    assert "equidistant" in c.coordinate_operation.method_name.lower()
    assert georef.lonlat_to_crs(20.0, 86.0, c) == pytest.approx((0.0, 0.0), abs=1e-6)


def test_scaled_window_transform_maps_model_corners_to_window_corners():
    win = Affine.translation(1000, 2000) @ Affine.rotation(15) @ Affine.scale(0.5, -0.5)
    t = georef.scaled_window_transform(win, (600, 400), (256, 128))
    assert t @ (0, 0) == pytest.approx(win @ (0, 0), abs=1e-9)
    assert t @ (256, 128) == pytest.approx(win @ (600, 400), abs=1e-9)
    assert t @ (256, 0) == pytest.approx(win @ (600, 0), abs=1e-9)
    s = georef.scale_transform(Affine(0.5, 0, 10, 0, -0.5, 20), 4)
    assert (s.a, s.e, s.c, s.f) == (2.0, -2.0, 10.0, 20.0)


def test_window_bounds_lonlat_is_south_west_north_east():
    t = Affine(1.0, 0, 592_000.0, 0, -1.0, 5_751_000.0)
    s, w, n, e = georef.window_bounds_lonlat(t, "EPSG:32631", 100)
    lon, lat = georef.to_lonlat(np.array([592_000.0, 592_100.0, 592_100.0, 592_000.0]),
                                np.array([5_751_000.0, 5_751_000.0, 5_750_900.0, 5_750_900.0]),
                                "EPSG:32631")
    # straight UTM edges: the extremes are at the corners (to well below 1e-9 deg here)
    assert (s, w, n, e) == pytest.approx((lat.min(), lon.min(), lat.max(), lon.max()), abs=1e-9)


def test_require_georeferenced_names_the_file():
    with pytest.raises(GeoreferenceError, match=r"plain\.tif.*no CRS"):
        georef.require_georeferenced(None, Affine(1, 0, 0, 0, -1, 0), "plain.tif")
    with pytest.raises(GeoreferenceError, match=r"plain\.tif.*geotransform"):
        georef.require_georeferenced("EPSG:4326", Affine.identity(), "plain.tif")
    georef.require_georeferenced("EPSG:4326", Affine(1, 0, 0, 0, -1, 0), "ok.tif")
