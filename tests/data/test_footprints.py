"""Known building footprints of a real tile (Las Vegas) in the data engine: the shipped
GeoJSON read by independent readers, its loader, non-convex (L-shaped) prisms (also in the
painter's order next to other prisms), Las Vegas parallax samples whose boxes are the
footprints' envelopes and whose clicks land on the roofs, and the default (non-parallax) data
unchanged by the footprints."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import CRS, Geod, Transformer
from shapely.geometry import Point, Polygon, shape
from test_bridges import _ray_cast
from test_prisms import X0, Y0, _town

from geomogeo.data.synth.camera import Camera
from geomogeo.data.synth.engine import SynthConfig, World, build_worlds, render_sample
from geomogeo.data.synth.footprints import (
    FOOTPRINTS_DIR,
    footprint_structures,
    footprints_path,
    load_footprints,
)
from geomogeo.data.synth.render import PhotoEffects, is_visible, render_view
from geomogeo.data.synth.scene import Scene, downsample, find_objects, scene_from_raster
from geomogeo.data.synth.structures import Structures, is_convex
from geomogeo.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
TILE = ROOT / "sample_tiles" / "las_vegas_pan_0p3m_wgs84.tif"
GEOJSON = FOOTPRINTS_DIR / "las_vegas_pan_0p3m_wgs84.geojson"
UTM11 = "EPSG:32611"
N_FOOTPRINTS = 53  # documented in geomogeo/data/footprints/README.md
N_ROT_A, N_ROT_C = 9, 15  # the same, Rotterdam a and c (b has none)
FLAT = PhotoEffects(
    exposure=(1, 1), contrast=(1, 1), colour_cast=(1, 1), haze=(0, 0), gamma=(1, 1),
    blur_sigma=(0, 0), noise_sigma=(0, 0), jpeg_quality=(95, 95),
)

needs_tile = pytest.mark.skipif(not TILE.is_file(), reason="Las Vegas tile missing")


#: Every shipped footprints file: its tile's file stem and its feature count (as documented in
#: geomogeo/data/footprints/README.md).
SHIPPED = {"las_vegas_pan_0p3m_wgs84": N_FOOTPRINTS, "rotterdam_pan_0p5m_a": N_ROT_A,
           "rotterdam_pan_0p5m_c": N_ROT_C}


def _heights_rule(stem: str) -> tuple[float, float]:
    """The height range stated in the tile's vertex table (``# heights: LOW HIGH SEED``)."""
    line = next(x for x in (ROOT / "scripts" / "footprints" / f"{stem}.tsv").read_text(
        encoding="utf-8").splitlines() if x.startswith("# heights:"))
    lo, hi, _ = line.split(":")[1].split()
    return float(lo), float(hi)


@pytest.mark.parametrize(("stem", "count"), SHIPPED.items())
def test_footprints_file_reads_with_ogrinfo_and_matches_its_readme(stem: str,
                                                                   count: int) -> None:
    if shutil.which("ogrinfo") is None:
        pytest.skip("ogrinfo (gdal-bin) missing")
    out = subprocess.run(["ogrinfo", "-so", "-al", str(FOOTPRINTS_DIR / f"{stem}.geojson")],
                         capture_output=True, text=True, check=True).stdout
    assert f"Feature Count: {count}" in out
    assert "Geometry: Polygon" in out
    assert re.search(r"height_m: Real", out) and re.search(r"id: Integer", out)
    readme = (FOOTPRINTS_DIR / "README.md").read_text(encoding="utf-8")
    assert f"`{stem}.geojson`" in readme and f"{count} building outlines" in readme
    assert "CC BY-SA 4.0" in readme


@pytest.mark.parametrize(("stem", "count"), SHIPPED.items())
def test_footprints_are_valid_buildings_inside_the_tile(stem: str, count: int) -> None:
    """Read with pyogrio (GDAL), independent of the loader: valid, counter-clockwise, inside
    the raster's footprint (its corners taken to lon/lat by pyproj), unique ids, no two
    overlapping, heights in the documented range, areas of buildings."""
    tile = ROOT / "sample_tiles" / f"{stem}.tif"
    if not tile.is_file():
        pytest.skip(f"{tile.name} missing")
    pyogrio = pytest.importorskip("pyogrio")
    meta, _, wkb, fields = pyogrio.raw.read(FOOTPRINTS_DIR / f"{stem}.geojson")
    assert CRS(meta["crs"]).to_epsg() == 4326 and len(wkb) == count
    polys = list(shapely.from_wkb(wkb))
    props = dict(zip(meta["fields"], fields, strict=True))
    with rasterio.open(tile) as src:
        b, crs = src.bounds, src.crs
    to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    corners = [to_ll.transform(x, y) for x, y in
               ((b.left, b.bottom), (b.right, b.bottom), (b.right, b.top), (b.left, b.top))]
    assert all(p.is_valid and p.exterior.is_ccw and not p.interiors for p in polys)
    assert all(Polygon(corners).contains(p) for p in polys)
    assert sorted(props["id"]) == list(range(1, count + 1))
    assert set(props["kind"]) == {"building"}
    h, (lo, hi) = np.asarray(props["height_m"], dtype=np.float64), _heights_rule(stem)
    assert h.min() >= lo and h.max() <= hi
    assert not any(polys[i].intersection(polys[j]).area > 0
                   for i in range(len(polys)) for j in range(i + 1, len(polys)))
    # Houses, sheds, blocks and halls: 25 to 20,000 m^2 (geodesic areas on the ellipsoid).
    geod = Geod(ellps="WGS84")
    areas = np.array([abs(geod.geometry_area_perimeter(p)[0]) for p in polys])
    assert areas.min() > 25 and areas.max() < 20_000


