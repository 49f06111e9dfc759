"""Photo -> reference registration: known homographies, rejections, pose and the pixel convention.

Fixtures are rendered here from the real validation tile (Rotterdam b, SpaceNet, 0.5 m) with the
data engine's exact camera model, so every expected value comes from the camera, not from the
code under test.
"""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
import pytest

from geomogeo.data.synth.camera import Camera, CameraRanges
from geomogeo.data.synth.engine import SynthConfig, World, render_sample
from geomogeo.data.synth.render import render_photo, render_reference
from geomogeo.data.synth.scene import Scene, downsample, scene_from_raster
from geomogeo.geo.register import RegisterConfig, Registration, _outline, register


@pytest.fixture(scope="module")
def scene(sample_tile) -> Scene:
    return scene_from_raster(sample_tile("rotterdam_pan_0p5m_b.tif"), gsd=0.5)


def _ref_px(transform: tuple[float, ...], xy: np.ndarray) -> np.ndarray:
    """Map metres -> reference pixel edges of a north-up window transform."""
    a, _, c, _, e, f = transform
    return np.column_stack([(xy[:, 0] - c) / a, (xy[:, 1] - f) / e])


def _clicks(w: int, h: int, n: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform([0.15 * w, 0.15 * h], [0.85 * w, 0.85 * h], size=(n, 2))


@pytest.fixture(scope="module")
def scene_a(sample_tile) -> Scene:
    return scene_from_raster(sample_tile("rotterdam_pan_0p5m_a.tif"), gsd=0.5)


@pytest.mark.parametrize("yaw", [0, 45, 90, 135, 180, 225, 270, 315])
def test_recovers_known_homography(scene_a: Scene, yaw: float) -> None:
    # Reference: 1 m/px; photo: ~0.25-0.5 m/px (2-4x finer), 20 degrees off nadir.
    scene = scene_a
    cx, cy = scene.pixel_to_map(300.0, 300.0)
    ref_scene = downsample(scene, 2)
    ref, valid, transform = render_reference(ref_scene, (float(cx), float(cy)), 256, 1.0)
    alt = 70.0 + 10.0 * (yaw / 45.0)  # 70..140 m: centre GSD 0.25..0.51 m
    cam = Camera(x=float(cx) + 3.0, y=float(cy) - 2.0, altitude=alt, yaw=float(yaw), pitch=20.0,
                 hfov=60.0, width=320, height=240)
    photo = render_photo(scene, cam)
    gap = 1.0 / (alt / cam.focal)
    assert 1.95 <= gap <= 4.0
    reg = register(photo, ref, reference_valid=valid)
    assert reg.ok, reg.reason
    clicks = _clicks(cam.width, cam.height, seed=int(yaw))
    expected = _ref_px(transform, cam.photo_to_ground(clicks))
    err = np.linalg.norm(reg.map_points(clicks) - expected, axis=1)
    assert err.max() < 0.5, err
    assert reg.n_inliers >= 12 and reg.reproj_error_px < 1.0
    assert abs((reg.heading(cam.width, cam.height) - yaw + 180) % 360 - 180) < 0.5


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    """A random, smooth, feature-rich uint8 texture."""
    rng = np.random.default_rng(seed)
    x = cv2.GaussianBlur(rng.normal(size=(h, w)).astype(np.float32), (0, 0), 2.0)
    x = (x - x.min()) / (x.max() - x.min())
    return np.round(x * 255).astype(np.uint8)


def test_pixel_corner_convention_scale_and_half_turn() -> None:
    ref = _texture(256, 256, 1)
    x0, y0 = 40, 64
    crop = ref[y0 : y0 + 128, x0 : x0 + 160]
    # 2x up-sampling with pixel-area alignment: photo corner point p -> reference p / 2 + (x0, y0).
    photo = cv2.resize(crop, (320, 256), interpolation=cv2.INTER_LINEAR)
    pts = np.array([[0.0, 0.0], [320.0, 256.0], [100.5, 30.25], [250.0, 200.0]])
    reg = register(photo, ref, scale_hint=0.5)
    assert reg.ok, reg.reason
    # (a lost 0.5 px offset would show as a 0.25 px error)
    np.testing.assert_allclose(reg.map_points(pts), pts / 2 + [x0, y0], atol=0.1)
    # The same photo turned by 180 degrees: p -> (320, 256) - p before the same mapping.
    reg = register(np.ascontiguousarray(photo[::-1, ::-1]), ref, scale_hint=0.5)
    assert reg.ok, reg.reason
    np.testing.assert_allclose(reg.map_points(pts), ([320, 256] - pts) / 2 + [x0, y0], atol=0.1)
    assert reg.heading(320, 256) == pytest.approx(180.0, abs=0.1)


def test_pure_translation_is_exact() -> None:
    ref = _texture(200, 200, 2)
    photo = ref[30:150, 50:190].copy()
    reg = register(photo, ref, scale_hint=1.0)
    assert reg.ok, reg.reason
    np.testing.assert_allclose(reg.homography, [[1, 0, 50], [0, 1, 30], [0, 0, 1]], atol=0.05)
    assert abs((reg.heading(140, 120) + 180) % 360 - 180) < 0.05


@pytest.fixture(scope="module")
def sample_cfg() -> SynthConfig:
    # No lens distortion, so that the ground <-> photo map is exactly a homography.
    return SynthConfig(camera=replace(CameraRanges(), k1=(0.0, 0.0)), reference_size=384,
                       gsd=0.5)


@pytest.fixture(scope="module")
def sample(scene: Scene, sample_cfg: SynthConfig):
    world = World.build(scene, sample_cfg)
    return render_sample(world, np.random.default_rng([5, 3]), sample_cfg, "t")


def _registered(sample) -> Registration:
    cam = sample.camera
    hint = cam.altitude / cam.focal / sample.transform[0]
    reg = register(sample.photo(), sample.reference, reference_valid=sample.valid,
                   scale_hint=hint)
    assert reg.ok, reg.reason
    return reg


def test_synth_sample_geometry(sample) -> None:
    cam = sample.camera
    reg = _registered(sample)
    t = sample.transform
    # Clicks -> ground points (metres) against the known ground.
    got = reg.map_points(sample.clicks)
    want = _ref_px(t, cam.photo_to_ground(sample.clicks))
    assert np.linalg.norm(got - want, axis=1).max() * t[0] < 0.5
    # Footprint: the photo's outline on the ground.
    fp = reg.footprint(cam.width, cam.height, n=4)
    assert fp.shape == (16, 2)
    ring = _outline(cam.width, cam.height, 4)
    np.testing.assert_allclose(ring[:5], [[0, 0], [cam.width / 4, 0], [cam.width / 2, 0],
                                          [3 * cam.width / 4, 0], [cam.width, 0]])
    want_fp = _ref_px(t, cam.photo_to_ground(ring))
    assert np.linalg.norm(fp - want_fp, axis=1).max() * t[0] < 1.5
    # Heading: the camera's yaw (the project's heading convention).
    d = (reg.heading(cam.width, cam.height) - cam.yaw + 180) % 360 - 180
    assert abs(d) < 1.0
    # Camera position with the true focal length, and with the estimated one; with the
    # true focal length its height above the ground within 3 % and its tilt within 1 degree.
    for f in (cam.focal, None):
        pos = reg.camera_position(cam.width, cam.height, focal_px=f)
        assert pos is not None
        want_c = _ref_px(t, np.array([[cam.x, cam.y]]))[0]
        assert math.hypot(*(np.asarray(pos) - want_c)) * t[0] < 2.0, (f, pos, want_c)
    pose = reg.camera_pose(cam.width, cam.height, focal_px=cam.focal)
    assert pose is not None and pose.nadir == reg.camera_position(cam.width, cam.height,
                                                                  cam.focal)
    assert pose.height * t[0] == pytest.approx(cam.altitude, rel=0.03)
    assert pose.tilt == pytest.approx(cam.pitch, abs=1.0)


def test_other_place_is_rejected(sample, scene_a: Scene) -> None:
    other = scene_a
    cx, cy = other.pixel_to_map(300.0, 300.0)
    ref, valid, _ = render_reference(other, (float(cx), float(cy)), 384, 0.5)
    reg = register(sample.photo(), ref, reference_valid=valid)
    assert not reg.ok and reg.reason


def test_blurred_and_textureless_are_rejected(sample) -> None:
    blurred = cv2.GaussianBlur(sample.photo(), (0, 0), 12.0)
    reg = register(blurred, sample.reference, reference_valid=sample.valid)
    assert not reg.ok and reg.reason
    flat = np.full((300, 400, 3), 128, np.uint8)
    reg = register(flat, sample.reference, reference_valid=sample.valid)
    assert not reg.ok and "too few features" in reg.reason
    assert reg.homography is None
    with pytest.raises(ValueError, match="no homography"):
        reg.map_points(np.zeros((1, 2)))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="ratio"):
        RegisterConfig(ratio=1.5)
    ref = _texture(64, 64, 3)
    with pytest.raises(ValueError, match="reference_valid shape"):
        register(ref, ref, reference_valid=np.ones((10, 10), bool))
    with pytest.raises(ValueError, match="scale_hint"):
        register(ref, ref, scale_hint=-1.0)


