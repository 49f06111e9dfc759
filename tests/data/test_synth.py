"""The synthetic cross-view data engine: camera geometry, rendered samples, determinism,
scenes, and the manifest written from samples.

Most tests use small scenes built in code: a uniform grey ground with flat rectangles of
distinct grey levels, whose objects, clicks and boxes can be checked exactly.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pyproj import CRS

from geomogeo.data.manifest import read_manifest, write_manifest
from geomogeo.data.synth.camera import Camera, CameraRanges, sample_camera
from geomogeo.data.synth.engine import (
    Sample,
    SynthConfig,
    World,
    build_worlds,
    generate,
    render_sample,
    write_samples,
)
from geomogeo.data.synth.render import PhotoEffects, render_reference
from geomogeo.data.synth.scene import (
    Scene,
    dihedral,
    downsample,
    find_objects,
    load_scene,
    sample_bilinear,
    save_scene,
    scene_from_raster,
)

TILE = Path(__file__).resolve().parents[2] / "sample_tiles" / "rotterdam_pan_0p5m_c.tif"

#: Photometric effects that leave the rendered grey levels unchanged (but for JPEG at 95).
FLAT = PhotoEffects(
    exposure=(1, 1), contrast=(1, 1), colour_cast=(1, 1), haze=(0, 0), gamma=(1, 1),
    blur_sigma=(0, 0), noise_sigma=(0, 0), jpeg_quality=(95, 95),
)

# A UTM-like origin, so the geometry is exercised at real map coordinates.
X0, Y0 = 593_000.0, 5_750_000.0

BG = 110  # the ground's grey level
Rect = tuple[float, float, float, float, int]  # xmin, ymin, xmax, ymax (map m), grey level


def _scene(rects_px: list[tuple[int, int, int, int, int]], n: int = 240, gsd: float = 0.5,
           bg: int = BG, name: str = "blocks") -> tuple[Scene, list[Rect]]:
    """An n x n scene of ``gsd`` m (top-left corner at (X0, Y0 + n * gsd)), grey ``bg``, with
    flat rectangles given as (row, col, height, width, grey) in scene pixels; also returns the
    rectangles in map metres."""
    img = np.full((n, n, 3), bg, np.uint8)
    top = Y0 + n * gsd
    rects: list[Rect] = []
    for r1, c1, h, w, g in rects_px:
        img[r1:r1 + h, c1:c1 + w] = g
        rects.append((X0 + c1 * gsd, top - (r1 + h) * gsd, X0 + (c1 + w) * gsd, top - r1 * gsd,
                      g))
    scene = Scene(name, img, np.ones((n, n), bool), (gsd, 0.0, X0, 0.0, -gsd, top),
                  "EPSG:32631")
    return scene, rects


def _blocks(seed: int = 0, n: int = 240, cells: int = 4) -> tuple[Scene, list[Rect]]:
    """A cells x cells grid of rectangles (8-16 m sides) with distinct grey levels, well away
    from the background's 110."""
    rng = np.random.default_rng(seed)
    greys = rng.permutation(np.r_[np.arange(20, 80, 6), np.arange(150, 250, 6)])
    cell = n // cells
    rects_px = []
    for i in range(cells):
        for j in range(cells):
            h, w = (int(v) for v in rng.integers(16, 32, size=2))
            r1 = i * cell + int(rng.integers(4, cell - h - 3))
            c1 = j * cell + int(rng.integers(4, cell - w - 3))
            rects_px.append((r1, c1, h, w, int(greys[i * cells + j])))
    return _scene(rects_px, n=n)


@pytest.fixture(scope="module")
def blocks() -> tuple[Scene, list[Rect]]:
    return _blocks()


#: Small photos from lower altitudes, for tests that need many samples.
SMALL = CameraRanges(altitude=(50.0, 80.0), sizes=((256, 192), (256, 144)))


