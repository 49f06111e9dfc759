"""raster: true ground scale (Web Mercator, conformal projections far from their centre), search
extents, complex pixels, ``info`` bounds (south-up, antimeridian) and GCP-georeferenced rasters.

Copies of Rotterdam tile c (EPSG:32631, the former demo tile) in other CRSs are made here with
rasterio's reproject; the ground is measured with pyproj's geodesics (``Geod.inv``) and PROJ's
own scale factors (``Proj.get_factors``), which do not share code with the library's
measurements.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import rasterio.crs
from affine import Affine
from oracles import gdalinfo_json, gdaltransform_points
from pyproj import Geod, Proj
from rasterio.control import GroundControlPoint
from tiles import warp_copy

from geomogeo.errors import GeoreferenceError, LocationError, RasterError
from geomogeo.geo import georef, raster

GEOD = Geod(ellps="WGS84")
#: Lambert conformal conic with standard parallels 20 N and 25 N: at 52 N (Rotterdam) its scale
#: is far from 1 (PROJ: ~1.16), so one map metre is ~0.86 ground metres.
LCC_FAR = ("+proj=lcc +lat_1=20 +lat_2=25 +lat_0=22 +lon_0=4 +x_0=0 +y_0=0 +datum=WGS84 "
           "+units=m +no_defs")


def ground_sides(win):
    """Geodesic lengths (m) of the window's top and left edges, from its corners' lon/lat."""
    cols, rows = np.array([0.0, win.size, 0.0]), np.array([0.0, 0.0, win.size])
    lon, lat = georef.to_lonlat(*georef.pixel_to_map(win.transform, cols, rows), win.crs)
    return GEOD.inv(lon[0], lat[0], lon[1], lat[1])[2], GEOD.inv(lon[0], lat[0], lon[2], lat[2])[2]


def shift_between(a, b):
    """Integer (dy, dx) shift of b against a at the peak of their phase correlation."""
    fa, fb = np.fft.fft2(a - a.mean()), np.fft.fft2(b - b.mean())
    r = np.fft.ifft2(fa * np.conj(fb) / (np.abs(fa * np.conj(fb)) + 1e-9)).real
    dy, dx = np.unravel_index(np.argmax(r), r.shape)
    n = a.shape[0]
    return (dy if dy <= n // 2 else dy - n), (dx if dx <= n // 2 else dx - n)


@pytest.fixture(scope="module")
def tile(sample_tile):
    return sample_tile("rotterdam_pan_0p5m_c.tif")


@pytest.fixture(scope="module")
def centre_lonlat(tile):
    with rasterio.open(tile) as ds:
        cx, cy = ds.transform @ (ds.width / 2, ds.height / 2)
    return georef.to_lonlat(cx, cy, "EPSG:32631")


@pytest.mark.parametrize(
    ("crs", "scale"),
    [("EPSG:3857", 1.62), ("EPSG:32633", 1.006), (LCC_FAR, 1.16)],
    ids=["web-mercator", "utm-zone-33", "lambert-conformal-far"],
)
def test_projected_copies_give_ground_metres(tile, centre_lonlat, tmp_path, crs, scale):
    lon, lat = centre_lonlat
    copy = warp_copy(tile, tmp_path / "copy.tif", crs)
    info = raster.raster_info(copy)
    # PROJ's point scale at the centre (h: meridional, k: parallel; equal for conformal maps)
    f = Proj(crs).get_factors(lon, lat)
    assert f.parallel_scale == pytest.approx(scale, abs=0.01)
    # the map pixel is ~0.5 * scale map units; the ground pixel is 0.5 m (+-1%)
    assert info["transform"][0] == pytest.approx(0.5 * scale, rel=0.02)
    assert info["gsd_m"] == pytest.approx((0.5, 0.5), rel=0.01)
    if crs != "EPSG:3857":  # conformal on the ellipsoid: ground = map / PROJ's scale
        col_c, row_c = info["width"] / 2, info["height"] / 2
        a, _, c, _, e, f_ = info["transform"]
        clon, clat = georef.to_lonlat(c + a * col_c, f_ + e * row_c, crs)
        k = Proj(crs).get_factors(clon, clat).parallel_scale
        assert info["gsd_m"] == pytest.approx((a / k, -e / k), rel=1e-6)

    src = raster.open_raster(copy)
    win = raster.read_window(src, (lon, lat), 256, 1.0, center_crs="EPSG:4326")
    assert win.crs.to_epsg() == 32631  # a local UTM zone: the copy's CRS is not true to scale
    # "256 m" covers 256 m on the ground (UTM's own scale here is 0.9997)
    sx, sy = ground_sides(win)
    assert sx == pytest.approx(256.0, rel=1e-3) and sy == pytest.approx(256.0, rel=1e-3)
    # same window grid as the original tile's, and the same objects in the same pixels
    orig_src = raster.open_raster(tile)
    orig = raster.read_window(orig_src, (lon, lat), 256, 1.0, center_crs="EPSG:4326")
    assert orig.crs.equals(win.crs)
    np.testing.assert_allclose(np.array(win.transform)[:6], np.array(orig.transform)[:6],
                               atol=1e-6)
    both = win.valid & orig.valid
    assert both.mean() > 0.95
    assert shift_between(orig.image[..., 0], win.image[..., 0]) == (0, 0)
    corr = np.corrcoef(orig.image[..., 0][both], win.image[..., 0][both])[0, 1]
    assert corr > 0.95


def test_metric_raster_keeps_its_own_crs_and_search_grid_uses_ground_scale(tile, tmp_path):
    src = raster.open_raster(tile)
    cx, cy = (src.bounds[0] + src.bounds[2]) / 2, (src.bounds[1] + src.bounds[3]) / 2
    assert raster.read_window(src, (cx, cy), 32, 1.0).crs.equals(src.crs)
    # Web Mercator: a 64 m window is 64 / cos-ish(lat) map units; the grid steps by half that
    merc = raster.open_raster(warp_copy(tile, tmp_path / "m.tif", "EPSG:3857"))
    xmin, ymin, xmax, ymax = merc.bounds
    centres = raster.search_centers(merc, 64, 1.0, overlap=0.5)
    mx, _, _ = georef.ground_scale("EPSG:3857", (xmin + xmax) / 2, (ymin + ymax) / 2)
    xs = sorted({round(c[0], 6) for c in centres})
    assert xs[0] == pytest.approx(xmin + 32 / mx, abs=1e-6)
    assert xs[-1] == pytest.approx(xmax - 32 / mx, abs=1e-6)
    assert np.diff(xs).max() <= 32 / mx + 1e-6
    # one ground metre per window pixel: the whole ~300 m tile in a few 64 m windows per axis
    assert 8 <= len(xs) <= 10


# ---- search extents ----------------------------------------------------------------------


def test_huge_extent_is_clipped_to_the_raster_first(tile):
    src = raster.open_raster(tile)
    # the grid is built on the clipped extent (unclipped: 6e8 centres, a hang)
    got = raster.search_centers(src, 64, 1.0, overlap=0.5, extent=(0, 0, 1e6, 1e7))
    assert got == raster.search_centers(src, 64, 1.0, overlap=0.5)
    xmin, ymin, _, _ = src.bounds
    part = raster.search_centers(src, 64, 1.0, overlap=0.0, extent=(xmin - 1e9, ymin, xmin + 128,
                                                                     ymin + 64))
    np.testing.assert_allclose(part, [(xmin + 32, ymin + 32), (xmin + 96, ymin + 32)],
                               atol=1e-6)


@pytest.mark.parametrize(
    ("extent", "match"),
    [((0, 0, float("inf"), 1e7), "finite"), ((0, float("nan"), 1, 1), "finite"),
     ((10, 0, 0, 10), "xmin < xmax"), ((0, 10, 10, 10), "ymin < ymax"),
     ((0, 0, 1, 1), "does not overlap the raster, whose bounds"), ((1, 2, 3), "four"),
     (("a", 0, 1, 1), "four numbers")],
)
def test_bad_extents_name_the_raster(tile, extent, match):
    src = raster.open_raster(tile)
    with pytest.raises(LocationError, match=rf"rotterdam_pan_0p5m_c\.tif.*{match}"):
        raster.search_centers(src, 64, 1.0, extent=extent)


# ---- complex pixels --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_raster_is_rejected(make_raster, dtype):
    arr = (np.arange(100).reshape(10, 10) * (1 + 2j)).astype(dtype)
    p = make_raster(f"slc_{dtype}.tif", arr, Affine(1, 0, 592_000, 0, -1, 5_751_000),
                    "EPSG:32631")
    with pytest.raises(RasterError, match=rf"slc_{dtype}\.tif.*complex.*{dtype}.*amplitude"):
        raster.open_raster(p)


# ---- info bounds ---------------------------------------------------------------------------


def test_info_bounds_of_south_up_raster_are_min_max(make_raster, gdaltransform):
    arr = np.arange(200 * 100, dtype=np.uint16).reshape(200, 100)
    north = make_raster("n.tif", arr[::-1], Affine(0.5, 0, 592_000, 0, -0.5, 5_751_000),
                        "EPSG:32631")
    south = make_raster("s.tif", arr, Affine(0.5, 0, 592_000, 0, 0.5, 5_750_900), "EPSG:32631")
    ni, si = raster.raster_info(north), raster.raster_info(south)
    assert si["bounds"] == (592_000.0, 5_750_900.0, 592_050.0, 5_751_000.0)
    assert si["bounds"] == ni["bounds"]
    # corners by Debian's gdaltransform (pixel -> map from the file's own geotransform)
    corners = gdaltransform([str(south)], np.array([[0, 0], [100, 0], [100, 200], [0, 200]]))
    assert si["bounds"] == pytest.approx(
        (corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max()),
        abs=1e-6)
    assert si["bounds_lonlat"] == pytest.approx(ni["bounds_lonlat"], abs=1e-12)
    w, s, e, n = si["bounds_lonlat"]
    assert w < e and s < n
    assert si["gsd_m"] == pytest.approx(ni["gsd_m"], rel=1e-9)


def test_info_across_the_antimeridian_is_a_short_continuous_range(make_raster):
    # UTM 60S over Fiji's 180th meridian: 400 m x 300 m straddling it
    x0, y0 = georef.lonlat_to_crs(179.998, -16.5, "EPSG:32760")
    p = make_raster("fiji.tif", np.ones((300, 400), np.uint8), Affine(1, 0, x0, 0, -1, y0),
                    "EPSG:32760")
    info = raster.raster_info(p)
    w, s, e, n = info["bounds_lonlat"]
    # corners by Debian's gdaltransform: longitudes on both sides of +-180
    corners = np.array(gdaltransform_points(
        [(x0, y0), (x0 + 400, y0), (x0 + 400, y0 - 300), (x0, y0 - 300)], "EPSG:32760",
        "EPSG:4326"))
    assert corners[:, 0].min() < -179.99 and corners[:, 0].max() > 179.99
    lon = np.where(corners[:, 0] < 0, corners[:, 0] + 360, corners[:, 0])
    # UTM edges are nearly straight in lon/lat over 400 m: extremes at the corners (1e-9 deg)
    assert (w, s, e, n) == pytest.approx(
        (lon.min(), corners[:, 1].min(), lon.max(), corners[:, 1].max()), abs=1e-9)
    assert 179.99 < w < 180.0 < e < 180.01  # 0.004 degrees wide, not 360
    # a window read there has continuous Leaflet bounds too
    src = raster.open_raster(p)
    win = raster.read_window(src, (x0 + 200, y0 - 150), 64, 2.0)
    s2, w2, n2, e2 = georef.window_bounds_lonlat(win.transform, win.crs, win.size)
    assert w2 < 180.0 < e2 and e2 - w2 < 0.01 and s2 < n2


# ---- GCP and RPC rasters ---------------------------------------------------------------------


def gcp_copy(src_path, dst_path, transform=None):
    """The tile without geotransform, georeferenced by 5 GCPs (4 corners + centre) computed from
    its affine (or ``transform``)."""
    with rasterio.open(src_path) as s:
        t = transform or s.transform
        arr = s.read()
        w, h = s.width, s.height
        crs = s.crs
        prof = {k: v for k, v in s.profile.items() if k not in ("transform", "crs")}
    gcps = [GroundControlPoint(row=r, col=c, x=(t @ (c, r))[0], y=(t @ (c, r))[1])
            for c, r in [(0, 0), (w, 0), (w, h), (0, h), (w / 2, h / 2)]]
    with rasterio.open(dst_path, "w", **prof) as d:
        d.write(arr)
        d.gcps = (gcps, crs)
    return dst_path


def test_gcp_raster_reads_the_same_windows_as_the_original(tile, tmp_path):
    g = gcp_copy(tile, tmp_path / "gcp.tif")
    meta, _ = gdalinfo_json(g)  # Debian's GDAL: GCPs, no geotransform
    assert len(meta["gcps"]["gcpList"]) == 5 and "geoTransform" not in meta
    src = raster.open_raster(g)
    orig = raster.open_raster(tile)
    assert src.gcps and src.crs.equals(orig.crs) and src.has_mask
    # GDAL's warp of an affine GCP set: the original grid, to far below a pixel
    np.testing.assert_allclose(np.array(src.transform)[:6], np.array(orig.transform)[:6],
                               atol=1e-6)
    assert (src.width, src.height) == (orig.width, orig.height)
    assert src.stretch_low == pytest.approx(orig.stretch_low, abs=1)
    assert src.stretch_high == pytest.approx(orig.stretch_high, abs=1)
    info = raster.raster_info(g)
    assert info["gcps"] == 5 and info["crs_epsg"] == 32631
    assert info["bounds"] == pytest.approx(raster.raster_info(tile)["bounds"], abs=1e-4)
    for gsd in (0.5, 1.0):
        a = raster.read_window(orig, (4.3539, 51.8956), 96, gsd, center_crs="EPSG:4326")
        b = raster.read_window(src, (4.3539, 51.8956), 96, gsd, center_crs="EPSG:4326")
        assert a.transform == b.transform
        both = a.valid & b.valid
        assert both.mean() > 0.99
        np.testing.assert_allclose(b.image[both], a.image[both], atol=0.02)


def test_rotated_gcp_raster_polygons_match_the_affine(tile, tmp_path):
    # GCPs of a rotated affine: the VRT grid is north-up, but windows sit where the affine says
    t = (Affine.translation(593_100, 5_750_500) @ Affine.rotation(25) @ Affine.scale(0.5, -0.5))
    g = gcp_copy(tile, tmp_path / "gcp_rot.tif", transform=t)
    with rasterio.open(tile) as s:
        prof = s.profile | {"transform": t}
        arr = s.read()
    ref = tmp_path / "affine_rot.tif"
    with rasterio.open(ref, "w", **prof) as d:
        d.write(arr)
    src, aff = raster.open_raster(g), raster.open_raster(ref)
    assert src.gcps and src.transform.b == 0 and src.transform.d == 0
    assert src.bounds == pytest.approx(aff.bounds, abs=0.5)  # one 0.5 m pixel
    centre = t @ (300, 300)
    a = raster.read_window(aff, centre, 64, 1.0)
    b = raster.read_window(src, centre, 64, 1.0)
    assert a.transform == b.transform
    both = a.valid & b.valid
    assert both.mean() > 0.99
    assert shift_between(a.image[..., 0], b.image[..., 0]) == (0, 0)
    assert np.abs(b.image[both] - a.image[both]).mean() < 0.02


def test_gcps_without_crs_and_rpc_only_rasters_say_what_to_do(tile, tmp_path):
    g = gcp_copy(tile, tmp_path / "gcp_nocrs.tif")
    with rasterio.open(g, "r+") as d:
        d.gcps = (d.gcps[0], rasterio.crs.CRS())  # an empty CRS: GCPs without a CRS
    with pytest.raises(GeoreferenceError, match=r"gcp_nocrs\.tif.*5 GCPs.*no GCP CRS.*crs="):
        raster.open_raster(g)
    assert raster.open_raster(g, crs="EPSG:32631").gcps

    from rasterio.rpc import RPC

    rpc = RPC(height_off=0, height_scale=100, lat_off=51.9, lat_scale=0.01, line_den_coeff=[1] +
              [0] * 19, line_num_coeff=[0, 0, -1] + [0] * 17, line_off=300, line_scale=300,
              long_off=4.35, long_scale=0.01, samp_den_coeff=[1] + [0] * 19,
              samp_num_coeff=[0, 1] + [0] * 18, samp_off=300, samp_scale=300)
    p = tmp_path / "rpc.tif"
    with rasterio.open(tile) as s:
        prof = {k: v for k, v in s.profile.items() if k not in ("transform", "crs")}
        arr = s.read()
    with rasterio.open(p, "w", **prof) as d:
        d.write(arr)
        d.rpcs = rpc
    with pytest.raises(GeoreferenceError, match=r"rpc\.tif.*RPCs.*gdalwarp -rpc"):
        raster.open_raster(p)


def test_file_pixel_boxes_of_a_gcp_raster_go_through_its_gcps(tile, tmp_path, gdaltransform):
    from geomogeo.boxes import georeference_boxes

    t = (Affine.translation(593_100, 5_750_500) @ Affine.rotation(25) @ Affine.scale(0.5, -0.5))
    g = gcp_copy(tile, tmp_path / "gcp_rot.tif", transform=t)
    boxes = np.array([[10.0, 20.5, 60.0, 45.25], [300.0, 310.0, 420.5, 599.0]])
    src = raster.open_raster(g)
    polys = raster.pixel_boxes_to_polygons(src, boxes)
    # the file's pixels, not the warped grid's: the rotated affine's polygon, vertex by vertex
    for (x1, y1, x2, y2), poly in zip(boxes, polys, strict=True):
        exp = georef.boxes_to_polygons([[x1, y1, x2, y2]], t)[0]
        assert poly.exterior.is_ccw and poly.symmetric_difference(exp).area < 1e-6
        # every vertex as Debian's gdaltransform maps the file pixel through the GCPs
        xy = np.asarray(poly.exterior.coords)[:-1]
        cols, rows = georef.map_to_pixel(t, xy[:, 0], xy[:, 1])
        oracle = gdaltransform([str(g)], np.column_stack([cols, rows]))
        np.testing.assert_allclose(oracle, xy, atol=1e-6)
    gdf = georeference_boxes(g, boxes)
    assert gdf.crs.to_epsg() == 32631
    assert all(a.equals(b) for a, b in zip(gdf.geometry, polys, strict=True))
    # an affine raster takes the affine, as before
    plain = raster.open_raster(tile)
    assert raster.pixel_boxes_to_polygons(plain, boxes)[0].equals(
        georef.boxes_to_polygons(boxes, plain.transform)[0])
