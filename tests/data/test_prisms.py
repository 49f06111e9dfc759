"""Building prisms with parallax in the data engine: the 3-D camera, rendered walls, roofs and
occlusion, targets (footprint boxes, roof clicks), procedural towns, EXIF GPS, the
held-out-city split.

Scenes are built in code: a uniform grey ground (110) with buildings of known footprint,
height and roof grey, so that what each photo pixel shows can be checked exactly.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import shapely
from PIL import Image
from pyproj import CRS
from shapely.geometry import Polygon

from geomogeo.cli import main
from geomogeo.data.manifest import read_manifest
from geomogeo.data.synth.camera import Camera, CameraRanges, sample_camera
from geomogeo.data.synth.engine import (
    DEFAULT_TILES,
    SynthConfig,
    World,
    build_worlds,
    generate,
    gps_exif,
    tile_splits,
    write_samples,
)
from geomogeo.data.synth.procedural import (
    BUILDING_HEIGHT_M,
    HOUSE_HEIGHT_M,
    procedural_town,
    suburb_town,
)
from geomogeo.data.synth.render import PhotoEffects, View, is_visible, render_view
from geomogeo.data.synth.scene import Scene, downsample, find_objects
from geomogeo.data.synth.structures import KINDS, Structures, rectangle
from geomogeo.geo.georef import to_lonlat
from geomogeo.geo.photo import load_photo

FLAT = PhotoEffects(
    exposure=(1, 1), contrast=(1, 1), colour_cast=(1, 1), haze=(0, 0), gamma=(1, 1),
    blur_sigma=(0, 0), noise_sigma=(0, 0), jpeg_quality=(95, 95),
)
X0, Y0 = 593_000.0, 5_750_000.0  # UTM 31N metres (a Rotterdam-like origin)
BG = 110
ROOT = Path(__file__).resolve().parents[2]


def _town(buildings: list[tuple[np.ndarray, float, int]], n: int = 240, gsd: float = 0.5
          ) -> tuple[Scene, Structures]:
    """An n x n scene of ``gsd`` m with its top-left corner at (X0, Y0 + n gsd), grey BG, and
    buildings given as (footprint (k, 2) map metres CCW, height m, roof grey): the scene
    pixels whose centres lie inside a footprint take its grey."""
    top = Y0 + n * gsd
    img = np.full((n, n, 3), BG, np.uint8)
    cc, rr = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
    x, y = X0 + gsd * cc, top - gsd * rr
    for fp, _, grey in buildings:
        inside = np.ones((n, n), bool)
        for j in range(len(fp)):
            a, b = fp[j], fp[(j + 1) % len(fp)]
            inside &= (b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0]) >= 0
        img[inside] = grey
    scene = Scene("town", img, np.ones((n, n), bool), (gsd, 0.0, X0, 0.0, -gsd, top),
                  "EPSG:32631")
    st = Structures.from_polygons([b[0] for b in buildings], [b[1] for b in buildings],
                                  "building")
    return scene, st


def _world(scene: Scene, st: Structures, cfg: SynthConfig, sun: float = 0.0) -> World:
    ref = downsample(scene, round(cfg.gsd / cfg.render_gsd))
    return World(scene, ref, find_objects(ref), st, sun)


def _cfg(**kw: object) -> SynthConfig:
    base: dict[str, object] = dict(prisms=True, kinds=(("building", 1.0),), click_sigma_px=0.0,
                                   effects=FLAT, min_object_m2=60.0, targets=(1, 8))
    return SynthConfig(**{**base, **kw})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# 1. The 3-D camera


def _cams() -> list[Camera]:
    rng = np.random.default_rng(4)
    cams = [sample_camera(rng, rng.uniform(-300, 300), rng.uniform(-300, 300),
                          CameraRanges(pitch=(0.0, 45.0))) for _ in range(12)]
    return [*cams, Camera(3.0, -2.0, 90.0, 0.0, 0.0, 70.0, 640, 480)]


def test_project_at_z0_is_the_ground_homography() -> None:
    rng = np.random.default_rng(0)
    for cam in _cams():
        g = cam.photo_to_ground(rng.uniform([0, 0], [cam.width, cam.height], size=(50, 2)))
        want, wf = cam.ground_to_photo(g)
        got, gf = cam.project(np.column_stack([g, np.zeros(len(g))]))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(gf, wf)
        np.testing.assert_array_equal(cam.homography(0.0), cam.homography())


def test_project_is_the_pinhole_model() -> None:
    """Independently: camera coordinates R (X - C), then u = f x/z + W/2, v = f y/z + H/2."""
    rng = np.random.default_rng(1)
    for cam in _cams():
        if cam.k1 != 0:
            cam = Camera(cam.x, cam.y, cam.altitude, cam.yaw, cam.pitch, cam.hfov, cam.width,
                         cam.height)
        g = cam.photo_to_ground(rng.uniform([0, 0], [cam.width, cam.height], size=(40, 2)))
        xyz = np.column_stack([g, rng.uniform(0, 40, len(g))])
        c = (xyz - [cam.x, cam.y, cam.altitude]) @ cam.rotation().T
        want = cam.focal * c[:, :2] / c[:, 2:] + [cam.width / 2, cam.height / 2]
        got, front = cam.project(xyz)
        assert front.all()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_photo_to_plane_inverts_project_with_distortion() -> None:
    rng = np.random.default_rng(2)
    for cam in _cams():
        uv = rng.uniform([0, 0], [cam.width, cam.height], size=(60, 2))
        for z in (0.0, 3.0, 29.5):
            xy = cam.photo_to_plane(uv, z)
            back, front = cam.project(np.column_stack([xy, np.full(len(xy), z)]))
            assert front.all()
            np.testing.assert_allclose(back, uv, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(cam.photo_to_plane(uv, 0.0), cam.photo_to_ground(uv))
    # A plane above the camera is never hit.
    cam = _cams()[-1]
    assert np.isnan(cam.photo_to_plane(np.array([[320.0, 240.0]]), 95.0)).all()


def assert_top_displaced(view: View, cam: Camera, centre: tuple[float, float], h: float,
                         alt: float) -> tuple[np.ndarray, np.ndarray]:
    """Structure 0's top (texture 230) seen by a nadir camera at ``alt`` m: only its pixels
    have that texture, and its image centroid, projected to the ground, is displaced from its
    footprint ``centre`` away from the camera by h tan(off-nadir) within 0.05 m. Returns the
    top's pixel columns and rows."""
    top = view.labels == 0
    grey = np.all(view.image == 230, axis=2)  # the top's texture (bilinear: blended edges)
    assert not (grey & ~top).any() and (grey & top).sum() > 0.9 * top.sum()
    v, u = np.nonzero(top)
    # At nadir the top plane is parallel to the image plane: centroids correspond exactly.
    g = cam.photo_to_ground(np.array([[u.mean() + 0.5, v.mean() + 0.5]]))[0]
    off = np.asarray(centre) - [cam.x, cam.y]
    d = math.hypot(*off)
    theta = math.atan2(d, alt - h)
    shift = g - centre
    np.testing.assert_allclose(np.hypot(*shift), h * math.tan(theta), rtol=0, atol=0.05)
    np.testing.assert_allclose(shift, h * math.tan(theta) * off / d, rtol=0, atol=0.05)
    return u, v


