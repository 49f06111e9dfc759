"""raster: opening, band mapping, stretch, north-up windows at a GSD, search grid, info.

Most rasters here hold a LINEAR function of the map coordinates of each pixel centre: bilinear
resampling reproduces a linear function exactly, so every window pixel has a known value
f(x, y) at its own centre, whatever the raster's rotation, orientation or CRS.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from affine import Affine
from pyproj import Geod, Proj

from geomogeo.errors import GeoreferenceError, LocationError, RasterError
from geomogeo.geo import georef, raster

X0, Y0, N = 592_000.0, 5_751_000.0, 200  # UTM 31N raster: 200 x 200 pixels of 1 m
CX, CY = X0 + 100.0, Y0 - 100.0  # its centre


def f_map(x, y):
    """The test field: linear in map coordinates (UTM metres)."""
    return 50.0 + 0.05 * (x - CX) + 0.1 * (y - CY)


def linear_raster(make_raster, name, t, n=N, crs="EPSG:32631", f=f_map, nodata=None):
    cols, rows = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
    xs, ys = georef.pixel_to_map(t, cols, rows)
    return make_raster(name, f(xs, ys).astype(np.float32), t, crs, nodata=nodata)


def unstretch(src, win):
    """Raw values of the window's first channel, NaN where invalid or clipped by the stretch."""
    img = win.image[..., 0].astype(np.float64)
    v = src.stretch_low[0] + img * (src.stretch_high[0] - src.stretch_low[0])
    return np.where(win.valid & (img > 0) & (img < 1), v, np.nan)


def window_centres(win):
    j, i = np.mgrid[0 : win.size, 0 : win.size] + 0.5
    return georef.pixel_to_map(win.transform, i, j)


@pytest.fixture
def north_up(make_raster):
    return linear_raster(make_raster, "north_up.tif", Affine(1, 0, X0, 0, -1, Y0))


def test_window_transform_corners_and_values(north_up):
    src = raster.open_raster(north_up)
    assert src.bands == (1, 1, 1) and src.crs.to_epsg() == 32631
    win = raster.read_window(src, (CX + 3.3, CY - 7.1), 40, 1.5)
    assert win.image.shape == (40, 40, 3) and win.image.dtype == np.float32
    assert win.valid.shape == (40, 40) and win.valid.all() and win.fraction_valid == 1.0
    assert win.crs.equals(src.crs) and win.gsd == 1.5 and win.size == 40
    assert win.center == pytest.approx((CX + 3.3, CY - 7.1), abs=1e-9)
    # model pixel (0, 0) and (size, size) -> the window's corners
    assert win.transform @ (0, 0) == pytest.approx((CX + 3.3 - 30, CY - 7.1 + 30), abs=1e-9)
    assert win.transform @ (40, 40) == pytest.approx((CX + 3.3 + 30, CY - 7.1 - 30), abs=1e-9)
    assert (win.transform.b, win.transform.d) == (0.0, 0.0)
    # values: bilinear resampling of a linear field is exact at each window pixel centre
    xs, ys = window_centres(win)
    got = unstretch(src, win)
    ok = np.isfinite(got)
    assert ok.mean() > 0.8
    np.testing.assert_allclose(got[ok], f_map(xs, ys)[ok], atol=2e-3)
    # the three channels of a 1-band raster are the same band
    np.testing.assert_array_equal(win.image[..., 0], win.image[..., 2])


def test_downsampled_window_uses_decimated_read(north_up):
    src = raster.open_raster(north_up)
    win = raster.read_window(src, (CX, CY), 16, 8.0)  # 128 m of 1 m pixels in 16 pixels
    xs, ys = window_centres(win)
    got = unstretch(src, win)
    ok = np.isfinite(got)
    assert ok.mean() > 0.8
    np.testing.assert_allclose(got[ok], f_map(xs, ys)[ok], atol=0.02)


