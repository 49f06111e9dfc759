"""The command line in-process: ``geomogeo.cli.main(args)`` returns the exit code."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from oracles import gdaltransform_points, ogrinfo_summary, qgis_layer_check

from geomogeo.cli import EXIT_INPUT, EXIT_OUTPUT, EXIT_USAGE, main

REPO = Path(__file__).resolve().parents[2]
ROTTERDAM = REPO / "sample_tiles" / "rotterdam_pan_0p5m_c.tif"
VEGAS = REPO / "sample_tiles" / "las_vegas_pan_0p3m_wgs84.tif"


def gdaltransform_pixels(raster: Path, pixels: list[tuple[float, float]]) -> np.ndarray:
    """Pixel (col, row) -> map x, y by Debian's gdaltransform from the raster's geotransform."""
    proc = subprocess.run(["gdaltransform", str(raster)], check=True, capture_output=True,
                          text=True, input="".join(f"{c!r} {r!r}\n" for c, r in pixels),
                          env={"PATH": "/usr/bin:/bin"})
    return np.array([[float(v) for v in ln.split()[:2]] for ln in proc.stdout.splitlines()])


def test_info_reports_crs_gsd_and_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(ROTTERDAM), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["crs_epsg"] == 32631
    assert meta["width"] == 600 and meta["height"] == 600
    gsd = meta["gsd_m"]
    assert gsd[0] == pytest.approx(0.5, abs=1e-3) and gsd[1] == pytest.approx(0.5, abs=1e-3)
    # lon/lat bounds agree with Debian's gdaltransform of the raster corners
    with rasterio.open(ROTTERDAM) as ds:
        b = ds.bounds
    corners = [(b.left, b.bottom), (b.right, b.bottom), (b.right, b.top), (b.left, b.top)]
    ll = np.array(gdaltransform_points(corners, "EPSG:32631", "EPSG:4326"))
    # the edges of a 300 m UTM square are straight in lon/lat to far below 1e-8 degrees
    assert meta["bounds_lonlat"] == pytest.approx(
        [ll[:, 0].min(), ll[:, 1].min(), ll[:, 0].max(), ll[:, 1].max()], abs=1e-8)


def test_info_on_geographic_raster_gives_metres(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(VEGAS), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    gx, gy = meta["gsd_m"]
    assert 0.2 < gx < 0.3 and 0.28 < gy < 0.32  # 2.7e-6 deg: ~0.24 m E-W, ~0.30 m N-S at 36 N


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_georeference_boxes_to_geopackage(tmp_path: Path, fmt: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    # a rotated raster, so a wrong (min/max) polygon construction would be caught
    t = Affine.translation(593000, 5750400) @ Affine.rotation(-20) @ Affine.scale(0.5, -0.5)
    ras = tmp_path / "r.tif"
    with rasterio.open(ras, "w", driver="GTiff", width=100, height=80, count=1, dtype="uint8",
                       crs="EPSG:32631", transform=t) as ds:
        ds.write(np.ones((1, 80, 100), np.uint8))
    boxes = [(10.0, 5.0, 30.5, 25.0), (50.0, 40.0, 90.0, 70.0)]
    if fmt == "csv":
        src = tmp_path / "b.csv"
        src.write_text("x1,y1,x2,y2,label\n" + "".join(f"{a},{b},{c},{d},obj{i}\n"
                                                      for i, (a, b, c, d) in enumerate(boxes)))
    else:
        src = tmp_path / "b.json"
        src.write_text(json.dumps([dict(zip(("x1", "y1", "x2", "y2"), b, strict=True),
                                        label=f"obj{i}") for i, b in enumerate(boxes)]))
    out = tmp_path / "boxes.gpkg"
    assert main(["georeference", str(src), str(ras), "-o", str(out)]) == 0
    s = ogrinfo_summary(out, "boxes")
    assert s.feature_count == 2 and s.epsg == 32631
    # every corner equals Debian gdaltransform of the pixel corner (pixel edges)
    import geopandas as gpd

    gdf = gpd.read_file(out, layer="boxes")
    for (x1, y1, x2, y2), geom in zip(boxes, gdf.geometry, strict=True):
        corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
        expected = gdaltransform_pixels(ras, corners)
        got = np.array(geom.exterior.coords)[:-1]
        for p in expected:
            assert np.min(np.hypot(*(got - p).T)) < 1e-6
    assert list(gdf["label"]) == ["obj0", "obj1"]
    q = qgis_layer_check(out, "boxes")
    assert q["isValid"] and q["featureCount"] == 2
    # appending a second run keeps the first
    assert main(["georeference", str(src), str(ras), "-o", str(out)]) == 0
    assert ogrinfo_summary(out, "boxes").feature_count == 4


def test_georeference_bad_inputs_exit_codes(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "b.csv"
    good.write_text("x1,y1,x2,y2\n1,1,5,5\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("x1,y1,x2,y2\n5,1,1,5\n")
    out = tmp_path / "o.gpkg"
    assert main(["georeference", str(bad), str(ROTTERDAM), "-o", str(out)]) == EXIT_INPUT
    assert "bad.csv" in capsys.readouterr().err
    assert not out.exists()
    # an existing output that is not a GeoPackage: refused, its bytes kept
    notgpkg = tmp_path / "keep.gpkg"
    notgpkg.write_bytes(b"precious data")
    assert main(["georeference", str(good), str(ROTTERDAM), "-o", str(notgpkg)]) == EXIT_OUTPUT
    assert notgpkg.read_bytes() == b"precious data"
    assert "keep.gpkg" in capsys.readouterr().err
    # a raster without CRS
    nocrs = tmp_path / "nocrs.tif"
    with rasterio.open(nocrs, "w", driver="GTiff", width=8, height=8, count=1,
                       dtype="uint8") as ds:
        ds.write(np.ones((1, 8, 8), np.uint8))
    assert main(["georeference", str(good), str(nocrs), "-o", str(out)]) == EXIT_INPUT
    assert "nocrs.tif" in capsys.readouterr().err
    # usage errors
    assert main(["georeference", str(good)]) == EXIT_USAGE
    assert main(["no-such-command"]) == EXIT_USAGE


def test_synth_renders_the_held_out_split_deterministically(tmp_path):
    from pyproj import CRS

    from geomogeo.cli import main as cli_main
    from geomogeo.data.manifest import read_manifest

    for run in ("a", "b"):
        assert cli_main(["-q", "synth", str(tmp_path / run), "--n", "1", "--split", "test",
                         "--seed", "3", "--targets", "2,3"]) == 0
    a = read_manifest(tmp_path / "a" / "manifest.jsonl")
    b = read_manifest(tmp_path / "b" / "manifest.jsonl")
    assert len(a) == 2 and {r.split for r in a} == {"test"}  # one photo per test tile
    assert [r.boxes for r in a] == [r.boxes for r in b]
    assert all(ra.query.read_bytes() == rb.query.read_bytes()
               for ra, rb in zip(a, b, strict=True))
    # Held-out data keeps the tiles' real georeference (UTM 31N).
    assert all(r.georef is not None and CRS(r.georef.crs).to_epsg() == 32631 for r in a)
    assert all(2 <= len(r.boxes) <= 3 for r in a)
    # ... and their records name the source raster (so `evaluate --localize` can register).
    tiles = Path(__file__).resolve().parents[2] / "sample_tiles"
    assert sorted((r.meta["raster"], r.meta["bands"]) for r in a) == [
        (str(tiles / "rotterdam_pan_0p5m_c.tif"), None),
        (str(tiles / "rotterdam_rgbn_1m_c.tif"), [1, 2, 3])]
    assert cli_main(["-q", "synth", str(tmp_path / "c"), "--split", "nowhere"]) == 2


def test_localize_heading_option_overrides_exif(tmp_path: Path) -> None:
    import geopandas as gpd
    from PIL import Image
    from PIL.TiffImagePlugin import IFDRational

    from geomogeo.geo.photo import load_photo

    # The first demo photo (EXIF GPS, no heading) with a true heading added to its EXIF
    item = json.loads((REPO / "sample_tiles" / "demo.json").read_text())["photos"][0]
    photo = tmp_path / "with_heading.jpg"
    with Image.open(REPO / "sample_tiles" / item["photo"]) as im:
        exif = im.getexif()
        gps = exif.get_ifd(0x8825)
        gps[16], gps[17] = "T", IFDRational(10680, 100)  # GPSImgDirectionRef, GPSImgDirection
        im.save(photo, quality=95, exif=exif)
    exif_heading = load_photo(photo).gps.heading
    assert exif_heading == pytest.approx(106.8)

    def polygons(name: str, *extra: str) -> list:
        out = tmp_path / name
        assert main(["-q", "localize", str(photo), str(VEGAS),
                     *(f"--point={x},{y}" for x, y in item["clicks"]), "-o", str(out), "--no-map",
                     "--no-heatmaps", "--tta", "none", "--no-joint", *extra]) == 0
        return list(gpd.read_file(out / "targets.gpkg", layer="targets").geometry)

    default = polygons("exif")
    # network alone (with --joint the registered heading replaces both): the EXIF heading
    # given explicitly changes nothing; another heading turns the query
    same = polygons("same", f"--heading={exif_heading}")
    assert all(a.equals_exact(b, tolerance=0.0) for a, b in zip(same, default, strict=True))
    turned = polygons("turned", "--heading=286.8")
    # lon/lat degrees: 1e-5 deg is about 1 m here
    assert max(a.hausdorff_distance(b) for a, b in zip(turned, default, strict=True)) > 1e-5


def test_localize_click_inner_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--click-inner`` reaches JointConfig (it places the network's box: ``--refiner
    none``): the GeoPackage (read by GDAL through geopandas) holds the API's boxes for the same
    setting; out of [0, 1] is a usage error."""
    import geopandas as gpd

    from geomogeo import Localizer
    from geomogeo.joint import JointConfig

    item = json.loads((REPO / "sample_tiles" / "demo.json").read_text())["photos"][0]
    photo = REPO / "sample_tiles" / item["photo"]

    def cli_polygons(name: str, *extra: str) -> list:
        out = tmp_path / name
        assert main(["-q", "localize", str(photo), str(VEGAS),
                     *(f"--point={x},{y}" for x, y in item["clicks"]), "-o", str(out),
                     "--no-map", "--no-heatmaps", "--tta", "none", "--refiner", "none",
                     *extra]) == 0
        gdf = gpd.read_file(out / "targets.gpkg", layer="targets")
        assert set(gdf["box_source"]) == {"network"}  # --refiner none: the network's boxes
        return list(gdf.geometry)

    loc = Localizer.load(tta="none", refiner=False)
    for extra, inner in (((), 0.0), (("--click-inner", "1"), 1.0)):
        api = loc.localize(photo, VEGAS, item["clicks"], quiet=True,
                           config=JointConfig(click_inner=inner))
        got = cli_polygons(f"inner{inner:g}", *extra)
        assert len(got) == len(api.targets) == 2
        for g, t in zip(got, api.targets, strict=True):
            assert g.hausdorff_distance(t.polygon) < 1e-9  # degrees: far below 1 mm
    centred, kept = cli_polygons("again"), cli_polygons("kept", "--click-inner", "1")
    assert max(a.hausdorff_distance(b) for a, b in zip(centred, kept, strict=True)) > 1e-6
    capsys.readouterr()
    assert main(["localize", str(photo), str(VEGAS), "--point=10,10", "--click-inner", "1.5",
                 "-o", str(tmp_path / "bad")]) == EXIT_USAGE
    assert "--click-inner" in capsys.readouterr().err


