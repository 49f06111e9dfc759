"""The QGIS plugin (``qgis_plugin/geomogeo_qgis``) inside QGIS 3.22, headless.

The plugin is packaged by ``scripts/package_qgis_plugin.py``, installed from the zip into a
throw-away plugin folder and started the way QGIS starts it, under Debian's
``/usr/bin/python3`` (QGIS's Python: no torch, no geomogeo); see ``qgis_plugin_driver.py``.
Its provider setting points at a launcher that runs this checkout's CLI with this test's
interpreter (the project's virtual environment). The layers that ``processing.run`` returns
are compared with what the same CLI writes when run directly, read back by pyogrio: polygon
vertices to the millimetre, every attribute equal.
"""

from __future__ import annotations

import csv
import json
import shlex
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from oracles import qgis_python
from PIL import Image
from pyproj import Transformer

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_tiles"
DEMO = json.loads((SAMPLES / "demo.json").read_text())
RASTER = SAMPLES / DEMO["raster"]
DRIVER = Path(__file__).with_name("qgis_plugin_driver.py")
NO_TTA = 1  # index of "none" in the plugin's TTA_MODES
# about 30 m north of photo 2's EXIF position, given to QGIS in UTM 11N (metres), which QGIS
# turns into the raster's CRS (lon/lat) for the CLI
CENTER_UTM = (659143.885, 4000990.061)
# xmin, ymin, xmax, ymax in the raster CRS (EPSG:4326): about 274 x 294 m on the ground
SEARCH_EXTENT = (-115.2336, 36.1393, -115.2305, 36.1419)
RASTER_CRS = "EPSG:4326"
MM = 1e-8  # degrees: about a millimetre (1.1 mm of latitude, 0.9 mm of longitude at 36 N)

pytestmark = pytest.mark.slow  # starts QGIS and the CLI several times (about a minute)

# QVariant type ids that QGIS gives the fields of a layer
QVARIANT = {"bool": 1, "int64": 4, "float64": 6, "object": 10, "str": 10}


def _photo(i: int) -> dict:
    item = DEMO["photos"][i]
    return {**item, "path": SAMPLES / item["photo"]}


def _launcher(folder: Path) -> Path:
    """A ``geomogeo`` command running this checkout's CLI with the project's interpreter."""
    exe = folder / "geomogeo"
    # PYTHONSAFEPATH: Python >= 3.11 does not put the working directory before PYTHONPATH
    exe.write_text("#!/bin/sh\n"
                   f"PYTHONPATH={shlex.quote(str(REPO))} PYTHONSAFEPATH=1 OMP_NUM_THREADS=1 "
                   f'exec {shlex.quote(sys.executable)} -m geomogeo.cli "$@"\n')
    exe.chmod(0o755)
    return exe


def _run_cli(launcher: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(launcher), *args], capture_output=True, text=True,
                          timeout=300, check=False)


def _cli_targets(launcher: Path, out: Path, args: list[str]) -> gpd.GeoDataFrame:
    """Run ``geomogeo localize ARGS`` directly; its targets layer as read by pyogrio."""
    proc = _run_cli(launcher, ["localize", *args, "-o", str(out), "--no-map", "--no-heatmaps",
                               "--tta", "none"])
    assert proc.returncode == 0, proc.stderr
    return gpd.read_file(out / "targets.gpkg", layer="targets", engine="pyogrio")