def test_rotated_and_south_up_give_the_same_north_up_window(make_raster, north_up):
    ref_src = raster.open_raster(north_up)
    south = linear_raster(make_raster, "south_up.tif", Affine(1, 0, X0, 0, 1, Y0 - N))
    # rotated 30 degrees about the raster centre, same pixel size
    rot_t = (Affine.translation(CX, CY) @ Affine.rotation(30) @ Affine.translation(-N / 2, N / 2)
             @ Affine.scale(1, -1))
    rotated = linear_raster(make_raster, "rotated.tif", rot_t)
    ref = raster.read_window(ref_src, (CX + 5, CY + 2), 48, 1.25)
    ref_vals = unstretch(ref_src, ref)

    s_src = raster.open_raster(south)
    s_win = raster.read_window(s_src, (CX + 5, CY + 2), 48, 1.25)
    assert s_src.stretch_low == ref_src.stretch_low  # same pixels, flipped
    assert s_win.transform == ref.transform
    np.testing.assert_array_equal(s_win.valid, ref.valid)
    np.testing.assert_allclose(s_win.image, ref.image, atol=1e-5)

    r_src = raster.open_raster(rotated)
    r_win = raster.read_window(r_src, (CX + 5, CY + 2), 48, 1.25)
    assert r_win.transform == ref.transform  # north-up in map axes
    r_vals = unstretch(r_src, r_win)
    both = np.isfinite(r_vals) & np.isfinite(ref_vals)
    assert both.mean() > 0.8
    np.testing.assert_allclose(r_vals[both], ref_vals[both], atol=2e-3)


def test_off_edge_fill_and_valid_mask(north_up):
    src = raster.open_raster(north_up)
    win = raster.read_window(src, (X0 + 8, Y0 - 8), 32, 1.0)  # centred 8 px from the corner
    # window spans X0-8 .. X0+24: its first 8 columns and rows are off the raster
    assert not win.valid[:8, :].any() and not win.valid[:, :8].any()
    assert win.valid[8:, 8:].all()
    assert win.fraction_valid == pytest.approx(24 * 24 / 32**2)
    assert (win.image[~win.valid] == 0).all()


def test_declared_nodata_is_invalid_and_excluded_from_stretch(make_raster):
    arr = np.tile(np.linspace(0, 100, 100, dtype=np.float32), (100, 1))
    arr[40:60, 40:60] = -9999
    p = make_raster("nodata.tif", arr, Affine(1, 0, X0, 0, -1, Y0), "EPSG:32631", nodata=-9999)
    src = raster.open_raster(p)
    assert src.nodata == -9999
    assert src.stretch_low[0] == pytest.approx(np.percentile(arr[arr > -9999], 2), abs=1.5)
    assert src.stretch_high[0] == pytest.approx(np.percentile(arr[arr > -9999], 98), abs=1.5)
    win = raster.read_window(src, (X0 + 50, Y0 - 50), 40, 1.0)  # window = raster 30..70
    assert not win.valid[12:28, 12:28].any()  # inside the nodata block (raster 42..58)
    assert win.valid[:8, :].all() and win.valid[:, 32:].all()  # far from it
    assert (win.image[~win.valid] == 0).all()


def test_alpha_band_is_invalid(make_raster):
    from rasterio.enums import ColorInterp

    rgba = np.full((4, 50, 50), 200, np.uint8)
    rgba[0] = np.arange(50, dtype=np.uint8)[None, :] * 5
    rgba[3, :, 25:] = 0
    p = make_raster("rgba.tif", rgba, Affine(1, 0, X0, 0, -1, Y0), "EPSG:32631")
    import rasterio

    with rasterio.open(p, "r+") as ds:
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    src = raster.open_raster(p)
    assert src.has_mask and src.bands == (1, 2, 3)
    win = raster.read_window(src, (X0 + 25, Y0 - 25), 20, 1.0)
    assert win.valid[:, :8].all() and not win.valid[:, 12:].any()
    assert src.stretch_high[0] <= 24 * 5  # stretch from the valid (left) half only


