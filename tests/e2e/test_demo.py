"""The README's first command: ``geomogeo demo`` on the shipped samples with the shipped model.

The printed IoUs must be those of the files written: the target polygons are read back from
the GeoPackage by Debian's GDAL (``ogr2ogr``, an independent reader), the IoU with the known
answer in ``sample_tiles/demo.json`` is recomputed with shapely, and compared with the
printed table. The shipped checkpoint's hash is checked against the model card.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from shapely.geometry import Polygon, shape

from geomogeo.cli import main
from geomogeo.demo import default_samples
from geomogeo.engine.checkpoint import load_checkpoint, sha256_file
from geomogeo.localize import default_checkpoint

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^(photo_\d+\.jpg)\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)$")


def _read_targets(gpkg: Path) -> list[dict]:
    out = subprocess.run(
        ["ogr2ogr", "-f", "GeoJSON", "/vsistdout/", str(gpkg), "targets"],
        check=True, capture_output=True, text=True,
    )
    assert "Warning" not in out.stderr
    return json.loads(out.stdout)["features"]


def test_demo_prints_the_iou_of_the_written_files(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = [m.groups() for line in capsys.readouterr().out.splitlines()
               if (m := ROW.match(line.strip()))]
    spec = json.loads((default_samples() / "demo.json").read_text())
    n_targets = sum(len(p["clicks"]) for p in spec["photos"])
    assert len(printed) == n_targets >= 8

    feats = _read_targets(out / "targets.gpkg")
    assert len(feats) == n_targets
    answers = {(Path(p["photo"]).name, k): Polygon(a)
               for p in spec["photos"] for k, a in enumerate(p["answers"])}
    for photo, target, score, iou in printed:
        (f,) = [f for f in feats if Path(f["properties"]["photo"]).name == photo
                and f["properties"]["target"] == int(target)]
        poly = shape(f["geometry"])
        ans = answers[(photo, int(target))]
        expected = poly.intersection(ans).area / poly.union(ans).area
        assert float(iou) == pytest.approx(expected, abs=5e-4)
        assert float(score) == pytest.approx(f["properties"]["score"], abs=5e-4)

    # Every photo got its GeoJSON, map and one heatmap per target.
    for p in spec["photos"]:
        stem = Path(p["photo"]).stem
        assert (out / f"{stem}.geojson").is_file()
        assert (out / f"{stem}_map.html").is_file()
    assert len(list((out / "heatmaps").glob("*.tif"))) == n_targets


def test_demo_tta_option(tmp_path, capsys):
    import rasterio

    assert main(["demo", "--out", str(tmp_path / "one"), "--tta", "none"]) == 0
    assert "test-time augmentation none" in capsys.readouterr().out
    with rasterio.open(tmp_path / "one" / "heatmaps" / "photo_1_target0_heatmap.tif") as ds:
        assert (ds.width, ds.height, ds.res) == (16, 16, (16.0, 16.0))  # one pass: the grid
    assert main(["demo", "--out", str(tmp_path / "two"), "--tta", "none+s2"]) == 0
    assert "test-time augmentation none+s2" in capsys.readouterr().out
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
