"""Joint localization end to end on the held-out tile (Rotterdam c, never used in training):
a rendered drone photo without heading is registered to the orthophoto and the clicked
object is boxed by the shipped network, read back from the GeoPackage by Debian's GDAL and by
QGIS; a blurred photo cannot be registered and falls back to the network alone, saying so."""

from __future__ import annotations

import io
import json
import logging
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from oracles import ogrinfo_summary, qgis_layer_check
from PIL import Image, ImageFilter
from shapely.geometry import Polygon, shape

from geomogeo import Localizer
from geomogeo.cli import main
from geomogeo.data.synth.camera import CameraRanges
from geomogeo.data.synth.engine import Sample, SynthConfig, World, render_sample
from geomogeo.data.synth.scene import scene_from_raster
from geomogeo.geo import georef, raster
from geomogeo.geo.heading import heading_mod90
from geomogeo.joint import JointConfig
from geomogeo.predictor import InputSpec, Prediction

ROOT = Path(__file__).resolve().parents[2]
TILE = ROOT / "sample_tiles" / "rotterdam_pan_0p5m_c.tif"  # the held-out test tile
UTM = "EPSG:32631"
# One rendered view (seed 2 of this configuration): a near-nadir drone photo with one target
# that the former default network alone (mogeo-light-v2), without a heading, misses entirely
# (IoU 0).
CFG = SynthConfig(targets=(1, 3), camera=CameraRanges(pitch=(0.0, 15.0)))
SEED = 2


@pytest.fixture(scope="module")
def sample() -> Sample:
    world = World.build(scene_from_raster(TILE, gsd=0.5), CFG)
    return render_sample(world, np.random.default_rng([SEED]), CFG, "joint")


@pytest.fixture(scope="module")
def localizer() -> Localizer:
    return Localizer.load()


def _truth(s: Sample) -> list[Polygon]:
    return georef.boxes_to_polygons(s.boxes, Affine(*s.transform))


