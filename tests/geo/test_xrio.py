"""xrio: an xarray.DataArray read as a raster gives exactly the windows of the file it came from."""

from __future__ import annotations

import numpy as np
import pytest
import rioxarray
import xarray as xr
from affine import Affine

from geomogeo.errors import GeoreferenceError, RasterError
from geomogeo.geo import raster

X0, Y0 = 592_000.0, 5_751_000.0


def assert_same_window(a, b):
    assert a.transform == b.transform and a.crs.equals(b.crs)
    np.testing.assert_array_equal(a.valid, b.valid)
    np.testing.assert_array_equal(a.image, b.image)


@pytest.mark.parametrize("gsd", [0.5, 1.0, 2.0])
def test_open_rasterio_dataarray_reads_like_its_file(sample_tile, gsd):
    tile = sample_tile("rotterdam_pan_0p5m_c.tif")
    da = rioxarray.open_rasterio(tile)
    f, a = raster.open_raster(tile), raster.open_raster(da)
    assert a.path == tile and a.array is not None
    assert (a.crs, a.transform, a.width, a.height, a.count, a.dtypes) == (
        f.crs, f.transform, f.width, f.height, f.count, f.dtypes)
    assert (a.stretch_low, a.stretch_high, a.bands) == (f.stretch_low, f.stretch_high, f.bands)
    lon, lat = 4.3539, 51.8956
    # 1 m from 0.5 m pixels is a 2x2 GDAL average on read; 2 m a 4x4 one
    assert_same_window(raster.read_window(f, (lon, lat), 128, gsd, center_crs="EPSG:4326"),
                       raster.read_window(a, (lon, lat), 128, gsd, center_crs="EPSG:4326"))
    # a window hanging off the raster's north-west corner
    x, y = f.transform @ (10, 10)
    assert_same_window(raster.read_window(f, (x, y), 64, gsd),
                       raster.read_window(a, (x, y), 64, gsd))
    np.testing.assert_array_equal(raster.display_image(f, 100), raster.display_image(a, 100))


def test_large_in_memory_dataarray_with_nodata(make_raster):
    # > 1M pixels: the stretch samples with GDAL's nearest decimation; nodata is invalid
    rng = np.random.default_rng(3)
    arr = rng.integers(1, 4000, (3, 1100, 1000)).astype(np.uint16)
    arr[:, 500:560, 400:470] = 0
    t = Affine.translation(X0, Y0) @ Affine.rotation(-12) @ Affine.scale(0.5, -0.5)
    p = make_raster("big.tif", arr, t, "EPSG:32631", nodata=0)
    da = xr.DataArray(arr, dims=("band", "y", "x"), name="big")
    da = da.rio.write_crs("EPSG:32631").rio.write_transform(t).rio.write_nodata(0)
    f, a = raster.open_raster(p, bands=(3, 1, 2)), raster.open_raster(da, bands=(3, 1, 2))
    assert str(a.path) == "<xarray.DataArray 'big'>" and a.nodata == 0.0
    assert (a.transform, a.stretch_low, a.stretch_high) == (f.transform, f.stretch_low,
                                                            f.stretch_high)
    centre = t @ (435, 530)
    for gsd in (0.5, 1.0, 1.6):
        wf = raster.read_window(f, centre, 96, gsd)
        assert not wf.valid.all()  # the nodata block is in the window
        assert_same_window(wf, raster.read_window(a, centre, 96, gsd))


def test_two_dimensional_dataarray_and_bad_ones(make_raster):
    arr = np.arange(50 * 40, dtype=np.float32).reshape(50, 40)
    t = Affine(1, 0, X0, 0, -1, Y0)
    p = make_raster("plain.tif", arr, t, "EPSG:32631")
    da = xr.DataArray(arr, dims=("y", "x")).rio.write_crs("EPSG:32631").rio.write_transform(t)
    f, a = raster.open_raster(p), raster.open_raster(da)
    assert a.count == 1 and a.bands == (1, 1, 1)
    assert_same_window(raster.read_window(f, (X0 + 20, Y0 - 25), 16, 1.5),
                       raster.read_window(a, (X0 + 20, Y0 - 25), 16, 1.5))
    with pytest.raises(GeoreferenceError, match=r"<xarray.DataArray 'nocrs'>.*no CRS"):
        raster.open_raster(xr.DataArray(arr, dims=("y", "x"), name="nocrs"))
    four = xr.DataArray(np.zeros((2, 2, 5, 5)), dims=("time", "band", "y", "x"), name="cube")
    with pytest.raises(RasterError, match=r"cube.*\(band, y, x\).*isel"):
        raster.open_raster(four.rio.write_crs("EPSG:32631"))
    with pytest.raises(RasterError, match=r"'nodims'.*x/y dimensions"):
        raster.open_raster(xr.DataArray(np.zeros((5, 5)), dims=("a", "b"), name="nodims"))
    cplx = da.astype(np.complex64).rename("slc")
    with pytest.raises(RasterError, match=r"'slc'.*complex64"):
        raster.open_raster(cplx)