def test_geographic_raster_gives_square_metre_pixels(make_raster):
    lon0, lat0, d = -115.2339, 36.1423, 3e-6

    def f_ll(lon, lat):
        return 50.0 + (lon - lon0) * 2e4 + (lat - lat0) * 1e4

    p = linear_raster(make_raster, "wgs84.tif", Affine(d, 0, lon0, 0, -d, lat0), n=400,
                      crs="EPSG:4326", f=f_ll)
    src = raster.open_raster(p)
    clon, clat = lon0 + 200 * d, lat0 - 200 * d
    win = raster.read_window(src, (clon, clat), 32, 0.5, center_crs="EPSG:4326")
    assert win.crs.to_epsg() == 32611
    assert (win.transform.a, win.transform.e) == (0.5, -0.5)
    assert georef.to_lonlat(*win.center, win.crs) == pytest.approx((clon, clat), abs=1e-9)
    # the window's sides measured on the ellipsoid are equal and 16 m (UTM scale ~0.9999)
    geod = Geod(ellps="WGS84")
    (lo0, lo1, lo2), (la0, la1, la2) = georef.to_lonlat(
        *georef.pixel_to_map(win.transform, np.array([0, 32, 0]), np.array([0, 0, 32])), win.crs)
    side_x = geod.inv(lo0, la0, lo1, la1)[2]
    side_y = geod.inv(lo0, la0, lo2, la2)[2]
    assert side_x == pytest.approx(16.0, rel=5e-4) and side_y == pytest.approx(side_x, rel=1e-5)
    # values at each window pixel centre's lon/lat
    xs, ys = window_centres(win)
    lon, lat = georef.to_lonlat(xs, ys, win.crs)
    got = unstretch(src, win)
    ok = np.isfinite(got)
    assert ok.mean() > 0.8
    np.testing.assert_allclose(got[ok], f_ll(lon, lat)[ok], atol=2e-3)


def test_center_in_lonlat_on_projected_raster(north_up):
    src = raster.open_raster(north_up)
    lon, lat = georef.to_lonlat(CX, CY, "EPSG:32631")
    win = raster.read_window(src, (lon, lat), 8, 1.0, center_crs="EPSG:4326")
    assert win.center == pytest.approx((CX, CY), abs=1e-6)


def test_center_outside_raises_location_error(north_up):
    src = raster.open_raster(north_up)
    with pytest.raises(LocationError, match=r"north_up\.tif.*outside the raster.*bounds"):
        raster.read_window(src, (X0 - 1, CY), 32, 1.0)
    with pytest.raises(LocationError, match="gsd"):
        raster.read_window(src, (CX, CY), 32, 0.0)


def test_nearest_point_clips_to_the_raster_edges(north_up, make_raster):
    src = raster.open_raster(north_up)
    assert src.nearest_point(CX + 3.25, CY - 7.5) == (CX + 3.25, CY - 7.5)  # on it: itself
    assert src.nearest_point(X0 - 12.0, CY + 4.0) == (X0, CY + 4.0)  # west of it
    assert src.nearest_point(CX, Y0 + 0.5) == (CX, Y0)  # north of it
    assert src.nearest_point(X0 + 250.0, Y0 - 300.0) == (X0 + N, Y0 - N)  # south-east corner
    raster.read_window(src, src.nearest_point(CX, Y0 + 40.0), 8, 1.0)  # a readable centre
    # A rotated raster clips in its own pixel grid: 30 degrees, 2 m pixels.
    t = Affine.translation(X0, Y0) @ Affine.rotation(30) @ Affine.scale(2, -2)
    rot = raster.open_raster(linear_raster(make_raster, "rot.tif", t, n=50))
    x, y = georef.pixel_to_map(t, 60.0, 20.0)  # 10 columns beyond the right edge
    nx, ny = rot.nearest_point(float(x), float(y))
    col, row = georef.map_to_pixel(t, nx, ny)
    assert (col, row) == (pytest.approx(50.0, abs=1e-9), pytest.approx(20.0, abs=1e-9))
    assert rot.contains(nx, ny)


def test_no_crs_is_a_georeference_error_unless_given(make_raster):
    p = make_raster("plain.tif", np.zeros((10, 10), np.uint8), None, None)
    with pytest.raises(GeoreferenceError, match=r"plain\.tif"):
        raster.open_raster(p)
    t = Affine(1, 0, X0, 0, -1, Y0)
    src = raster.open_raster(p, crs="EPSG:32631", transform=t)
    assert src.transform == t and src.crs.to_epsg() == 32631
    p2 = make_raster("nocrs.tif", np.zeros((10, 10), np.uint8), t, None)
    with pytest.raises(GeoreferenceError, match=r"nocrs\.tif.*no CRS"):
        raster.open_raster(p2)


def test_truncated_text_and_missing_files_are_raster_errors(make_raster, tmp_path):
    rng = np.random.default_rng(0)
    p = make_raster("cut.tif", rng.integers(0, 2000, (300, 300)).astype(np.uint16),
                    Affine(1, 0, X0, 0, -1, Y0), "EPSG:32631")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(RasterError, match=r"cut\.tif"):
        raster.open_raster(p)
    txt = tmp_path / "notes.tif"
    txt.write_text("this is not a raster\n")
    with pytest.raises(RasterError, match=r"notes\.tif"):
        raster.open_raster(txt)
    with pytest.raises(RasterError, match=r"absent\.tif.*not found"):
        raster.open_raster(tmp_path / "absent.tif")


