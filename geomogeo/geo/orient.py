"""Rotate a photo and its clicks so that north is up, from the camera heading.

The reference image is north-up; a drone photo's "up" is wherever the camera looked. When the
heading is known (EXIF ``GPSImgDirection``, a drone's gimbal yaw, or the data engine's compass
reading), the query is rotated so that the camera's forward direction points to the top,
leaving only the residual compass error for the network to absorb. Training and inference
use this same function.

Conventions: heading in degrees clockwise from north (0 = camera looks north, 90 = east).
Images are (H, W, 3) uint8 arrays; points are continuous pixel coordinates (x right, y down,
origin at the top-left corner of the top-left pixel). The output canvas is expanded so no
pixel (and no click) is cut off; new corners are filled with 0.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from PIL import Image

__all__ = ["QueryFit", "check_query_fit", "prepare_query", "rotate_north_up", "turn_points"]

#: How a photo is fitted into the query input (see :func:`prepare_query`).
QueryFit = Literal["stretch", "letterbox"]


def check_query_fit(fit: str) -> None:
    """Raise ValueError unless ``fit`` is a :data:`QueryFit`."""
    if fit not in ("stretch", "letterbox"):
        raise ValueError(f"query_fit={fit!r}: query fit must be 'stretch' or 'letterbox'")


def rotate_north_up(
    image: np.ndarray, points: np.ndarray, heading: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate ``image`` clockwise by ``heading`` degrees about its centre (expanding the
    canvas) and move ``points`` (m, 2) with it.

    A camera looking east (heading 90) has north on the left of its photo; a clockwise
    quarter turn brings it to the top.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    h, w = image.shape[:2]
    theta = math.radians(heading)
    c, s = math.cos(theta), math.sin(theta)
    # Output canvas: the bounding box of the rotated corners, rounded up to whole pixels.
    nw = math.ceil(abs(w * c) + abs(h * s) - 1e-9)
    nh = math.ceil(abs(w * s) + abs(h * c) - 1e-9)
    # Forward map (y down, so this matrix turns clockwise on screen): p' = R (p - ctr) + ctr'.
    R = np.array([[c, -s], [s, c]])
    ctr, nctr = np.array([w / 2, h / 2]), np.array([nw / 2, nh / 2])
    out_pts = turn_points(pts - ctr, heading) + nctr
    # PIL wants the inverse map, output pixel -> input pixel, as (a, b, c, d, e, f) with
    # x_in = a x + b y + c; sampling happens at pixel centres, which this continuous affine
    # handles exactly.
    Ri = R.T
    off = ctr - Ri @ nctr
    coeffs = (Ri[0, 0], Ri[0, 1], off[0], Ri[1, 0], Ri[1, 1], off[1])
    out = Image.fromarray(image).transform(
        (nw, nh), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR
    )
    return np.asarray(out), out_pts


def turn_points(points: np.ndarray, heading: float) -> np.ndarray:
    """Turn (m, 2) pixel vectors (x right, y down) clockwise on screen by ``heading`` degrees
    about the origin, as :func:`rotate_north_up` turns the photo: the vector (0, -1) (up)
    becomes (sin h, -cos h)."""
    theta = math.radians(heading)
    c, s = math.cos(theta), math.sin(theta)
    return np.asarray(points, dtype=np.float64).reshape(-1, 2) @ np.array([[c, s], [-s, c]])


def prepare_query(
    image: np.ndarray, points: np.ndarray, heading: float | None, size: tuple[int, int],
    fit: QueryFit = "stretch",
) -> tuple[np.ndarray, np.ndarray]:
    """The model's query input: rotate north-up when ``heading`` is known, then resize to
    ``size`` = (height, width) with bilinear filtering.

    ``fit="stretch"`` fills the whole input, stretching the aspect ratio (what models without
    a ``query_fit`` were trained with); ``fit="letterbox"`` keeps the aspect ratio: the photo
    is scaled by ``min(width / w, height / h)`` to ``(round(h s), round(w s))`` pixels, centred
    (offset ``((width - w') // 2, (height - h') // 2)``) and the margins filled with 0, as the
    corners of a rotated photo are.

    Returns the image as float32 (height, width, 3) in [0, 1] and the points (m, 2) in
    query-input pixels (same corner-origin convention). Training data and inference both go
    through this function, so the network always sees queries prepared the same way.
    """
    check_query_fit(fit)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if heading is not None:
        image, pts = rotate_north_up(image, pts, heading)
    qh, qw = size
    h, w = image.shape[:2]
    if fit == "stretch":
        im = Image.fromarray(image).resize((qw, qh), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.float32) / 255.0, pts * np.array([qw / w, qh / h])
    s = min(qw / w, qh / h)
    nw, nh = min(qw, max(1, round(w * s))), min(qh, max(1, round(h * s)))
    ox, oy = (qw - nw) // 2, (qh - nh) // 2
    out = np.zeros((qh, qw, 3), dtype=np.float32)
    im = Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR)
    out[oy:oy + nh, ox:ox + nw] = np.asarray(im, dtype=np.float32) / 255.0
    return out, pts * np.array([nw / w, nh / h]) + np.array([ox, oy])
