"""Structures: the targets of a scene as prisms and slabs over footprint polygons.

A structure is a footprint polygon on the ground (map metres, counter-clockwise; convex, except
the known footprints of real tiles, which may be any simple polygon, e.g. L-shaped), a top
height and a base height: top 0 for flat things that are part of the ground texture
(luminance blobs, road pieces), > 0 for raised ones, which the renderer extrudes (top texture
lifted to the top plane, shaded side faces) from their base: 0 for a building (a prism from
the ground), > 0 for an elevated slab such as a bridge deck, with nothing under it. Its target
box is the footprint's axis-aligned envelope (what a GIS user wants back); its click point is
the top's (or flat footprint's) centroid at the top height (for a non-convex footprint whose
centroid is not well inside, the point farthest inside it).

Kinds: ``blob`` (a :func:`~.scene.find_objects` blob, footprint its bounding box), ``building``
(a procedural footprint, a known footprint of a real tile (:mod:`~.footprints`), or a compact
bright blob of a real tile, footprint its convex hull),
``road`` (a procedural
street piece between two crossings), ``bridge`` (a procedural bridge deck over a river or a
lower road, a slab from its base to its top), ``pier`` (a prism under a bridge deck, up to
its base: drawn, never a target).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from geomogeo.data.synth.scene import Objects

__all__ = ["KINDS", "Structures", "is_convex", "rectangle", "signed_area"]

#: Structure kinds, indexed by :attr:`Structures.kinds`.
KINDS: tuple[str, ...] = ("blob", "building", "road", "bridge", "pier")


def rectangle(cx: float, cy: float, length: float, width: float, angle: float) -> np.ndarray:
    """(4, 2) counter-clockwise corners of a ``length`` x ``width`` metre rectangle centred on
    (cx, cy) map metres, its length along the direction ``angle`` radians counter-clockwise
    from east."""
    c, s = np.cos(angle), np.sin(angle)
    a, b = np.array([c, s]) * length / 2, np.array([-s, c]) * width / 2
    ctr = np.array([cx, cy])
    return np.stack([ctr - a - b, ctr + a - b, ctr + a + b, ctr - a + b])


@dataclass(frozen=True)
class Structures:
    """Target candidates of a scene.

    Attributes:
        footprints: n simple polygons (k_i, 2), map metres, counter-clockwise, k_i >= 3
            (convex except known footprints of real tiles).
        heights: (n,) top (roof, deck) heights above the ground, metres (0 = flat).
        kinds: (n,) int64 indexes into :data:`KINDS`.
        points: (n, 2) click points' map coordinates (roof at ``heights``), metres.
        bases: (n,) base heights above the ground, metres, below ``heights`` where raised: 0
            (the default, None) for prisms standing on the ground, > 0 for slabs.
    """

    footprints: tuple[np.ndarray, ...]
    heights: np.ndarray
    kinds: np.ndarray
    points: np.ndarray
    bases: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.bases is None:
            object.__setattr__(self, "bases", np.zeros(len(self.heights)))
        bases = np.asarray(self.bases, np.float64)
        object.__setattr__(self, "bases", bases)
        if bases.shape != self.heights.shape or (bases < 0).any() or \
                ((bases > 0) & (bases >= self.heights)).any():
            raise ValueError("Structures.bases: need one base per structure, 0 <= base and "
                             "base < top height for slabs")

    def __len__(self) -> int:
        return len(self.heights)

    @property
    def boxes(self) -> np.ndarray:
        """(n, 4) footprint envelopes (xmin, ymin, xmax, ymax), map metres."""
        if not self.footprints:
            return np.zeros((0, 4))
        return np.array([[*f.min(axis=0), *f.max(axis=0)] for f in self.footprints])

    @classmethod
    def from_objects(cls, obj: Objects, heights: np.ndarray | None = None,
                     kinds: np.ndarray | None = None) -> Structures:
        """Blobs as structures, clicked at the blob's centroid; flat ``blob`` kind unless
        ``heights``/``kinds`` say otherwise. The footprint of a raised blob is its convex
        hull; a flat blob's is its bounding box (the outline its visibility is judged on)."""
        n = len(obj)
        h = np.zeros(n) if heights is None else np.asarray(heights, np.float64)
        fps = tuple(hull if z > 0 else
                    np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)
                    for (x1, y1, x2, y2), hull, z in zip(obj.boxes, obj.hulls, h, strict=True))
        return cls(fps, h,
                   np.zeros(n, np.int64) if kinds is None else np.asarray(kinds, np.int64),
                   obj.centroids.reshape(-1, 2).astype(np.float64))

    @classmethod
    def from_polygons(cls, polygons: Sequence[np.ndarray], heights: Sequence[float],
                      kind: str, bases: Sequence[float] | None = None) -> Structures:
        """Simple polygons (counter-clockwise) of one kind, clicked at their area centroids;
        a non-convex polygon whose centroid lies outside it or within ``_CLICK_MARGIN_M`` of
        its outline is clicked at its pole of inaccessibility (the inside point farthest from
        the outline, to 1 cm), as a user clicks the middle of an L-shaped roof. ``bases``:
        metres (default: 0, on the ground)."""
        fps = tuple(np.asarray(p, dtype=np.float64) for p in polygons)
        return cls(fps, np.asarray(heights, np.float64).reshape(-1),
                   np.full(len(fps), KINDS.index(kind), np.int64),
                   np.array([_click_point(p) for p in fps]).reshape(-1, 2),
                   None if bases is None else np.asarray(bases, np.float64).reshape(-1))

    @classmethod
    def concat(cls, parts: Sequence[Structures]) -> Structures:
        return cls(tuple(f for p in parts for f in p.footprints),
                   np.concatenate([p.heights for p in parts]),
                   np.concatenate([p.kinds for p in parts]).astype(np.int64),
                   np.concatenate([p.points for p in parts]).reshape(-1, 2),
                   np.concatenate([p.bases for p in parts]))

    def subset(self, keep: np.ndarray) -> Structures:
        """The structures where the (n,) bool ``keep`` is True."""
        idx = np.nonzero(keep)[0]
        return Structures(tuple(self.footprints[i] for i in idx), self.heights[idx],
                          self.kinds[idx], self.points[idx], self.bases[idx])