def test_band_mapping(make_raster):
    t = Affine(1, 0, X0, 0, -1, Y0)
    four = make_raster("four.tif", np.stack([np.full((10, 10), v, np.uint16) * np.arange(
        100, dtype=np.uint16).reshape(10, 10) for v in (1, 2, 3, 4)]), t, "EPSG:32631")
    assert raster.open_raster(four).bands == (1, 2, 3)
    src = raster.open_raster(four, bands=(4, 2, 1))
    assert src.bands == (4, 2, 1)
    assert src.stretch_high[0] == pytest.approx(4 * src.stretch_high[2], rel=0.05)
    assert raster.open_raster(four, bands=2).bands == (2, 2, 2)
    with pytest.raises(RasterError, match=r"four\.tif.*1\.\.4"):
        raster.open_raster(four, bands=(1, 2, 5))
    two = make_raster("two.tif", np.zeros((2, 10, 10), np.uint8), t, "EPSG:32631")
    assert raster.open_raster(two).bands == (1, 1, 1)


def test_search_centers_grid(north_up):
    src = raster.open_raster(north_up)
    # window side 20 px * 2 m = 40 m, overlap 0.5 -> step 20 m: (200 - 40) / 20 + 1 = 9 per axis
    c = raster.search_centers(src, 20, 2.0, overlap=0.5)
    assert len(c) == 81
    assert c[0] == pytest.approx((X0 + 20, Y0 - 20))  # north-west first
    assert c[-1] == pytest.approx((X0 + 180, Y0 - 180))
    assert c[1][0] - c[0][0] == pytest.approx(20.0)
    ext = raster.search_centers(src, 20, 2.0, overlap=0.0, extent=(X0, Y0 - 80, X0 + 80, Y0))
    assert len(ext) == 4 and ext[0] == pytest.approx((X0 + 20, Y0 - 20))
    with pytest.raises(LocationError, match="overlap"):
        raster.search_centers(src, 20, 2.0, overlap=1.0)


def test_sample_tiles_gsd_in_metres(sample_tile):
    lv = raster.raster_info(sample_tile("las_vegas_pan_0p3m_wgs84.tif"))
    assert lv["crs_epsg"] == 4326 and (lv["width"], lv["height"]) == (1300, 1300)
    a, _, c, _, e, f = lv["transform"]
    lat = f + e * 650
    geod = Geod(ellps="WGS84")
    exp_x = geod.inv(c + a * 649.5, lat, c + a * 650.5, lat)[2]
    exp_y = geod.inv(c + a * 650, f + e * 649.5, c + a * 650, f + e * 650.5)[2]
    assert lv["gsd_m"] == pytest.approx((exp_x, exp_y), rel=1e-9)
    assert lv["gsd_m"][1] == pytest.approx(0.3, abs=0.01)
    assert lv["gsd_m"][0] == pytest.approx(0.3 * math.cos(math.radians(lat)), abs=0.01)
    w, s, e_, n = lv["bounds_lonlat"]
    assert w < -115.232 < e_ and s < 36.14 < n

    ro = raster.raster_info(sample_tile("rotterdam_pan_0p5m_c.tif"))
    assert ro["crs_epsg"] == 32631
    # the (about 0.5 m) map pixel divided by UTM's point scale at the centre (PROJ's
    # get_factors, ~0.99971)
    a, _, c, _, e, f = ro["transform"]
    lon, lat = georef.to_lonlat(c + 300 * a, f + 300 * e, "EPSG:32631")
    k = Proj("EPSG:32631").get_factors(lon, lat).parallel_scale
    assert ro["gsd_m"] == pytest.approx((a / k, -e / k), rel=1e-7)
    assert ro["gsd_m"] == pytest.approx((0.5, 0.5), abs=2e-4)

    src = raster.open_raster(sample_tile("las_vegas_pan_0p3m_wgs84.tif"))
    win = raster.read_window(src, ((w + e_) / 2, (s + n) / 2), 64, 0.3, center_crs="EPSG:4326")
    assert win.crs.to_epsg() == 32611 and win.fraction_valid == 1.0
    assert 0.2 < float(win.image.mean()) < 0.8
    disp = raster.display_image(src, max_size=100)
    assert disp.shape == (100, 100, 3) and disp.dtype == np.uint8
