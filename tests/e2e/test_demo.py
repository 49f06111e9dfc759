"""The README's first command: ``geomogeo demo`` on the shipped samples with the shipped model.

The printed IoUs must be those of the files written, against the footprints: the target
polygons are read back from the GeoPackage by Debian's GDAL (``ogr2ogr``, an independent
reader), once in the raster's CRS (lon/lat) to recompute the IoU with the answers of
``sample_tiles/demo.json``, and once reprojected by GDAL into the local UTM zone, where the IoU
with each footprint's envelope (the footprint's vertices converted by Debian's
``gdaltransform``) is recomputed in metres. The samples' EXIF is read with Pillow: GPS and
altitude, no heading. The shipped checkpoint's hash is checked against the model card.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import rasterio
from oracles import gdaltransform_points
from PIL import Image
from shapely.geometry import Polygon, box, shape

from geomogeo.cli import main
from geomogeo.demo import default_samples
from geomogeo.engine.checkpoint import load_checkpoint, sha256_file
from geomogeo.localize import default_checkpoint

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^(photo_\d+\.jpg)\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+(joint|network)\s+"
                 r"(nan|[0-9.]+)\s+(\w+)$")
SUMMARY = re.compile(r"^(\d+)/(\d+) targets with IoU > 0\.5; outputs in ")
UTM = "EPSG:32611"  # the local UTM zone of the Las Vegas tile, where windows are read
GPS_IFD, GPS_ALTITUDE, GPS_IMG_DIRECTION = 0x8825, 6, 17


def _read_targets(gpkg: Path, t_srs: str | None = None) -> list[dict]:
    out = subprocess.run(
        ["ogr2ogr", "-f", "GeoJSON", *(["-t_srs", t_srs] if t_srs else []), "/vsistdout/",
         str(gpkg), "targets"],
        check=True, capture_output=True, text=True,
    )
    assert "Warning" not in out.stderr
    return json.loads(out.stdout)["features"]


def _iou(a: Polygon, b: Polygon) -> float:
    return a.intersection(b).area / a.union(b).area


def test_demo_prints_the_iou_of_the_written_files(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    printed = [m.groups() for line in lines if (m := ROW.match(line))]
    spec = json.loads((default_samples() / "demo.json").read_text())
    n_targets = sum(len(p["clicks"]) for p in spec["photos"])
    assert len(printed) == n_targets >= 8

    feats = _read_targets(out / "targets.gpkg")
    feats_utm = _read_targets(out / "targets.gpkg", t_srs=UTM)
    assert len(feats) == len(feats_utm) == n_targets
    items = {Path(p["photo"]).name: p for p in spec["photos"]}
    ious = []
    for photo, target, score, iou, method, heading, source in printed:
        k = int(target)
        (i,) = [i for i, f in enumerate(feats) if Path(f["properties"]["photo"]).name == photo
                and f["properties"]["target"] == k]
        props = feats[i]["properties"]
        # the IoU with the answer of demo.json, in the raster CRS (lon/lat)
        ans = Polygon(items[photo]["answers"][k])
        assert float(iou) == pytest.approx(_iou(shape(feats[i]["geometry"]), ans), abs=5e-4)
        # the same IoU in metres against the footprint's envelope in the UTM zone, every
        # coordinate converted by Debian's GDAL
        utm_fp = gdaltransform_points([tuple(v) for v in items[photo]["footprints"][k]],
                                      "EPSG:4326", UTM)
        envelope = box(*Polygon(utm_fp).bounds)
        expected = _iou(shape(feats_utm[i]["geometry"]), envelope)
        assert float(iou) == pytest.approx(expected, abs=5e-4)
        ious.append(expected)
        assert float(score) == pytest.approx(props["score"], abs=5e-4)
        assert method == props["method"] and source == props["heading_source"]
        if props["heading_used"] is None:  # NaN is written as NULL
            assert heading == "nan"
        else:
            assert float(heading) == pytest.approx(props["heading_used"], abs=0.05)
        # no heading in EXIF: the heading is registered or searched, never read
        assert source in ("registration", "search")
    (summary,) = [m.groups() for line in lines if (m := SUMMARY.match(line))]
    assert summary == (str(sum(v > 0.5 for v in ious)), str(n_targets))

    # Every photo got its GeoJSON, map and one heatmap per target.
    for p in spec["photos"]:
        stem = Path(p["photo"]).stem
        assert (out / f"{stem}.geojson").is_file()
        assert (out / f"{stem}_map.html").is_file()
    assert len(list((out / "heatmaps").glob("*.tif"))) == n_targets


def _dms(v) -> float:
    d, m, s = (float(x) for x in v)
    return d + m / 60 + s / 3600


def test_demo_photos_carry_gps_and_altitude_but_no_heading():
    samples = default_samples()
    spec = json.loads((samples / "demo.json").read_text())
    with rasterio.open(samples / spec["raster"]) as ds:
        assert ds.crs.to_epsg() == 4326
        west, south, east, north = ds.bounds
    for p in spec["photos"]:
        with Image.open(samples / p["photo"]) as im:
            gps = dict(im.getexif().get_ifd(GPS_IFD))
        assert GPS_IMG_DIRECTION not in gps and 16 not in gps  # no heading, no reference
        lat = _dms(gps[2]) * (1 if gps[1] == "N" else -1)
        lon = _dms(gps[4]) * (1 if gps[3] == "E" else -1)
        assert west < lon < east and south < lat < north
        assert float(gps[GPS_ALTITUDE]) == pytest.approx(p["camera"]["altitude_m"], abs=0.01)
        assert 2 <= len(p["clicks"]) == len(p["answers"]) == len(p["footprints"]) <= 4
        # the answers are the footprints' envelopes in the UTM zone (a box there)
        for fp, ans in zip(p["footprints"], p["answers"], strict=True):
            env = box(*Polygon(gdaltransform_points([tuple(v) for v in fp], "EPSG:4326",
                                                    UTM)).bounds)
            got = Polygon(gdaltransform_points([tuple(v) for v in ans], "EPSG:4326", UTM))
            assert got.hausdorff_distance(env) < 1e-3  # metres


def test_demo_tta_option(tmp_path, capsys):
    import rasterio

    # The demo's photos register, and the refiner draws their boxes: their network pass is
    # --joint-tta's (one pass by default), whatever --tta says.
    assert main(["demo", "--out", str(tmp_path / "one"), "--tta", "none+s2"]) == 0
    assert "test-time augmentation none+s2, registered photos none" in capsys.readouterr().out
    with rasterio.open(tmp_path / "one" / "heatmaps" / "photo_1_target0_heatmap.tif") as ds:
        assert (ds.width, ds.height, ds.res) == (16, 16, (16.0, 16.0))  # one pass: the grid
    assert main(["demo", "--out", str(tmp_path / "two"), "--joint-tta", "none+s2"]) == 0
    assert "test-time augmentation rot4+s2, registered photos none+s2" \
        in capsys.readouterr().out
    with rasterio.open(tmp_path / "two" / "heatmaps" / "photo_1_target0_heatmap.tif") as ds:
        assert (ds.width, ds.height, ds.res) == (32, 32, (8.0, 8.0))  # the fine voting grid
    assert main(["demo", "--out", str(tmp_path / "bad"), "--tta", "rot4+s3"]) == 2
    assert "unknown test-time augmentation 'rot4+s3'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_shipped_checkpoint_matches_the_model_card():
    path, recorded = default_checkpoint()
    assert path.is_file() and path.stat().st_size <= 25 * 1024 * 1024
    assert sha256_file(path) == recorded
    card = (ROOT / "model" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert recorded in card
    ck = load_checkpoint(path, expected_sha256=recorded)  # weights_only=True inside
    assert ck.model_config.reference_size * ck.model_config.gsd >= 250.0