def signed_area(p: np.ndarray) -> float:
    """Signed area of a simple polygon (k, 2), square map units: > 0 when counter-clockwise
    (x east, y north). Computed relative to the first vertex (no cancellation on large map
    coordinates)."""
    q = np.asarray(p, dtype=np.float64) - p[0]
    x, y = q[:, 0], q[:, 1]
    return float((x * np.roll(y, -1) - np.roll(x, -1) * y).sum() / 2)


def is_convex(p: np.ndarray) -> bool:
    """Whether the polygon (k, 2) is convex (collinear vertices allowed)."""
    e = np.roll(p, -1, axis=0) - p
    cross = e[:, 0] * np.roll(e[:, 1], -1) - e[:, 1] * np.roll(e[:, 0], -1)
    return bool((cross >= 0).all() or (cross <= 0).all())


#: Least distance, metres, from a non-convex footprint's outline to its centroid for the
#: centroid to be its click point (else the pole of inaccessibility is).
_CLICK_MARGIN_M = 1.0


def _click_point(p: np.ndarray) -> np.ndarray:
    """Where a footprint is clicked: its area centroid, unless it is non-convex and the
    centroid is not at least ``_CLICK_MARGIN_M`` inside it (then the pole of inaccessibility)."""
    c = _centroid(p)
    if is_convex(p):
        return c
    from shapely.geometry import Point, Polygon
    from shapely.ops import polylabel

    poly = Polygon(p)
    if poly.contains(Point(c)) and poly.exterior.distance(Point(c)) >= _CLICK_MARGIN_M:
        return c
    q = polylabel(poly, tolerance=0.01)
    return np.array([q.x, q.y])


def _centroid(p: np.ndarray) -> np.ndarray:
    """Area centroid of a simple polygon (k, 2)."""
    x, y = p[:, 0], p[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cr = x * yn - xn * y
    a = cr.sum() / 2
    return np.array([((x + xn) * cr).sum(), ((y + yn) * cr).sum()]) / (6 * a)