def test_roof_displacement_is_height_times_tan_off_nadir() -> None:
    """Nadir camera 80 m up, a 12 m tall 16 x 10 m building whose centre is 30 m east and
    20 m north: the photographed roof, back-projected onto the ground, lies h tan(theta)
    further out, theta the off-nadir angle of the line of sight to the roof."""
    h, alt, dx, dy = 12.0, 80.0, 30.0, 20.0
    cx, cy = X0 + 60.0, Y0 + 60.0
    fp = rectangle(cx + dx, cy + dy, 16.0, 10.0, 0.0)
    scene, st = _town([(fp, h, 230)])
    cam = Camera(cx, cy, alt, 0.0, 0.0, 70.0, 640, 480)
    view = render_view(scene, cam, st, 0.0)
    u, v = assert_top_displaced(view, cam, (cx + dx, cy + dy), h, alt)
    roof = view.labels == 0
    # The roof's pixels, back-projected at the roof's height, fall on the footprint.
    xy = cam.photo_to_plane(np.column_stack([u + 0.5, v + 0.5]), h)
    assert (np.abs(xy - [cx + dx, cy + dy]) <= [8.0 + 1e-9, 5.0 + 1e-9]).all()
    assert abs(roof.sum() * (alt - h) ** 2 / cam.focal ** 2 - 160.0) < 4.0  # area, m^2