def _flat_cfg(**kw: object) -> SynthConfig:
    kw = {"min_object_m2": 60.0, **kw}
    return SynthConfig(click_sigma_px=0.0, effects=FLAT, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# 1. Camera geometry


def _cam(**kw: float) -> Camera:
    # Near the map origin: the exact checks (1e-9 px) need coordinates far below 1e6 m.
    base: dict[str, float] = dict(x=12.5, y=-7.25, altitude=80.0, yaw=0.0, pitch=0.0,
                                  hfov=70.0, width=640, height=480, k1=0.0)
    base.update(kw)
    return Camera(**base)  # type: ignore[arg-type]


def test_nadir_camera_projects_by_similar_triangles() -> None:
    cam = _cam()
    f, h = cam.focal, cam.altitude
    assert f == pytest.approx(320 / math.tan(math.radians(35)), rel=1e-15)
    d = np.array([-30.0, -7.5, 0.0, 0.25, 12.0, 41.0])
    east = np.column_stack([cam.x + d, np.full_like(d, cam.y)])
    uv, front = cam.ground_to_photo(east)
    assert front.all()
    np.testing.assert_allclose(uv[:, 0], 320 + f * d / h, rtol=0, atol=1e-9)
    np.testing.assert_allclose(uv[:, 1], 240.0, rtol=0, atol=1e-9)
    # North is image-up: v decreases going north, u unchanged.
    north = np.column_stack([np.full_like(d, cam.x), cam.y + d])
    uv, _ = cam.ground_to_photo(north)
    np.testing.assert_allclose(uv[:, 0], 320.0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(uv[:, 1], 240 - f * d / h, rtol=0, atol=1e-9)


@pytest.mark.parametrize("yaw", [0.0, 37.0, 90.0, 180.0, 270.0, 333.3])
def test_yaw_puts_the_heading_at_image_up(yaw: float) -> None:
    cam = _cam(yaw=yaw)
    f, h = cam.focal, cam.altitude
    s, c = math.sin(math.radians(yaw)), math.cos(math.radians(yaw))
    d = np.array([-20.0, 5.0, 33.0])
    ahead = np.column_stack([cam.x + d * s, cam.y + d * c])  # along the heading
    right = np.column_stack([cam.x + d * c, cam.y - d * s])  # 90 degrees clockwise of it
    uv, _ = cam.ground_to_photo(ahead)
    np.testing.assert_allclose(uv, np.column_stack([np.full(3, 320.0), 240 - f * d / h]),
                               rtol=0, atol=1e-9)
    uv, _ = cam.ground_to_photo(right)
    np.testing.assert_allclose(uv, np.column_stack([320 + f * d / h, np.full(3, 240.0)]),
                               rtol=0, atol=1e-9)


def test_yaw_90_puts_east_at_image_up() -> None:
    cam = _cam(yaw=90.0)
    uv, _ = cam.ground_to_photo(np.array([[cam.x + 10.0, cam.y], [cam.x, cam.y + 10.0]]))
    off = cam.focal * 10.0 / cam.altitude
    np.testing.assert_allclose(uv, [[320.0, 240.0 - off], [320.0 - off, 240.0]], atol=1e-9)


@pytest.mark.parametrize("k1", [0.0, -0.05, 0.03])
@pytest.mark.parametrize("yaw,pitch", [(0.0, 10.0), (45.0, 30.0), (200.0, 35.0), (300.0, 55.0)])
def test_pitched_principal_point_lands_ahead(yaw: float, pitch: float, k1: float) -> None:
    cam = _cam(yaw=yaw, pitch=pitch, k1=k1, altitude=95.0)
    g = cam.photo_to_ground(np.array([[320.0, 240.0]]))[0]
    dist = 95.0 * math.tan(math.radians(pitch))
    want = [cam.x + dist * math.sin(math.radians(yaw)), cam.y + dist * math.cos(math.radians(yaw))]
    np.testing.assert_allclose(g, want, rtol=0, atol=1e-9)
    # And the ground point projects back to the principal point.
    uv, front = cam.ground_to_photo(np.array([want]))
    assert front.all()
    np.testing.assert_allclose(uv[0], [320.0, 240.0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("k1_range", [(0.0, 0.0), (-0.06, -0.02), (0.01, 0.03)])
def test_round_trips_photo_ground_photo(k1_range: tuple[float, float]) -> None:
    rng = np.random.default_rng(5)
    ranges = CameraRanges(k1=k1_range)
    worst_m, worst_px = 0.0, 0.0
    for _ in range(25):
        cam = sample_camera(rng, X0 + rng.uniform(-500, 500), Y0 + rng.uniform(-500, 500), ranges)
        if k1_range != (0.0, 0.0):
            assert cam.k1 != 0
        uv = rng.uniform([0, 0], [cam.width, cam.height], size=(200, 2))
        uv[:4] = [[0, 0], [cam.width, 0], [0, cam.height], [cam.width, cam.height]]
        ground = cam.photo_to_ground(uv)
        assert np.isfinite(ground).all()  # the documented pitch range never sees the sky
        back, front = cam.ground_to_photo(ground)
        assert front.all()
        worst_px = max(worst_px, float(np.abs(back - uv).max()))
        # Ground points inside the view -> photo -> ground.
        again = cam.photo_to_ground(back)
        worst_m = max(worst_m, float(np.abs(again - ground).max()))
    assert worst_px < 1e-6
    assert worst_m < 1e-6


def test_points_behind_the_camera_are_flagged() -> None:
    cam = _cam(yaw=45.0, pitch=30.0, altitude=100.0)
    s = c = math.sqrt(0.5)
    # The optical axis' normal plane meets the ground h / tan(pitch) = 173 m behind.
    d = np.array([-1000.0, -400.0, -200.0, -150.0, 0.0, 50.0, 300.0])
    pts = np.column_stack([cam.x + d * s, cam.y + d * c])
    _, front = cam.ground_to_photo(pts)
    np.testing.assert_array_equal(front, d > -100.0 / math.tan(math.radians(30)))
    # Above the horizon rays do not hit the ground: NaN (a 60-degree pitch with an 84-degree
    # lens sees the sky in its top rows).
    sky = Camera(0.0, 0.0, 100.0, 0.0, 60.0, 84.0, 640, 480)
    g = sky.photo_to_ground(np.array([[320.0, 0.5], [320.0, 479.5]]))
    assert np.isnan(g[0]).all() and np.isfinite(g[1]).all()


# --------------------------------------------------------------------------------------------
# 2. Rendered sample geometry


@pytest.fixture(scope="module")
def flat_samples(blocks: tuple[Scene, list[Rect]]) -> tuple[World, list[Sample]]:
    scene, rects = blocks
    cfg = _flat_cfg()
    world = World.build(scene, cfg)
    # Every rectangle is an object, its box within 1.5 m (found on the 1 m reference grid,
    # while the rectangles' edges fall on 0.5 m); dark surrounds between close bright
    # rectangles may be objects as well.
    for x1, y1, x2, y2, _ in rects:
        d = np.abs(world.objects.boxes - [x1, y1, x2, y2]).max(axis=1)
        assert d.min() <= 1.5
    return world, generate([world], 12, seed=3, cfg=cfg, quiet=True)


def test_clicks_back_project_to_the_targets(flat_samples: tuple[World, list[Sample]]) -> None:
    world, samples = flat_samples
    cfg = _flat_cfg()
    assert sum(s.num_targets for s in samples) >= 20
    for s in samples:
        cam = s.camera
        m = s.num_targets
        assert 1 <= m <= 8
        assert s.clicks.shape == (m, 2) and s.boxes.shape == (m, 4) and s.ground.shape == (m, 2)
        # Each target is an object of the world, clicked at its centroid.
        d = np.abs(s.ground[:, None] - world.objects.centroids[None]).max(axis=2)
        assert (d.min(axis=1) == 0).all()
        g = cam.photo_to_ground(s.clicks)
        np.testing.assert_allclose(g, s.ground, rtol=0, atol=1e-6)
        assert (s.clicks >= 2).all() and (s.clicks[:, 0] <= cam.width - 2).all()
        assert (s.clicks[:, 1] <= cam.height - 2).all()
        # The ground point lies in the target's box of the reference window.
        a, _, c, _, e, f = s.transform
        col, row = (s.ground[:, 0] - c) / a, (s.ground[:, 1] - f) / e
        b = s.boxes
        assert ((b[:, 0] < col) & (col < b[:, 2]) & (b[:, 1] < row) & (row < b[:, 3])).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert (b >= 0).all() and (b <= cfg.reference_size).all()
        # The targets are valid on the reference.
        for x1, y1, x2, y2 in b:
            assert s.valid[int(y1):math.ceil(y2), int(x1):math.ceil(x2)].all()


def test_boxes_are_the_objects_boxes(flat_samples: tuple[World, list[Sample]]) -> None:
    world, samples = flat_samples
    for s in samples:
        a, _, c, _, e, f = s.transform
        for gx, gy in s.ground:
            i = int(np.argmin(np.abs(world.objects.centroids - [gx, gy]).sum(axis=1)))
            x1, y1, x2, y2 = world.objects.boxes[i]
            want = [(x1 - c) / a, (y2 - f) / e, (x2 - c) / a, (y1 - f) / e]
            k = int(np.argmin(np.abs(s.ground - [gx, gy]).sum(axis=1)))
            np.testing.assert_allclose(s.boxes[k], want, rtol=0, atol=1e-9)


def test_reference_is_the_scene_resampled(flat_samples: tuple[World, list[Sample]]) -> None:
    world, samples = flat_samples
    cfg = _flat_cfg()
    rng = np.random.default_rng(0)
    for s in samples:
        a, _, c, _, e, f = s.transform
        assert a == cfg.gsd and e == -cfg.gsd
        assert s.reference.shape == (cfg.reference_size, cfg.reference_size, 3)
        for x1, y1, x2, y2 in s.boxes:
            cols = rng.integers(math.ceil(x1), int(x2), size=6)
            rows = rng.integers(math.ceil(y1), int(y2), size=6)
            vals, ok = sample_bilinear(world.reference, c + a * (cols + 0.5), f + e * (rows + 0.5))
            assert ok.all()
            np.testing.assert_array_equal(s.reference[rows, cols], np.round(vals))
        # The whole window is render_reference at the measured position.
        ref, valid, t = render_reference(world.reference, s.measured_xy, cfg.reference_size,
                                         cfg.gsd)
        np.testing.assert_array_equal(ref, s.reference)
        np.testing.assert_array_equal(valid, s.valid)
        assert t == s.transform
        assert not s.reference[~s.valid].any()


def test_photo_shows_the_target_at_the_click(flat_samples: tuple[World, list[Sample]],
                                             blocks: tuple[Scene, list[Rect]]) -> None:
    _, samples = flat_samples
    _, rects = blocks
    n = in_rect = 0
    for s in samples:
        photo = s.photo()
        assert photo.shape == (s.camera.height, s.camera.width, 3)
        for (u, v), (gx, gy) in zip(s.clicks, s.ground, strict=True):
            # The target's grey: its rectangle's, or the ground's for a surround blob; the
            # click is well inside (or well outside) every rectangle.
            grey = BG
            for x1, y1, x2, y2, g in rects:
                margin = min(gx - x1, x2 - gx, gy - y1, y2 - gy)
                assert abs(margin) > 1.0
                if margin > 0:
                    grey = g
                    in_rect += 1
            px = photo[int(v), int(u)].astype(int)
            assert np.abs(px - grey).max() <= 3, (px, grey)
            n += 1
    assert n >= 20 and in_rect >= 0.75 * n


def test_render_sample_on_a_rotated_world(blocks: tuple[Scene, list[Rect]]) -> None:
    scene, _ = blocks
    cfg = _flat_cfg()
    worlds = build_worlds([scene], cfg, augment=True)
    assert len(worlds) == 8 and all(w.scene.crs is None for w in worlds)
    for k, w in enumerate(worlds[:8:3]):
        s = render_sample(w, np.random.default_rng(k), cfg, f"r{k}")
        assert s.crs is None
        np.testing.assert_allclose(s.camera.photo_to_ground(s.clicks), s.ground, atol=1e-6)


# --------------------------------------------------------------------------------------------
# 3. Determinism


def _same(a: Sample, b: Sample) -> bool:
    return (
        a.id == b.id and a.jpeg == b.jpeg and a.reference.tobytes() == b.reference.tobytes()
        and np.array_equal(a.valid, b.valid) and np.array_equal(a.clicks, b.clicks)
        and np.array_equal(a.boxes, b.boxes) and np.array_equal(a.ground, b.ground)
        and a.transform == b.transform and a.heading == b.heading and a.camera == b.camera
        and a.measured_xy == b.measured_xy and a.crs == b.crs and a.scene == b.scene
    )


def test_generation_is_deterministic(blocks: tuple[Scene, list[Rect]]) -> None:
    scene, _ = blocks
    cfg = SynthConfig(min_object_m2=60.0)
    worlds = [World.build(scene, cfg), World.build(dihedral(scene, 1, True), cfg)]
    one = generate(worlds, 6, seed=11, cfg=cfg, quiet=True, prefix="d-")
    again = generate(worlds, 6, seed=11, cfg=cfg, quiet=True, prefix="d-")
    par = generate(worlds, 6, seed=11, cfg=cfg, quiet=True, prefix="d-", workers=2)
    other = generate(worlds, 6, seed=12, cfg=cfg, quiet=True, prefix="d-")
    assert [s.id for s in one] == [f"d-{i:06d}" for i in range(6)]
    assert [s.scene for s in one] == [worlds[i % 2].scene.name for i in range(6)]
    assert all(_same(a, b) for a, b in zip(one, again, strict=True))
    assert all(_same(a, b) for a, b in zip(one, par, strict=True))
    assert len(par) == 6
    for a, b in zip(one, other, strict=True):
        assert a.jpeg != b.jpeg and a.camera != b.camera and not _same(a, b)
    # A sample is a pure function of (world, seed, index).
    s3 = render_sample(worlds[1], np.random.default_rng([11, 3]), cfg, "d-000003")
    assert _same(s3, one[3])


# --------------------------------------------------------------------------------------------
# 4. Heading and GPS errors


def test_heading_carries_the_compass_error(blocks: tuple[Scene, list[Rect]]) -> None:
    scene, _ = blocks
    cfg = SynthConfig(min_object_m2=60.0, compass_sigma_deg=5.0, gps_sigma_m=3.0,
                      reference_size=128, camera=SMALL)
    samples = generate([World.build(scene, cfg)], 50, seed=21, cfg=cfg, quiet=True)
    err = np.array([(s.heading - s.camera.yaw + 180.0) % 360.0 - 180.0 for s in samples])
    assert all(0.0 <= s.heading < 360.0 for s in samples)
    assert np.abs(err).max() < 4 * 5.0
    assert 3.5 < err.std() < 6.5 and abs(err.mean()) < 2.0
    # GPS error: the window is centred on the measured position, off the camera by ~3 m.
    off = []
    for s in samples:
        a, _, c, _, e, f = s.transform
        centre = (c + a * cfg.reference_size / 2, f + e * cfg.reference_size / 2)
        np.testing.assert_allclose(centre, s.measured_xy, rtol=0, atol=1e-9)
        off.append((centre[0] - s.camera.x, centre[1] - s.camera.y))
    off_a = np.asarray(off).ravel()
    assert 2.3 < off_a.std() < 3.7 and abs(off_a.mean()) < 1.0


def test_no_gps_error_centres_the_window_on_the_camera(
        blocks: tuple[Scene, list[Rect]]) -> None:
    scene, _ = blocks
    cfg = SynthConfig(min_object_m2=60.0, gps_sigma_m=0.0, compass_sigma_deg=0.0,
                      reference_size=200, camera=SMALL)
    for s in generate([World.build(scene, cfg)], 8, seed=4, cfg=cfg, quiet=True):
        a, _, c, _, e, f = s.transform
        assert (a, e) == (1.0, -1.0)
        np.testing.assert_allclose([c + 100 * a, f + 100 * e], [s.camera.x, s.camera.y],
                                   rtol=0, atol=1e-9)
        assert s.measured_xy == (s.camera.x, s.camera.y)
        assert s.heading == pytest.approx(s.camera.yaw % 360.0, abs=1e-9)


# --------------------------------------------------------------------------------------------
# 5. Scenes: dihedral copies, downsampling, objects


def test_dihedral(blocks: tuple[Scene, list[Rect]]) -> None:
    scene, _ = blocks
    img = scene.image.copy()
    img[0, -1] = (1, 2, 3)  # mark the top-right corner
    valid = scene.valid.copy()
    valid[5:9, :3] = False
    s = Scene("m", img, valid, scene.transform, scene.crs)
    r = s
    for _ in range(4):
        r = dihedral(r, 1, False)
    np.testing.assert_array_equal(r.image, s.image)
    np.testing.assert_array_equal(r.valid, s.valid)
    assert r.crs is None and r.transform == (0.5, 0.0, 0.0, 0.0, -0.5, 120.0)
    # One quarter turn counter-clockwise moves the top-right corner to the top-left.
    q = dihedral(s, 1, False)
    assert tuple(q.image[0, 0]) == (1, 2, 3)
    np.testing.assert_array_equal(q.valid, np.rot90(valid))
    # Mirroring moves it to the top-left too, and twice is the identity.
    m = dihedral(s, 0, True)
    assert tuple(m.image[0, 0]) == (1, 2, 3)
    np.testing.assert_array_equal(dihedral(m, 0, True).image, s.image)
    assert dihedral(s, 2, False).name == "m~r2" and dihedral(s, 5, True).name == "m~r1f"


def test_downsample_block_averages() -> None:
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, size=(9, 7, 3)).astype(np.uint8)
    valid = np.ones((9, 7), bool)
    valid[0, 0] = False
    s = Scene("d", img, valid, (0.5, 0.0, 10.0, 0.0, -0.5, 20.0), "EPSG:32631")
    d = downsample(s, 2)
    assert d.image.shape == (4, 3, 3) and d.transform == (1.0, 0.0, 10.0, 0.0, -1.0, 20.0)
    want = img[:8, :6].astype(float).reshape(4, 2, 3, 2, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(d.image, np.round(want).astype(np.uint8))
    assert not d.valid[0, 0] and d.valid.sum() == 11
    assert downsample(s, 1) is s


def test_find_objects_recovers_rectangles() -> None:
    # (row, col, height, width, grey) at 0.5 m: a bright 20 x 12 m roof, a dark 10 x 10 m
    # pool, a light 16 x 16 m square.
    scene, rects = _scene([(56, 20, 24, 40, 230), (140, 120, 20, 20, 20),
                           (48, 110, 32, 32, 180)], n=200)
    obj = find_objects(scene)
    assert len(obj) == 3
    for x1, y1, x2, y2, _ in rects:
        i = int(np.argmin(np.abs(obj.boxes - [x1, y1, x2, y2]).sum(axis=1)))
        np.testing.assert_allclose(obj.boxes[i], [x1, y1, x2, y2], rtol=0, atol=1.0)
        np.testing.assert_allclose(obj.centroids[i], [(x1 + x2) / 2, (y1 + y2) / 2], atol=1.0)
    assert (obj.contrast > 0).all()
    # The same objects at the reference GSD (the engine's World).
    world = World.build(scene, SynthConfig(min_object_m2=60.0))
    assert len(world.objects) == 3
    np.testing.assert_allclose(np.sort(world.objects.boxes, axis=0), np.sort(obj.boxes, axis=0),
                               atol=1.0)


def test_find_objects_skips_objects_off_valid_data() -> None:
    scene, _ = _scene([(56, 20, 24, 40, 230), (140, 120, 20, 20, 20)], n=200)
    valid = scene.valid.copy()
    valid[130:170, 110:150] = False  # under the dark square
    masked = Scene("v", scene.image, valid, scene.transform, scene.crs)
    obj = find_objects(masked)
    assert len(obj) == 1
    assert obj.boxes[0, 0] < X0 + 30  # the bright roof


# --------------------------------------------------------------------------------------------
# 6. Writing samples and the manifest


def test_write_samples_round_trips_through_the_manifest(
        tmp_path: Path, flat_samples: tuple[World, list[Sample]]) -> None:
    _, samples = flat_samples
    samples = samples[:4]
    records = write_samples(samples, tmp_path, "test")
    write_manifest(tmp_path / "manifest.jsonl", records)
    back = read_manifest(tmp_path / "manifest.jsonl")
    assert read_manifest(tmp_path / "manifest.jsonl", split="train") == []
    assert [r.id for r in back] == [s.id for s in samples]
    for r, s in zip(back, samples, strict=True):
        assert r.split == "test"
        assert r.query == (tmp_path / "queries" / f"{s.id}.jpg").resolve()
        assert r.query.is_file() and r.reference.is_file()
        assert r.query.read_bytes() == s.jpeg
        np.testing.assert_array_equal(np.asarray(r.clicks), s.clicks)
        np.testing.assert_array_equal(np.asarray(r.boxes), s.boxes)
        with Image.open(r.reference) as im:
            assert im.mode == "RGBA"
            rgba = np.asarray(im)
        np.testing.assert_array_equal(rgba[..., :3], s.reference)
        np.testing.assert_array_equal(rgba[..., 3], np.where(s.valid, 255, 0))
        assert r.georef is not None
        assert r.georef.transform == s.transform
        assert r.georef.crs == s.crs and CRS.from_user_input(r.georef.crs) == CRS.from_epsg(32631)
        assert r.meta["heading"] == s.heading and r.meta["scene"] == s.scene
        assert r.meta["gps"] == list(s.measured_xy)
        assert r.meta["camera"]["yaw"] == s.camera.yaw
        np.testing.assert_array_equal(np.asarray(r.meta["ground"]), s.ground)
        with Image.open(io.BytesIO(r.query.read_bytes())) as im:
            assert im.size == (s.camera.width, s.camera.height)


def test_virtual_scene_samples_have_no_georef(tmp_path: Path,
                                              blocks: tuple[Scene, list[Rect]]) -> None:
    scene, _ = blocks
    cfg = SynthConfig(min_object_m2=60.0)
    s = render_sample(World.build(dihedral(scene, 3, False), cfg), np.random.default_rng(1), cfg,
                      "v")
    (rec,) = write_samples([s], tmp_path, "train")
    assert rec.georef is None


# --------------------------------------------------------------------------------------------
# 7. A real tile


@pytest.fixture(scope="module")
def real_scene() -> Scene:
    if not TILE.is_file():
        pytest.skip(f"sample tile missing: {TILE}")
    return scene_from_raster(TILE)


def test_scene_from_raster_on_the_real_tile(real_scene: Scene, tmp_path: Path) -> None:
    s = real_scene
    a, b, _, d, e, _ = s.transform
    assert (a, b, d, e) == (0.5, 0.0, 0.0, -0.5)
    assert s.gsd == 0.5 and s.name == TILE.stem
    assert s.crs is not None and CRS.from_user_input(s.crs) == CRS.from_epsg(32631)
    assert s.image.dtype == np.uint8 and s.image.shape[:2] == s.valid.shape
    # The tile's black collar (0 without a declared nodata value) is masked.
    frac = float(s.valid.mean())
    assert 0.5 < frac < 0.7
    black = s.image.max(axis=2) == 0
    assert not (black & s.valid).any()
    assert black[~s.valid].mean() > 0.99
    # Bit-exact npz round trip.
    save_scene(s, tmp_path / "c.npz")
    r = load_scene(tmp_path / "c.npz")
    assert r.name == s.name and r.crs == s.crs and r.transform == s.transform
    assert r.image.dtype == np.uint8 and r.valid.dtype == bool
    np.testing.assert_array_equal(r.image, s.image)
    np.testing.assert_array_equal(r.valid, s.valid)


def test_sample_from_the_real_tile(real_scene: Scene) -> None:
    cfg = _flat_cfg()
    world = World.build(real_scene, cfg)
    assert len(world.objects) >= 5
    s = render_sample(world, np.random.default_rng(7), cfg, "c")
    assert s.crs == real_scene.crs and s.num_targets >= 1
    np.testing.assert_allclose(s.camera.photo_to_ground(s.clicks), s.ground, rtol=0, atol=1e-6)
    # The photo pixel at each click is the scene there (up to interpolation and JPEG).
    photo = s.photo()
    for (u, v) in s.clicks:
        g = s.camera.photo_to_ground(np.array([[int(u) + 0.5, int(v) + 0.5]]))[0]
        want, ok = sample_bilinear(real_scene, g[0], g[1])
        assert ok
        assert np.abs(photo[int(v), int(u)].astype(float) - want).max() <= 12
