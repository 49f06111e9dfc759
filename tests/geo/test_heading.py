"""heading_mod90: a tile turned by a known heading is found modulo 90 degrees; the histogram's
orientation convention by hand on stripes; nodata edges are left out."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geomogeo.geo.heading import heading_mod90, orientation_histogram
from geomogeo.geo.orient import rotate_north_up, turn_points


def stripes(angle: float, size: int = 200, period: float = 9.0, amplitude: float = 0.5
            ) -> np.ndarray:
    """Sinusoidal stripes whose intensity changes along ``angle`` (degrees clockwise on
    screen from the x axis): their gradients point along it."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    a = math.radians(angle)
    return (0.5 + amplitude * np.sin(2 * math.pi * (x * math.cos(a) + y * math.sin(a)) / period)
            ).astype(np.float32)


def circular_gap(a: float, b: float, period: float = 90.0) -> float:
    d = (a - b) % period
    return min(d, period - d)


@pytest.mark.parametrize("angle", [0.0, 20.0, 55.0, 80.0, 125.0])
def test_stripes_peak_at_their_gradient_direction(angle: float) -> None:
    hist = orientation_histogram(stripes(angle), blur_px=1.0)
    assert hist.shape == (90,) and hist.sum() == pytest.approx(1.0)
    # bin i holds [i, i + 1) degrees: the peak's centre is within a degree of the angle
    assert circular_gap(int(np.argmax(hist)) + 0.5, angle % 90.0) <= 1.0


def test_flat_image_gives_a_uniform_histogram() -> None:
    np.testing.assert_allclose(orientation_histogram(np.full((50, 60, 3), 7.0), 1.0),
                               np.full(90, 1 / 90))
    # a window without valid data has no edges either; the heading then starts at 0
    none = np.zeros((60, 60), bool)
    np.testing.assert_allclose(orientation_histogram(stripes(30.0, 60), 1.0, none),
                               np.full(90, 1 / 90))
    assert heading_mod90(stripes(30.0, 120), stripes(30.0, 60), none) == 0.0


def test_nodata_edge_is_left_out() -> None:
    # Faint stripes at 30 degrees on the left half, nodata (0) on the right: the data's edge,
    # a vertical line whose gradients point along x (0 degrees), is far stronger.
    img = stripes(30.0, amplitude=0.05)
    img[:, 100:] = 0.0
    valid = np.zeros(img.shape, bool)
    valid[:, :100] = True
    without = orientation_histogram(img, 1.0)
    masked = orientation_histogram(img, 1.0, valid)
    assert circular_gap(int(np.argmax(masked)) + 0.5, 30.0) <= 1.0
    assert masked[:3].sum() + masked[-3:].sum() < 0.01  # nothing near 0 degrees
    assert without[:3].sum() + without[-3:].sum() > 0.02  # the edge, counted without a mask


@pytest.mark.parametrize("heading", [0.0, 12.0, 37.0, 64.0, 98.0, 151.0, 233.0, 301.0])
def test_a_turned_tile_gives_its_heading_modulo_90(
        heading: float, sample_tile: Callable[[str], Path]) -> None:
    # The reference: Rotterdam a at 1 m (the 0.5 m tile averaged 2 x 2). The photo: the 0.5 m
    # tile as a camera of this heading sees it (turned counter-clockwise by the heading), its
    # central 400 x 280 px, which lies inside the tile for every heading. The reference's
    # valid pixels are the photo's ground (elsewhere the tile's layout differs by 2-4 degrees).
    with rasterio.open(sample_tile("rotterdam_pan_0p5m_a.tif")) as ds:
        tile = ds.read(1).astype(np.float32)
    reference = tile.reshape(300, 2, 300, 2).mean(axis=(1, 3))
    grey = np.clip(tile / np.percentile(tile, 99.5) * 255.0, 0, 255).astype(np.uint8)
    seen, _ = rotate_north_up(np.repeat(grey[..., None], 3, axis=2), np.zeros((0, 2)), -heading)
    cy, cx = seen.shape[0] // 2, seen.shape[1] // 2
    photo = seen[cy - 140: cy + 140, cx - 200: cx + 200]
    # reference pixel centres -> offsets from the tile's centre (0.5 m px) -> the photo's frame
    yy, xx = np.mgrid[0:300, 0:300] + 0.5
    seen_at = turn_points(np.stack([xx.ravel() * 2 - 300, yy.ravel() * 2 - 300], 1), -heading)
    ground = ((np.abs(seen_at[:, 0]) < 200) & (np.abs(seen_at[:, 1]) < 140)).reshape(300, 300)
    found = heading_mod90(photo, reference, ground)
    assert 0.0 <= found < 90.0
    assert circular_gap(found, heading % 90.0) <= 2.0  # one-degree bins; 0-1 on this machine
    # the photo at the reference's own scale gives the same answer
    small = photo[::2, ::2]
    assert circular_gap(heading_mod90(small, reference, ground), heading % 90.0) <= 2.0
