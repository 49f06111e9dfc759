"""Folder of tiles as one reference (geo/mosaic.py): tile index, VRTs, windows across seams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from oracles import gdalinfo_json
from rasterio.warp import Resampling, calculate_default_transform, reproject
from tiles import cut_tiles

from geomogeo.errors import LocationError, RasterError
from geomogeo.geo import georef, mosaic, raster

ROTTERDAM = Path(__file__).resolve().parents[2] / "sample_tiles" / "rotterdam_pan_0p5m_c.tif"
#: Uneven cuts (pixel edges): seams at x = 251 px and y = 347 px, odd on purpose, so the 2x2
#: decimation of a 1 m window over this 0.5 m raster straddles them.
COL_CUT, ROW_CUT = 251, 347


@pytest.fixture(scope="module")
def four_tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiles")
    cut_tiles(ROTTERDAM, folder, [COL_CUT], [ROW_CUT])
    return folder


def test_mosaic_vrt_is_the_raster_it_was_cut_from(four_tiles: Path, tmp_path: Path) -> None:
    m = mosaic.open_mosaic(four_tiles, tmp_path / "cache")
    assert len(m.tiles) == 4 and not any(t.warped for t in m.tiles)
    # Debian's GDAL (independent of the rasterio wheel) reads the mosaic VRT: same size,
    # geotransform and pixel checksum as the original raster
    vrt_info, _ = gdalinfo_json(tmp_path / "cache" / mosaic.MOSAIC_VRT, checksum=True)
    ras_info, _ = gdalinfo_json(ROTTERDAM, checksum=True)
    assert vrt_info["size"] == ras_info["size"] == [600, 600]
    assert vrt_info["geoTransform"] == pytest.approx(ras_info["geoTransform"], abs=1e-9)
    assert vrt_info["bands"][0]["checksum"] == ras_info["bands"][0]["checksum"]
    # one stretch for the whole mosaic, equal to the raster's (the 600 x 600 px are all read)
    src = raster.open_raster(ROTTERDAM)
    assert m.source.stretch_low == src.stretch_low
    assert m.source.stretch_high == src.stretch_high


@pytest.mark.parametrize("center", [
    (593161.9, 5750291.6),   # the middle: the window covers all four tiles
    (593137.3, 5750268.1),   # on the crossing of the two seams
    (593020.0, 5750270.0),   # the west edge: half the window is off the raster
])
def test_window_across_seams_equals_the_whole_raster(
    four_tiles: Path, tmp_path: Path, center: tuple[float, float]
) -> None:
    m = mosaic.open_mosaic(four_tiles, tmp_path / "cache")
    src = raster.open_raster(ROTTERDAM)
    whole = raster.read_window(src, center, 256, 1.0)
    lon, lat = georef.to_lonlat(*center, src.crs)
    with m.window_source(lon, lat, 256.0) as tiled_src:
        assert tiled_src.path.suffix == ".vrt" and tiled_src.path.exists()
        tiled = raster.read_window(tiled_src, center, 256, 1.0)
    assert not tiled_src.path.exists()  # the per-window VRT is removed
    # the seams lie inside the window (x = 251 px, y = 347 px of the raster)
    seam_x, seam_y = georef.pixel_to_map(src.transform, COL_CUT, ROW_CUT)
    x0, y1 = whole.transform.c, whole.transform.f
    assert x0 < seam_x < x0 + 256 or y1 - 256 < seam_y < y1
    assert tiled.transform == whole.transform
    np.testing.assert_array_equal(tiled.valid, whole.valid)
    np.testing.assert_array_equal(tiled.image, whole.image)


def test_index_finds_the_tiles_around_a_point(four_tiles: Path, tmp_path: Path) -> None:
    m = mosaic.open_mosaic(four_tiles, tmp_path / "cache")
    names = [t.path.name for t in m.tiles]
    assert names == ["tile_00000_00000.tif", "tile_00000_00251.tif", "tile_00347_00000.tif",
                     "tile_00347_00251.tif"]
    src = raster.open_raster(ROTTERDAM)
    # 20 m squares: inside the south-east tile only, then across the vertical seam
    x, y = georef.pixel_to_map(src.transform, 500, 500)
    lon, lat = georef.to_lonlat(x, y, src.crs)
    assert [t.path.name for t in m.tiles_intersecting(m.area_around(lon, lat, 10.0))] == \
        ["tile_00347_00251.tif"]
    x, y = georef.pixel_to_map(src.transform, COL_CUT, 100)
    lon, lat = georef.to_lonlat(x, y, src.crs)
    assert [t.path.name for t in m.tiles_intersecting(m.area_around(lon, lat, 10.0))] == \
        ["tile_00000_00000.tif", "tile_00000_00251.tif"]
    with pytest.raises(LocationError, match="no tile lies within"), \
            m.window_source(lon + 1.0, lat, 200.0):
        pass


def test_gap_between_tiles_is_invalid(four_tiles: Path, tmp_path: Path) -> None:
    folder = tmp_path / "three"
    folder.mkdir()
    for p in sorted(four_tiles.glob("*.tif"))[:3]:  # drop the south-east tile
        (folder / p.name).write_bytes(p.read_bytes())
    m = mosaic.open_mosaic(folder, tmp_path / "cache")
    assert (m.width, m.height) == (600, 600)
    src = raster.open_raster(ROTTERDAM)
    center = georef.pixel_to_map(src.transform, 300, 300)
    lon, lat = georef.to_lonlat(*center, src.crs)
    with m.window_source(lon, lat, 256.0) as s:
        win = raster.read_window(s, center, 256, 1.0)
    whole = raster.read_window(src, center, 256, 1.0)
    # window pixels whose centre lies south-east of both seams (1 px margin for bilinear)
    cols, rows = georef.map_to_pixel(src.transform, *georef.pixel_to_map(
        win.transform, *np.meshgrid(np.arange(256) + 0.5, np.arange(256) + 0.5)))
    south_east = (cols > COL_CUT + 1) & (rows > ROW_CUT + 1)
    elsewhere = (cols < COL_CUT - 1) | (rows < ROW_CUT - 1)
    assert south_east.sum() > 5000 and not win.valid[south_east].any()
    assert win.valid[elsewhere].all()
    # the three tiles have their own stretch: compare the raw values where neither is clipped
    def raw(w: raster.ReferenceWindow, s: raster.RasterSource) -> np.ndarray:
        return w.image[..., 0] * (s.stretch_high[0] - s.stretch_low[0]) + s.stretch_low[0]

    unclipped = elsewhere & (win.image[..., 0] > 0) & (win.image[..., 0] < 1) \
        & (whole.image[..., 0] > 0) & (whole.image[..., 0] < 1)
    assert unclipped.sum() > 20000
    np.testing.assert_allclose(raw(win, m.source)[unclipped], raw(whole, src)[unclipped],
                               atol=1e-3 * src.stretch_high[0])


def test_tile_in_another_crs_is_warped_onto_the_grid(four_tiles: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    tiles = sorted(four_tiles.glob("*.tif"))
    for p in tiles[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    with rasterio.open(tiles[3]) as ds:  # the south-east tile, reprojected to lon/lat
        tr, w, h = calculate_default_transform(ds.crs, "EPSG:4326", ds.width, ds.height,
                                               *ds.bounds)
        arr = np.zeros((1, h, w), ds.dtypes[0])
        reproject(ds.read(), arr, src_transform=ds.transform, src_crs=ds.crs, dst_transform=tr,
                  dst_crs="EPSG:4326", resampling=Resampling.bilinear, dst_nodata=0)
        profile = {**ds.profile, "crs": "EPSG:4326", "transform": tr, "width": w,
                   "height": h, "nodata": 0}
    with rasterio.open(folder / "z_lonlat.tif", "w", **profile) as o:
        o.write(arr)
    m = mosaic.open_mosaic(folder, tmp_path / "cache")
    assert [t.warped for t in m.tiles] == [False, False, False, True]
    assert m.crs.to_epsg() == 32631  # three tiles of four are in UTM 31N
    src = raster.open_raster(ROTTERDAM)
    center = georef.pixel_to_map(src.transform, 430, 480)  # inside the south-east tile
    lon, lat = georef.to_lonlat(*center, src.crs)
    with m.window_source(lon, lat, 256.0) as s:
        win = raster.read_window(s, center, 64, 1.0)
    whole = raster.read_window(src, center, 64, 1.0)
    # resampled twice (to lon/lat, back to the grid): close, not equal; valid everywhere here
    assert win.valid.all()
    diff = np.abs(win.image - whole.image)
    assert float(np.median(diff)) < 0.01 and float(np.percentile(diff, 99)) < 0.1


def test_bad_folders_are_named(tmp_path: Path, make_raster) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RasterError, match="no raster tiles"):
        mosaic.open_mosaic(empty, tmp_path / "cache")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    t = Affine(1, 0, 500000, 0, -1, 5700000)
    make_raster("mixed/a.tif", np.zeros((1, 8, 8), np.uint8), t, "EPSG:32631")
    make_raster("mixed/b.tif", np.zeros((3, 8, 8), np.uint8), t @ Affine.translation(8, 0),
                "EPSG:32631")
    with pytest.raises(RasterError, match=r"b\.tif: 3 band\(s\) of uint8, but .*a\.tif has 1"):
        mosaic.open_mosaic(mixed, tmp_path / "cache")
    (mixed / "b.tif").unlink()
    (mixed / "c.tif").write_bytes(b"not a raster")
    with pytest.raises(RasterError, match=r"c\.tif: cannot open this tile"):
        mosaic.open_mosaic(mixed, tmp_path / "cache")


def test_open_raster_returns_an_opened_source_as_it_is(four_tiles: Path, tmp_path: Path) -> None:
    m = mosaic.open_mosaic(four_tiles, tmp_path / "cache")
    assert raster.open_raster(m.source) is m.source  # keeps the mosaic's stretch
    with pytest.raises(RasterError, match="already opened"):
        raster.open_raster(m.source, bands=(1, 1, 1))
