"""Tests of geomogeo.geo.export, checked with independent readers (Debian GDAL 3.6, QGIS 3.22)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from oracles import (
    gdalinfo_json,
    gdaltransform_points,
    ogrinfo_summary,
    qgis_layer_check,
    validate_gpkg,
)
from pyproj import CRS
from shapely.geometry import Point, Polygon

from geomogeo.errors import OutputError
from geomogeo.geo import export
from geomogeo.geo.export import (
    atomic_write,
    list_layers,
    write_geojson,
    write_geopackage,
    write_heatmap,
)

UTM = "EPSG:32631"
X0, Y0 = 431_000.0, 4_582_000.0  # near Barcelona, in UTM 31N metres


def _quad(cx: float, cy: float, half: float, angle_deg: float) -> Polygon:
    """A square of side 2*half metres centred at (cx, cy), rotated (not axis-aligned)."""
    a = np.deg2rad(angle_deg)
    pts = [(-half, -half), (half, -half), (half, half), (-half, half)]
    return Polygon([(cx + x * np.cos(a) - y * np.sin(a), cy + x * np.sin(a) + y * np.cos(a))
                    for x, y in pts])


def _targets(n: int, start: int = 0) -> gpd.GeoDataFrame:
    t = datetime(2024, 5, 1, 10, 30, tzinfo=timezone.utc)
    return gpd.GeoDataFrame(
        {
            "photo": ["IMG_0001.jpg"] * n,
            "target": np.arange(start, start + n, dtype=np.int64),
            "click_x": np.linspace(100.0, 900.0, n),
            "click_y": np.linspace(50.0, 600.0, n),
            "score": np.linspace(0.9, 0.5, n),
            "time": pd.to_datetime([t] * n),
        },
        geometry=[_quad(X0 + 37.3 * i, Y0 - 21.7 * i, 6.5 + i, 17.0 + 11 * i)
                  for i in range(start, start + n)],
        crs=UTM,
    )


def _points(n: int) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"photo": [f"IMG_{i:04d}.jpg" for i in range(n)]},
        geometry=[Point(X0 - 50.0 - 3.1 * i, Y0 + 20.0 + 1.7 * i) for i in range(n)],
        crs=UTM,
    )


def _assert_extent(actual, gdf: gpd.GeoDataFrame, tol: float = 1e-6) -> None:
    np.testing.assert_allclose(np.asarray(actual, float), gdf.total_bounds, rtol=0, atol=tol)


def _dir_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# --------------------------------------------------------------------------- atomic_write


def test_atomic_write_error_keeps_original_and_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_bytes(b"original")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".txt"
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"original"
    assert _dir_files(tmp_path) == {"a.txt"}

    with atomic_write(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert _dir_files(tmp_path) == {"a.txt"}


def test_atomic_write_missing_folder_names_file(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="nope"), atomic_write(tmp_path / "nope" / "x.gpkg"):
        pass


# --------------------------------------------------------------------------- GeoPackage


def test_geopackage_read_back_by_ogrinfo_and_qgis(tmp_path: Path) -> None:
    gpkg = tmp_path / "out.gpkg"
    targets, points = _targets(3), _points(2)
    write_geopackage(gpkg, {"targets": targets, "photos": points})

    assert list_layers(gpkg) == {"targets": "Polygon", "photos": "Point"}
    for name, gdf, gtype in (("targets", targets, "Polygon"), ("photos", points, "Point")):
        s = ogrinfo_summary(gpkg, name)
        assert s.stderr == "", f"Debian ogrinfo warned: {s.stderr}"
        assert s.layer == name
        assert s.geometry == gtype
        assert s.feature_count == len(gdf)
        assert s.epsg == 32631
        _assert_extent(s.extent, gdf)
    assert ogrinfo_summary(gpkg, "targets").fields["time"] == "DateTime"

    q = qgis_layer_check(gpkg, "targets")
    assert q["isValid"] is True
    assert q["authid"] == UTM
    assert q["featureCount"] == 3
    _assert_extent(q["extent"], targets)
    assert {"photo", "target", "click_x", "click_y", "score", "time"} <= set(q["fields"])

    back = pyogrio.read_dataframe(gpkg, layer="targets")
    assert back["time"].iloc[0] == pd.Timestamp("2024-05-01T10:30:00Z")
    assert back["target"].tolist() == [0, 1, 2]


def test_geopackage_append_keeps_layers_and_adds_features(tmp_path: Path) -> None:
    gpkg = tmp_path / "out.gpkg"
    first = _targets(3)
    write_geopackage(gpkg, {"targets": first, "photos": _points(2)})
    second = _targets(2, start=3)
    write_geopackage(gpkg, {"targets": second, "extra": _points(4)})

    assert list_layers(gpkg) == {"targets": "Polygon", "photos": "Point", "extra": "Point"}
    both = pd.concat([first, second])
    s = ogrinfo_summary(gpkg, "targets")
    assert s.stderr == ""
    assert s.feature_count == 5
    _assert_extent(s.extent, both)
    assert ogrinfo_summary(gpkg, "photos").feature_count == 2
    assert ogrinfo_summary(gpkg, "extra").feature_count == 4
    back = pyogrio.read_dataframe(gpkg, layer="targets")
    assert back["target"].tolist() == [0, 1, 2, 3, 4]
    assert _dir_files(tmp_path) == {"out.gpkg"}

    q = qgis_layer_check(gpkg, "targets")
    assert q["isValid"] and q["featureCount"] == 5 and q["authid"] == UTM

    # append=False starts the file over.
    write_geopackage(gpkg, {"targets": second}, append=False)
    assert list_layers(gpkg) == {"targets": "Polygon"}
    assert ogrinfo_summary(gpkg, "targets").feature_count == 2


def test_geopackage_refuses_a_file_that_is_not_a_geopackage(tmp_path: Path) -> None:
    bogus = tmp_path / "out.gpkg"
    bogus.write_text("these are my field notes, not a GeoPackage\n")
    before = bogus.read_bytes()
    with pytest.raises(OutputError, match=re.escape(str(bogus))):
        write_geopackage(bogus, {"targets": _targets(2)})
    assert bogus.read_bytes() == before
    assert _dir_files(tmp_path) == {"out.gpkg"}

    # An SQLite database without gpkg_contents is not a GeoPackage either.
    import sqlite3

    db = tmp_path / "plain.gpkg"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (a INTEGER)")
    con.commit()
    con.close()
    before = db.read_bytes()
    with pytest.raises(OutputError, match="not a GeoPackage"):
        write_geopackage(db, {"targets": _targets(2)})
    assert db.read_bytes() == before


def test_geopackage_failure_mid_write_leaves_file_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpkg = tmp_path / "out.gpkg"
    write_geopackage(gpkg, {"targets": _targets(3)})
    before = gpkg.read_bytes()

    real = pyogrio.write_dataframe
    calls = []

    def flaky(df, path, **kw):
        calls.append(kw["layer"])
        if len(calls) == 2:  # the first layer is already written into the temp copy
            raise RuntimeError("disk full")
        return real(df, path, **kw)

    monkeypatch.setattr(export.pyogrio, "write_dataframe", flaky)
    with pytest.raises(OutputError, match="disk full"):
        write_geopackage(gpkg, {"targets": _targets(2, start=3), "photos": _points(2)})
    assert calls == ["targets", "photos"]
    assert gpkg.read_bytes() == before
    assert _dir_files(tmp_path) == {"out.gpkg"}
    monkeypatch.undo()
    assert ogrinfo_summary(gpkg, "targets").feature_count == 3


def test_geopackage_append_schema_and_crs_mismatch(tmp_path: Path) -> None:
    gpkg = tmp_path / "out.gpkg"
    write_geopackage(gpkg, {"targets": _targets(2)})
    before = gpkg.read_bytes()
    with pytest.raises(OutputError, match="columns"):
        write_geopackage(gpkg, {"targets": _targets(1).assign(new_col=1.0)})
    with pytest.raises(OutputError, match="CRS"):
        write_geopackage(gpkg, {"targets": _targets(1).to_crs(3857)})
    with pytest.raises(OutputError, match="Point"):
        write_geopackage(gpkg, {"targets": _points(1).assign(target=1)[["target", "geometry"]]})
    assert gpkg.read_bytes() == before


def test_geopackage_append_polygons_to_multipolygon_layer(tmp_path: Path) -> None:
    gpkg = tmp_path / "out.gpkg"
    multi = _targets(2)
    multi["geometry"] = [shapely.MultiPolygon([g]) for g in multi.geometry]
    write_geopackage(gpkg, {"targets": multi})
    write_geopackage(gpkg, {"targets": _targets(1, start=2)})
    s = ogrinfo_summary(gpkg, "targets")
    assert (s.geometry, s.feature_count, s.stderr) == ("Multi Polygon", 3, "")


# --------------------------------------------------------------------------- GeoJSON


def _signed_area(ring: list[list[float]]) -> float:
    xy = np.asarray(ring, dtype=float)
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


def test_geojson_is_rfc7946(tmp_path: Path) -> None:
    gdf = _targets(2)
    # A clockwise exterior (shapely.box(ccw=False)) with a counter-clockwise hole: the writer
    # must rewind both. 5 km wide, so densification adds vertices.
    outer = shapely.box(X0 + 1000, Y0 + 1000, X0 + 6000, Y0 + 3000, ccw=False)
    hole = shapely.box(X0 + 2000, Y0 + 1500, X0 + 3000, Y0 + 2500, ccw=True)
    big = Polygon(outer.exterior.coords, [hole.exterior.coords])
    gdf = pd.concat([gdf, gpd.GeoDataFrame(
        {"photo": ["x"], "target": [9], "click_x": [1.0], "click_y": [2.0], "score": [0.1],
         "time": gdf["time"].iloc[:1].tolist()}, geometry=[big], crs=UTM)], ignore_index=True)
    out = tmp_path / "targets.geojson"
    write_geojson(out, gdf)

    raw = out.read_text()
    doc = json.loads(raw)
    assert doc["type"] == "FeatureCollection"
    assert "crs" not in doc
    assert len(doc["features"]) == 3
    # At most 7 decimals on every number in the coordinates.
    for f in doc["features"]:
        coords_txt = json.dumps(f["geometry"]["coordinates"])
        decimals = [len(m) for m in re.findall(r"\.(\d+)", coords_txt)]
        assert decimals and max(decimals) <= 7

    # Winding: exteriors CCW (positive area), holes CW.
    for f in doc["features"]:
        rings = f["geometry"]["coordinates"]
        assert _signed_area(rings[0]) > 0
        for h in rings[1:]:
            assert _signed_area(h) < 0
    assert len(doc["features"][2]["geometry"]["coordinates"]) == 2

    # Every source corner appears (lon, lat) as converted by Debian's gdaltransform, to 1e-7.
    for i, geom in enumerate(gdf.geometry):
        corners = list(geom.exterior.coords)[:-1]
        expected = gdaltransform_points(corners, UTM, "EPSG:4326")
        got = np.asarray(doc["features"][i]["geometry"]["coordinates"][0], float)
        for lon, lat in expected:
            assert 0 < lon < 6 and 40 < lat < 42  # x = lon, y = lat
            d = np.abs(got - [lon, lat]).max(axis=1).min()
            assert d <= 1e-7, (i, lon, lat, d)
    # Densified: the 5 km x 2 km exterior has far more than 5 vertices, all on the edge.
    assert len(doc["features"][2]["geometry"]["coordinates"][0]) > 50

    s = ogrinfo_summary(out, "targets")
    assert s.feature_count == 3
    assert s.epsg == 4326
    assert s.stderr == ""
    q = qgis_layer_check(out)
    assert q["isValid"] and q["authid"] == "EPSG:4326" and q["featureCount"] == 3
    lon_lat = gdf.to_crs(4326).total_bounds
    np.testing.assert_allclose(q["extent"], lon_lat, atol=2e-7)


# --------------------------------------------------------------------------- heatmap


@pytest.mark.parametrize(
    ("shape", "transform", "tiled"),
    [
        ((300, 280), Affine(0.5, 0.0, X0, 0.0, -0.5, Y0), True),
        ((40, 60), Affine(0.25, 0.1, X0, 0.05, -0.25, Y0), False),  # rotated/sheared
    ],
)
def test_heatmap_read_back_by_gdalinfo(tmp_path: Path, shape, transform, tiled) -> None:
    rng = np.random.default_rng(0)
    heat = rng.random(shape, dtype=np.float32) * 3.0 - 1.0
    out = tmp_path / "heat.tif"
    write_heatmap(out, heat, transform, UTM)

    info, stderr = gdalinfo_json(out)
    assert stderr == ""
    assert info["size"] == [shape[1], shape[0]]
    assert info["geoTransform"] == list(transform.to_gdal())  # exact
    assert info["coordinateSystem"]["wkt"].rstrip().endswith('ID["EPSG",32631]]')
    (band,) = info["bands"]
    assert band["type"] == "Float32"
    assert "noDataValue" not in band
    assert info["metadata"]["IMAGE_STRUCTURE"]["COMPRESSION"] == "DEFLATE"
    assert (band["block"][0] == 256) is tiled
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1), heat)
    assert _dir_files(tmp_path) == {"heat.tif"}


def test_heatmap_loaded_by_qgis(tmp_path: Path) -> None:
    h, w = 64, 48
    t = Affine(0.5, 0.0, X0, 0.0, -0.5, Y0)
    out = tmp_path / "heat.tif"
    write_heatmap(out, np.ones((h, w), np.float32), t, UTM)
    q = qgis_layer_check(out, raster=True)
    assert q["isValid"] and q["authid"] == UTM
    assert (q["width"], q["height"], q["bandCount"]) == (w, h, 1)
    np.testing.assert_allclose(q["extent"], [X0, Y0 - 0.5 * h, X0 + 0.5 * w, Y0], atol=1e-9)


def test_heatmap_failure_keeps_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "heat.tif"
    write_heatmap(out, np.zeros((8, 8), np.float32), Affine(1, 0, X0, 0, -1, Y0), UTM)
    before = out.read_bytes()

    def broken_write(self, *a, **k):
        raise RuntimeError("no space left")

    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", broken_write)
    with pytest.raises(OutputError, match=r"heat\.tif"):
        write_heatmap(out, np.ones((8, 8), np.float32), Affine(1, 0, X0, 0, -1, Y0), UTM)
    assert out.read_bytes() == before
    assert _dir_files(tmp_path) == {"heat.tif"}
    with pytest.raises(ValueError, match=r"heat\.tif"):
        write_heatmap(out, np.ones((2, 2, 2)), Affine(1, 0, X0, 0, -1, Y0), UTM)


# --------------------------------------------------------------------------- GeoPackage in place


def _sql(gpkg: Path, query: str) -> list[tuple]:
    import sqlite3

    con = sqlite3.connect(f"file:{gpkg}?mode=ro", uri=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def test_geopackage_append_checks_column_types(tmp_path: Path) -> None:
    gpkg = tmp_path / "out.gpkg"
    write_geopackage(gpkg, {"targets": _targets(2)})  # target: INTEGER, score: REAL
    before = gpkg.read_bytes()
    with pytest.raises(OutputError, match=r"column 'target' is INTEGER .* REAL"):
        write_geopackage(gpkg, {"targets": _targets(1).assign(target=0.5)})
    with pytest.raises(OutputError, match=r"column 'click_x' is REAL .* TEXT"):
        write_geopackage(gpkg, {"targets": _targets(1).assign(click_x="left")})
    with pytest.raises(OutputError, match=r"column 'time' is DATETIME .* TEXT"):
        write_geopackage(gpkg, {"targets": _targets(1).assign(time="yesterday")})
    assert gpkg.read_bytes() == before  # nothing written
    # Integers into a REAL column are fine; so is an all-missing column of another type.
    write_geopackage(gpkg, {"targets": _targets(1, start=2).assign(score=1)})
    back = pyogrio.read_dataframe(gpkg, layer="targets")
    assert back["score"].tolist() == pytest.approx([0.9, 0.5, 1.0])
    assert str(back["score"].dtype) == "float64"
    s = ogrinfo_summary(gpkg, "targets")
    assert (s.stderr, s.feature_count, s.fields["score"]) == ("", 3, "Real")


def test_geopackage_numbers_append_to_a_text_column(tmp_path: Path) -> None:
    """Files written before attributes were typed have text columns; numbers still append."""
    gpkg = tmp_path / "out.gpkg"
    write_geopackage(gpkg, {"targets": _targets(1).astype({"target": str})})
    assert ogrinfo_summary(gpkg, "targets").fields["target"] == "String"
    write_geopackage(gpkg, {"targets": _targets(1, start=5)})
    assert pyogrio.read_dataframe(gpkg, layer="targets")["target"].tolist() == ["0", "5"]
    assert ogrinfo_summary(gpkg, "targets").stderr == ""


def test_geopackage_replace_in_place_under_an_open_reader(tmp_path: Path) -> None:
    import sqlite3

    gpkg = tmp_path / "out.gpkg"
    write_geopackage(gpkg, {"targets": _targets(3), "photos": _points(2)})
    reader = sqlite3.connect(gpkg)
    reader.execute("PRAGMA journal_mode=WAL")
    ino = gpkg.stat().st_ino
    try:
        write_geopackage(gpkg, {"targets": _targets(2, start=7)}, append=False)
        # the open connection sees the new content of the same file
        assert reader.execute("SELECT target FROM targets").fetchall() == [(7,), (8,)]
    finally:
        reader.close()
    assert gpkg.stat().st_ino == ino  # never replaced
    assert list_layers(gpkg) == {"targets": "Polygon"}
    assert _sql(gpkg, "SELECT name FROM sqlite_master WHERE name LIKE '%photos%'") == []
    assert _sql(gpkg, "PRAGMA integrity_check") == [("ok",)]
    assert _sql(gpkg, "SELECT feature_count FROM gpkg_ogr_contents") == [(2,)]
    s = ogrinfo_summary(gpkg, "targets")
    assert (s.stderr, s.feature_count) == ("", 2)
    _assert_extent(s.extent, _targets(2, start=7))
    validate_gpkg(gpkg)


def test_geopackage_append_false_replaces_a_file_that_is_not_a_geopackage(
        tmp_path: Path) -> None:
    gpkg = tmp_path / "out.gpkg"
    gpkg.write_text("not a database")
    write_geopackage(gpkg, {"targets": _targets(2)}, append=False)
    assert ogrinfo_summary(gpkg, "targets").feature_count == 2
    assert _dir_files(tmp_path) == {"out.gpkg"}


def test_geopackage_waits_for_a_writer_then_gives_up_clearly(tmp_path: Path) -> None:
    import sqlite3

    gpkg = tmp_path / "out.gpkg"
    write_geopackage(gpkg, {"targets": _targets(2)})
    other = sqlite3.connect(gpkg, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    try:
        with pytest.raises(OutputError, match=r"holds its write lock for more than 0.2 s"):
            write_geopackage(gpkg, {"targets": _targets(1, start=2)}, busy_timeout_s=0.2)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert ogrinfo_summary(gpkg, "targets").feature_count == 2
    assert _dir_files(tmp_path) == {"out.gpkg"}


def test_geopackage_new_layer_with_a_clashing_srs_id(tmp_path: Path, albers_wkt: str) -> None:
    """Two custom CRSs that GDAL numbers alike (srs_id 100000) in their own files: the second
    one gets a new id in the target and its geometry headers are rewritten to match."""
    gpkg = tmp_path / "out.gpkg"
    albers = gpd.GeoDataFrame({"k": [1]}, geometry=[Point(100.0, 200.0)], crs=albers_wkt)
    local_tm = CRS.from_proj4("+proj=tmerc +lat_0=41 +lon_0=2.1 +k=1 +x_0=500 +y_0=300 "
                              "+ellps=GRS80 +units=m +no_defs")
    tm = gpd.GeoDataFrame({"k": [2]}, geometry=[shapely.box(10, 20, 30, 50)], crs=local_tm)
    write_geopackage(gpkg, {"albers": albers})
    write_geopackage(gpkg, {"tm": tm})
    ids = dict(_sql(gpkg, "SELECT table_name, srs_id FROM gpkg_geometry_columns"))
    assert ids["albers"] == 100000 and ids["tm"] == 100001
    import struct

    (blob,) = _sql(gpkg, "SELECT geom FROM tm")[0]
    assert struct.unpack("<i", blob[4:8])[0] == 100001
    s = ogrinfo_summary(gpkg, "tm")
    assert s.stderr == "" and s.extent == pytest.approx((10, 20, 30, 50))
    assert CRS.from_wkt(s.srs_wkt).equals(local_tm)
    assert CRS.from_wkt(ogrinfo_summary(gpkg, "albers").srs_wkt).equals(CRS(albers_wkt))
    # appending to it again goes into the same layer, with the renumbered SRS
    write_geopackage(gpkg, {"tm": tm.assign(k=3)})
    assert ogrinfo_summary(gpkg, "tm").feature_count == 2
    validate_gpkg(gpkg)


def test_geopackage_mixed_single_and_multi_polygons_make_a_multipolygon_layer(
        tmp_path: Path) -> None:
    gpkg = tmp_path / "out.gpkg"
    mixed = _targets(2)
    mixed.loc[1, "geometry"] = shapely.MultiPolygon([mixed.geometry.iloc[1]])
    write_geopackage(gpkg, {"targets": mixed})
    write_geopackage(gpkg, {"targets": mixed})
    s = ogrinfo_summary(gpkg, "targets")
    assert (s.geometry, s.feature_count, s.stderr) == ("Multi Polygon", 4, "")
