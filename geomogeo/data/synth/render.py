"""Rendering: drone photos through a :class:`~.camera.Camera` (flat ground, plus extruded
building prisms with parallax), north-up reference windows, and the photometric gap between
a drone camera and a satellite image."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter
from scipy.spatial import ConvexHull

from geomogeo.data.synth.camera import Camera
from geomogeo.data.synth.scene import Scene, sample_bilinear
from geomogeo.data.synth.structures import Structures, is_convex

__all__ = ["PhotoEffects", "View", "degrade", "is_visible", "render_photo", "render_reference",
           "render_view", "visible_fraction"]

#: Photo pixels added around a polygon's projected vertices when rasterising it (the lens
#: distortion bows straight edges by a few pixels at most within the documented k1 range).
_PAD_PX = 8


def render_photo(scene: Scene, camera: Camera) -> np.ndarray:
    """The photo the camera takes of the (flat) scene: (height, width, 3) uint8.

    Each photo pixel centre is back-projected through the lens model and the exact ground
    homography and the scene is sampled bilinearly there; beyond the scene's edges the ground
    continues as a mirror image, and above the horizon (never reached within the documented
    pitch range) the sky is a flat light grey.
    """
    w, h = camera.width, camera.height
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    g = camera.photo_to_ground(np.column_stack([u.ravel(), v.ravel()]))
    sky = ~np.isfinite(g).all(axis=1)
    g[sky] = 0.0
    vals, _ = sample_bilinear(scene, g[:, 0], g[:, 1], reflect=True)
    vals[sky] = 200.0
    return np.round(vals).reshape(h, w, 3).clip(0, 255).astype(np.uint8)


@dataclass(frozen=True)
class View:
    """A rendered photo and what each of its pixels shows.

    Attributes:
        image: (H, W, 3) uint8, before the photometric effects.
        labels: (H, W) int32: -1 the ground (flat structures included), ``2 i`` the top
            (roof, deck) of structure i, ``2 i + 1`` a side face (wall) of structure i.
        undistorted: (H, W, 2) float64 pinhole (undistorted) coordinates of the pixel centres.
    """

    image: np.ndarray
    labels: np.ndarray
    undistorted: np.ndarray


def render_view(scene: Scene, camera: Camera, structures: Structures, sun_azimuth: float,
                ground: Scene | None = None) -> View:
    """The photo of the scene with its raised structures (``heights > 0``) as prisms (from the
    ground up) and slabs (``bases > 0``: from the base up, nothing drawn under them).

    The ground is :func:`render_photo` of ``ground`` (default: ``scene``; a separate ground
    is what lies under slabs, e.g. the river under a bridge deck that ``scene``, the
    orthophoto, shows). Each raised structure is then painted far to near (painter's
    algorithm; see :func:`_draw_order`, exact for footprints whose convex hulls do not
    overlap): first its side faces that face the camera (walls, a deck's edges; those of a
    non-convex footprint far to near by their midpoints), between its base and its top, a
    flat colour (the top's mean) shaded by the face's outward normal against the sun
    (``sun_azimuth`` degrees clockwise from north: 0.35 facing away, up to 0.75 facing the
    sun), then its top (roof, deck), whose pixels are back-projected onto the top plane and
    sampled from the ``scene`` texture inside the footprint (even-odd rule for a non-convex
    one). Polygons are rasterised exactly in undistorted (pinhole) pixel space, where
    straight edges stay straight. Structures with a vertex behind the camera are skipped
    (they lie far outside the documented field of view).
    """
    image = render_photo(scene if ground is None else ground, camera)
    h, w = image.shape[:2]
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    und = camera.undistort(np.column_stack([u.ravel(), v.ravel()])).reshape(h, w, 2)
    labels = np.full((h, w), -1, np.int32)
    cxy = np.array([camera.x, camera.y])
    az = np.radians(sun_azimuth)
    sun = np.array([np.sin(az), np.cos(az)])
    for i, base, top, region in _draw_order(camera, structures):
        fp, top_z = structures.footprints[i], float(structures.heights[i])
        k = len(fp)
        img_r, lab_r, und_r = image[region], labels[region], und[region]
        colour = _roof_colour(scene, fp)
        convex = is_convex(fp)
        walls = np.arange(k)
        if not convex:  # front-facing walls may hide each other: far to near
            mid = (fp + np.roll(fp, -1, axis=0)) / 2
            walls = np.argsort(-np.hypot(*(mid - cxy).T), kind="stable")
        for j in walls:
            a, b = fp[j], fp[(j + 1) % k]
            normal = np.array([b[1] - a[1], a[0] - b[0]]) / np.hypot(*(b - a))
            if np.dot(cxy - a, normal) <= 0:  # back-facing side
                continue
            m = _inside(und_r, np.stack([base[j], base[(j + 1) % k], top[(j + 1) % k], top[j]]))
            shade = 0.35 + 0.4 * max(0.0, float(np.dot(normal, sun)))
            img_r[m] = np.round(colour * shade).astype(np.uint8)
            lab_r[m] = 2 * i + 1
        m = _inside(und_r, top, convex)
        g = camera.undistorted_to_plane(und_r[m], top_z)
        vals, _ = sample_bilinear(scene, g[:, 0], g[:, 1], reflect=True)
        img_r[m] = np.round(vals).clip(0, 255).astype(np.uint8)
        lab_r[m] = 2 * i
    return View(image, labels, und)


def _draw_order(camera: Camera, structures: Structures
                ) -> list[tuple[int, np.ndarray, np.ndarray, tuple[slice, slice]]]:
    """The raised structures in front of the camera and in the photo, far to near, each with
    its footprint projected (undistorted pixels) at its base and at its top height, and its
    photo region (:func:`_region`).

    The order is by the horizontal distance from the camera to the click point (far first),
    corrected wherever two structures' photo images may overlap (their projected bounding
    boxes do) and a line separates their footprints: the one on the camera's side of that
    line can hide the other and never the reverse, so it is drawn later. For disjoint
    convex footprints this is exact (a ray to a point of the far one crosses the line only
    after passing over the near one's side), whatever their heights and bases; elongated
    slabs (bridge decks) next to buildings need it, where centroid distances mislead. A
    non-convex footprint (an L-shaped known footprint) is tested by its convex hull: a line
    separating the hulls separates the footprints, so the order stays exact where the hulls
    are disjoint; where they overlap (a building in an L's notch) no line is found and that
    pair keeps the distance order.
    Overlapping footprints one above the other (a pier under its deck: one's top at most the
    other's base) are drawn lower first: a descending ray never meets the lower one before
    the upper one's points.
    """
    raised = np.nonzero(structures.heights > 0)[0]
    cxy = np.array([camera.x, camera.y])
    dist = np.hypot(*(structures.points[raised] - cxy).T)
    order = raised[np.argsort(-dist, kind="stable")]
    proj: dict[int, tuple[np.ndarray, np.ndarray, tuple[slice, slice]]] = {}
    for i in order:
        fp = structures.footprints[i]
        k = len(fp)
        base, fb = camera.project_undistorted(
            np.column_stack([fp, np.full(k, float(structures.bases[i]))]))
        top, ft = camera.project_undistorted(
            np.column_stack([fp, np.full(k, float(structures.heights[i]))]))
        region = _region(camera, np.vstack([base, top])) if fb.all() and ft.all() else None
        if region is not None:
            proj[int(i)] = base, top, region
    ids = list(proj)
    n = len(ids)
    if n < 2:
        return [(i, *proj[i]) for i in ids]
    lo = np.array([np.minimum(proj[i][0].min(axis=0), proj[i][1].min(axis=0)) for i in ids])
    hi = np.array([np.maximum(proj[i][0].max(axis=0), proj[i][1].max(axis=0)) for i in ids])
    overlap = ((lo[:, None] < hi[None]) & (lo[None] < hi[:, None])).all(axis=2)
    before = [set() for _ in range(n)]  # before[b]: positions to draw before b
    # Convex hulls of non-convex footprints (a line through an edge of a non-convex outline
    # need not have the whole outline on one side); convex ones as they are.
    hulls = [fp if is_convex(fp) else fp[ConvexHull(fp).vertices]
             for fp in (structures.footprints[i] for i in ids)]
    for p, q in zip(*np.nonzero(np.triu(overlap, 1)), strict=True):
        near = _nearer(hulls[p], hulls[q], cxy)
        if near is None:  # overlapping footprints: stacked?
            if structures.heights[ids[p]] <= structures.bases[ids[q]]:
                near = 1
            elif structures.heights[ids[q]] <= structures.bases[ids[p]]:
                near = 0
        if near == 0:
            before[p].add(int(q))
        elif near == 1:
            before[q].add(int(p))
    # Kahn's algorithm, taking the farthest ready structure first: the distance order
    # itself wherever it agrees with the constraints. A cycle could only come through pairs
    # neither of which can hide the other (the camera between two separating lines, either
    # order right); it is broken in distance order.
    done = np.zeros(n, bool)
    out = []
    for _ in range(n):
        ready = [j for j in range(n) if not done[j] and all(done[b] for b in before[j])]
        j = ready[0] if ready else int(np.argmin(done))
        done[j] = True
        out.append(ids[j])
    return [(i, *proj[i]) for i in out]


def _nearer(a: np.ndarray, b: np.ndarray, cxy: np.ndarray) -> int | None:
    """Which of two convex footprints (k, 2), counter-clockwise, map metres, can hide the
    other from a camera above ``cxy``: 0 (``a``) or 1 (``b``), by a separating line through
    an edge of either; None when no edge separates them (they overlap)."""
    for first, (p, q) in enumerate(((a, b), (b, a))):
        e = np.roll(p, -1, axis=0) - p
        normal = np.column_stack([e[:, 1], -e[:, 0]])  # outward for counter-clockwise
        sep = (np.einsum("qkd,kd->qk", q[:, None] - p[None], normal) >= -1e-9).all(axis=0)
        if sep.any():
            j = int(np.argmax(sep))
            # Camera on q's side of p's edge j: q is nearer.
            q_near = float(np.dot(cxy - p[j], normal[j])) > 0
            return (1 - first) if q_near else first
    return None


def visible_fraction(view: View, camera: Camera, structures: Structures, i: int) -> float:
    """Fraction of structure ``i``'s top (its roof, or its footprint when flat) that the
    photo shows: pixels inside its projected outline labelled as its roof (as the ground
    when flat) over all pixels inside the outline; 0 when none is in the photo."""
    fp, z = structures.footprints[i], float(structures.heights[i])
    top, front = camera.project_undistorted(np.column_stack([fp, np.full(len(fp), z)]))
    region = _region(camera, top) if front.all() else None
    if region is None:
        return 0.0
    m = _inside(view.undistorted[region], top, is_convex(fp))
    n = int(m.sum())
    own = 2 * i if z > 0 else -1
    return float((view.labels[region][m] == own).sum()) / n if n else 0.0


def is_visible(view: View, camera: Camera, structures: Structures, i: int,
               min_visible: float = 0.5) -> bool:
    """Whether the photo shows structure ``i`` where it would be clicked: the pixel holding
    its projected click point (roof centroid) shows its roof (the ground, for a flat one),
    and at least ``min_visible`` of its outline does (:func:`visible_fraction`)."""
    z = float(structures.heights[i])
    uv, front = camera.project(np.array([[*structures.points[i], z]]))
    col, row = (int(np.floor(t)) for t in uv[0])
    if not (front[0] and 0 <= col < camera.width and 0 <= row < camera.height):
        return False
    own = 2 * i if z > 0 else -1
    return bool(view.labels[row, col] == own) and \
        visible_fraction(view, camera, structures, i) >= min_visible


def _region(camera: Camera, und_pts: np.ndarray) -> tuple[slice, slice] | None:
    """Photo rows/columns around undistorted points (n, 2), padded; None if off the photo."""
    uv = camera.distort(und_pts)
    c1, r1 = np.floor(uv.min(axis=0)).astype(int) - _PAD_PX
    c2, r2 = np.ceil(uv.max(axis=0)).astype(int) + _PAD_PX
    c1, r1 = max(c1, 0), max(r1, 0)
    c2, r2 = min(c2, camera.width), min(r2, camera.height)
    if c1 >= c2 or r1 >= r2:
        return None
    return slice(r1, r2), slice(c1, c2)


def _inside(pts: np.ndarray, poly: np.ndarray, convex: bool = True) -> np.ndarray:
    """(..., 2) points inside the polygon (k, 2) of either winding -> (...) bool: for a
    ``convex`` one, on the inner side of every edge (edges included); else by the even-odd
    rule (any simple polygon)."""
    x, y = poly[:, 0], poly[:, 1]
    area = float((x * np.roll(y, -1) - np.roll(x, -1) * y).sum())
    if abs(area) < 1e-9:
        return np.zeros(pts.shape[:-1], bool)
    if not convex:
        px, py = pts[..., 0], pts[..., 1]
        odd = np.zeros(pts.shape[:-1], bool)
        for j in range(len(poly)):
            (ax, ay), (bx, by) = poly[j], poly[(j + 1) % len(poly)]
            if ay == by:
                continue
            cross = (ay > py) != (by > py)
            odd ^= cross & (px < ax + (py - ay) * (bx - ax) / (by - ay))
        return odd
    m = np.ones(pts.shape[:-1], bool)
    for j in range(len(poly)):
        a, b = poly[j], poly[(j + 1) % len(poly)]
        cross = (b[0] - a[0]) * (pts[..., 1] - a[1]) - (b[1] - a[1]) * (pts[..., 0] - a[0])
        m &= np.sign(area) * cross >= 0
    return m


def _roof_colour(scene: Scene, fp: np.ndarray) -> np.ndarray:
    """(3,) mean scene colour at the footprint's centroid and its vertices pulled 30% of the
    way towards it (the wall colour before shading)."""
    c = fp.mean(axis=0)
    pts = np.vstack([c, c + 0.7 * (fp - c)])
    vals, _ = sample_bilinear(scene, pts[:, 0], pts[:, 1], reflect=True)
    return vals.mean(axis=0)


def render_reference(
    scene: Scene, center: tuple[float, float], size: int, gsd: float
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float, float, float]]:
    """A north-up ``size`` x ``size`` window of ``gsd`` metres per pixel centred on ``center``
    (map metres), bilinear from ``scene`` (best at the same GSD, see ``downsample``).

    Returns the image (size, size, 3) uint8 (0 off the scene), the valid mask (size, size) and
    the window's pixel-EDGES -> map affine (a, b, c, d, e, f).
    """
    x0, y0 = center[0] - size * gsd / 2, center[1] + size * gsd / 2
    cc, rr = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    vals, ok = sample_bilinear(scene, x0 + gsd * cc, y0 - gsd * rr)
    img = np.round(vals).clip(0, 255).astype(np.uint8)
    return img, ok, (gsd, 0.0, x0, 0.0, -gsd, y0)


@dataclass(frozen=True)
class PhotoEffects:
    """Ranges of the drone-vs-satellite appearance gap (each drawn uniformly per photo).

    Attributes:
        exposure: gain on intensities.
        contrast: scaling of deviations from the photo mean.
        colour_cast: per-channel gain range (white balance).
        haze: blend weight towards a light blue-grey.
        gamma: exponent on [0, 1] intensities.
        blur_sigma: Gaussian blur, pixels (defocus, motion).
        noise_sigma: additive Gaussian noise, intensity levels of 255.
        jpeg_quality: JPEG compression quality.
    """

    exposure: tuple[float, float] = (0.75, 1.3)
    contrast: tuple[float, float] = (0.75, 1.25)
    colour_cast: tuple[float, float] = (0.9, 1.1)
    haze: tuple[float, float] = (0.0, 0.25)
    gamma: tuple[float, float] = (0.85, 1.2)
    blur_sigma: tuple[float, float] = (0.0, 1.0)
    noise_sigma: tuple[float, float] = (0.0, 6.0)
    jpeg_quality: tuple[int, int] = (55, 95)


def degrade(photo: np.ndarray, rng: np.random.Generator, fx: PhotoEffects = PhotoEffects()
            ) -> bytes:
    """Apply the drone camera's look to a rendered photo; returns the JPEG file bytes."""
    x = photo.astype(np.float32) / 255.0
    x = x * rng.uniform(*fx.exposure)
    m = x.mean()
    x = (x - m) * rng.uniform(*fx.contrast) + m
    x = x * rng.uniform(*fx.colour_cast, size=3).astype(np.float32)
    haze = rng.uniform(*fx.haze)
    x = (1 - haze) * x + haze * np.array([0.80, 0.83, 0.88], dtype=np.float32)
    x = np.clip(x, 0, 1) ** rng.uniform(*fx.gamma)
    im = Image.fromarray(np.round(x * 255).astype(np.uint8))
    sigma = rng.uniform(*fx.blur_sigma)
    if sigma > 0.05:
        im = im.filter(ImageFilter.GaussianBlur(sigma))
    arr = np.asarray(im, dtype=np.float32)
    arr = arr + rng.normal(0.0, rng.uniform(*fx.noise_sigma), size=arr.shape)
    im = Image.fromarray(np.round(arr).clip(0, 255).astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(rng.integers(fx.jpeg_quality[0],
                                                          fx.jpeg_quality[1] + 1)))
    return buf.getvalue()