def test_scale_hint_from_exif(tmp_path) -> None:
    from PIL import Image
    from PIL.TiffImagePlugin import IFDRational

    from geomogeo.geo.photo import focal_px_from_exif, load_photo, scale_hint_from_exif

    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (IFDRational(51), IFDRational(54), IFDRational(0)), 3: "E",
                4: (IFDRational(4), IFDRational(21), IFDRational(0)), 5: bytes([0]),
                6: IFDRational(2005, 20)})  # 100.25 m above sea level
    ifd = exif.get_ifd(0x8769)
    ifd.update({0x920A: IFDRational(45, 10), 0xA405: 24})
    p = tmp_path / "drone.jpg"
    Image.new("RGB", (400, 300), (90, 90, 90)).save(p, exif=exif)
    ph = load_photo(p)
    assert ph.focal_mm == pytest.approx(4.5) and ph.focal_35mm == pytest.approx(24.0)
    assert ph.gps is not None and ph.gps.altitude == pytest.approx(100.25)
    # f = 24 mm of a 43.2666 mm diagonal over a 500 px diagonal = 277.350 px.
    f_px = 24.0 / math.sqrt(36**2 + 24**2) * 500.0
    assert f_px == pytest.approx(277.350098, abs=1e-5)
    assert focal_px_from_exif(ph) == pytest.approx(f_px, rel=1e-12)
    assert focal_px_from_exif(replace(ph, focal_35mm=None)) is None
    assert scale_hint_from_exif(ph, 0.5) == pytest.approx(100.25 / f_px / 0.5, rel=1e-12)
    assert scale_hint_from_exif(ph, 0.5, ground_elevation=20.25) == pytest.approx(
        80.0 / f_px / 0.5, rel=1e-12)
    assert scale_hint_from_exif(ph, 1.0, height_above_ground=60.0) == pytest.approx(60.0 / f_px)
    assert scale_hint_from_exif(ph, 0.5, ground_elevation=100.0) is None  # 0.25 m: implausible
    assert scale_hint_from_exif(replace(ph, focal_35mm=None), 0.5) is None
    assert scale_hint_from_exif(replace(ph, gps=None), 0.5) is None
    with pytest.raises(ValueError, match="reference_gsd"):
        scale_hint_from_exif(ph, 0.0)