@pytest.mark.parametrize("stem", SHIPPED)
def test_footprints_file_is_rewritten_from_its_vertex_table(stem: str, tmp_path: Path) -> None:
    """``scripts/make_footprints.py`` turns the hand-digitized pixel vertices into the shipped
    file byte for byte (so the file and its documented source agree)."""
    tile = ROOT / "sample_tiles" / f"{stem}.tif"
    if not tile.is_file():
        pytest.skip(f"{tile.name} missing")
    out = tmp_path / "fp.geojson"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_footprints.py"), str(tile),
                    "--out", str(out)], check=True, capture_output=True)
    assert out.read_bytes() == (FOOTPRINTS_DIR / f"{stem}.geojson").read_bytes()


def test_multispectral_twins_share_the_panchromatic_footprints() -> None:
    for k in "ac":
        assert footprints_path(f"rotterdam_rgbn_1m_{k}") == \
            FOOTPRINTS_DIR / f"rotterdam_pan_0p5m_{k}.geojson"
    assert footprints_path("rotterdam_rgbn_1m_b") is None  # Rotterdam b has no footprints


def test_load_footprints_in_utm_keeps_areas_and_winding() -> None:
    fp = load_footprints(GEOJSON, UTM11)
    assert len(fp) == N_FOOTPRINTS and fp.crs == UTM11
    fc = json.loads(GEOJSON.read_text(encoding="utf-8"))
    geod = Geod(ellps="WGS84")
    want = np.array([abs(geod.geometry_area_perimeter(shape(f["geometry"]))[0])
                     for f in fc["features"]])
    # UTM 11N's point scale at the tile (1.77 deg east of its central meridian, -117 deg):
    # k = 0.9996 (1 + (dlon cos(lat))^2 / 2) to 1e-6; areas scale by k^2.
    lon, lat = np.radians(-115.2320526 + 117.0), np.radians(36.1405827)
    k = 0.9996 * (1 + (lon * np.cos(lat)) ** 2 / 2)
    np.testing.assert_allclose(fp.areas(), want * k ** 2, rtol=1e-5)
    # Feature 5 is a 61 x 35 pixel rectangle: its UTM sides are 61 x 2.7e-6 deg of longitude
    # and 35 x 2.7e-6 deg of latitude at 36.141 N.
    i = [f["properties"]["id"] for f in fc["features"]].index(5)
    p = fp.polygons[i]
    sides = np.hypot(*np.diff(np.vstack([p, p[:1]]), axis=0).T)
    lat = np.radians(36.1414)
    m_lon = np.radians(2.7e-6) * 6378137 * np.cos(lat) / np.sqrt(1 - 0.00669438 * np.sin(lat) ** 2)
    m_lat = np.radians(2.7e-6) * 6378137 * (1 - 0.00669438) / (
        1 - 0.00669438 * np.sin(lat) ** 2) ** 1.5
    np.testing.assert_allclose(sorted(sides), sorted([61 * m_lon, 61 * m_lon, 35 * m_lat,
                                                      35 * m_lat]), rtol=1e-3)
    assert footprints_path("las_vegas_pan_0p3m_wgs84") == GEOJSON
    assert footprints_path("nebraska_albers_30m_int16") is None


@pytest.mark.parametrize(("edit", "match"), [
    (lambda f: f["properties"].pop("height_m"), "height_m"),
    (lambda f: f["properties"].update(id="a"), "'id'"),
    (lambda f: f["geometry"]["coordinates"].append(f["geometry"]["coordinates"][0]), "holes"),
    (lambda f: f.update(geometry={"type": "Point", "coordinates": [0, 0]}), "Polygon"),
])
def test_bad_footprints_file_names_file_and_feature(tmp_path: Path, edit, match) -> None:
    fc = json.loads(GEOJSON.read_text(encoding="utf-8"))
    edit(fc["features"][3])
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps(fc), encoding="utf-8")
    with pytest.raises(ConfigError, match=match) as e:
        load_footprints(bad, UTM11)
    assert str(bad) in str(e.value)


