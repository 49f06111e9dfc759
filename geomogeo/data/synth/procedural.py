"""Procedural town scenes: unlimited layouts so a network must match, not memorise.

The real tiles give only a few square kilometres of ground; a network trained on them alone
learns where things are in those tiles instead of how to match a photo to a map. Procedural
scenes add layouts that never repeat: a street grid at a random angle, blocks of buildings
aligned with the streets (flat or gabled roofs, cast shadows), trees, pools and bright
patches on a textured ground, in colour or panchromatic. They are virtual scenes (no CRS).

:func:`procedural_town` also returns the town's structures: every building whose rectangle
lies wholly in the scene and overlaps no other building (overlapping ones stay flat roof
texture), with a roof height drawn log-uniformly in [3, 30] m (median 9.5 m: mostly low-rise,
a few towers), and the street pieces between consecutive crossings that lie wholly in the
scene (flat). Footprints are exact: a scene pixel is roof iff its centre is inside the
footprint. Bridges are not modelled.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from geomogeo.data.synth.scene import Scene
from geomogeo.data.synth.structures import Structures, rectangle

__all__ = ["BUILDING_HEIGHT_M", "procedural_town", "rotate_zoom"]

#: Range of procedural roof heights, metres (drawn log-uniformly).
BUILDING_HEIGHT_M: tuple[float, float] = (3.0, 30.0)


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return n / max(float(n.std()), 1e-6)


def procedural_town(rng: np.random.Generator, *, size_m: float = 320.0, gsd: float = 0.5,
                    name: str = "procedural") -> tuple[Scene, Structures]:
    """A random town of ``size_m`` x ``size_m`` metres at ``gsd`` metres per pixel, and its
    buildings and street pieces (see the module docstring). The image depends only on the
    draws made before the heights, so it is the same whether the structures are used or not.
    """
    n = round(size_m / gsd)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) * gsd  # metres
    theta = rng.uniform(0, math.pi / 2)
    c, s = math.cos(theta), math.sin(theta)
    u, v = xx * c + yy * s, -xx * s + yy * c  # street-aligned coordinates, metres
    colour = rng.random() < 0.6
    ground = rng.uniform(0.25, 0.55) + 0.06 * _noise(rng, (n, n), 12 / gsd) \
        + 0.03 * _noise(rng, (n, n), 1.5 / gsd)
    img = np.repeat(ground[..., None], 3, axis=2)
    tint = rng.uniform(0.85, 1.15, 3) if colour else np.ones(3)
    img *= tint
    # Streets.
    sp_u, sp_v = rng.uniform(45, 100), rng.uniform(45, 100)
    wid = rng.uniform(6, 14)
    road = (np.abs((u % sp_u) - sp_u / 2) > sp_u / 2 - wid / 2) | \
        (np.abs((v % sp_v) - sp_v / 2) > sp_v / 2 - wid / 2)
    img[road] = rng.uniform(0.15, 0.4) + 0.02 * rng.standard_normal((int(road.sum()), 1))
    # Buildings in the blocks.
    sun = rng.uniform(0, 2 * math.pi)
    shadow = np.array([math.cos(sun), math.sin(sun)]) * rng.uniform(2, 6)  # metres
    rects: list[tuple[float, float, float, float]] = []  # (cu, cv, w, h) street-aligned
    for _ in range(int(rng.integers(150, 400))):
        w, h = rng.uniform(8, 40), rng.uniform(8, 40)
        cu = rng.uniform(0, size_m * 1.5) - size_m * 0.25
        cv = rng.uniform(0, size_m * 1.5) - size_m * 0.25
        roof = rng.uniform(0.2, 0.95)
        rgb = (np.array([rng.uniform(0.6, 1.1), rng.uniform(0.7, 1.0), rng.uniform(0.6, 1.0)])
               if colour else np.ones(3)) * roof
        inb = (np.abs(u - cu) < w / 2) & (np.abs(v - cv) < h / 2)
        if not inb.any() or (inb & road).mean() > 0.02 * inb.mean():
            continue
        rr, cc = np.nonzero(inb)
        sr = np.clip(rr + round(shadow[1] / gsd), 0, n - 1)
        sc = np.clip(cc + round(shadow[0] / gsd), 0, n - 1)
        img[sr, sc] *= 0.45
        img[rr, cc] = rgb
        rects.append((float(cu), float(cv), float(w), float(h)))
        if rng.random() < 0.5:  # gabled roof: one half darker
            half = inb & ((v - cv) > 0 if w > h else (u - cu) > 0)
            img[half] *= rng.uniform(0.6, 0.85)
    # Trees and pools.
    for _ in range(int(rng.integers(20, 120))):
        r = rng.uniform(1.5, 5.0)
        x0, y0 = rng.uniform(0, size_m, 2)
        d2 = (xx - x0) ** 2 + (yy - y0) ** 2
        m = d2 < r * r
        img[m] = np.array([0.12, 0.22, 0.1]) * rng.uniform(0.7, 1.4) if colour else \
            rng.uniform(0.08, 0.25)
    for _ in range(int(rng.integers(0, 12))):
        w, h = rng.uniform(4, 12), rng.uniform(3, 8)
        x0, y0 = rng.uniform(0, size_m, 2)
        m = (np.abs(u - (x0 * c + y0 * s)) < w / 2) & (np.abs(v - (-x0 * s + y0 * c)) < h / 2)
        img[m] = np.array([0.4, 0.75, 0.9]) if colour else 0.9
    img = ndimage.gaussian_filter(img, (0.6, 0.6, 0))
    img += 0.015 * rng.standard_normal(img.shape).astype(np.float32)
    out = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    scene = Scene(name=name, image=out, valid=np.ones((n, n), bool),
                  transform=(gsd, 0.0, 0.0, 0.0, -gsd, n * gsd), crs=None)
    # The masks above test pixel CORNERS (col, row) * gsd: a pixel is inside iff its centre,
    # at map (x, y) = ((col + 1/2) gsd, (n - row - 1/2) gsd), is inside the shape moved by
    # half a pixel east and south.
    def to_map(cu_: float, cv_: float) -> tuple[float, float]:
        x, y = cu_ * c - cv_ * s, cu_ * s + cv_ * c  # street-aligned -> (xx, yy)
        return x + gsd / 2, n * gsd - y - gsd / 2

    # (xx, yy) is a left-handed frame in map terms (yy grows south), so street-aligned angles
    # flip sign on the map.
    ang = -theta
    keep = [r for k, r in enumerate(rects) if _in_square(r, theta, size_m)
            and not any(_overlap(r, q) for q in rects[k + 1:])]
    heights = np.exp(rng.uniform(*np.log(BUILDING_HEIGHT_M), size=len(keep)))
    buildings = Structures.from_polygons(
        [rectangle(*to_map(cu, cv), w, h, ang) for cu, cv, w, h in keep], heights, "building")
    pieces = [(cu, cv, sp_u - wid, wid) for cu, cv in _crossings(sp_u, sp_v, size_m, 0.5)] + \
        [(cu, cv, wid, sp_v - wid) for cu, cv in _crossings(sp_u, sp_v, size_m, 0.0)]
    road_fps = [rectangle(*to_map(cu, cv), lu, lv, ang) for cu, cv, lu, lv in pieces
                if _in_square((cu, cv, lu, lv), theta, size_m)]
    roads = Structures.from_polygons(road_fps, np.zeros(len(road_fps)), "road")
    return scene, Structures.concat([buildings, roads])


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Street-aligned rectangles (cu, cv, w, h) overlap (touching counts)."""
    return abs(a[0] - b[0]) <= (a[2] + b[2]) / 2 and abs(a[1] - b[1]) <= (a[3] + b[3]) / 2