def test_camera_sigma_option_reaches_joint_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``--camera-sigma`` of ``localize`` and ``evaluate --localize`` sets
    ``JointConfig.camera_sigma_m``, and ``evaluate``'s ``--consistency-prior``
    ``consistency_prior_m`` (0: None, the prior off; absent: the default) and
    ``--heading-vote`` ``heading_vote_deg`` ('none': None), and ``--[no-]single-click-vote``
    ``single_click_vote``, and ``--search-tilts`` of both ``search_tilts_deg`` ('none': None);
    a negative or non-numeric value is a usage error."""
    import geomogeo.engine.evaluate  # imported first: it reads the defaults at import
    import geomogeo.joint
    from geomogeo.errors import ConfigError

    seen: list[dict] = []

    def capture(**kwargs: object) -> None:
        seen.append(kwargs)
        raise ConfigError("stop here")

    monkeypatch.setattr(geomogeo.joint, "JointConfig", capture)
    item = json.loads((REPO / "sample_tiles" / "demo.json").read_text())["photos"][0]
    photo = REPO / "sample_tiles" / item["photo"]
    for extra, expected in (((), {}), (("--camera-sigma", "0"), {"camera_sigma_m": None}),
                            (("--camera-sigma", "12.5"), {"camera_sigma_m": 12.5}),
                            (("--search-tilts", "none"), {"search_tilts_deg": None}),
                            (("--search-tilts", "0,15"), {"search_tilts_deg": (0.0, 15.0)})):
        assert main(["-q", "localize", str(photo), str(VEGAS), "--point=10,10",
                     "-o", str(tmp_path / "out"), *extra]) == EXIT_INPUT
        assert main(["-q", "evaluate", str(REPO / "model" / "mogeo-light-v2.pt"),
                     str(tmp_path / "none.jsonl"), "--localize", *extra]) == EXIT_INPUT
        assert seen[-2:] == [expected, expected]
    capsys.readouterr()
    for option, value, expected in (
            ("--consistency-prior", "0", {"consistency_prior_m": None}),
            ("--consistency-prior", "4", {"consistency_prior_m": 4.0}),
            ("--heading-vote", "none", {"heading_vote_deg": None}),
            ("--heading-vote", "5", {"heading_vote_deg": 5.0})):
        assert main(["-q", "evaluate", str(REPO / "model" / "mogeo-light-v2.pt"),
                     str(tmp_path / "none.jsonl"), "--localize", option, value]) == EXIT_INPUT
        assert seen[-1] == expected
    for flag, on in (("--single-click-vote", True), ("--no-single-click-vote", False)):
        assert main(["-q", "evaluate", str(REPO / "model" / "mogeo-light-v2.pt"),
                     str(tmp_path / "none.jsonl"), "--localize", flag]) == EXIT_INPUT
        assert seen[-1] == {"single_click_vote": on}
    capsys.readouterr()
    assert main(["evaluate", str(REPO / "model" / "mogeo-light-v2.pt"),
                 str(tmp_path / "none.jsonl"), "--localize", "--heading-vote", "ten"]) \
        == EXIT_USAGE
    assert "--heading-vote" in capsys.readouterr().err
    assert main(["localize", str(photo), str(VEGAS), "--point=10,10", "--search-tilts", "0,x",
                 "-o", str(tmp_path / "bad")]) == EXIT_USAGE
    assert "--search-tilts" in capsys.readouterr().err
    assert main(["localize", str(photo), str(VEGAS), "--point=10,10", "--camera-sigma", "-1",
                 "-o", str(tmp_path / "bad")]) == EXIT_USAGE
    assert "--camera-sigma" in capsys.readouterr().err


def test_localize_refiner_option_averages_several(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``--refiner A{os.pathsep}B``: the joint boxes are the mean of both refiners' (the API's
    ``refiner=[A, B]``), and the GeoPackage records both hashes."""
    import geopandas as gpd

    from geomogeo import Localizer

    item = json.loads((REPO / "sample_tiles" / "demo.json").read_text())["photos"][0]
    photo = REPO / "sample_tiles" / item["photo"]
    paths = [REPO / "model" / "box-refiner-v2.pt", REPO / "model" / "box-refiner-v1.pt"]
    out = tmp_path / "two"
    assert main(["-q", "localize", str(photo), str(VEGAS),
                 *(f"--point={x},{y}" for x, y in item["clicks"]), "-o", str(out),
                 "--no-map", "--no-heatmaps", "--tta", "none",
                 "--refiner", os.pathsep.join(map(str, paths))]) == 0
    gdf = gpd.read_file(out / "targets.gpkg", layer="targets")
    index = json.loads((REPO / "model" / "checkpoints.json").read_text())["files"]
    assert set(gdf["refiner_sha256"]) == {"+".join(index[p.name]["sha256"] for p in paths)}
    assert set(gdf["box_source"]) == {"refiner"}
    api = Localizer.load(tta="none", refiner=paths).localize(photo, VEGAS, item["clicks"],
                                                             quiet=True)
    for g, t in zip(gdf.geometry, api.targets, strict=True):
        assert g.hausdorff_distance(t.polygon) < 1e-9  # degrees: far below 1 mm
    capsys.readouterr()
