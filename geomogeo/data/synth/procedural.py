"""Procedural town scenes: unlimited layouts so a network must match, not memorise.

The real tiles give only a few square kilometres of ground; a network trained on them alone
learns where things are in those tiles instead of how to match a photo to a map. Procedural
scenes add layouts that never repeat: a street grid at a random angle, blocks of buildings
aligned with the streets (flat or gabled roofs, cast shadows), trees, pools and bright
patches on a textured ground, in colour or panchromatic. They are virtual scenes (no CRS).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from geomogeo.data.synth.scene import Scene

__all__ = ["procedural_scene", "rotate_zoom"]


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return n / max(float(n.std()), 1e-6)


def procedural_scene(rng: np.random.Generator, *, size_m: float = 320.0, gsd: float = 0.5,
                     name: str = "procedural") -> Scene:
    """A random town of ``size_m`` x ``size_m`` metres at ``gsd`` metres per pixel."""
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
    return Scene(name=name, image=out, valid=np.ones((n, n), bool),
                 transform=(gsd, 0.0, 0.0, 0.0, -gsd, n * gsd), crs=None)


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