def _read_layer(gpkg: Path, layer: str) -> list[dict]:
    out = subprocess.run(["ogr2ogr", "-f", "GeoJSON", "/vsistdout/", str(gpkg), layer],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["features"]


def test_joint_boxes_the_clicked_object_without_heading(sample, localizer, tmp_path):
    photo = tmp_path / "drone.jpg"
    photo.write_bytes(sample.jpeg)
    res = localizer.localize(photo, TILE, sample.clicks, sample.measured_xy, center_crs=UTM,
                             quiet=True)
    gpkg = res.to_file(tmp_path / "out.gpkg")

    feats = _read_layer(gpkg, "targets")
    assert len(feats) == len(sample.boxes) == 1
    props, poly = feats[0]["properties"], shape(feats[0]["geometry"])
    truth = _truth(sample)[0]
    assert poly.intersection(truth).area / poly.union(truth).area > 0.5
    assert props["method"] == "joint" and props["heading_source"] == "registration"
    # The heading came from the registration: within 3 degrees of the camera's true yaw.
    d = (props["heading_used"] - sample.camera.yaw) % 360
    assert min(d, 360 - d) < 3.0
    assert props["n_inliers"] >= 12 and 0 <= props["reproj_error_px"] < 2.0

    # The network alone, without heading and without rotation search: the former default
    # (mogeo-light-v2, flat blob renders) misses this object; the shipped mogeo-light16-v3
    # (trained with parallax and photos without heading) finds it.
    former = Localizer.load(ROOT / "model" / "mogeo-light-v2.pt")
    for loc, found in ((former, False), (localizer, True)):
        alone = loc.localize(photo, TILE, sample.clicks, sample.measured_xy, center_crs=UTM,
                             quiet=True, joint=False, config=JointConfig(rotations=0))
        t = alone.targets[0]
        assert (t.method, t.heading_source) == ("network", "none")
        iou = t.polygon.intersection(truth).area / t.polygon.union(truth).area
        assert (iou > 0.5) == found, (loc.predictor.name, iou)

    # The registered click lies within 2 m of the clicked object's true ground point ...
    (rx, ry), (gx, gy) = res.targets[0].registered_xy, sample.ground[0]
    assert np.hypot(rx - gx, ry - gy) < 2.0
    # ... and, without the box refiner, the joint box (the network's size) is centred on it
    # (click_inner 0, the default): to 1 mm in the GeoPackage as GDAL reads it (window and
    # raster in UTM 31N).
    assert props["box_source"] == "refiner"
    plain = Localizer(localizer.predictor)
    (f,) = _read_layer(plain.localize(photo, TILE, sample.clicks, sample.measured_xy,
                                      center_crs=UTM, quiet=True).to_file(tmp_path / "p.gpkg"),
                       "targets")
    assert f["properties"]["box_source"] == "network"
    x0, y0, x1, y1 = shape(f["geometry"]).bounds
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == (pytest.approx(rx, abs=1e-3),
                                              pytest.approx(ry, abs=1e-3))
    # With click_inner None the network's box stays where the network put it: off centre.
    kept = plain.localize(photo, TILE, sample.clicks, sample.measured_xy, center_crs=UTM,
                          quiet=True, config=JointConfig(click_inner=None))
    kb = kept.targets[0].polygon.bounds
    assert (kb[2] - kb[0], kb[3] - kb[1]) == (pytest.approx(x1 - x0, abs=1e-6),
                                              pytest.approx(y1 - y0, abs=1e-6))
    assert np.hypot((kb[0] + kb[2]) / 2 - rx, (kb[1] + kb[3]) / 2 - ry) > 0.1

    # Footprint layer: the photo's true ground outline (the camera's exact projection),
    # with numeric quality figures, for GDAL and for QGIS.
    (fp,) = _read_layer(gpkg, "photo_footprint")
    w, h = sample.camera.width, sample.camera.height
    edge = np.linspace(0, 1, 9)[:-1]
    ring = np.concatenate([np.column_stack([edge * w, 0 * edge]),
                           np.column_stack([w + 0 * edge, edge * h]),
                           np.column_stack([(1 - edge) * w, h + 0 * edge]),
                           np.column_stack([0 * edge, (1 - edge) * h])])
    true_fp = Polygon(sample.camera.photo_to_ground(ring))
    got = shape(fp["geometry"])
    assert got.intersection(true_fp).area / got.union(true_fp).area > 0.95
    assert fp["properties"]["n_inliers"] == props["n_inliers"]
    summary = ogrinfo_summary(gpkg, "photo_footprint")
    assert summary.epsg == 32631 and summary.geometry == "Polygon"
    assert {k: summary.fields[k] for k in ("n_matches", "n_inliers", "inlier_ratio",
                                           "reproj_error_px", "reproj_error_m", "heading")} \
        == {"n_matches": "Integer64", "n_inliers": "Integer64", "inlier_ratio": "Real",
            "reproj_error_px": "Real", "reproj_error_m": "Real", "heading": "Real"}
    targets = ogrinfo_summary(gpkg, "targets")
    assert {k: targets.fields[k] for k in ("method", "n_inliers", "reproj_error_px",
                                           "heading_used", "heading_source")} \
        == {"method": "String", "n_inliers": "Integer64", "reproj_error_px": "Real",
            "heading_used": "Real", "heading_source": "String"}
    html = res.to_map(tmp_path / "map.html").read_text()
    assert "Photo footprint" in html and "geomogeo-footprint" in html
    q = qgis_layer_check(gpkg, "photo_footprint")
    assert q["isValid"] and q["authid"] == UTM and q["featureCount"] == 1
    assert {k: q["field_types"][k] for k in ("n_inliers", "inlier_ratio", "reproj_error_px",
                                             "heading")} \
        == {"n_inliers": "Integer64", "inlier_ratio": "Real", "reproj_error_px": "Real",
            "heading": "Real"}


class NetworkStandIn:
    """A predictor that boxes a fixed square around every click (query pixels scaled to the
    reference), with score 0.5; records the queries it saw."""

    name = "stand-in"
    sha256 = "cd" * 32
    spec = InputSpec(256, (128, 128), 1.0)

    def __init__(self) -> None:
        self.queries: list[np.ndarray] = []

    def predict(self, reference: np.ndarray, query: np.ndarray, points: np.ndarray
                ) -> Prediction:
        self.queries.append(query)
        c = np.asarray(points) * 2.0
        boxes = np.column_stack([c - 8, c + 8])
        m = len(points)
        return Prediction(boxes, np.full(m, 0.5), np.zeros((m, 32, 32), np.float32))


def test_blurred_photo_falls_back_to_the_network_and_says_so(sample, tmp_path, caplog):
    blurred = Image.open(io.BytesIO(sample.jpeg)).filter(
        ImageFilter.GaussianBlur(25))
    photo = tmp_path / "blurred.png"
    blurred.save(photo)
    net = NetworkStandIn()
    # a CLI test earlier in the session may have set the root level to ERROR (-q)
    caplog.set_level(logging.WARNING, logger="geomogeo.localize")
    res = Localizer(net).localize(photo, TILE, sample.clicks, sample.measured_xy,
                                  center_crs=UTM, heading=sample.heading, quiet=True)
    assert res.registration is not None and not res.registration.ok
    assert res.registration_summary().startswith("registration: failed (")
    assert "the network alone localizes" in caplog.text
    assert len(net.queries) == 1  # heading given: no rotation search
    t = res.targets[0]
    assert (t.method, t.heading_source, t.n_inliers) == ("network", "given", 0)
    assert t.heading_used == pytest.approx(sample.heading)
    assert np.isnan(t.reproj_error_px) and t.registered_xy is None
    gpkg = res.to_file(tmp_path / "out.gpkg")
    (f,) = _read_layer(gpkg, "targets")
    assert f["properties"]["method"] == "network"
    assert f["properties"]["n_inliers"] == 0
    assert "photo_footprint" not in subprocess.run(
        ["ogrinfo", "-q", str(gpkg)], capture_output=True, text=True, check=True).stdout

    # Without a heading the query's rotation is searched: 4 rotations a quarter turn apart
    # from the heading modulo 90 degrees that the photo's edges give against the window's,
    # source "search"; without the edges' heading, from 0.
    src = raster.open_raster(TILE)
    win = raster.read_window(src, sample.measured_xy, net.spec.reference_size, net.spec.gsd)
    start = heading_mod90(np.asarray(blurred.convert("RGB")), win.image, win.valid)
    net.queries.clear()
    res = Localizer(net).localize(photo, TILE, sample.clicks, sample.measured_xy,
                                  center_crs=UTM, quiet=True)
    assert len(net.queries) == 4
    assert (res.targets[0].method, res.targets[0].heading_source) == ("network", "search")
    assert res.targets[0].heading_used in [(start + 90.0 * k) % 360.0 for k in range(4)]
    net.queries.clear()
    res = Localizer(net).localize(photo, TILE, sample.clicks, sample.measured_xy,
                                  center_crs=UTM, quiet=True,
                                  config=JointConfig(edge_heading=False, rotations=8))
    assert len(net.queries) == 8
    assert res.targets[0].heading_used in [45.0 * k for k in range(8)]

    # With a lighter search predictor, it looks at the 4 rotations and the network looks
    # once more at the kept one, whose look is the answer.
    net.queries.clear()
    light = NetworkStandIn()
    res = Localizer(net, search_predictor=light).localize(
        photo, TILE, sample.clicks, sample.measured_xy, center_crs=UTM, quiet=True)
    assert (len(light.queries), len(net.queries)) == (4, 1)
    kept = res.targets[0].heading_used
    k = round(((kept - start) % 360.0) / 90.0)
    assert kept == pytest.approx((start + 90.0 * k) % 360.0)
    np.testing.assert_array_equal(net.queries[0], light.queries[k])


def test_the_search_knows_the_camera_only_where_the_window_is_at_the_photo(
        sample, tmp_path, monkeypatch):
    # The rotation search's camera prior needs the camera's place in the window: its centre
    # when the window is read at the photo's location (EXIF GPS or center=), unknown when the
    # raster is searched window by window.
    import geomogeo.localize as localize_module

    seen: list[object] = []

    focals: list[float | None] = []

    def spy(*args, **kwargs):
        seen.append(kwargs["camera"])
        focals.append(kwargs["consistency"].focal_px)
        return search(*args, **kwargs)

    search = localize_module.search_rotation
    monkeypatch.setattr(localize_module, "search_rotation", spy)
    photo = tmp_path / "blurred.png"  # no EXIF, and no registration
    Image.open(io.BytesIO(sample.jpeg)).filter(ImageFilter.GaussianBlur(25)).save(photo)
    net = NetworkStandIn()
    Localizer(net).localize(photo, TILE, sample.clicks, sample.measured_xy, center_crs=UTM,
                            quiet=True)
    assert seen == [(128.0, 128.0)]
    # no EXIF focal length: the perspective vote's focal comes from JointConfig.search_hfov_deg
    width = Image.open(photo).width
    assert focals == [pytest.approx(width / 2 / math.tan(math.radians(75.0) / 2), rel=1e-12)]
    seen.clear()
    Localizer(net).localize(photo, TILE, sample.clicks, quiet=True)
    assert len(seen) > 1 and all(c is None for c in seen)

    # With a heading but no registration, the network looks once at it and two clicks'
    # geometry is voted on within JointConfig.heading_vote_deg of it.
    calls: list[tuple] = []
    monkeypatch.setattr(localize_module, "search_rotation", lambda *a, **k: (
        calls.append((a[4], k["start"], k["spread"], k["camera"])), search(*a, **k))[1])
    two = np.vstack([sample.clicks[:1], sample.clicks[:1] + 40.0])
    net.queries.clear()
    res = Localizer(net).localize(photo, TILE, two, sample.measured_xy, center_crs=UTM,
                                  heading=33.0, quiet=True)
    assert calls == [(1, 33.0, 10.0, (128.0, 128.0))] and len(net.queries) == 1
    assert {t.heading_source for t in res.targets} == {"given"}
    assert {t.heading_used for t in res.targets} == {33.0}
    calls.clear()  # one click at the photo's position is placed against the camera
    Localizer(net).localize(photo, TILE, two[:1], sample.measured_xy, center_crs=UTM,
                            heading=33.0, quiet=True)
    assert calls == [(1, 33.0, 10.0, (128.0, 128.0))]
    calls.clear()  # one click without it, or the vote turned off: the network's own choice
    Localizer(net).localize(photo, TILE, two[:1], sample.measured_xy, center_crs=UTM,
                            heading=33.0, quiet=True, config=JointConfig(single_click_vote=False))
    Localizer(net).localize(photo, TILE, two[:1], heading=33.0, quiet=True)  # no position
    Localizer(net).localize(photo, TILE, two, sample.measured_xy, center_crs=UTM,
                            heading=33.0, quiet=True, config=JointConfig(heading_vote_deg=None))
    assert calls == []


def test_click_beyond_the_raster_edge_keeps_the_joint_window_on_the_raster(caplog):
    """Demo photo 3's corner (10, 10) registers to a point just north of the Las Vegas tile:
    the window goes to the raster's nearest point instead of failing (it raised before)."""
    samples = ROOT / "sample_tiles"
    demo = json.loads((samples / "demo.json").read_text(encoding="utf-8"))
    tif = samples / demo["raster"]
    with caplog.at_level(logging.WARNING, logger="geomogeo.localize"):
        res = Localizer.load(tta="none").localize(samples / demo["photos"][2]["photo"], tif,
                                                   [[10.0, 10.0]], quiet=True)
    (t,) = res.targets
    src = raster.open_raster(tif)
    assert t.method == "joint" and t.heading_source == "registration"
    assert t.registered_xy is not None and not src.contains(*t.registered_xy)
    assert "the registered clicks' centre lies off las_vegas_pan_0p3m_wgs84.tif" in caplog.text
    (win,) = res.windows
    centre = georef.to_crs(*win.center, win.crs, src.crs)
    expected = src.nearest_point(*t.registered_xy)  # one click: its point is the centre
    assert centre == (pytest.approx(expected[0], abs=1e-9), pytest.approx(expected[1], abs=1e-9))
    # on the north edge, to a micro-pixel (containment exactly on the edge would hinge on the
    # last bit of the map <-> pixel round trip)
    col, row = georef.map_to_pixel(src.transform, *centre)
    assert abs(row) < 1e-6 and 0 <= col <= src.width


def test_cli_prints_the_registration_quality(sample, tmp_path, capsys):
    photo = tmp_path / "drone.jpg"
    photo.write_bytes(sample.jpeg)
    x, y = sample.measured_xy
    cx, cy = sample.clicks[0]
    assert main(["localize", str(photo), str(TILE), "-p", f"{cx},{cy}", "--center", f"{x},{y}",
                 "--center-crs", UTM, "-o", str(tmp_path / "o"), "--no-map",
                 "--no-heatmaps"]) == 0
    out = capsys.readouterr().out
    assert "drone.jpg: registration: ok, " in out and " inliers of " in out
    assert "joint (refiner box), heading " in out and "(registration)" in out


def test_evaluate_localize_scores_baseline_and_joint_as_computed_by_hand(sample, tmp_path):
    from shapely.geometry import box

    from geomogeo.data.manifest import write_manifest
    from geomogeo.data.synth.engine import write_samples
    from geomogeo.engine.evaluate import evaluate_localize, localize_markdown

    (rec,) = write_samples([sample], tmp_path, "test",
                           {sample.scene: {"raster": str(TILE), "bands": None}})
    write_manifest(tmp_path / "manifest.jsonl", [rec])
    out = evaluate_localize(None, tmp_path / "manifest.jsonl", out_dir=tmp_path / "eval",
                            runs=("network, no heading", "network, no heading, rotation search",
                                  "joint, no heading"))
    assert out["photos"] == 1 and out["targets"] == 1 and out["skipped_gps_off_raster"] == []
    assert out["registration"]["success_rate"] == 1.0

    res = Localizer.load().localize(rec.query, TILE, sample.clicks, sample.measured_xy,
                                    center_crs=UTM, quiet=True)
    truth = _truth(sample)[0]
    iou = res.targets[0].polygon.intersection(truth).area / \
        res.targets[0].polygon.union(truth).area
    joint = out["metrics"]["joint, no heading"]["all"]
    assert joint["mean_iou"] == pytest.approx(iou, abs=1e-6)
    assert joint["acc@0.5"] == float(iou > 0.5)
    rx, ry = res.targets[0].registered_xy
    base = box(rx - 8, ry - 8, rx + 8, ry + 8)
    base_iou = base.intersection(truth).area / base.union(truth).area
    baseline = out["metrics"]["baseline: registration + fixed box"]["all"]
    assert baseline["mean_iou"] == pytest.approx(base_iou, abs=1e-6)
    d = (res.registration.heading - sample.camera.yaw) % 360
    assert out["registration"]["heading_error_deg_median"] == pytest.approx(min(d, 360 - d))
    # The rotation search's kept heading (no registration, no compass) against the true yaw.
    searched = Localizer.load().localize(rec.query, TILE, sample.clicks, sample.measured_xy,
                                         center_crs=UTM, quiet=True, joint=False)
    assert searched.targets[0].heading_source == "search"
    d = (searched.targets[0].heading_used - sample.camera.yaw) % 360
    rot = out["rotation_search"]
    assert rot["mode"] == "consistency"
    assert rot["heading_error_deg_median"] == pytest.approx(min(d, 360 - d))
    assert rot["within_22.5_deg"] == float(min(d, 360 - d) <= 22.5)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["metrics"]["joint, no heading"]["all"]["mean_iou"] == joint["mean_iou"]
    assert "| joint, no heading | 0 | 0 |" in (tmp_path / "eval" / "metrics.md").read_text()
    assert f"| joint, no heading | 1 | 1 | {joint['acc@0.25']:.3f} | {joint['acc@0.5']:.3f} |" \
        in localize_markdown(out, group="all")  # this photo has one target


def test_evaluate_localize_cli_refuses_an_unknown_run(tmp_path, capsys):
    # A usage error (exit 2) naming the option, before any photo is read.
    assert main(["evaluate", str(tmp_path / "x.pt"), str(tmp_path / "manifest.jsonl"),
                 "--localize", "--run", "network, sideways"]) == 2
    assert "--run" in capsys.readouterr().err


class DenseStandIn(NetworkStandIn):
    """NetworkStandIn with uniform vote maps, so that the joint path takes its boxes."""

    def predict(self, reference: np.ndarray, query: np.ndarray, points: np.ndarray
                ) -> Prediction:
        p = super().predict(reference, query, points)
        m, g = len(points), 32
        cells = np.broadcast_to(np.array([100.0, 100.0, 116.0, 116.0], np.float32),
                                (m, g, g, 4)).copy()
        return Prediction(p.boxes, p.scores, p.heatmaps, np.ones((m, g, g), np.float32), cells)


class RefinerStandIn:
    """A refiner that returns an off-centre 10 x 6 px box around each point; records them."""

    name = "refiner-stand-in"
    sha256 = "ef" * 32
    gsd = 1.0

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def refine(self, reference: np.ndarray, points: np.ndarray) -> np.ndarray:
        self.calls.append((reference, np.asarray(points, dtype=np.float64)))
        p = np.asarray(points, dtype=np.float64)
        return np.column_stack([p[:, 0] - 3, p[:, 1] - 2, p[:, 0] + 7, p[:, 1] + 4])


def test_the_refiner_boxes_joint_targets_around_their_registered_points(sample, tmp_path):
    photo = tmp_path / "drone.jpg"
    photo.write_bytes(sample.jpeg)
    ref = RefinerStandIn()
    loc = Localizer(DenseStandIn(), ref)
    res = loc.localize(photo, TILE, sample.clicks, sample.measured_xy, center_crs=UTM,
                       quiet=True)
    (t,) = res.targets
    assert (t.method, t.box_source) == ("joint", "refiner")
    assert res.refiner_sha256 == "ef" * 32
    (win,) = res.windows
    (image, pts), = ref.calls
    assert image is win.image
    # the point handed to the refiner is the (parallax-corrected) registered click ...
    np.testing.assert_allclose(pts, res.registration.targets_px(win), atol=1e-9)
    # ... and the target's box is the refiner's, in the window's pixels and on the map.
    np.testing.assert_allclose(t.box, [pts[0, 0] - 3, pts[0, 1] - 2, pts[0, 0] + 7,
                                       pts[0, 1] + 4], atol=1e-9)
    x0, y0, x1, y1 = t.polygon.bounds  # UTM metres; the window is north-up at 1 m/px
    assert (x1 - x0, y1 - y0) == (pytest.approx(10.0, abs=1e-6), pytest.approx(6.0, abs=1e-6))
    gdf = res.to_geodataframe()
    assert gdf["box_source"].tolist() == ["refiner"]
    assert gdf["refiner_sha256"].tolist() == ["ef" * 32]

    # refine_passes=2: the second pass looks around the first box's centre, (2, 1) px on
    ref.calls.clear()
    twice = loc.localize(photo, TILE, sample.clicks, sample.measured_xy, center_crs=UTM,
                         quiet=True, config=JointConfig(refine_passes=2))
    (_, first), (_, second) = ref.calls
    np.testing.assert_allclose(first, pts, atol=1e-9)
    np.testing.assert_allclose(second, pts + np.array([2.0, 1.0]), atol=1e-9)
    np.testing.assert_allclose(twice.targets[0].box, [pts[0, 0] - 1, pts[0, 1] - 1,
                                                      pts[0, 0] + 9, pts[0, 1] + 5], atol=1e-9)

    # refine=False: the network's box, placed on the click; the refiner is not called
    ref.calls.clear()
    off = loc.localize(photo, TILE, sample.clicks, sample.measured_xy, center_crs=UTM,
                       quiet=True, config=JointConfig(refine=False))
    assert off.targets[0].box_source == "network" and not ref.calls
    assert off.refiner_sha256 == ""
    b = off.targets[0].box
    assert (b[2] - b[0], b[3] - b[1]) == (pytest.approx(16.0), pytest.approx(16.0))

    # The network alone: refined around the network's box centre unless refine_network=False.
    alone = loc.localize(photo, TILE, sample.clicks, sample.measured_xy, center_crs=UTM,
                         quiet=True, joint=False,
                         config=JointConfig(rotations=0, refine_network=False))
    assert alone.targets[0].box_source == "network" and not ref.calls
    alone = loc.localize(photo, TILE, sample.clicks, sample.measured_xy, center_crs=UTM,
                         quiet=True, joint=False, config=JointConfig(rotations=0))
    (_, pts), = ref.calls
    c = np.asarray(sample.clicks, dtype=np.float64) * 2.0  # NetworkStandIn's query scale
    assert alone.targets[0].box_source == "refiner"
    assert alone.targets[0].box == pytest.approx((pts[0, 0] - 3, pts[0, 1] - 2,
                                                  pts[0, 0] + 7, pts[0, 1] + 4))
    assert pts.shape == c.shape


def test_a_refiner_of_another_gsd_is_refused() -> None:
    ref = RefinerStandIn()
    ref.gsd = 0.5
    with pytest.raises(ValueError, match=r"works at 0\.5 m/px, the network 'stand-in' at 1\.0"):
        Localizer(NetworkStandIn(), ref)


def test_a_registered_photo_takes_the_joint_predictor(sample, tmp_path):
    photo = tmp_path / "drone.jpg"
    photo.write_bytes(sample.jpeg)
    net, light = DenseStandIn(), DenseStandIn()
    loc = Localizer(net, RefinerStandIn(), joint_predictor=light)
    res = loc.localize(photo, TILE, sample.clicks, sample.measured_xy, center_crs=UTM,
                       quiet=True)
    assert (res.targets[0].method, res.targets[0].box_source) == ("joint", "refiner")
    assert (len(net.queries), len(light.queries)) == (0, 1)
    # without the refiner's boxes the network's boxes are the answer: its full passes
    light.queries.clear()
    res = loc.localize(photo, TILE, sample.clicks, sample.measured_xy, center_crs=UTM,
                       quiet=True, config=JointConfig(refine=False))
    assert (res.targets[0].method, res.targets[0].box_source) == ("joint", "network")
    assert (len(net.queries), len(light.queries)) == (1, 0)
    net.queries.clear()
    # without a registration the main predictor searches the 4 rotations; the light one rests
    light.queries.clear()
    res = loc.localize(photo, TILE, sample.clicks, sample.measured_xy, center_crs=UTM,
                       quiet=True, joint=False)
    assert res.targets[0].method == "network"
    assert (len(net.queries), len(light.queries)) == (4, 0)


def test_a_joint_predictor_with_other_inputs_is_refused() -> None:
    other = NetworkStandIn()
    other.spec = InputSpec(256, (320, 320), 1.0)
    with pytest.raises(ValueError, match=r"joint predictor 'stand-in' takes .*320, 320"):
        Localizer(NetworkStandIn(), joint_predictor=other)
    with pytest.raises(ValueError, match=r"search predictor 'stand-in' takes .*320, 320"):
        Localizer(NetworkStandIn(), search_predictor=other)


def test_load_gives_registered_photos_the_same_network_with_the_joint_tta(localizer):
    from geomogeo.predictor import DEFAULT_JOINT_TTA, DEFAULT_TTA, parse_tta

    main_net, joint_net = localizer.predictor, localizer.joint_predictor
    assert (main_net.tta, joint_net.tta) == (parse_tta(DEFAULT_TTA), parse_tta(DEFAULT_JOINT_TTA))
    assert joint_net.model is main_net.model and joint_net.sha256 == main_net.sha256
    assert localizer.search_predictor is main_net  # the search's passes are --tta's
    fast = Localizer.load(refiner=False, tta="rot4+s2", joint_tta="rot4+s2", search_tta="rot4")
    assert fast.joint_predictor is fast.predictor
    search_net = fast.search_predictor
    assert search_net.tta == parse_tta("rot4") and search_net.model is fast.predictor.model
    assert search_net.sha256 == fast.predictor.sha256