def test_walls_show_in_oblique_photos_not_at_nadir() -> None:
    """Roof 230, sun in the north: the two walls a camera in the south sees face away from
    the sun (outward normals south-south-east and west-south-west), shaded 0.35: grey 80."""
    cx, cy = X0 + 60.0, Y0 + 60.0
    scene, st = _town([(rectangle(cx, cy, 14.0, 14.0, 0.3), 20.0, 230)])
    nadir = Camera(cx, cy, 90.0, 0.0, 0.0, 70.0, 640, 480)
    oblique = Camera(cx, cy - 70.0, 90.0, 0.0, 35.0, 70.0, 640, 480)
    wall = round(230 * 0.35)
    for cam, visible in ((nadir, False), (oblique, True)):
        view = render_view(scene, cam, st, 0.0)
        walls = view.labels == 1
        grey = np.all(np.abs(view.image.astype(int) - wall) <= 1, axis=2)
        assert walls.any() == visible and grey.any() == visible
        if visible:
            assert walls.sum() > 1500
            assert (grey == walls).mean() > 0.999
    # At nadir the photo shows the whole roof, unshifted and undistorted by any wall.
    view = render_view(scene, nadir, st, 0.0)
    assert set(np.unique(view.labels)) == {-1, 0}


# --------------------------------------------------------------------------------------------
# 2. Targets


@pytest.fixture(scope="module")
def prism_town() -> tuple[Scene, Structures, list[int]]:
    """Nine rotated buildings 4-30 m high, distinct roof greys."""
    rng = np.random.default_rng(7)
    buildings, greys = [], [20, 40, 60, 150, 175, 200, 225, 250, 90]
    for i in range(3):
        for j in range(3):
            fp = rectangle(X0 + 20 + 40 * j + rng.uniform(-3, 3),
                           Y0 + 20 + 40 * i + rng.uniform(-3, 3),
                           rng.uniform(12, 20), rng.uniform(10, 16), rng.uniform(0, np.pi))
            buildings.append((fp, float(rng.uniform(4, 30)), greys[3 * i + j]))
    scene, st = _town(buildings)
    return scene, st, greys


def test_roof_clicks_land_on_the_roof(prism_town: tuple[Scene, Structures, list[int]]) -> None:
    scene, st, greys = prism_town
    cfg = _cfg(camera=CameraRanges(altitude=(60.0, 90.0), pitch=(10.0, 35.0), k1=(0.0, 0.0)),
               reference_size=128)
    world = _world(scene, st, cfg)
    samples = generate([world], 10, seed=1, cfg=cfg, quiet=True)
    n = 0
    for s in samples:
        photo = s.photo()
        assert all(k == "building" for k in s.kinds)
        a, _, c, _, e, f = s.transform
        for click, gxy, z, box in zip(s.clicks, s.ground, s.heights, s.boxes, strict=True):
            i = int(np.argmin(np.abs(st.points - gxy).sum(axis=1)))
            assert np.array_equal(st.points[i], gxy) and st.heights[i] == z > 0
            # The photo shows this roof's grey at the click (JPEG 95).
            assert np.abs(photo[int(click[1]), int(click[0])].astype(int) - greys[i]).max() <= 4
            # Un-projected at the roof height, the click is the roof centroid (inside).
            np.testing.assert_allclose(s.camera.photo_to_plane(click[None], z)[0], gxy,
                                       rtol=0, atol=1e-6)
            # The box is the footprint's envelope in reference pixels (edges).
            fp = st.footprints[i]
            want = [(fp[:, 0].min() - c) / a, (fp[:, 1].max() - f) / e,
                    (fp[:, 0].max() - c) / a, (fp[:, 1].min() - f) / e]
            np.testing.assert_allclose(box, want, rtol=0, atol=1e-6)
            n += 1
    assert n >= 12


