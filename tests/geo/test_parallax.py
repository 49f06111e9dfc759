"""Parallax correction of registered clicks (geomogeo.geo.parallax) on rendered pairs with a
known homography and a known roof displacement."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy import ndimage

from geomogeo.geo.parallax import ParallaxConfig, correct_parallax

GSD = 0.5  # metres per reference pixel
SIZE = 240  # reference side, pixels
ROOF = (120.0, 110.0)  # the roof's footprint centre in the reference, pixels (corner origin)
HALF = 14  # the roof's half side, pixels (14 m square)


def _texture(seed: int, shape: tuple[int, int], sigma: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return ((t - t.min()) / (t.max() - t.min())).astype(np.float32)


def _scene(shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reference, ground as the photo sees it): the roof over its footprint in the
    reference, moved by ``shift`` reference pixels in the photo's ground projection."""
    ground = _texture(1, (SIZE, SIZE), 2.0)
    roof = _texture(2, (2 * HALF, 2 * HALF), 1.5) * 0.6 + 0.4
    x0, y0 = int(ROOF[0]) - HALF, int(ROOF[1]) - HALF
    reference = ground.copy()
    reference[y0:y0 + 2 * HALF, x0:x0 + 2 * HALF] = roof
    seen = ground.copy()
    sx, sy = round(shift[0]), round(shift[1])
    seen[y0 + sy:y0 + sy + 2 * HALF, x0 + sx:x0 + sx + 2 * HALF] = roof
    return reference, seen


def _photo(seen: np.ndarray, angle_deg: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Render the photo: reference pixels -> photo pixels by a rotation about the window
    centre and a zoom of ``scale`` (photo pixels per reference pixel), plus a mild
    perspective. Returns (photo uint8, homography photo -> reference, corner origin)."""
    a = math.radians(angle_deg)
    c = SIZE / 2
    out = round(SIZE * scale)
    to_centre = np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1.0]])
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    zoom = np.array([[scale, 0, out / 2], [0, scale, out / 2], [0, 0, 1.0]])
    tilt = np.array([[1, 0, 0], [0, 1, 0], [1e-4, 5e-5, 1.0]])
    g = tilt @ zoom @ rot @ to_centre  # reference corner points -> photo corner points
    # OpenCV samples pixel centres: index = corner point - 0.5 on both sides.
    idx = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
    m = np.linalg.inv(idx) @ g @ idx
    image = cv2.warpPerspective(seen, m, (out, out), flags=cv2.INTER_CUBIC,
                                borderMode=cv2.BORDER_REFLECT)
    return np.clip(image * 255, 0, 255).astype(np.uint8), np.linalg.inv(g)


@pytest.mark.parametrize("angle", [0.0, 37.0, 145.0, 260.0])
@pytest.mark.parametrize("scale", [2.0, 4.0])
def test_raised_roof_moves_back_onto_its_footprint(angle: float, scale: float) -> None:
    nadir = (20.0, 230.0)  # the camera's nadir, down-left of the roof
    away = np.array(ROOF) - np.array(nadir)
    away /= np.hypot(*away)
    shift = 8.0 * away  # 4 m of parallax, away from the camera
    reference, seen = _scene(shift)
    image, h = _photo(seen, angle, scale)
    registered = np.array(ROOF) + shift  # where the ground plane puts the roof's click
    got = correct_parallax(image, h, registered[None], nadir, reference, GSD)
    # The roof is drawn at a whole-pixel shift, so the template matches where the reference
    # shows it that far from the registered point; the search steps 1 px (0.5 m).
    drawn = np.array(ROOF) + shift - np.round(shift)
    assert np.hypot(*(got.points[0] - drawn)) < 1.0
    assert got.shift_px[0] == pytest.approx(np.hypot(*shift), abs=1.0)
    assert got.score[0] > 0.5  # the ground the roof hides in the photo lowers it


def test_flat_object_keeps_its_registered_point() -> None:
    reference, seen = _scene(np.zeros(2))
    image, h = _photo(seen, 37.0, 3.0)
    got = correct_parallax(image, h, np.array([ROOF]), (20.0, 230.0), reference, GSD)
    assert got.shift_px[0] == 0.0
    np.testing.assert_array_equal(got.points[0], ROOF)
    assert got.score[0] > 0.9


def test_textureless_photo_or_search_off_keeps_the_points() -> None:
    nadir = (20.0, 230.0)
    shift = np.array([6.0, -6.0])
    reference, seen = _scene(shift)
    image, h = _photo(seen, 0.0, 2.0)
    registered = np.array([ROOF]) + shift
    blank = np.full_like(image, 128)
    got = correct_parallax(blank, h, registered, nadir, reference, GSD)
    np.testing.assert_array_equal(got.points, registered)
    assert got.shift_px[0] == 0.0 and math.isnan(got.score[0])
    off = correct_parallax(image, h, registered, nadir, reference, GSD,
                           ParallaxConfig(search_m=0.0))
    np.testing.assert_array_equal(off.points, registered)
    # A point whose neighbourhood lies off the photo keeps its place too.
    outside = registered + np.array([[3.0 * SIZE, 0.0]])
    far = correct_parallax(image, h, outside, nadir, reference, GSD)
    np.testing.assert_array_equal(far.points, outside)
    assert far.shift_px[0] == 0.0 and math.isnan(far.score[0])


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="template_m"):
        ParallaxConfig(template_m=0.0)
    with pytest.raises(ValueError, match="margin"):
        ParallaxConfig(margin=-0.1)
