"""``geomogeo batch`` / ``Localizer.localize_many``: clicks tables, tiles, resuming, errors, Dask.

The demo photos (``sample_tiles/demo/``, clicks from ``demo.json``) are localized with one
network pass (``--tta none``) and compared with ``geomogeo localize`` of each photo.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import psutil
import pytest
from oracles import ogrinfo_summary
from PIL import Image
from tiles import cut_tiles

from geomogeo.batch import SIDECAR_SUFFIX, local_cluster, read_clicks
from geomogeo.cli import EXIT_INPUT, EXIT_OUTPUT, EXIT_USAGE, main
from geomogeo.errors import ClickError
from geomogeo.geo import georef, photo, raster
from geomogeo.localize import Localizer

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_tiles"
DEMO = json.loads((SAMPLES / "demo.json").read_text())
RASTER = SAMPLES / DEMO["raster"]
N_TARGETS = sum(len(p["clicks"]) for p in DEMO["photos"])  # 9
#: About a millimetre in the raster CRS (EPSG:4326 degrees: 1e-8 deg is 1.1 mm of latitude and
#: 0.9 mm of longitude at 36 N).
MM = 1e-8
UTM = "EPSG:32611"  # the demo tile's local UTM zone, for distances in metres


def write_table(folder: Path, copies: int = 1, broken: bool = False) -> Path:
    """Copy the demo photos into ``folder/photos`` (``copies`` times each) and write
    ``folder/clicks.csv`` with paths relative to it, a target_id and two attribute columns."""
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    rows = []
    for c in range(copies):
        for item in DEMO["photos"]:
            name = f"photos/{c:03d}_{Path(item['photo']).name}"
            (folder / name).write_bytes((SAMPLES / item["photo"]).read_bytes())
            rows += [[name, x, y, f"t{k}", f"{name}#{k}", 10 * k]
                     for k, (x, y) in enumerate(item["clicks"])]
    if broken:
        (folder / "photos" / "broken.jpg").write_bytes(b"this is not a JPEG")
        # the click of photo 3's first target: the photo that later repairs broken.jpg
        rows.append(["photos/broken.jpg", *DEMO["photos"][2]["clicks"][0], "t0", "broken", 0])
        rows.append(["photos/000_photo_1.jpg", 1e6, 10, "t9", "outside", 0])  # a bad click
    path = folder / "clicks.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["photo", "x", "y", "target_id", "label", "priority"])
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def localize_cli(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Any]:
    """``geomogeo localize`` of each demo photo (one pass): (photo file name, target) ->
    polygon in the raster CRS."""
    out = tmp_path_factory.mktemp("localize")
    for item in DEMO["photos"]:
        pts = out / f"{Path(item['photo']).stem}.csv"
        pts.write_text("".join(f"{x!r},{y!r}\n" for x, y in item["clicks"]))
        assert main(["localize", str(SAMPLES / item["photo"]), str(RASTER), "--points-file",
                     str(pts), "-o", str(out), "--tta", "none", "--no-heatmaps",
                     "--no-map"]) == 0
    gdf = gpd.read_file(out / "targets.gpkg", layer="targets")
    assert len(gdf) == N_TARGETS
    return {(Path(p).name, int(t)): g for p, t, g in zip(gdf["photo"], gdf["target"],
                                                         gdf.geometry, strict=True)}


def count(gpkg: Path, layer: str = "targets") -> int:
    """Rows of a layer, read with sqlite3 (not GDAL); 0 when the layer does not exist."""
    con = sqlite3.connect(f"{gpkg.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(con.execute(f"SELECT count(*) FROM {layer}").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def integrity(gpkg: Path) -> str:
    con = sqlite3.connect(f"{gpkg.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


def assert_polygons_equal(gdf: gpd.GeoDataFrame, expected: dict[tuple[str, int], Any]) -> None:
    """Every (photo, target) of ``gdf`` once, its polygon equal to the expected one to 1 mm."""
    keys = [(Path(p).name.split("_", 1)[1], int(t)) for p, t in zip(gdf["photo"],
                                                                   gdf["target"], strict=True)]
    assert sorted(keys) == sorted(expected)
    for key, geom in zip(keys, gdf.geometry, strict=True):
        assert geom.equals_exact(expected[key], tolerance=MM), (key, geom, expected[key])


# ---- input ---------------------------------------------------------------------------------
def test_csv_jsonl_and_sidecars_give_the_same_photos(tmp_path: Path) -> None:
    table = write_table(tmp_path)
    csv_t = read_clicks(table)
    assert [j.photo for j in csv_t.jobs] == [f"photos/000_{Path(p['photo']).name}"
                                             for p in DEMO["photos"]]
    assert csv_t.columns == {"label": "str", "priority": "int"} and csv_t.has_target_id
    first = csv_t.jobs[0]
    assert first.path == (tmp_path / "photos" / "000_photo_1.jpg").resolve()
    assert first.clicks == tuple(tuple(c) for c in DEMO["photos"][0]["clicks"])
    assert first.target_ids == ("t0", "t1")
    assert first.attributes == ({"label": "photos/000_photo_1.jpg#0", "priority": 0},
                                {"label": "photos/000_photo_1.jpg#1", "priority": 10})
    assert first.source == f"{table}:2-3" and first.heading is None and first.center is None
    # the same as JSON Lines, with a centre and a heading for photo 2
    lines = []
    for j in csv_t.jobs:
        for k, (x, y) in enumerate(j.clicks):
            rec = {"photo": j.photo, "x": x, "y": y, "target_id": j.target_ids[k],  # type: ignore[index]
                   **j.attributes[k]}
            if j is csv_t.jobs[1]:
                rec.update(heading=45.0, lon=4.354, lat=51.895)
            lines.append(json.dumps(rec))
    (tmp_path / "clicks.jsonl").write_text("\n".join(lines) + "\n")
    jl = read_clicks(tmp_path / "clicks.jsonl")
    assert [(j.photo, j.clicks, j.target_ids, j.attributes) for j in jl.jobs] == \
        [(j.photo, j.clicks, j.target_ids, j.attributes) for j in csv_t.jobs]
    assert jl.jobs[1].heading == 45.0 and jl.jobs[1].center == (4.354, 51.895)
    assert jl.columns == csv_t.columns
    # a folder of photos with sidecars
    folder = tmp_path / "photos"
    for j in csv_t.jobs:
        with open(folder / (Path(j.photo).name + SIDECAR_SUFFIX), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["x", "y", "label"])
            w.writerows([x, y, f"k{k}"] for k, (x, y) in enumerate(j.clicks))
    (folder / "no_clicks.png").write_bytes(b"")  # a photo without a sidecar: skipped
    sc = read_clicks(folder)
    assert [j.photo for j in sc.jobs] == [Path(j.photo).name for j in csv_t.jobs]
    assert [j.clicks for j in sc.jobs] == [j.clicks for j in csv_t.jobs]
    assert sc.jobs[0].path == (folder / "000_photo_1.jpg").resolve()
    assert sc.jobs[0].source == f"{folder / ('000_photo_1.jpg' + SIDECAR_SUFFIX)}:2-3"


@pytest.mark.parametrize(("text", "message"), [
    ("photo,y\na.jpg,1\n", r"clicks\.csv:2: x is missing"),
    ("photo,x,y\na.jpg,1,2\na.jpg,one,2\n", r"clicks\.csv:3: x must be a number, got 'one'"),
    ("photo,x,y\n,1,2\n", r"clicks\.csv:2: photo is missing"),
    ("photo,x,y,heading\na.jpg,1,2,10\na.jpg,3,4,20\n",
     r"clicks\.csv:3: heading 20\.0 of photo 'a\.jpg' differs from 10\.0 at .*clicks\.csv:2"),
    ("photo,x,y,target_id\na.jpg,1,2,7\nb.jpg,1,2,7\na.jpg,3,4,7\n",
     r"clicks\.csv:4: target_id 7 of photo 'a\.jpg' is already used at .*clicks\.csv:2"),
    ("photo,x,y,lon\na.jpg,1,2,4.3\n", r"clicks\.csv:2: give both lon and lat"),
    ("photo,x,y,FID\na.jpg,1,2,3\n", r"clicks\.csv: column\(s\) \['FID'\] are reserved"),
    ("photo,x,y\na.jpg,1,2,3\n", r"clicks\.csv:2: more cells than the 3 header columns"),
    ("photo,x,y\n", r"clicks\.csv: no clicks found"),
])
def test_bad_tables_are_named_by_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "clicks.csv"
    path.write_text(text)
    with pytest.raises(ClickError, match=message):
        read_clicks(path)


def test_bad_jsonl_line_and_orphan_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"photo": "a.jpg", "x": 1, "y": 2}\n\n[1, 2]\n')
    with pytest.raises(ClickError, match=r"c\.jsonl:3: expected a JSON object per line"):
        read_clicks(path)
    (tmp_path / ("gone.jpg" + SIDECAR_SUFFIX)).write_text("x,y\n1,2\n")
    with pytest.raises(ClickError, match=r"gone\.jpg\.clicks\.csv: sidecar clicks file without "
                                         r"its photo 'gone\.jpg'"):
        read_clicks(tmp_path)


def test_cli_usage_and_output_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = write_table(tmp_path)
    assert main(["batch", str(table), str(RASTER), "-o", str(tmp_path / "o.gpkg"),
                 "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]) == EXIT_USAGE
    assert "give --workers or --scheduler, not both" in capsys.readouterr().err
    (tmp_path / "text.gpkg").write_text("not a GeoPackage")
    assert main(["batch", str(table), str(RASTER), "-o", str(tmp_path / "text.gpkg"),
                 "--workers", "0", "--tta", "none", "--quiet"]) == EXIT_OUTPUT
    assert "text.gpkg: exists but is not a GeoPackage" in capsys.readouterr().err
    assert main(["batch", str(table), str(RASTER), "-o", str(tmp_path / "o.geojson"),
                 "--workers", "0"]) == EXIT_OUTPUT
    assert "o.geojson: the output of a batch is a GeoPackage" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("photo,x,y\na.jpg,1,nan\n")
    assert main(["batch", str(tmp_path / "bad.csv"), str(RASTER), "-o",
                 str(tmp_path / "o.gpkg"), "--workers", "0"]) == EXIT_INPUT
    assert "bad.csv:2: y must be finite" in capsys.readouterr().err
    assert not (tmp_path / "o.gpkg").exists()


# ---- runs ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_dask_workers_match_localize_and_rerun_adds_nothing(
    tmp_path: Path, localize_cli: dict[tuple[str, int], Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    table = write_table(tmp_path)
    out = tmp_path / "out" / "survey.gpkg"
    args = ["batch", str(table), str(RASTER), "-o", str(out), "--workers", "2", "--tta", "none",
            "--quiet"]
    assert main(args) == 0
    assert f"4 photo(s): 4 localized, 0 failed, 0 already done; {N_TARGETS} target(s)" in \
        capsys.readouterr().out
    assert count(out) == N_TARGETS and count(out, "photo") == 4 and count(out, "errors") == 0
    gdf = gpd.read_file(out, layer="targets")
    assert gdf.crs.to_epsg() == 4326
    assert_polygons_equal(gdf, localize_cli)
    # the table's columns are kept, with the photo's checksum
    row = gdf[(gdf["photo"] == "photos/000_photo_3.jpg") & (gdf["target"] == 2)].iloc[0]
    assert (row["target_id"], row["label"], row["priority"]) == \
        ("t2", "photos/000_photo_3.jpg#2", 20)
    assert row["photo_sha256"] == hashlib.sha256(
        (SAMPLES / "demo" / "photo_3.jpg").read_bytes()).hexdigest()
    assert row["raster"] == str(RASTER)
    # photo positions: the photos' EXIF GPS, in the raster CRS
    photos = gpd.read_file(out, layer="photo")
    p1 = photos[photos["photo"] == "photos/000_photo_1.jpg"].iloc[0]
    gps = photo.read_location(SAMPLES / "demo" / "photo_1.jpg")
    assert gps is not None
    assert p1.geometry.x == pytest.approx(gps.lon, abs=MM)  # the raster CRS is lon/lat
    assert p1.geometry.y == pytest.approx(gps.lat, abs=MM)
    # again: everything is skipped, nothing written twice
    assert main(args) == 0
    assert "0 localized, 0 failed, 4 already done; 0 target(s)" in capsys.readouterr().out
    assert count(out) == N_TARGETS and count(out, "photo") == 4
    assert integrity(out) == "ok"
    summary = ogrinfo_summary(out, "targets")  # Debian's GDAL reads it back
    assert summary.feature_count == N_TARGETS


def _installed_batches() -> list[str]:
    from geomogeo import batch

    return list(batch._INSTALLED)


def _thread_pools() -> dict[str, Any]:
    import cv2
    import torch

    return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
            "cv2": cv2.getNumThreads(), "torch": torch.get_num_threads()}


@pytest.mark.slow
def test_existing_cluster_through_scheduler_address(
    tmp_path: Path, localize_cli: dict[tuple[str, int], Any]
) -> None:
    from distributed import Client

    table = write_table(tmp_path)
    out = tmp_path / "survey.gpkg"
    with local_cluster(1) as cluster, Client(cluster) as client:
        assert main(["batch", str(table), str(RASTER), "-o", str(out), "--scheduler",
                     cluster.scheduler_address, "--tta", "none", "--quiet"]) == 0
        # the batch's worker plugin (model + reference) is gone from the worker afterwards
        assert list(client.run(_installed_batches).values()) == [[]]
        # one thread in every native pool of the worker: it does not borrow other cores
        assert list(client.run(_thread_pools).values()) == [
            {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "cv2": 1, "torch": 1}]
    assert count(out) == N_TARGETS
    assert_polygons_equal(gpd.read_file(out, layer="targets"), localize_cli)


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "copies"), [(0, 15), (2, 1)])
def test_killed_half_way_then_rerun_gives_the_full_set(
    tmp_path: Path, workers: int, copies: int
) -> None:
    table = write_table(tmp_path, copies=copies)
    out = tmp_path / "survey.gpkg"
    args = ["batch", str(table), str(RASTER), "-o", str(out), "--workers", str(workers),
            "--tta", "none", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "geomogeo.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen, children = 0, []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and (seen := count(out)) > 0:
                children = psutil.Process(proc.pid).children(recursive=True)
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    assert 0 < seen < copies * N_TARGETS, "not killed half-way"
    assert integrity(out) == "ok"
    # the Dask worker processes die with their client
    assert len(children) >= workers
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive
    assert main(args) == 0
    assert count(out) == copies * N_TARGETS and count(out, "photo") == copies * 4
    assert integrity(out) == "ok"
    gdf = gpd.read_file(out, layer="targets")
    assert not gdf.duplicated(["photo", "target"]).any()


def test_broken_photo_lands_in_errors_and_the_exit_code_says_so(
    tmp_path: Path, localize_cli: dict[tuple[str, int], Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    table = write_table(tmp_path, broken=True)
    out = tmp_path / "survey.gpkg"
    args = ["batch", str(table), str(RASTER), "-o", str(out), "--workers", "0", "--tta",
            "none", "--quiet"]
    assert main(args) == EXIT_INPUT
    cap = capsys.readouterr()
    assert "5 photo(s): 3 localized, 2 failed" in cap.out
    assert "2 photo(s) failed (0 in an earlier run); see the layer 'errors'" in cap.err
    errors = gpd.read_file(out, layer="errors").set_index("photo")
    assert sorted(errors.index) == ["photos/000_photo_1.jpg", "photos/broken.jpg"]
    assert errors.loc["photos/broken.jpg", "stage"] == "photo"
    assert "broken.jpg: cannot read as an image" in errors.loc["photos/broken.jpg", "message"]
    assert errors.loc["photos/broken.jpg", "source"] == f"{table}:{N_TARGETS + 2}"
    assert errors.loc["photos/000_photo_1.jpg", "stage"] == "clicks"
    assert "click 2 (1e+06, 10) is outside the photo" in \
        errors.loc["photos/000_photo_1.jpg", "message"]
    assert_polygons_equal(gpd.read_file(out, layer="targets"),
                          {k: v for k, v in localize_cli.items() if k[0] != "photo_1.jpg"})
    # a rerun redoes nothing and still says that photos failed
    assert main(args) == EXIT_INPUT
    assert "2 photo(s) failed (2 in an earlier run)" in capsys.readouterr().err
    n_photo_1 = len(DEMO["photos"][0]["clicks"])
    assert count(out, "errors") == 2 and count(out) == N_TARGETS - n_photo_1
    # a repaired photo (new checksum) is localized on the next run
    (tmp_path / "photos" / "broken.jpg").write_bytes((SAMPLES / "demo" / "photo_3.jpg")
                                                     .read_bytes())
    lines = table.read_text().splitlines()
    table.write_text("\n".join(ln for ln in lines if "outside" not in ln) + "\n")
    assert main(args) == EXIT_INPUT  # photo_1 keeps its recorded failure (same checksum)
    assert "1 localized, 0 failed, 4 already done" in capsys.readouterr().out
    assert count(out) == N_TARGETS - n_photo_1 + 1 and integrity(out) == "ok"


def test_tiles_folder_gives_the_polygons_of_the_whole_raster(tmp_path: Path) -> None:
    tiles = tmp_path / "tiles"
    col_cut, row_cut = 300, 450
    cut_tiles(RASTER, tiles, [col_cut], [row_cut])
    table = write_table(tmp_path)
    loc = Localizer.load(tta="none")
    whole = loc.localize_many(table, RASTER, tmp_path / "whole.gpkg", workers=0, quiet=True)
    tiled = loc.localize_many(table, tiles, tmp_path / "tiled.gpkg", workers=0, quiet=True)
    assert (whole.succeeded, tiled.succeeded, whole.targets, tiled.targets) == \
        (4, 4, N_TARGETS, N_TARGETS)
    assert (tmp_path / "tiled.mosaic" / "mosaic.vrt").is_file()
    # every photo's window (256 m around its EXIF position, north-up in the UTM zone)
    # straddles a seam; distances in metres
    src = raster.open_raster(RASTER)
    seam_x, seam_y = georef.to_crs(*georef.pixel_to_map(src.transform, col_cut, row_cut),
                                   src.crs, UTM)
    for item in DEMO["photos"]:
        gps = photo.read_location(SAMPLES / item["photo"])
        assert gps is not None
        x, y = georef.lonlat_to_crs(gps.lon, gps.lat, UTM)
        assert abs(x - seam_x) < 128 or abs(y - seam_y) < 128
    a = gpd.read_file(tmp_path / "whole.gpkg", layer="targets")
    b = gpd.read_file(tmp_path / "tiled.gpkg", layer="targets")
    assert b["raster"].eq(str(tiles)).all()
    assert_polygons_equal(b, {(Path(p).name.split("_", 1)[1], int(t)): g for p, t, g in
                              zip(a["photo"], a["target"], a.geometry, strict=True)})
    assert (b["score"] - a["score"]).abs().max() < 1e-9
    # a window centre from the table (lon, lat), and a photo without any position (the raster,
    # or the whole mosaic, is searched): the same polygons again
    Image.open(SAMPLES / "demo" / "photo_1.jpg").save(tmp_path / "photos" / "no_gps.png")
    gps = photo.read_location(SAMPLES / "demo" / "photo_2.jpg")
    assert gps is not None
    recs = [{"photo": "photos/000_photo_2.jpg", "x": x, "y": y, "lon": gps.lon, "lat": gps.lat}
            for x, y in DEMO["photos"][1]["clicks"]]
    recs += [{"photo": "photos/no_gps.png", "x": x, "y": y}
             for x, y in DEMO["photos"][0]["clicks"]]
    jl = tmp_path / "more.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in recs))
    for ref, name in ((RASTER, "whole2.gpkg"), (tiles, "tiled2.gpkg")):
        assert loc.localize_many(jl, ref, tmp_path / name, workers=0, quiet=True).ok
    a = gpd.read_file(tmp_path / "whole2.gpkg", layer="targets")
    b = gpd.read_file(tmp_path / "tiled2.gpkg", layer="targets")
    searched = dict(zip(b["photo"], b["windows_searched"], strict=False))
    assert searched["photos/000_photo_2.jpg"] == 1 and searched["photos/no_gps.png"] > 1
    assert list(a["windows_searched"]) == list(b["windows_searched"])
    for (pa, ga), (pb, gb) in zip(zip(a["photo"], a.geometry, strict=True),
                                  zip(b["photo"], b.geometry, strict=True), strict=True):
        assert pa == pb and ga.equals_exact(gb, tolerance=MM)
    # the window centred on the table's lon/lat is the one centred on the EXIF position
    exif_run = gpd.read_file(tmp_path / "tiled.gpkg", layer="targets")
    b_first = exif_run[exif_run["photo"] == "photos/000_photo_2.jpg"]
    b_lonlat = b[b["photo"] == "photos/000_photo_2.jpg"]
    for g1, g2 in zip(b_first.geometry, b_lonlat.geometry, strict=True):
        assert g1.equals_exact(g2, tolerance=MM)