def test_occluded_roofs_are_never_clicked() -> None:
    """A 3 m house 25 m north of a 30 m tower; a camera south of both looking north sees the
    tower hide the house's roof: the house is no target of that view; seen from the north,
    both are."""
    cx, cy = X0 + 60.0, Y0 + 50.0
    tower = rectangle(cx, cy, 14.0, 10.0, 0.0)
    house = rectangle(cx, cy + 22.0, 14.0, 10.0, 0.0)
    scene, st = _town([(tower, 30.0, 230), (house, 3.0, 40)])
    # From the south the line of sight to any point of the house's roof passes through the
    # tower (e.g. to its far edge: at the tower's north wall it is 28.3 m up, under 30 m).
    south = Camera(cx, cy - 40.0, 80.0, 0.0, 30.0, 70.0, 640, 480)
    north = Camera(cx, cy + 47.0, 80.0, 180.0, 30.0, 70.0, 640, 480)
    for cam, house_seen in ((south, False), (north, True)):
        view = render_view(scene, cam, st, 0.0)
        assert is_visible(view, cam, st, 0)
        assert is_visible(view, cam, st, 1) == house_seen
        uv, _ = cam.project(np.array([[*st.points[1], 3.0]]))
        px = view.image[int(uv[0, 1]), int(uv[0, 0])]
        assert (px[0] == 40) == house_seen  # the tower's wall or roof hides it from the south
    # Every clicked roof of many random views is visible (checked on the photo itself).
    cfg = _cfg(camera=CameraRanges(altitude=(60.0, 70.0), pitch=(25.0, 35.0), k1=(0.0, 0.0)),
               reference_size=128, max_tries=200)
    world = _world(scene, st, cfg)
    hidden = 0
    for s in generate([world], 24, seed=3, cfg=cfg, quiet=True):
        photo = s.photo()
        view = render_view(scene, s.camera, st, 0.0)
        for click, gxy in zip(s.clicks, s.ground, strict=True):
            grey = 230 if gxy[1] < cy + 10 else 40
            assert np.abs(photo[int(click[1]), int(click[0])].astype(int) - grey).max() <= 4
        # Views in which the house is inside the photo but its roof hidden.
        uv, _ = s.camera.project(np.array([[*st.points[1], 3.0]]))
        inside = (uv[0] >= 0).all() and uv[0, 0] < s.camera.width and uv[0, 1] < s.camera.height
        if inside and view.labels[int(uv[0, 1]), int(uv[0, 0])] != 2:
            hidden += 1
            assert not (s.heights == 3.0).any()
    assert hidden >= 1


def test_parallax_samples_are_deterministic_and_parallel(
        prism_town: tuple[Scene, Structures, list[int]]) -> None:
    scene, st, _ = prism_town
    cfg = SynthConfig.parallax(reference_size=128, min_object_m2=60.0)
    world = _world(scene, st, cfg)
    one = generate([world], 4, seed=2, cfg=cfg, quiet=True)
    par = generate([world], 4, seed=2, cfg=cfg, quiet=True, workers=2)
    for a, b in zip(one, par, strict=True):
        assert a.jpeg == b.jpeg and np.array_equal(a.clicks, b.clicks)
        assert np.array_equal(a.boxes, b.boxes) and a.heading == b.heading
        assert a.kinds == b.kinds and np.array_equal(a.heights, b.heights)


