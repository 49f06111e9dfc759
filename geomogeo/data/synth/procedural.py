"""Procedural town scenes: unlimited layouts so a network must match, not memorise.

The real tiles give only a few square kilometres of ground; a network trained on them alone
learns where things are in those tiles instead of how to match a photo to a map. Procedural
scenes add layouts that never repeat: a street grid at a random angle, blocks of buildings
aligned with the streets (flat or gabled roofs, cast shadows), trees, pools and bright
patches on a textured ground, in colour or panchromatic. They are virtual scenes (no CRS).

:func:`suburb_town` draws a town of detached houses on the same street grid, closer to what
people click in a residential area: lots of lawn, dry grass or gravel, concrete driveways,
houses of 9-28 m, 40% of them L- or T-shaped (a wing flush with one end, overlapping the main
rectangle by 1 m), under hip (50%), gable (30%) or flat roofs, each facet lit by the sun
(brighter by 15-40% towards it), with roof grain and, on half of them, dark eaves; roof heights
log-uniform in [3, 10] m.

:func:`procedural_town` also returns the town's structures: every building whose rectangle
lies wholly in the scene and overlaps no other building (overlapping ones stay flat roof
texture), with a roof height drawn log-uniformly in [3, 30] m (median 9.5 m: mostly low-rise,
a few towers), and the street pieces between consecutive crossings that lie wholly in the
scene (flat). Footprints are exact: a scene pixel is roof iff its centre is inside the
footprint.

:func:`bridged_town` draws the same kind of town, sometimes (``bridge_chance``) with a river
or a lower road running mid-block along one street direction, under every street of the
other direction it crosses: each crossing carries a bridge deck, a slab (kind ``bridge``,
base 6-12 m, 0.8-1.5 m thick, 30-80 m long, 8-20 m wide) with its own texture (asphalt with
lane marks, or concrete with joints; parapets along both sides) and a cast shadow, on two
thin piers (kind ``pier``, never targets) just outside the banks; the street piece under a
deck is no ``road`` target. It also returns the ground under the decks (the
town without them), from which a photo's ground is rendered, while the scene itself is what
an orthophoto shows (the decks on top).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient
from shapely.ops import unary_union

from geomogeo.data.synth.scene import Scene
from geomogeo.data.synth.structures import Structures, rectangle

__all__ = ["BRIDGE_BASE_M", "BUILDING_HEIGHT_M", "HOUSE_HEIGHT_M", "bridged_town",
           "procedural_town", "rotate_zoom", "suburb_town"]

#: Range of procedural roof heights, metres (drawn log-uniformly).
BUILDING_HEIGHT_M: tuple[float, float] = (3.0, 30.0)

#: Range of suburban house roof heights, metres (drawn log-uniformly: one to three storeys).
HOUSE_HEIGHT_M: tuple[float, float] = (3.0, 10.0)

#: Range of bridge deck bases (clearance above the ground), metres (drawn uniformly).
BRIDGE_BASE_M: tuple[float, float] = (6.0, 12.0)


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return n / max(float(n.std()), 1e-6)


def procedural_town(rng: np.random.Generator, *, size_m: float = 320.0, gsd: float = 0.5,
                    name: str = "procedural") -> tuple[Scene, Structures]:
    """A random town of ``size_m`` x ``size_m`` metres at ``gsd`` metres per pixel, and its
    buildings and street pieces (see the module docstring). The image depends only on the
    draws made before the heights, so it is the same whether the structures are used or not.
    """
    scene, _, structures = _town(rng, size_m, gsd, name, None)
    return scene, structures


def suburb_town(rng: np.random.Generator, *, size_m: float = 320.0, gsd: float = 0.5,
                name: str = "suburb") -> tuple[Scene, Structures]:
    """A random town of detached houses (see the module docstring): the street grid, trees and
    pools of :func:`procedural_town`, lots of lawn or gravel, driveways, and houses of 9-28 m
    (some L-shaped, with a wing) under hip, gable or flat roofs, each facet shaded by the sun,
    roof grain and sometimes dark eaves. Footprints are exact as in :func:`procedural_town`
    (an L-shaped house is one non-convex footprint)."""
    scene, _, structures = _town(rng, size_m, gsd, name, None, houses=True)
    return scene, structures


def bridged_town(rng: np.random.Generator, *, bridge_chance: float = 0.5,
                 size_m: float = 320.0, gsd: float = 0.5, name: str = "procedural"
                 ) -> tuple[Scene, Scene, Structures]:
    """A random town as :func:`procedural_town`'s, with probability ``bridge_chance`` crossed
    by a river or a lower road under bridge decks (see the module docstring).

    Returns the scene (the decks on top, as an orthophoto shows them), the ground under the
    decks (the same scene without them; equal to the scene when the town has none) and the
    structures (buildings, street pieces, bridge decks)."""
    return _town(rng, size_m, gsd, name, bridge_chance)


def _town(rng: np.random.Generator, size_m: float, gsd: float, name: str,
          bridge_chance: float | None, *, houses: bool = False
          ) -> tuple[Scene, Scene, Structures]:
    """The town of :func:`procedural_town` (``bridge_chance`` None: no draw for bridges, the
    same town as before bridges existed), of :func:`bridged_town` or (``houses``) of
    :func:`suburb_town`."""
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
    crossing = None
    blocked = road
    if bridge_chance is not None and rng.random() < bridge_chance:
        crossing = _crossing(rng, img, u, v, (sp_u, sp_v), wid, size_m, colour, (c, s))
        blocked = road | crossing.band
    # Buildings in the blocks.
    sun = rng.uniform(0, 2 * math.pi)
    shadow = np.array([math.cos(sun), math.sin(sun)]) * rng.uniform(2, 6)  # metres
    # Buildings: (cu, cv, w, h) street-aligned rectangles, one or two (a wing) per building.
    if houses:
        light = -np.array([math.cos(sun), math.sin(sun)])  # towards the sun, (xx, yy)
        parts = _paint_houses(rng, img, u, v, blocked, shadow / gsd, light, (c, s), colour,
                              gsd)
    else:
        parts = _paint_blocks(rng, img, u, v, blocked, crossing, shadow / gsd, colour, size_m)
    # Trees and pools.
    for _ in range(int(rng.integers(20, 120))):
        r = rng.uniform(1.5, 5.0)
        x0, y0 = rng.uniform(0, size_m, 2)
        d2 = (xx - x0) ** 2 + (yy - y0) ** 2
        m = d2 < r * r
        if crossing is not None:
            m &= ~crossing.band
        img[m] = np.array([0.12, 0.22, 0.1]) * rng.uniform(0.7, 1.4) if colour else \
            rng.uniform(0.08, 0.25)
    for _ in range(int(rng.integers(0, 12))):
        w, h = rng.uniform(4, 12), rng.uniform(3, 8)
        x0, y0 = rng.uniform(0, size_m, 2)
        m = (np.abs(u - (x0 * c + y0 * s)) < w / 2) & (np.abs(v - (-x0 * s + y0 * c)) < h / 2)
        if crossing is not None:
            m &= ~crossing.band
        img[m] = np.array([0.4, 0.75, 0.9]) if colour else 0.9
    under = None
    if crossing is not None:
        under = ndimage.gaussian_filter(_paint_decks(rng, img, u, v, crossing, shadow, (c, s)),
                                        (0.6, 0.6, 0))
    img = ndimage.gaussian_filter(img, (0.6, 0.6, 0))
    noise = 0.015 * rng.standard_normal(img.shape).astype(np.float32)
    img += noise
    out = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    scene = Scene(name=name, image=out, valid=np.ones((n, n), bool),
                  transform=(gsd, 0.0, 0.0, 0.0, -gsd, n * gsd), crs=None)
    ground = scene
    if under is not None:
        ground = Scene(name=name, image=np.round(np.clip(under + noise, 0, 1) * 255).astype(
            np.uint8), valid=scene.valid, transform=scene.transform, crs=None)
    # The masks above test pixel CORNERS (col, row) * gsd: a pixel is inside iff its centre,
    # at map (x, y) = ((col + 1/2) gsd, (n - row - 1/2) gsd), is inside the shape moved by
    # half a pixel east and south.
    def to_map(cu_: float, cv_: float) -> tuple[float, float]:
        x, y = cu_ * c - cv_ * s, cu_ * s + cv_ * c  # street-aligned -> (xx, yy)
        return x + gsd / 2, n * gsd - y - gsd / 2

    # (xx, yy) is a left-handed frame in map terms (yy grows south), so street-aligned angles
    # flip sign on the map.
    ang = -theta
    keep = [r for k, r in enumerate(parts) if all(_in_square(q, theta, size_m) for q in r)
            and not any(_overlap(a, b) for later in parts[k + 1:] for a in r for b in later)]
    heights = np.exp(rng.uniform(*np.log(HOUSE_HEIGHT_M if houses else BUILDING_HEIGHT_M),
                                 size=len(keep)))
    buildings = Structures.from_polygons(
        [_outline([rectangle(*to_map(cu, cv), w, h, ang) for cu, cv, w, h in r]) for r in keep],
        heights, "building")
    pieces = [(cu, cv, sp_u - wid, wid) for cu, cv in _crossings(sp_u, sp_v, size_m, 0.5)] + \
        [(cu, cv, wid, sp_v - wid) for cu, cv in _crossings(sp_u, sp_v, size_m, 0.0)]
    road_fps = [rectangle(*to_map(cu, cv), lu, lv, ang) for cu, cv, lu, lv in pieces
                if _in_square((cu, cv, lu, lv), theta, size_m)]
    roads = Structures.from_polygons(road_fps, np.zeros(len(road_fps)), "road")
    if crossing is None:
        return scene, ground, Structures.concat([buildings, roads])
    under_deck = [any(_overlap(r, d) for d in crossing.decks) for r in pieces
                  if _in_square(r, theta, size_m)]
    roads = roads.subset(~np.array(under_deck, bool))
    decks = Structures.from_polygons(
        [rectangle(*to_map(cu, cv), lu, lv, ang) for cu, cv, lu, lv in crossing.decks],
        crossing.tops, "bridge", crossing.bases)
    piers = Structures.from_polygons(
        [rectangle(*to_map(cu, cv), lu, lv, ang) for cu, cv, lu, lv in crossing.piers],
        np.repeat(crossing.bases, 2), "pier")
    return scene, ground, Structures.concat([buildings, roads, decks, piers])


def _paint_blocks(rng: np.random.Generator, img: np.ndarray, u: np.ndarray, v: np.ndarray,
                  blocked: np.ndarray, crossing: _Crossing | None, shadow_px: np.ndarray,
                  colour: bool, size_m: float) -> list[list[tuple[float, float, float, float]]]:
    """Paint :func:`procedural_town`'s buildings (flat or gabled rectangles of 8-40 m with
    cast shadows) into ``img``; returns each one's rectangle [(cu, cv, w, h)], street-aligned
    metres, in painting order."""
    rects: list[list[tuple[float, float, float, float]]] = []
    for _ in range(int(rng.integers(150, 400))):
        w, h = rng.uniform(8, 40), rng.uniform(8, 40)
        cu = rng.uniform(0, size_m * 1.5) - size_m * 0.25
        cv = rng.uniform(0, size_m * 1.5) - size_m * 0.25
        rgb = _roof_rgb(rng, colour)
        inb = (np.abs(u - cu) < w / 2) & (np.abs(v - cv) < h / 2)
        if not inb.any() or (inb & blocked).mean() > 0.02 * inb.mean():
            continue
        if crossing is not None and any(_overlap((cu, cv, w, h), d) for d in crossing.decks):
            continue
        rr, cc = np.nonzero(inb)
        _cast_shadow(img, rr, cc, shadow_px)
        img[rr, cc] = rgb
        rects.append([(float(cu), float(cv), float(w), float(h))])
        if rng.random() < 0.5:  # gabled roof: one half darker
            half = inb & ((v - cv) > 0 if w > h else (u - cu) > 0)
            img[half] *= rng.uniform(0.6, 0.85)
    return rects


def _paint_houses(rng: np.random.Generator, img: np.ndarray, u: np.ndarray, v: np.ndarray,
                  blocked: np.ndarray, shadow_px: np.ndarray, light: np.ndarray,
                  cs: tuple[float, float], colour: bool, gsd: float
                  ) -> list[list[tuple[float, float, float, float]]]:
    """Paint :func:`suburb_town`'s lots, driveways and houses into ``img``; returns each house's
    rectangles (the main one, then its wing, if any), street-aligned metres, in painting order.

    ``light``: unit vector towards the sun in the scene's (xx, yy) frame; a roof facet whose
    outward normal points at the sun is brighter by up to 15-40%. ``cs``: cos and sin of the
    street grid's angle (street axis u is (c, s) in (xx, yy), v is (-s, c)).
    """
    n = img.shape[0]
    axes = np.array([[cs[0], cs[1]], [-cs[1], cs[0]]])  # unit u and v in (xx, yy)
    lit = axes @ light  # how much a +u / +v facet faces the sun
    grain = _noise(rng, (n, n), 0.4 / gsd)
    (ulo, uhi), (vlo, vhi) = (u.min(), u.max()), (v.min(), v.max())

    def masks_of(rects: list[tuple[float, float, float, float]]) -> list[np.ndarray]:
        return [(np.abs(u - a) < b / 2) & (np.abs(v - d) < e / 2) for a, d, b, e in rects]

    for _ in range(int(rng.integers(40, 120))):  # lots: lawn, dry grass or gravel
        w, h = rng.uniform(12, 35, 2)
        cu, cv = rng.uniform(ulo, uhi), rng.uniform(vlo, vhi)
        m = (np.abs(u - cu) < w / 2) & (np.abs(v - cv) < h / 2) & ~blocked
        tone = rng.uniform(0.3, 0.7)
        img[m] = (np.array([0.75, 1.0, 0.7]) if colour and rng.random() < 0.6 else
                  np.ones(3)) * tone * (1 + 0.05 * grain[m])[:, None]
    plans = []
    for _ in range(int(rng.integers(150, 400))):
        w, h = rng.uniform(9, 28, 2)
        cu, cv = rng.uniform(ulo, uhi), rng.uniform(vlo, vhi)
        rects = [(float(cu), float(cv), float(w), float(h))]
        if rng.random() < 0.4:  # a wing on one side, flush with one end, overlapping by 1 m
            along_u = bool(rng.random() < 0.5)
            ww, wh = (w * rng.uniform(0.35, 0.7), h * rng.uniform(0.4, 0.9)) if along_u else \
                (w * rng.uniform(0.4, 0.9), h * rng.uniform(0.35, 0.7))
            su, sv = rng.choice([-1.0, 1.0], 2)
            if along_u:  # beside the main rectangle in v, flush with its +/-u end
                rects.append((cu + su * (w - ww) / 2, cv + sv * (h / 2 + wh / 2 - 1), ww, wh))
            else:
                rects.append((cu + su * (w / 2 + ww / 2 - 1), cv + sv * (h - wh) / 2, ww, wh))
        inb = np.logical_or.reduce(masks_of(rects))
        if not inb.any() or (inb & blocked).mean() > 0.02 * inb.mean():
            continue
        plans.append(rects)  # masks are made again when painting (keeping them all tripled
        # the town's peak memory)
        if rng.random() < 0.5:  # a concrete driveway from one side
            a, d, b, e = rects[0]
            du, dv = (rng.uniform(3, 6), rng.uniform(6, 14)) if rng.random() < 0.5 else \
                (rng.uniform(6, 14), rng.uniform(3, 6))
            sign = rng.choice([-1.0, 1.0])
            off = (a + sign * (b / 2 + du / 2), d) if du > dv else (a, d + sign * (e / 2 + dv / 2))
            m = (np.abs(u - off[0]) < du / 2) & (np.abs(v - off[1]) < dv / 2) & ~blocked
            img[m] = rng.uniform(0.55, 0.85) * (1 + 0.03 * grain[m])[:, None]
    out = []
    for rects in plans:
        masks = masks_of(rects)
        inb = np.logical_or.reduce(masks)
        rr, cc = np.nonzero(inb)
        _cast_shadow(img, rr, cc, shadow_px)
        rgb = _roof_rgb(rng, colour)
        style, relief = rng.choice(["hip", "gable", "flat"], p=[0.5, 0.3, 0.2]), \
            rng.uniform(0.15, 0.4)
        shade = np.ones(inb.shape, np.float32)
        for (a, d, b, e), m in zip(rects, masks, strict=True):
            du, dv = u[m] - a, v[m] - d
            if style == "hip":  # the facet of the nearest edge
                on_u = (b / 2 - np.abs(du)) < (e / 2 - np.abs(dv))
            elif style == "gable":  # two halves on either side of the ridge (the long axis)
                on_u = np.full(du.shape, b <= e)
            else:
                continue
            facing = np.where(on_u, np.sign(du) * lit[0], np.sign(dv) * lit[1])
            shade[m] = 1 + relief * facing
        img[rr, cc] = rgb * (shade[rr, cc] * (1 + rng.uniform(0, 0.1) * grain[rr, cc]))[:, None]
        if rng.random() < 0.5:  # dark eaves: the roof's outermost 0.5 m
            ring = inb & ~ndimage.binary_erosion(inb, iterations=max(1, round(0.5 / gsd)))
            img[ring] *= rng.uniform(0.6, 0.85)
        out.append(rects)
    return out


@dataclass(frozen=True)
class _Crossing:
    """A river or lower road under bridge decks.

    Attributes:
        band: (n, n) bool scene pixels of the river or lower road.
        along_u: whether the band runs along u (under the streets along v) or along v.
        decks: street-aligned deck rectangles (cu, cv, lu, lv), metres.
        bases, tops: (m,) deck base and top heights, metres.
        piers: street-aligned pier rectangles, two per deck (one on each bank), metres.
    """

    band: np.ndarray
    along_u: bool
    decks: list[tuple[float, float, float, float]]
    bases: np.ndarray
    tops: np.ndarray
    piers: list[tuple[float, float, float, float]]


def _crossing(rng: np.random.Generator, img: np.ndarray, u: np.ndarray, v: np.ndarray,
              spacing: tuple[float, float], wid: float, size_m: float, colour: bool,
              cs: tuple[float, float]) -> _Crossing:
    """Paint a river (60%) or a lower road mid-block along one street direction into ``img``
    and place a deck over it on every street piece it crosses whose deck reaches into the
    scene: as long as the piece allows (30-80 m) while spanning the band with at least 8 m
    over each bank, as wide as the street plus 2-5 m (8-20 m). ``u``, ``v``: the pixels'
    street-aligned coordinates, metres; ``cs``: cos and sin of the street angle."""
    along_u = bool(rng.random() < 0.5)
    sp_u, sp_v = spacing
    # a: the coordinate across the band (v when it runs along u), b: along it; the decks
    # lie across the band, on the streets at b = i * sp_b.
    sp_a, sp_b = (sp_v, sp_u) if along_u else (sp_u, sp_v)
    a, b = (v, u) if along_u else (u, v)
    room = min(80.0, sp_a - wid)  # the longest deck within a street piece (>= 31 m)
    river = bool(rng.random() < 0.6)
    width = rng.uniform(8.0, min(40.0, room - 16.0)) if river else \
        rng.uniform(6.0, min(14.0, room - 16.0))
    c, s = cs
    x, y = rng.uniform(0.25, 0.75, 2) * size_m  # a point of the scene's middle on the band
    a_p = (-x * s + y * c) if along_u else (x * c + y * s)
    a_c = (math.floor(a_p / sp_a) + 0.5) * sp_a  # mid-block
    band = np.abs(a - a_c) < width / 2
    k = int(band.sum())
    if river:
        water = np.array([0.13, 0.22, 0.26]) * rng.uniform(0.8, 1.25) if colour else \
            np.full(3, rng.uniform(0.08, 0.22))
        img[band] = water + 0.015 * rng.standard_normal((k, 1))
    else:
        img[band] = rng.uniform(0.15, 0.4) + 0.02 * rng.standard_normal((k, 1))
        img[band & (np.abs(a - a_c) < 0.3) & (b % 6.0 < 3.0)] = 0.85  # centre line
    decks: list[tuple[float, float, float, float]] = []
    reach = int(np.ceil(size_m * 1.5 / sp_b)) + 1
    for i in range(-reach, reach + 1):
        length = rng.uniform(max(30.0, width + 16.0), room)
        deck_w = float(np.clip(wid + rng.uniform(2.0, 5.0), 8.0, 20.0))
        cu, cv = (i * sp_b, a_c) if along_u else (a_c, i * sp_b)
        lu, lv = (deck_w, length) if along_u else (length, deck_w)
        du, dv = np.array([-lu, lu, lu, -lu]) / 2, np.array([-lv, -lv, lv, lv]) / 2
        xs, ys = (cu + du) * c - (cv + dv) * s, (cu + du) * s + (cv + dv) * c
        if xs.max() > 0 and ys.max() > 0 and xs.min() < size_m and ys.min() < size_m:
            decks.append((float(cu), float(cv), float(lu), float(lv)))
    bases = rng.uniform(*BRIDGE_BASE_M, size=len(decks))
    # Piers: 1.5 m thick, 2 m narrower than the deck, 1.5 m outside each bank.
    piers = []
    for cu, cv, lu, lv in decks:
        for side in (-1.0, 1.0):
            off = side * (width / 2 + 1.5)
            piers.append((cu, cv + off, lu - 2.0, 1.5) if along_u else
                         (cu + off, cv, 1.5, lv - 2.0))
    return _Crossing(band, along_u, decks, bases, bases + rng.uniform(0.8, 1.5, len(decks)),
                     piers)


def _paint_decks(rng: np.random.Generator, img: np.ndarray, u: np.ndarray, v: np.ndarray,
                 crossing: _Crossing, shadow: np.ndarray, cs: tuple[float, float]
                 ) -> np.ndarray:
    """Darken the decks' cast shadows in ``img`` (shifted by ``shadow`` metres, (xx, yy)
    frame, per 9.5 m of base height, as a median building's), then paint the decks on it;
    returns a copy of the image before the decks (the ground under them). Deck texture:
    asphalt (60%: dark, dashed centre line, edge lines) or concrete (light, a darker joint
    every 10 m), a light parapet along both long sides."""
    c, s = cs
    for (cu, cv, lu, lv), base in zip(crossing.decks, crossing.bases, strict=True):
        sx, sy = shadow * base / 9.5
        su, sv = u - (sx * c + sy * s), v - (-sx * s + sy * c)
        img[(np.abs(su - cu) < lu / 2) & (np.abs(sv - cv) < lv / 2)] *= 0.55
    under = img.copy()
    for cu, cv, lu, lv in crossing.decks:
        inb = (np.abs(u - cu) < lu / 2) & (np.abs(v - cv) < lv / 2)
        # Along the deck (across the band) and across it.
        along, across = ((v - cv)[inb], (u - cu)[inb]) if crossing.along_u else \
            ((u - cu)[inb], (v - cv)[inb])
        half = (lu if crossing.along_u else lv) / 2
        across = np.abs(across)
        if rng.random() < 0.6:  # asphalt
            val = rng.uniform(0.18, 0.32) + 0.02 * rng.standard_normal(len(along))
            val[(across < 0.3) & (along % 6.0 < 3.0)] = 0.85
            val[np.abs(across - (half - 1.4)) < 0.3] = 0.85
            val[across > half - 0.6] = 0.62
        else:  # concrete
            grey = rng.uniform(0.5, 0.68)
            val = grey + 0.02 * rng.standard_normal(len(along))
            val[along % 10.0 < 0.5] = grey * 0.75
            val[across > half - 0.6] = min(grey * 1.2, 0.9)
        img[inb] = val[:, None]
    return under


def _roof_rgb(rng: np.random.Generator, colour: bool) -> np.ndarray:
    """(3,) a roof's colour: a tone in [0.2, 0.95], tinted in a colour town."""
    tone = rng.uniform(0.2, 0.95)
    return (np.array([rng.uniform(0.6, 1.1), rng.uniform(0.7, 1.0), rng.uniform(0.6, 1.0)])
            if colour else np.ones(3)) * tone


def _cast_shadow(img: np.ndarray, rr: np.ndarray, cc: np.ndarray, shadow_px: np.ndarray
                 ) -> None:
    """Darken ``img`` (x 0.45) at the pixels (rr, cc) moved by ``shadow_px`` (x, y pixels),
    clipped to the scene."""
    n = img.shape[0]
    img[np.clip(rr + round(shadow_px[1]), 0, n - 1),
        np.clip(cc + round(shadow_px[0]), 0, n - 1)] *= 0.45


def _outline(rects: list[np.ndarray]) -> np.ndarray:
    """The outline of one rectangle (itself) or of a house and its overlapping wing (their
    union, a simple L- or T-shaped polygon), counter-clockwise, map metres. Steps of under a
    micrometre (a wing flush with an end, up to rounding) are removed."""
    if len(rects) == 1:
        return rects[0]
    union = orient(unary_union([Polygon(r) for r in rects]).simplify(1e-6), 1.0)
    return np.asarray(union.exterior.coords)[:-1]


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
