"""``georeference``: typed attributes, boxes outside the raster, clashing column names.

Types and values are read back with Debian's ogrinfo (GDAL 3.6) and QGIS 3.22.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from oracles import ogrinfo_features, ogrinfo_summary, qgis_layer_check

from geomogeo.boxes import georeference_boxes, georeference_boxes_file
from geomogeo.cli import EXIT_INPUT, EXIT_OUTPUT, main
from geomogeo.errors import LocationError

# 100 x 80 pixels of 0.5 m, north-up, UTM 31N; pixel edges (0, 0) = (593000, 5750400).
T = Affine(0.5, 0.0, 593000.0, 0.0, -0.5, 5750400.0)


@pytest.fixture
def ras(make_raster) -> Path:
    return make_raster("r.tif", np.ones((80, 100), np.uint8), T, "EPSG:32631")


def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_attributes_keep_their_types(tmp_path: Path, ras: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    src = _csv(tmp_path / "b.csv",
               "x1,y1,x2,y2,label,count,score,time,plot,mixed,local\n"
               "10,5,30.5,25,car,3,0.91,2024-05-01T12:30:00+02:00,007,1,2024-05-01 08:00\n"
               "50,40,90,70,van,,1e-2,2024-05-01T10:31:05.250Z,012,a,2024-05-01 09:15:30\n")
    out = tmp_path / "boxes.gpkg"
    assert main(["georeference", str(src), str(ras), "-o", str(out)]) == 0
    err = capsys.readouterr().err  # the CLI logs warnings to stderr
    assert "without a UTC offset" in err and "'local'" in err and "b.csv" in err

    s = ogrinfo_summary(out, "boxes")
    assert s.stderr == ""
    assert {k: s.fields[k] for k in ("box", "x1", "raster", "label", "count", "score", "time",
                                      "plot", "mixed", "local")} == {
        "box": "Integer64", "x1": "Real", "raster": "String", "label": "String",
        "count": "Integer64", "score": "Real", "time": "DateTime", "plot": "String",
        "mixed": "String", "local": "DateTime"}
    f0, f1 = ogrinfo_features(out, "boxes")
    assert f0["count"] == "Integer64 = 3" and f1["count"] == "Integer64 = (null)"
    assert f0["score"] == "Real = 0.91" and f1["score"] == "Real = 0.01"
    assert f0["time"] == "DateTime = 2024/05/01 10:30:00+00"  # 12:30 at +02:00, in UTC
    assert f1["time"] == "DateTime = 2024/05/01 10:31:05.250+00"
    assert f0["local"] == "DateTime = 2024/05/01 08:00:00+00"
    assert f0["plot"] == "String = 007" and f1["plot"] == "String = 012"
    assert f0["mixed"] == "String = 1" and f1["mixed"] == "String = a"
    assert f0["x1"] == "Real = 10" and f1["box"] == "Integer64 = 1"

    q = qgis_layer_check(out, "boxes")
    assert q["isValid"] and q["featureCount"] == 2
    assert {k: q["field_types"][k] for k in ("count", "score", "time", "plot")} == {
        "count": "Integer64", "score": "Real", "time": "DateTime", "plot": "String"}


def test_json_attributes_typed_and_booleans(tmp_path: Path, ras: Path) -> None:
    src = tmp_path / "b.json"
    src.write_text(json.dumps([
        {"x1": 1, "y1": 1, "x2": 5, "y2": 5, "n": 2, "ok": True, "when": "2024-05-01T10:30:00Z",
         "tags": ["a", "b"]},
        {"x1": 6, "y1": 1, "x2": 9, "y2": 5, "n": 2.5, "ok": None, "when": None, "tags": "c"},
    ]))
    gdf = georeference_boxes_file(src, ras)
    assert str(gdf["n"].dtype) == "float64" and gdf["n"].tolist() == [2.0, 2.5]
    assert str(gdf["ok"].dtype) == "boolean"
    assert str(gdf["when"].dtype).endswith(", UTC]")
    assert gdf["tags"].tolist() == ['["a", "b"]', "c"]
    out = tmp_path / "o.gpkg"
    assert main(["georeference", str(src), str(ras), "-o", str(out)]) == 0
    f0, f1 = ogrinfo_features(out, "boxes")
    assert f0["ok"] == "Integer(Boolean) = 1" and f1["ok"] == "Integer(Boolean) = (null)"
    assert f0["when"] == "DateTime = 2024/05/01 10:30:00+00"


def test_box_wholly_outside_the_raster_is_refused(tmp_path: Path, ras: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # The reviewer's case: a y far below the raster gives a northing of about -494 million m.
    src = _csv(tmp_path / "far.csv", "x1,y1,x2,y2\n1,1,5,5\n10,1e9,20,1000000010\n")
    out = tmp_path / "o.gpkg"
    assert main(["georeference", str(src), str(ras), "-o", str(out)]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "far.csv: line 3" in err and "wholly outside" in err and "100 x 80" in err
    assert not out.exists()
    # Pixel edges: a box ending exactly at x = 0 does not overlap; one at x = 99.5..100 does.
    with pytest.raises(LocationError, match="box 0"):
        georeference_boxes(ras, np.array([[-4.0, 1.0, 0.0, 5.0]]))
    with pytest.raises(LocationError, match="box 1"):
        georeference_boxes(ras, np.array([[1.0, 1.0, 2.0, 2.0], [5.0, 80.0, 6.0, 81.0]]))
    gdf = georeference_boxes(ras, np.array([[99.5, 79.5, 100.0, 80.0]]))
    np.testing.assert_allclose(gdf.total_bounds, [593049.75, 5750360.0, 593050.0, 5750360.25],
                               atol=1e-9)


def test_box_sticking_out_is_kept_with_a_warning(tmp_path: Path, ras: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    src = _csv(tmp_path / "edge.csv", "x1,y1,x2,y2\n90,70,104,82\n")
    with caplog.at_level(logging.WARNING):
        gdf = georeference_boxes_file(src, ras)
    assert "stick out of raster" in caplog.text and "edge.csv: line 2" in caplog.text
    # x 90..104 px -> 593045..593052 m; y 70..82 px -> 5750365..5750359 m
    np.testing.assert_allclose(gdf.total_bounds, [593045.0, 5750359.0, 593052.0, 5750365.0],
                               atol=1e-9)


def test_user_columns_named_like_provenance_are_kept(tmp_path: Path, ras: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    src = _csv(tmp_path / "clash.csv",
               "x1,y1,x2,y2,raster,box,FID,geometry,user_box\n"
               "1,1,5,5,my_drone_ortho,17,a,b,taken\n")
    with caplog.at_level(logging.WARNING):
        gdf = georeference_boxes_file(src, ras)
    assert gdf["raster"].tolist() == [str(ras)]  # provenance: the raster actually used
    assert gdf["box"].tolist() == [0]
    assert gdf["user_raster"].tolist() == ["my_drone_ortho"]
    assert gdf["user_box_2"].tolist() == [17]  # user_box was taken by the user's own column
    assert gdf["user_box"].tolist() == ["taken"]
    assert gdf["user_FID"].tolist() == ["a"] and gdf["user_geometry"].tolist() == ["b"]
    assert "'raster'" in caplog.text and "clash.csv" in caplog.text
    out = tmp_path / "o.gpkg"
    assert main(["georeference", str(src), str(ras), "-o", str(out)]) == 0
    (f,) = ogrinfo_features(out, "boxes")
    assert f["user_raster"] == "String = my_drone_ortho"
    assert f["raster"] == f"String = {ras}"


def test_duplicate_csv_columns_are_refused(tmp_path: Path, ras: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    src = _csv(tmp_path / "dup.csv", "x1,y1,x2,y2,label,Label\n1,1,5,5,a,b\n")
    assert main(["georeference", str(src), str(ras), "-o", str(tmp_path / "o.gpkg")]) == (
        EXIT_INPUT)
    assert "dup.csv" in capsys.readouterr().err


def test_appending_reals_to_an_integer_column_is_refused(tmp_path: Path, ras: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    out = tmp_path / "o.gpkg"
    ints = _csv(tmp_path / "a.csv", "x1,y1,x2,y2,count\n1,1,5,5,3\n")
    reals = _csv(tmp_path / "b.csv", "x1,y1,x2,y2,count\n1,1,5,5,3.5\n")
    assert main(["georeference", str(ints), str(ras), "-o", str(out)]) == 0
    before = out.read_bytes()
    assert main(["georeference", str(reals), str(ras), "-o", str(out)]) == EXIT_OUTPUT
    err = capsys.readouterr().err
    assert "'count'" in err and "INTEGER" in err and "o.gpkg" in err
    assert out.read_bytes() == before
    assert main(["georeference", str(ints), str(ras), "-o", str(out)]) == 0
    assert ogrinfo_summary(out, "boxes").feature_count == 2