def test_default_config_keeps_flat_blob_targets(
        prism_town: tuple[Scene, Structures, list[int]]) -> None:
    scene, _, _ = prism_town
    cfg = SynthConfig(min_object_m2=60.0)
    world = World.build(scene, cfg)
    assert (world.structures.heights == 0).all() and (world.structures.kinds == 0).all()
    np.testing.assert_array_equal(world.structures.points, world.objects.centroids)
    np.testing.assert_array_equal(world.structures.boxes, world.objects.boxes)
    with pytest.raises(ValueError, match="kinds"):
        SynthConfig(kinds=(("tree", 1.0),))
    with pytest.raises(ValueError, match="kinds"):
        SynthConfig(kinds=(("blob", 0.0),))


def test_real_tile_blobs_extruded_only_when_bright_and_compact() -> None:
    """Bright compact roofs, axis-aligned or at 45 degrees, are extruded on their convex hull;
    a dark one stays a flat blob, and so does everything below the solidity threshold."""
    c = (X0 + 60.0, Y0 + 60.0)
    scene, town = _town([(rectangle(c[0] - 30, c[1] + 30, 16, 12, 0.0), 0.0, 230),
                         (rectangle(c[0] + 30, c[1] + 30, 14, 14, 0.0), 0.0, 20),
                         (rectangle(c[0] - 30, c[1] - 30, 18, 18, np.pi / 4), 0.0, 230)])
    cfg = _cfg(kinds=(("blob", 1.0), ("building", 1.0)))
    world = World.build(scene, cfg)
    obj, st = world.objects, world.structures
    raised = st.heights > 0
    np.testing.assert_array_equal(raised, obj.bright & (obj.solidity >= 0.8))
    # The blob of each roof (same envelope within 1.5 m; the others are dark halos).
    envelopes = town.boxes
    which = [int(np.argmin(np.abs(obj.boxes - b).max(axis=1))) for b in envelopes]
    assert all(np.abs(obj.boxes[w] - b).max() <= 1.5 for w, b in zip(which, envelopes,
                                                                      strict=True))
    np.testing.assert_array_equal(raised[which], [True, False, True])
    assert raised.sum() == 2
    assert ((st.heights[raised] >= 3.0) & (st.heights[raised] <= 10.0)).all()
    np.testing.assert_array_equal(st.kinds, np.where(raised, KINDS.index("building"), 0))
    # A raised blob's footprint is its hull, whose envelope is the blob's box: for the
    # 45-degree square, within 1.5 m of the square and of nearly its area (corners rounded
    # by the band-pass filter); a flat blob's footprint is its box.
    i = which[2]
    hull = st.footprints[i]
    np.testing.assert_allclose(st.boxes[i], obj.boxes[i], rtol=0, atol=1e-9)
    r = np.sqrt(0.5)
    local = (hull - [c[0] - 30, c[1] - 30]) @ np.array([[r, -r], [r, r]])
    assert (np.abs(local) <= 9.0 + 1.5).all()
    x, y = hull[:, 0], hull[:, 1]
    area = abs((x * np.roll(y, -1) - np.roll(x, -1) * y).sum()) / 2
    assert 0.85 * 324 < area < 1.2 * 324  # the hull of 1 m pixel corners: a ring outside
    k = which[1]
    x1, y1, x2, y2 = obj.boxes[k]
    np.testing.assert_array_equal(st.footprints[k], [[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    # Deterministic per scene name.
    np.testing.assert_array_equal(World.build(scene, cfg).structures.heights, st.heights)
    strict = World.build(scene, _cfg(blob_building_solidity=1.01))
    assert (strict.structures.heights == 0).all()


# --------------------------------------------------------------------------------------------
# 3. Procedural towns


def test_procedural_town_structures() -> None:
    scene, st = procedural_town(np.random.default_rng(3), size_m=200.0)
    size = scene.valid.shape[0] * scene.gsd
    b = st.boxes
    assert (b[:, :2] >= 0).all() and (b[:, 2:] <= size).all()
    kinds = np.bincount(st.kinds, minlength=3)
    assert kinds[0] == 0 and kinds[1] >= 3 and kinds[2] >= 8
    build = st.kinds == 1
    lo, hi = BUILDING_HEIGHT_M
    assert ((st.heights[build] >= lo) & (st.heights[build] <= hi)).all()
    assert (st.heights[~build] == 0).all()
    # Footprints are exact rectangles: 4 right angles, counter-clockwise.
    for fp in st.footprints:
        e = np.roll(fp, -1, axis=0) - fp
        assert abs(e[:, 0] @ np.roll(e, -1, axis=0)[:, 0]
                   + e[:, 1] @ np.roll(e, -1, axis=0)[:, 1]) < 1e-6
        assert (e[:, 0] * np.roll(e, -1, axis=0)[:, 1]
                - e[:, 1] * np.roll(e, -1, axis=0)[:, 0] > 0).all()
    # A road piece is road: most of its pixels share one grey (but for shadows and trees).
    cc, rr = np.meshgrid(np.arange(scene.valid.shape[1]) + 0.5,
                         np.arange(scene.valid.shape[0]) + 0.5)
    x, y = scene.pixel_to_map(cc, rr)
    lum = scene.image.astype(float).mean(axis=2)
    for fp in [f for f, k in zip(st.footprints, st.kinds, strict=True) if k == 2][:6]:
        c = fp.mean(axis=0)
        inner = c + 0.8 * (fp - c)
        m = np.ones(lum.shape, bool)
        for j in range(4):
            a, bb = inner[j], inner[(j + 1) % 4]
            m &= (bb[0] - a[0]) * (y - a[1]) - (bb[1] - a[1]) * (x - a[0]) >= 0
        vals = lum[m]
        assert len(vals) > 100
        assert (np.abs(vals - np.median(vals)) < 15).mean() > 0.6  # shadows, trees
    # The town image does not depend on whether its structures are used (heights drawn last;
    # without the bridge kind, which draws another kind of town: see test_bridges.py).
    w = build_worlds([], SynthConfig(), augment=False, procedural=1, seed=5)[0]
    no_bridges = (("blob", 1.0), ("building", 3.0), ("road", 1.0))
    wp = build_worlds([], SynthConfig.parallax(kinds=no_bridges), augment=False, procedural=1,
                      seed=5)[0]
    np.testing.assert_array_equal(w.scene.image, wp.scene.image)
    assert (wp.structures.heights > 0).sum() >= 3


def test_procedural_parallax_samples_show_their_targets() -> None:
    cfg = SynthConfig.parallax(click_sigma_px=0.0, effects=FLAT, reference_size=128,
                               min_object_m2=60.0)
    world = build_worlds([], cfg, augment=False, procedural=1, seed=9)[0]
    st = world.structures
    seen: set[str] = set()
    for s in generate([world], 8, seed=4, cfg=cfg, quiet=True):
        view = render_view(world.scene, s.camera, st, world.sun_azimuth)
        np.testing.assert_array_equal(np.asarray(s.photo()).shape[:2], view.labels.shape)
        for click, gxy, z, kind in zip(s.clicks, s.ground, s.heights, s.kinds, strict=True):
            i = int(np.argmin(np.abs(st.points - gxy).sum(axis=1)))
            assert KINDS[st.kinds[i]] == kind
            assert view.labels[int(click[1]), int(click[0])] == (2 * i if z > 0 else -1)
            seen.add(kind)
    assert {"building", "road"} <= seen


def test_suburb_town_houses_are_exact_l_and_t_shapes() -> None:
    scene, st = suburb_town(np.random.default_rng(3), size_m=200.0)
    again, st2 = suburb_town(np.random.default_rng(3), size_m=200.0)
    np.testing.assert_array_equal(st.heights, st2.heights)
    np.testing.assert_array_equal(scene.image, again.image)  # deterministic by stream
    size = scene.valid.shape[0] * scene.gsd
    assert (st.boxes[:, :2] >= 0).all() and (st.boxes[:, 2:] <= size).all()
    build = st.kinds == 1
    assert build.sum() >= 8 and (st.kinds == 2).sum() >= 8 and (st.kinds == 0).sum() == 0
    lo, hi = HOUSE_HEIGHT_M
    assert ((st.heights[build] >= lo) & (st.heights[build] <= hi)).all()
    shapes = [Polygon(fp) for fp, b in zip(st.footprints, build, strict=True) if b]
    # Every outline is a simple counter-clockwise polygon whose corners are all right angles
    # (90 or 270 degrees): rectangles, and L or T shapes of a house and its wing.
    for poly, fp in zip(shapes, [f for f, b in zip(st.footprints, build, strict=True) if b],
                        strict=True):
        assert poly.is_valid and poly.exterior.is_ccw
        e = np.roll(fp, -1, axis=0) - fp
        e /= np.linalg.norm(e, axis=1)[:, None]
        assert np.abs((e * np.roll(e, -1, axis=0)).sum(axis=1)).max() < 1e-9
    n_vertices = np.array([len(f) for f, b in zip(st.footprints, build, strict=True) if b])
    assert set(n_vertices) <= {4, 6, 8} and (n_vertices > 4).sum() >= 3
    # Houses of 9-28 m (a wing adds at most 0.9 x 28 - 1 m on one side), none overlapping.
    sides = np.sqrt([p.minimum_rotated_rectangle.area for p in shapes])
    assert sides.min() >= 9 * 0.999 and sides.max() <= 2 * 28
    assert not any(shapes[i].intersection(shapes[j]).area > 1e-9
                   for i in range(len(shapes)) for j in range(i + 1, len(shapes)))
    # The roof shows where the footprint is: each house's pixels (centres inside its outline,
    # 1 m clear of the edge) differ from the ring 1-2 m outside it (lawn, driveway, shadow).
    cc, rr = np.meshgrid(np.arange(scene.valid.shape[1]) + 0.5,
                         np.arange(scene.valid.shape[0]) + 0.5)
    x, y = scene.pixel_to_map(cc, rr)
    pts = shapely.points(x.ravel(), y.ravel())
    lum = scene.image.astype(float).mean(axis=2).ravel()
    diff = []
    for poly in shapes[:10]:
        inner = shapely.contains(poly.buffer(-1.0), pts)
        ring = shapely.contains(poly.buffer(2.0), pts) & ~shapely.contains(poly.buffer(1.0), pts)
        diff.append(abs(np.median(lum[inner]) - np.median(lum[ring])))
    assert np.median(diff) > 10


def test_suburb_worlds_in_build_worlds_and_their_parallax_clicks_hit_roofs() -> None:
    cfg = SynthConfig.parallax(click_sigma_px=0.0, effects=FLAT, reference_size=128,
                               min_object_m2=60.0)
    worlds = build_worlds([], cfg, augment=False, procedural=1, suburbs=2, seed=9)
    assert [w.scene.name for w in worlds] == ["procedural-0", "suburb-0", "suburb-1"]
    world = worlds[1]
    st = world.structures
    hits = 0
    for s in generate([world], 8, seed=4, cfg=cfg, quiet=True):
        view = render_view(world.scene, s.camera, st, world.sun_azimuth)
        for click, gxy, z in zip(s.clicks, s.ground, s.heights, strict=True):
            i = int(np.argmin(np.abs(st.points - gxy).sum(axis=1)))
            assert view.labels[int(click[1]), int(click[0])] == (2 * i if z > 0 else -1)
            hits += len(st.footprints[i]) > 4 and z > 0  # an L-shaped roof, clicked
    assert hits >= 1


# --------------------------------------------------------------------------------------------
# 4. EXIF GPS, missing headings


def test_photos_carry_exif_gps_and_half_no_heading(
        tmp_path: Path, prism_town: tuple[Scene, Structures, list[int]]) -> None:
    scene, st, _ = prism_town
    cfg = SynthConfig.parallax(reference_size=128, min_object_m2=60.0,
                               camera=CameraRanges(altitude=(60.0, 80.0),
                                                   sizes=((256, 192),)))
    world = _world(scene, st, cfg)
    samples = generate([world], 30, seed=8, cfg=cfg, quiet=True)
    missing = sum(s.heading is None for s in samples)
    assert 8 <= missing <= 22
    records = write_samples(samples, tmp_path, "test")
    for r, s in zip(records, samples, strict=True):
        assert r.query.read_bytes() == s.jpeg
        assert r.meta["heading"] == s.heading and r.meta["kinds"] == list(s.kinds)
        gps = load_photo(r.query).gps
        assert gps is not None
        lon, lat = to_lonlat(*s.measured_xy, "EPSG:32631")
        assert abs(gps.lon - lon) < 1e-8 and abs(gps.lat - lat) < 1e-8
        if s.heading is None:
            assert gps.heading is None
        else:
            assert gps.heading_ref == "T" and abs(gps.heading - s.heading) <= 0.005
    # With an altitude (as the demo's photos carry), read back by load_photo.
    Image.new("RGB", (8, 8)).save(tmp_path / "alt.jpg",
                                  exif=gps_exif(-115.2, 36.1, None, altitude=87.25))
    gps = load_photo(tmp_path / "alt.jpg").gps
    assert gps is not None and gps.altitude == 87.25 and gps.heading is None
    assert abs(gps.lon + 115.2) < 1e-9 and abs(gps.lat - 36.1) < 1e-9
    # An independent reader: GDAL's JPEG driver.
    s = next(x for x in samples if x.heading is not None)
    out = subprocess.run(["gdalinfo", "-json", str(tmp_path / "queries" / f"{s.id}.jpg")],
                         capture_output=True, text=True, check=True).stdout
    md = json.loads(out)["metadata"][""]
    assert md["EXIF_GPSLatitudeRef"] == "N" and md["EXIF_GPSLongitudeRef"] == "E"
    d, m, sec = (float(v) for v in md["EXIF_GPSLatitude"].strip("()").split(") ("))
    lon, lat = to_lonlat(*s.measured_xy, "EPSG:32631")
    assert abs(d + m / 60 + sec / 3600 - lat) < 1e-7
    assert abs(float(md["EXIF_GPSImgDirection"].strip("()")) - s.heading) <= 0.005


# --------------------------------------------------------------------------------------------
# 5. The held-out city


def test_holdout_split_keeps_las_vegas_out_of_training_and_selection() -> None:
    assert tile_splits() is DEFAULT_TILES
    lv = tile_splits("las_vegas")
    names = {k: {n for n, _ in v} for k, v in lv.items()}
    assert names["test"] == {"las_vegas_pan_0p3m_wgs84.tif"}
    assert not any("las_vegas" in n for n in names["train"] | names["val"])
    assert names["val"] == {n for n, _ in DEFAULT_TILES["val"]}
    assert "las_vegas_pan_0p3m_wgs84.tif" in {n for n, _ in DEFAULT_TILES["train"]}
    with pytest.raises(ValueError, match="holdout"):
        tile_splits("paris")


def test_cli_renders_the_held_out_city(tmp_path: Path) -> None:
    if not (ROOT / "sample_tiles" / "las_vegas_pan_0p3m_wgs84.tif").is_file():
        pytest.skip("Las Vegas tile missing")
    rc = main(["--quiet", "synth", str(tmp_path), "--n", "2", "--split", "test",
               "--holdout", "las_vegas", "--parallax"])
    assert rc == 0
    recs = read_manifest(tmp_path / "manifest.jsonl")
    assert len(recs) == 2 and all(r.split == "test" for r in recs)
    for r in recs:
        assert r.meta["scene"] == "las_vegas_pan_0p3m_wgs84"
        assert r.georef is not None and r.georef.transform[0] == 1.0
        assert CRS.from_user_input(r.georef.crs).to_epsg() == 32611  # local UTM, 11N
        gps = load_photo(r.query).gps
        assert gps is not None and -115.4 < gps.lon < -115.0 and 36.0 < gps.lat < 36.4