def _drive(tmp: Path, launcher: Path, runs: list[dict], resolve: list[str] = (),
           env: dict[str, str] | None = None) -> dict:
    plugin_zip = tmp / "geomogeo_qgis.zip"
    subprocess.run([sys.executable, str(REPO / "scripts" / "package_qgis_plugin.py"),
                    "-o", str(plugin_zip)], check=True, capture_output=True, timeout=60)
    (tmp / "plugins").mkdir()
    cfg = tmp / "driver.json"
    cfg.write_text(json.dumps({"plugin_zip": str(plugin_zip), "plugins_dir": str(tmp / "plugins"),
                               "cli": str(launcher), "runs": runs, "resolve": list(resolve)}))
    result = tmp / "result.json"
    # GDAL_PAM_ENABLED=NO: QGIS must not write raster statistics (.aux.xml) into sample_tiles/
    proc = qgis_python([str(DRIVER), str(cfg), str(result)],
                       env={"GDAL_PAM_ENABLED": "NO", **(env or {})}, timeout=900)
    assert proc.returncode == 0 and result.exists(), (
        f"QGIS driver failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(result.read_text())


def _assert_same_targets(layer: dict, expected: gpd.GeoDataFrame) -> None:
    """The plugin's output layer equals the CLI's targets layer: CRS, field types,
    every attribute, and every polygon vertex to the millimetre."""
    assert layer["crs"] == f"EPSG:{expected.crs.to_epsg()}"
    assert layer["geometry"] == "Polygon"
    columns = [c for c in expected.columns if c != "geometry"]
    assert list(layer["fields"]) == columns
    assert layer["fields"] == {c: QVARIANT[str(expected[c].dtype)] for c in columns}
    assert len(layer["features"]) == len(expected) > 0
    for feat, (_, row) in zip(layer["features"], expected.iterrows(), strict=True):
        attrs = feat["attrs"]
        for c in columns:
            if c == "time":  # when each run happened: both ISO 8601 with a time zone
                assert datetime.fromisoformat(attrs[c]).tzinfo is not None
            elif isinstance(row[c], float) and np.isnan(row[c]):
                assert attrs[c] is None, c  # a NULL: pandas reads NaN, QGIS gives None
            elif isinstance(row[c], float):
                assert attrs[c] == pytest.approx(row[c], rel=1e-9, abs=1e-12), c
            else:
                assert attrs[c] == row[c], c
        got = np.array(feat["rings"][0])
        want = np.array(row.geometry.exterior.coords)
        assert feat["valid"] and len(feat["rings"]) == 1 and got.shape == want.shape
        assert np.abs(got - want).max() < MM


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One QGIS session: install the plugin, run every scenario, unload the plugin."""
    tmp = tmp_path_factory.mktemp("qgis_plugin")
    launcher = _launcher(tmp)
    p1, p2 = _photo(0), _photo(1)
    clicks_csv = tmp / "clicks.csv"
    with clicks_csv.open("w", newline="") as f:
        csv.writer(f).writerows([("x", "y"), *p2["clicks"]])
    cx, cy = CENTER_UTM
    not_executable = tmp / "not_geomogeo.txt"
    not_executable.write_text("x")
    venv = tmp / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "geomogeo").symlink_to(launcher)
    (venv / "python3").symlink_to(sys.executable)
    no_gps = tmp / "photo_3_no_exif.png"  # no GPS: the extent is searched window by window
    Image.open(_photo(2)["path"]).save(no_gps)
    xmin, ymin, xmax, ymax = SEARCH_EXTENT
    base = {"RASTER": str(RASTER), "TTA": NO_TTA, "OUTPUT": "TEMPORARY_OUTPUT"}
    text_clicks = ";".join(f"{x},{y}" for x, y in p1["clicks"])
    runs = [
        # 0: clicks as text, position and heading from EXIF
        {"alg": "geomogeo:localize",
         "params": {**base, "PHOTO": str(p1["path"]), "CLICKS": text_clicks}},
        # 1: clicks from a CSV file, a given position (UTM 11N) and heading
        {"alg": "geomogeo:localize",
         "params": {**base, "PHOTO": str(p2["path"]), "CLICKS_FILE": str(clicks_csv),
                    "CENTER": f"{cx},{cy} [EPSG:32611]",
                    "HEADING": p2["camera"]["true_yaw_deg"]}},
        # 2: canceled as soon as the CLI has started
        {"alg": "geomogeo:localize", "cancel_at_group_size": 1,
         "params": {**base, "PHOTO": str(p1["path"]), "CLICKS": text_clicks}},
        # 3: a click outside the photo: the CLI refuses it
        {"alg": "geomogeo:localize",
         "params": {**base, "PHOTO": str(p1["path"]), "CLICKS": "100,50;5000,40"}},
        # 4: malformed clicks: refused before the CLI runs
        {"alg": "geomogeo:localize",
         "params": {**base, "PHOTO": str(p1["path"]), "CLICKS": "100,50;abc"}},
        # 5: the provider setting names a file that is not a program
        {"alg": "geomogeo:localize", "cli": str(not_executable),
         "params": {**base, "PHOTO": str(p1["path"]), "CLICKS": text_clicks}},
        # 6: a photo without GPS: the search extent is searched (the CLI's progress bar)
        {"alg": "geomogeo:localize",
         "params": {**base, "PHOTO": str(no_gps),
                    "EXTENT": f"{xmin},{xmax},{ymin},{ymax} [{RASTER_CRS}]",
                    "CLICKS": ";".join(f"{x},{y}" for x, y in _photo(2)["clicks"])}},
    ]
    resolve = [str(launcher), str(venv.parent), str(venv / "python3"), ""]
    result = _drive(tmp, launcher, runs, resolve, env={"GEOMOGEO_CLI": str(launcher)})
    return {"result": result, "runs": result["runs"], "tmp": tmp, "launcher": launcher,
            "clicks_csv": clicks_csv, "venv": venv,
            "not_executable": not_executable, "no_gps": no_gps}


def test_plugin_installs_from_zip_and_registers_the_provider(session: dict) -> None:
    r = session["result"]
    assert r["available_plugins"] == ["geomogeo_qgis"]
    assert r["metadata_name"] == "geomogeo" and r["has_processing_provider"] == "yes"
    # startProcessingPlugin = classFactory(None).initProcessing()
    assert r["loaded"] and r["started"]
    assert r["provider"] is not None
    assert r["algorithms"] == ["geomogeo:batch", "geomogeo:localize"]
    assert r["setting_registered"]
    assert not r["provider_after_unload"] and not r["setting_after_unload"]


def test_command_setting_accepts_script_venv_or_interpreter(session: dict) -> None:
    launcher, venv = str(session["launcher"]), session["venv"]
    script, venv_dir, python, from_env = session["result"]["resolved"]
    assert script == [launcher]
    assert venv_dir == [str(venv / "geomogeo")]
    assert python == [str(venv / "python3"), "-m", "geomogeo.cli"]
    assert from_env == [launcher]  # empty setting: $GEOMOGEO_CLI


def test_localize_with_text_clicks_matches_the_cli(session: dict, tmp_path: Path) -> None:
    run = session["runs"][0]
    assert run["error"] is None, run
    p1 = _photo(0)
    expected = _cli_targets(session["launcher"], tmp_path, [
        str(p1["path"]), str(RASTER), *(f"--point={x},{y}" for x, y in p1["clicks"])])
    _assert_same_targets(run["output"], expected)
    assert run["results"]["TARGETS"] == len(p1["clicks"])
    # the CLI's own messages reached the feedback, and the run finished at 100 %
    printed = [m for m in run["messages"] if m.startswith("target ")]
    assert len(printed) == len(p1["clicks"])
    assert run["progress"][-1] == 100
    # its temporary output folder is gone
    wrote = next(m for m in run["messages"] if "wrote " in m)
    assert not Path(wrote.split("wrote ")[1].split(",")[0]).parent.exists()


def test_localize_with_clicks_file_position_and_heading_matches_the_cli(
        session: dict, tmp_path: Path) -> None:
    run = session["runs"][1]
    assert run["error"] is None, run
    p2 = _photo(1)
    # QGIS turned the UTM 11N position into the raster's CRS (lon/lat) for the CLI (its own
    # PROJ build: agreement with pyproj is to far below a millimetre)
    args = shlex.split(run["commands"][0])
    assert args[args.index("--center-crs") + 1] == RASTER_CRS
    lon, lat = (float(v) for v in next(a for a in args if a.startswith("--center="))[9:]
                .split(","))
    ex, ey = Transformer.from_crs("EPSG:32611", RASTER_CRS, always_xy=True).transform(
        *CENTER_UTM)
    assert abs(lon - ex) < MM and abs(lat - ey) < MM
    # the CLI run directly with that lon/lat gives the plugin's layer
    expected = _cli_targets(session["launcher"], tmp_path, [
        str(p2["path"]), str(RASTER), "--points-file", str(session["clicks_csv"]),
        f"--center={lon!r},{lat!r}", "--heading", str(p2["camera"]["true_yaw_deg"])])
    _assert_same_targets(run["output"], expected)
    assert run["results"]["TARGETS"] == len(p2["clicks"])


def test_search_without_gps_reports_progress_and_matches_the_cli(
        session: dict, tmp_path: Path) -> None:
    run = session["runs"][6]
    assert run["error"] is None, run
    expected = _cli_targets(session["launcher"], tmp_path, [
        str(session["no_gps"]), str(RASTER), "--extent", ",".join(map(str, SEARCH_EXTENT)),
        *(f"--point={x},{y}" for x, y in _photo(2)["clicks"])])
    assert set(expected["windows_searched"]) == {4}  # ~274 x 294 m, 256 m windows: 2 x 2
    _assert_same_targets(run["output"], expected)
    # the CLI's progress bar ("windows: 100%|...| 4/4") drove the progress, 0-90 %, and was
    # not copied into the log
    assert 90 in run["progress"] and run["progress"][-1] == 100
    assert run["progress"] == sorted(run["progress"])
    assert not any("%|" in m for m in run["messages"])


def test_cancel_kills_the_cli_and_raises(session: dict) -> None:
    run = session["runs"][2]
    assert run["pid"] is not None
    assert run["error"] == (f"Canceled: geomogeo (pid {run['pid']}) was stopped before it "
                            "finished.")
    assert run["pid_alive_after"] is False  # killed and reaped, not left running
    assert run["group_left"] == []
    assert run["output"] is None
    assert not Path(f"/proc/{run['pid']}").exists()


def test_cli_failure_raises_with_the_cli_message(session: dict, tmp_path: Path) -> None:
    run = session["runs"][3]
    p1 = _photo(0)
    direct = _run_cli(session["launcher"], [
        "localize", str(p1["path"]), str(RASTER), "--point=100,50", "--point=5000,40",
        "-o", str(tmp_path), "--no-map", "--no-heatmaps", "--tta", "none"])
    assert direct.returncode == 3
    cli_error = next(ln for ln in direct.stderr.splitlines() if ln.startswith("error: "))
    assert "outside the photo" in cli_error and str(p1["path"]) in cli_error
    assert run["error"] == (f"geomogeo localize failed (exit status 3): "
                            f"{cli_error[len('error: '):]}")
    assert run["output"] is None


def test_bad_clicks_and_bad_command_are_named(session: dict) -> None:
    bad_clicks, bad_command = session["runs"][4], session["runs"][5]
    assert bad_clicks["error"].startswith("Clicks: 'abc' is not a click 'x,y'")
    assert bad_clicks["pid"] is None  # refused before running anything
    assert bad_command["error"].startswith(
        f"The geomogeo command {str(session['not_executable'])!r} is not an executable file")
    assert bad_command["pid"] is None


def _has_batch() -> bool:
    from geomogeo.cli import cli

    return "batch" in cli.commands


@pytest.mark.skipif(not _has_batch(), reason="the 'geomogeo batch' command is not in this "
                    "checkout yet (branch 'batch'); the plugin's batch algorithm calls it")
def test_batch_matches_the_cli_resumes_reports_failures_and_cancels(tmp_path: Path) -> None:
    launcher = _launcher(tmp_path)
    table = tmp_path / "clicks.csv"
    rows = [(str(SAMPLES / p["photo"]), x, y, f"{Path(p['photo']).stem}-{i}")
            for p in DEMO["photos"] for i, (x, y) in enumerate(p["clicks"])]
    with table.open("w", newline="") as f:
        csv.writer(f).writerows([("photo", "x", "y", "target_id"), *rows])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a JPEG")
    with_broken = tmp_path / "with_broken.csv"
    with_broken.write_text(table.read_text() + f"{broken},10,10,broken-0\n")
    n_photos, n_targets = len(DEMO["photos"]), len(rows)
    base = {"RASTER": str(RASTER), "TTA": NO_TTA}
    out, out_broken = tmp_path / "plugin.gpkg", tmp_path / "broken.gpkg"
    r = _drive(tmp_path, launcher, [
        {"alg": "geomogeo:batch", "params": {**base, "CLICKS_TABLE": str(table), "WORKERS": 0,
                                             "OUTPUT": str(out)}},
        # the same again: every photo is already in the GeoPackage
        {"alg": "geomogeo:batch", "params": {**base, "CLICKS_TABLE": str(table), "WORKERS": 0,
                                             "OUTPUT": str(out)}},
        # one photo cannot be read: recorded in 'errors', the others localized, no exception
        {"alg": "geomogeo:batch", "params": {**base, "CLICKS_TABLE": str(with_broken),
                                             "WORKERS": 0, "OUTPUT": str(out_broken)}},
        # on 2 Dask workers, canceled once the CLI has started other processes
        {"alg": "geomogeo:batch", "cancel_at_group_size": 3,
         "params": {**base, "CLICKS_TABLE": str(table), "WORKERS": 2,
                    "OUTPUT": str(tmp_path / "canceled.gpkg")}},
    ])
    first, again, failing, canceled = r["runs"]

    assert first["error"] is None, first
    assert first["output"] == str(out)
    assert first["results"] == {"PHOTOS": n_photos, "LOCALIZED": n_photos, "FAILED": 0,
                                "SKIPPED": 0, "TARGETS": n_targets}
    assert first["progress"][-1] == 100 and not first["warnings"]
    proc = _run_cli(launcher, ["batch", str(table), str(RASTER), "-o",
                               str(tmp_path / "cli.gpkg"), "--workers", "0", "--tta", "none"])
    assert proc.returncode == 0, proc.stderr
    got = gpd.read_file(out, layer="targets", engine="pyogrio")
    want = gpd.read_file(tmp_path / "cli.gpkg", layer="targets", engine="pyogrio")
    assert len(got) == len(want) == n_targets
    got = got.sort_values("target_id").reset_index(drop=True)
    want = want.sort_values("target_id").reset_index(drop=True)
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got.drop(columns=["geometry", "time"]),
                                  want.drop(columns=["geometry", "time"]))
    for a, b in zip(got.geometry, want.geometry, strict=True):
        assert np.abs(np.array(a.exterior.coords) - np.array(b.exterior.coords)).max() < MM

    assert again["error"] is None, again
    assert again["results"] == {"PHOTOS": n_photos, "LOCALIZED": 0, "FAILED": 0,
                                "SKIPPED": n_photos, "TARGETS": 0}
    assert len(gpd.read_file(out, layer="targets", engine="pyogrio")) == n_targets

    assert failing["error"] is None, failing
    assert failing["results"] == {"PHOTOS": n_photos + 1, "LOCALIZED": n_photos, "FAILED": 1,
                                  "SKIPPED": 0, "TARGETS": n_targets}
    assert failing["warnings"] == [f"1 photo(s) failed; see the layer 'errors' of {out_broken}"]
    errors = gpd.read_file(out_broken, layer="errors", engine="pyogrio")
    assert list(errors["photo"]) == [str(broken)]

    assert canceled["error"] == (f"Canceled: geomogeo (pid {canceled['pid']}) was stopped "
                                 "before it finished.")
    assert canceled["group_size_at_cancel"] >= 3
    assert canceled["group_left"] == []  # the Dask processes were stopped with the CLI