def test_l_shaped_prism_clicked_on_its_roof_and_notch_shows_ground() -> None:
    """An L (two 20 x 6 m arms) whose centroid lies outside it, in the notch: it is clicked
    at its pole of inaccessibility, in the arms' shared corner square; at nadir the photo shows the
    roof there and the ground in the notch, and the roof is visible and clickable."""
    x0, y0 = 500_000.0, 4_000_000.0
    ell = np.array([[0, 0], [20, 0], [20, 6], [6, 6], [6, 20], [0, 20]], float)
    ell += np.array([x0, y0])
    assert not is_convex(ell) and is_convex(ell[[0, 1, 2, 5]])
    st = Structures.from_polygons([ell], [6.0], "building")
    # The centroid, (7.12, 7.12) m from the corner (area 204 m^2: 120 at x = 10, 84 at x = 3),
    # lies in the notch; the pole of inaccessibility is (t, t), equally far from the outer
    # walls (t) and the inner corner (6, 6) (sqrt(2) (6 - t)): t = 6 sqrt(2) / (1 + sqrt(2)).
    t = 6 * np.sqrt(2) / (1 + np.sqrt(2))
    np.testing.assert_allclose(st.points[0], [x0 + t, y0 + t], rtol=0, atol=0.02)
    n, g = 120, 0.5
    img = np.full((n, n, 3), 110, np.uint8)
    scene = Scene("ell", img, np.ones((n, n), bool), (g, 0.0, x0 - 20, 0.0, -g, y0 + 40),
                  UTM11)
    cam = Camera(x0 + 10, y0 + 10, 80.0, 0.0, 0.0, 60.0, 320, 320)
    view = render_view(scene, cam, st, 90.0)
    uv = lambda x, y, z: cam.project(np.array([[x0 + x, y0 + y, z]]))[0][0]  # noqa: E731
    for (x, y), label in (((3, 3), 0), ((3, 17), 0), ((17, 3), 0), ((13, 13), -1)):
        u, v = uv(x, y, 6.0)
        assert view.labels[int(v), int(u)] == label, (x, y)
    assert is_visible(view, cam, st, 0, 0.95)