def test_wrong_scale_hint_falls_back_to_the_pyramid(scene_a: Scene) -> None:
    cx, cy = scene_a.pixel_to_map(300.0, 300.0)
    ref, valid, transform = render_reference(scene_a, (float(cx), float(cy)), 320, 0.5)
    cam = Camera(x=float(cx), y=float(cy), altitude=60.0, yaw=30.0, pitch=10.0, hfov=70.0,
                 width=400, height=300)
    photo = render_photo(scene_a, cam)
    true_scale = cam.altitude / cam.focal / 0.5
    good = register(photo, ref, reference_valid=valid, scale_hint=true_scale)
    assert good.ok, good.reason
    wrong = register(photo, ref, reference_valid=valid, scale_hint=true_scale * 8)
    assert wrong.ok, wrong.reason
    clicks = _clicks(400, 300)
    want = _ref_px(transform, cam.photo_to_ground(clicks))
    for reg in (good, wrong):
        assert np.linalg.norm(reg.map_points(clicks) - want, axis=1).max() < 0.5


_GOOD = np.array([[0.5, 0.0, 40.0], [0.0, 0.5, 30.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize(("h", "counts", "hint", "match"), [
    (_GOOD, (50, 60, 0.3, 0.5), None, ""),
    (_GOOD, (50, 60, 0.3, 0.5), 0.45, ""),
    (_GOOD, (11, 12, 0.3, 0.5), None, "too few inliers"),
    (_GOOD, (50, 400, 0.3, 0.5), None, "inlier ratio"),
    (_GOOD, (50, 60, 2.5, 0.5), None, "reprojection error"),
    (_GOOD, (50, 60, 0.3, 0.05), None, "cover"),
    (np.array([[-0.5, 0, 240], [0, 0.5, 30], [0, 0, 1.0]]), (50, 60, 0.3, 0.5), None, "mirror"),
    (np.array([[0.5, 0, 40], [0, 0.5, 30], [0, -0.004, 1.0]]), (50, 60, 0.3, 0.5), None,
     "horizon"),
    (np.array([[0.5, 0, 40], [0, 0.5, 30], [0, 0.04, 1.0]]), (50, 60, 0.3, 0.5), None,
     "depth ratio"),
    (np.array([[0.5, 0, 40], [0, 0.05, 30], [0, 0, 1.0]]), (50, 60, 0.3, 0.5), None,
     "anisotropy"),
    (_GOOD, (50, 60, 0.3, 0.5), 0.1, "far from the expected"),
])
def test_validity_checks(h: np.ndarray, counts: tuple, hint: float | None, match: str) -> None:
    from geomogeo.geo.register import _check

    n_inl, n_match, reproj, spread = counts
    reason = _check(h, n_inl, n_match, reproj, spread, 400, 300, hint, RegisterConfig())
    assert (reason == "") if not match else (match in reason), reason


def test_outline_self_intersection_is_rejected() -> None:
    from geomogeo.geo.register import _is_convex_simple

    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], dtype=float)
    assert _is_convex_simple(square)
    assert not _is_convex_simple(square[::-1])  # orientation reversed
    assert not _is_convex_simple(square[[0, 2, 1, 3]])  # bow tie
    assert not _is_convex_simple(np.array([[0, 0], [10, 0], [2, 2], [0, 10]], dtype=float))
