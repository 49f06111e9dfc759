"""rotate_north_up: the clicked pixel's content moves with the click; prepare_query's fits;
turn_points by hand."""

from __future__ import annotations

import numpy as np
import pytest

from geomogeo.geo.orient import prepare_query, rotate_north_up, turn_points


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


def test_letterbox_keeps_the_aspect_ratio_and_pads_with_zero() -> None:
    # 4:3 photo (W 40, H 30) into a 32x32 query: scale 0.8 -> 32x24, centred 4 rows down
    img = np.full((30, 40, 3), 200, np.uint8)
    img[10:15, 20:25] = 255  # marker on pixels x 20..24, y 10..14
    clicks = np.array([[22.5, 12.5], [0.0, 0.0], [40.0, 30.0]])
    out, pts = prepare_query(img, clicks, None, (32, 32), "letterbox")
    np.testing.assert_allclose(pts, [[18.0, 14.0], [0.0, 4.0], [32.0, 28.0]], atol=1e-12)
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    assert (out[:4] == 0).all() and (out[28:] == 0).all()  # the margins
    assert (out[4:28] > 0.7).all()  # the photo fills the band between them
    v = out[4:28, :, 0] - 200 / 255  # the marker's excess brightness
    yy, xx = np.mgrid[4:28, 0:32] + 0.5
    assert (v * xx).sum() / v.sum() == pytest.approx(pts[0, 0], abs=0.15)
    assert (v * yy).sum() / v.sum() == pytest.approx(pts[0, 1], abs=0.15)


def test_stretch_is_the_default_and_fits_are_checked() -> None:
    img = np.zeros((30, 40, 3), np.uint8)
    clicks = np.array([[40.0, 30.0]])
    out, pts = prepare_query(img, clicks, None, (32, 32))
    assert out.shape == (32, 32, 3)
    np.testing.assert_allclose(pts, [[32.0, 32.0]])
    with pytest.raises(ValueError, match="query fit must be 'stretch' or 'letterbox'"):
        prepare_query(img, clicks, None, (32, 32), "crop")  # type: ignore[arg-type]


def test_turn_points_by_hand() -> None:
    # Heading 90 (camera looks east): the photo's up (0, -1) turns to the right (1, 0), its
    # right (1, 0) to down (0, 1); heading 180 flips; 30 degrees: (0, -2) -> 2 (sin, -cos).
    v = np.array([[0.0, -1.0], [1.0, 0.0], [0.0, -2.0]])
    np.testing.assert_allclose(turn_points(v[:2], 90), [[1.0, 0.0], [0.0, 1.0]], atol=1e-12)
    np.testing.assert_allclose(turn_points(v[:2], 180), -v[:2], atol=1e-12)
    np.testing.assert_allclose(turn_points(v[2:], 30), [[1.0, -np.sqrt(3.0)]], atol=1e-12)