@pytest.mark.parametrize("tower_y, cam_xy, heading, near_by_distance", [
    ((30.0, 40.0), (-40.0, -40.0), 30.0, 0),  # the L's click point nearer the camera
    ((-20.0, -10.0), (-50.0, -40.0), 50.0, 1),  # the tower's
])
def test_l_shaped_prism_in_the_draw_order_by_its_convex_hull(
        tower_y: tuple[float, float], cam_xy: tuple[float, float], heading: float,
        near_by_distance: int) -> None:
    """An L (a 8 x 70 m arm running north, a 16 x 8 m foot east at its south end; 9 m high)
    and a 25 m tower west of the arm, seen from the south-west. The line x = cx + 1 (the L's
    west wall) separates them with the camera on the tower's side, so the tower hides part of
    the L. First case: the L's click point is nearer the camera (distance order alone would
    draw the L last). Second case: the tower's is, and the L's first edge (listed from the
    foot's east wall) with the whole tower outside it is the notch's inner wall, y = cy - 22,
    which does not separate them (the arm lies on both sides) and has the camera on the L's
    side: the L's outline itself would wrongly draw the L last; its convex hull must stand
    for it. Every pixel shows what the ray meets first (the L cast as its two convex
    parts)."""
    cx, cy = X0 + 60.0, Y0 + 60.0
    at = np.array([cx, cy])
    ell = np.array([[25, -30], [25, -22], [9, -22], [9, 40], [1, 40], [1, -30]], float) + at
    arm = np.array([[1, -30], [9, -30], [9, 40], [1, 40]], float) + at
    foot = np.array([[9, -30], [25, -30], [25, -22], [9, -22]], float) + at
    y1, y2 = tower_y
    tower = np.array([[-14, y1], [-1, y1], [-1, y2], [-14, y2]], float) + at
    scene, _ = _town([(arm, 9.0, 230), (foot, 9.0, 230), (tower, 25.0, 60)])
    st = Structures.from_polygons([ell, tower], [9.0, 25.0], "building")
    assert not is_convex(ell)
    cam = Camera(cx + cam_xy[0], cy + cam_xy[1], 60.0, heading, 35.0, 70.0, 640, 480)
    dist = np.hypot(*(st.points - [cam.x, cam.y]).T)
    assert dist[near_by_distance] < dist[1 - near_by_distance] - 15.0
    view = render_view(scene, cam, st, 0.0)
    parts = Structures.from_polygons([arm, foot, tower], [9.0, 9.0, 25.0], "building")
    truth = np.array([-1, 0, 0, 1])[_ray_cast(cam, view, parts) + 1]
    alone = np.array([-1, 0, 0, -1])[_ray_cast(cam, view, parts.subset(np.arange(3) < 2)) + 1]
    assert ((alone == 0) & (truth == 1)).sum() > 500  # the L behind the tower
    shown = np.where(view.labels >= 0, view.labels // 2, -1)
    assert (shown != truth).sum() <= 3


@pytest.fixture(scope="module")
def lv_world() -> tuple[World, SynthConfig]:
    if not TILE.is_file():
        pytest.skip("Las Vegas tile missing")
    cfg = SynthConfig.parallax(targets=(2, 6), click_sigma_px=0.0, effects=FLAT)
    scene = scene_from_raster(TILE, gsd=cfg.render_gsd)
    return build_worlds([scene], cfg, augment=False)[0], cfg


def test_las_vegas_world_uses_the_footprints_and_keeps_blobs_flat(
        lv_world: tuple[World, SynthConfig]) -> None:
    world, cfg = lv_world
    st = world.structures
    known = footprint_structures(world.scene, cfg.min_object_m2)
    assert known is not None and len(known) == 35  # the footprints of >= 150 m^2
    raised = st.heights > 0
    assert raised.sum() == 35 and (st.kinds[raised] == 1).all() and (st.kinds[~raised] == 0).all()
    for a, b in zip([f for f, r in zip(st.footprints, raised, strict=True) if r],
                    known.footprints, strict=True):
        np.testing.assert_array_equal(a, b)
    # Flat blobs overlapping a footprint's envelope (its roof found again) are dropped.
    for box in st.boxes[~raised]:
        assert not any(min(box[2], k[2]) > max(box[0], k[0]) and
                       min(box[3], k[3]) > max(box[1], k[1]) for k in known.boxes)


def test_las_vegas_parallax_boxes_are_footprint_envelopes_and_clicks_hit_roofs(
        lv_world: tuple[World, SynthConfig]) -> None:
    world, cfg = lv_world
    st = world.structures
    n_buildings = 0
    for k in range(4):
        s = render_sample(world, np.random.default_rng([9, k]), cfg, f"lv{k}")
        view = render_view(world.scene, s.camera, st, world.sun_azimuth)
        a, _, c, _, e, f = s.transform
        for click, gxy, z, box, kind in zip(s.clicks, s.ground, s.heights, s.boxes, s.kinds,
                                            strict=True):
            i = int(np.flatnonzero((st.points == gxy).all(axis=1))[0])
            fp = st.footprints[i]
            want = [(fp[:, 0].min() - c) / a, (fp[:, 1].max() - f) / e,
                    (fp[:, 0].max() - c) / a, (fp[:, 1].min() - f) / e]
            np.testing.assert_allclose(box, want, rtol=0, atol=1e-6)
            if kind != "building":
                continue
            n_buildings += 1
            # Back-projected onto the roof plane, the click lies inside the footprint ...
            xy = s.camera.photo_to_plane(click[None], z)[0]
            assert Polygon(fp).contains(Point(xy))
            # ... and the photo pixel it falls on shows that building's roof.
            assert view.labels[int(click[1]), int(click[0])] == 2 * i
    assert n_buildings >= 6


@needs_tile
def test_default_output_ignores_the_footprints() -> None:
    """Without prisms the Las Vegas world is made of flat blobs exactly as before the
    footprints existed, and renders the same bytes as a world built without them."""
    cfg = SynthConfig(targets=(2, 6))
    scene = scene_from_raster(TILE, gsd=cfg.render_gsd)
    world = build_worlds([scene], cfg, augment=False)[0]
    ref = downsample(scene, 2)
    objects = find_objects(ref, object_gsd=cfg.gsd, min_area_m2=cfg.min_object_m2)
    blobs = Structures.from_objects(objects)
    np.testing.assert_array_equal(world.structures.points, blobs.points)
    np.testing.assert_array_equal(world.structures.boxes, blobs.boxes)
    assert (world.structures.heights == 0).all()
    plain = World(scene, ref, objects, blobs, world.sun_azimuth)
    for k in range(2):
        a = render_sample(world, np.random.default_rng([1, k]), cfg, "a")
        b = render_sample(plain, np.random.default_rng([1, k]), cfg, "a")
        assert a.jpeg == b.jpeg and np.array_equal(a.boxes, b.boxes)
        assert np.array_equal(a.clicks, b.clicks) and a.heading == b.heading