def _in_square(r: tuple[float, ...], theta: float, size_m: float) -> bool:
    """The street-aligned rectangle (cu, cv, w, h) lies inside [1, size_m - 1]^2 (metres, the
    scene's (xx, yy) frame, 1 m clear of the edges)."""
    cu, cv, w, h = r
    c, s = np.cos(theta), np.sin(theta)
    du, dv = np.array([-w, w, w, -w]) / 2, np.array([-h, -h, h, h]) / 2
    x, y = (cu + du) * c - (cv + dv) * s, (cu + du) * s + (cv + dv) * c
    return bool(min(x.min(), y.min()) >= 1 and max(x.max(), y.max()) <= size_m - 1)


def _crossings(sp_u: float, sp_v: float, size_m: float, half: float
               ) -> list[tuple[float, float]]:
    """Street-piece centres (cu, cv) of the grid: streets run along u at v = j sp_v and along
    v at u = i sp_u; ``half`` = 0.5 gives the pieces along u (between crossings i and i + 1),
    0 those along v (between j and j + 1, shifted by half a spacing in v)."""
    reach = int(np.ceil(size_m * 1.5 / min(sp_u, sp_v))) + 1
    out = []
    for i in range(-reach, reach + 1):
        for j in range(-reach, reach + 1):
            out.append(((i + half) * sp_u, (j + 0.5 - half) * sp_v))
    return out


def rotate_zoom(scene: Scene, angle: float, zoom: float) -> Scene:
    """A virtual copy of ``scene`` rotated by ``angle`` degrees (counter-clockwise) about its
    centre and scaled by ``zoom`` (ground appears ``zoom`` times larger), same canvas."""
    h, w = scene.valid.shape
    a = math.radians(angle)
    # Output pixel p -> input pixel: centre + R(-a) (p - centre) / zoom (row, col order).
    m = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) / zoom
    ctr = np.array([h / 2, w / 2])
    off = ctr - m @ ctr
    chans = [ndimage.affine_transform(scene.image[..., k], m, off, order=1, cval=0)
             for k in range(3)]
    valid = ndimage.affine_transform(scene.valid.astype(np.uint8), m, off, order=0, cval=0) > 0
    g = scene.gsd
    return Scene(name=f"{scene.name}~a{angle:.0f}z{zoom:.2f}", image=np.dstack(chans),
                 valid=valid, transform=(g, 0.0, 0.0, 0.0, -g, h * g), crs=None)
