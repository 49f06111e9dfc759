"""rotate_north_up: the clicked pixel's content moves with the click; turn_points by hand."""

from __future__ import annotations

import numpy as np
import pytest

from geomogeo.geo.orient import rotate_north_up, turn_points


def marker_image(w: int, h: int, x: int, y: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[y - 2 : y + 3, x - 2 : x + 3] = 255  # 5 x 5 marker centred on pixel (x, y)
    return img


@pytest.mark.parametrize("heading", [0, 30, 90, 135, 180, 270, 333.3])
def test_marker_follows_click(heading: float) -> None:
    img = marker_image(120, 80, 30, 20)
    click = np.array([[30.5, 20.5]])  # centre of pixel (30, 20)
    out, pts = rotate_north_up(img, click, heading)
    v = out[..., 0].astype(np.float64)
    yy, xx = np.mgrid[: v.shape[0], : v.shape[1]] + 0.5  # pixel centres
    # the blob's intensity-weighted centroid is where the click went
    assert (v * xx).sum() / v.sum() == pytest.approx(pts[0, 0], abs=0.1)
    assert (v * yy).sum() / v.sum() == pytest.approx(pts[0, 1], abs=0.1)


def test_quarter_turn_known_answer() -> None:
    # Camera looks east: north is on the left of the photo; after a clockwise quarter turn the
    # left edge's midpoint is at the top edge's midpoint.
    img = np.zeros((80, 120, 3), np.uint8)
    out, pts = rotate_north_up(img, np.array([[0.0, 40.0], [120.0, 40.0]]), 90)
    assert out.shape[:2] == (120, 80)
    np.testing.assert_allclose(pts, [[40.0, 0.0], [40.0, 120.0]], atol=1e-9)


def test_heading_zero_is_identity() -> None:
    img = (np.arange(60 * 40 * 3) % 251).astype(np.uint8).reshape(40, 60, 3)
    out, pts = rotate_north_up(img, np.array([[1.5, 2.5]]), 0.0)
    np.testing.assert_array_equal(out, img)
    np.testing.assert_allclose(pts, [[1.5, 2.5]])


def test_turn_points_by_hand() -> None:
    # Heading 90 (camera looks east): the photo's up (0, -1) turns to the right (1, 0), its
    # right (1, 0) to down (0, 1); heading 180 flips; 30 degrees: (0, -2) -> 2 (sin, -cos).
    v = np.array([[0.0, -1.0], [1.0, 0.0], [0.0, -2.0]])
    np.testing.assert_allclose(turn_points(v[:2], 90), [[1.0, 0.0], [0.0, 1.0]], atol=1e-12)
    np.testing.assert_allclose(turn_points(v[:2], 180), -v[:2], atol=1e-12)
    np.testing.assert_allclose(turn_points(v[2:], 30), [[1.0, -np.sqrt(3.0)]], atol=1e-12)
