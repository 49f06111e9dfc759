"""A photo's heading modulo 90 degrees from the orientation of its edges, without training.

Streets, buildings, fields and their shadows are mostly laid out along two perpendicular
directions. A drone photo turned north-up by its true heading shows those directions as the
north-up orthophoto does; turned by a wrong heading it shows them turned by the error. So the
histograms of gradient orientations (modulo 90 degrees, weighted by gradient magnitude) of the
photo and of the reference window around its position, cross-correlated circularly, give the
heading modulo 90 degrees: four candidates a quarter turn apart, one of which is right when
the scene has such a layout. The no-compass rotation search
(:func:`geomogeo.joint.search_rotation`) starts its rotations there instead of at 0.

The photo is resized to :data:`PHOTO_WIDTH` pixels and blurred more than the reference:
a drone photo is 2-8x finer than a 1 m orthophoto window, and its fine texture (roof tiles,
lane marks) is not in the reference. Oblique photos keep their perspective (no pitch is
known): on validation photos 0-35 degrees off nadir the error modulo 90 degrees was 3 degrees
at the median (below).

Conventions: headings in degrees clockwise from north, as
:func:`~geomogeo.geo.orient.rotate_north_up` takes them; images are (H, W, 3) or (H, W),
any dtype (converted to float luminance); the reference is north-up. Pure numpy + OpenCV.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["PHOTO_BLUR_PX", "PHOTO_WIDTH", "REFERENCE_BLUR_PX", "heading_mod90",
           "orientation_histogram"]

#: Width the photo is resized to, pixels, before its gradients are taken.
PHOTO_WIDTH = 512
#: Gaussian blur of the resized photo, pixels (sigma). Chosen on validation photos (Rotterdam
#: b with parallax, ``out/rot_val_par``, 80 photos): median error modulo 90 degrees 6.8 degrees
#: with 1 px, 4.3 with 3 px, 3.0 with 4 px, 4.3 with 6 px; confirmed on a second validation set
#: (``out/orient_val``, 200 photos: 7.3 -> 2.7 degrees, 85% within 10 degrees).
PHOTO_BLUR_PX = 4.0
#: Gaussian blur of the reference window, pixels (sigma; 0.7-1.5 did alike).
REFERENCE_BLUR_PX = 1.0
_BINS = 90  # one-degree bins over [0, 90)
_SMOOTH_BINS = 1.5


def _luminance(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image, dtype=np.float32)
    return a.mean(axis=2) if a.ndim == 3 else a


def orientation_histogram(image: np.ndarray, blur_px: float,
                          valid: np.ndarray | None = None) -> np.ndarray:
    """Gradient orientations of ``image`` modulo 90 degrees: (90,) weights summing to 1.

    Bin ``i`` holds the orientations in ``[i, i + 1)`` degrees, measured clockwise on screen
    from the x axis (x right, y down). Each pixel whose gradient magnitude lies above the
    median (of the ``valid`` pixels, when given; their border is left out too) adds its
    magnitude; the histogram is then smoothed circularly (a Gaussian of 1.5 bins). An image
    without gradients gives a uniform histogram.

    Args:
        image: (H, W, 3) or (H, W) luminance or colour.
        blur_px: Gaussian sigma applied before the Sobel gradients, pixels (0: none).
        valid: (H, W) bool, the pixels that hold data, or None (all).
    """
    g = _luminance(image)
    if blur_px > 0:
        g = cv2.GaussianBlur(g, (0, 0), blur_px, borderType=cv2.BORDER_REFLECT)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
    mag = np.hypot(gx, gy)
    # rounding noise of a flat image's blur is no edge
    mag[mag <= 1e-5 * max(1.0, float(np.abs(g).max()))] = 0.0
    use = np.ones(mag.shape, bool)
    if valid is not None:
        # the gradients across the data's edge are the edge's, not the scene's
        reach = math.ceil(3 * blur_px) + 2
        use = cv2.erode(np.asarray(valid, np.uint8), np.ones((2 * reach + 1,) * 2, np.uint8),
                        borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    if not np.any(mag[use] > 0):
        return np.full(_BINS, 1.0 / _BINS)
    use &= mag > np.median(mag[use])
    theta = np.degrees(np.arctan2(gy[use], gx[use])) % 90.0
    hist, _ = np.histogram(theta, bins=_BINS, range=(0.0, 90.0), weights=mag[use])
    hist = _circular_smooth(hist.astype(np.float64), _SMOOTH_BINS)
    total = hist.sum()
    return hist / total if total > 0 else np.full(_BINS, 1.0 / _BINS)


def _circular_smooth(hist: np.ndarray, sigma: float) -> np.ndarray:
    k = np.arange(-math.ceil(4 * sigma), math.ceil(4 * sigma) + 1)
    kernel = np.exp(-0.5 * (k / sigma) ** 2)
    kernel /= kernel.sum()
    return sum(w * np.roll(hist, int(s)) for s, w in zip(k, kernel, strict=True))


def heading_mod90(photo: np.ndarray, reference: np.ndarray,
                  reference_valid: np.ndarray | None = None) -> float:
    """The photo's heading modulo 90 degrees, in [0, 90), from its edges and the reference's.

    The heading ``h`` that best turns the photo's edge orientations onto the reference's:
    orientations in a photo turned clockwise by ``h`` (north-up) are the photo's plus ``h``.
    The true heading is one of ``h + k * 90``; which one the edges cannot tell. One-degree
    resolution (the histograms' bins); ties (to rounding) go to the smallest ``h``, and a
    photo or reference without edges gives 0.

    Args:
        photo: the photo as taken, (H, W, 3) or (H, W); resized to :data:`PHOTO_WIDTH` wide.
        reference: the north-up reference window around the photo's position, at about the
            ground resolution the photo is localized at (e.g. 1 m/px).
        reference_valid: (H, W) bool, the reference's pixels that hold data, or None.
    """
    p = np.asarray(photo)
    if p.dtype not in (np.uint8, np.uint16, np.float32):
        p = p.astype(np.float32)
    h, w = p.shape[:2]
    if w != PHOTO_WIDTH:  # resized before anything else: a 4000 px photo costs no more
        p = cv2.resize(p, (PHOTO_WIDTH, max(1, round(h * PHOTO_WIDTH / w))),
                       interpolation=cv2.INTER_AREA)
    hp = orientation_histogram(p, PHOTO_BLUR_PX)
    hr = orientation_histogram(reference, REFERENCE_BLUR_PX, reference_valid)
    if np.ptp(hp) == 0.0 or np.ptp(hr) == 0.0:  # no edges on one side: nothing to match
        return 0.0
    # correlation[s] = sum_i hp[i - s] hr[i]: the photo's histogram turned by s degrees
    correlation = np.array([np.dot(np.roll(hp, s), hr) for s in range(_BINS)])
    # the first of the best up to rounding, which differs between CPUs' summation orders
    top = float(correlation.max())
    return float(np.flatnonzero(correlation >= top - 1e-9 * abs(top))[0])
