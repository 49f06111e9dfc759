"""Scenes: north-up, metric rasters the data engine renders photos and references from.

A :class:`Scene` is a uint8 RGB image on a square metric grid (``gsd`` metres per pixel,
north-up) with the affine that maps pixel EDGES to map metres (x east, y north) in ``crs``.
Scenes are made once from real GeoTIFFs by :func:`scene_from_raster` (which uses the GIS
layer's window reader, so they carry the same per-raster stretch the model sees at inference
time) and stored as ``.npz`` files, so rendering needs only numpy, scipy and Pillow.

Objects (the targets) are found on the scene by :func:`find_objects`: compact blobs of the
band-pass filtered luminance at roughly 1 m, such as roofs, pools, trees and courtyards,
whose bounding boxes are well defined in both the aerial and the oblique view.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

__all__ = [
    "Objects",
    "Scene",
    "dihedral",
    "downsample",
    "find_objects",
    "load_scene",
    "sample_bilinear",
    "save_scene",
    "scene_from_raster",
]


@dataclass(frozen=True)
class Scene:
    """A north-up metric image.

    Attributes:
        name: short identifier (e.g. the tile's file stem).
        image: (H, W, 3) uint8.
        valid: (H, W) bool, True on real raster data.
        transform: (a, b, c, d, e, f) pixel EDGES -> map metres, north-up: ``b = d = 0``,
            ``a = gsd``, ``e = -gsd``.
        crs: the map CRS as a string (WKT or ``EPSG:n``), or None for a virtual scene
            (a rotated or mirrored copy used for training).
    """

    name: str
    image: np.ndarray
    valid: np.ndarray
    transform: tuple[float, float, float, float, float, float]
    crs: str | None

    def __post_init__(self) -> None:
        a, b, _, d, e, _ = self.transform
        if b != 0 or d != 0 or a <= 0 or e != -a:
            raise ValueError(f"scene {self.name!r}: transform must be north-up with square pixels")
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"scene {self.name!r}: image must be (H, W, 3) uint8")
        if self.valid.shape != self.image.shape[:2]:
            raise ValueError(f"scene {self.name!r}: valid mask shape differs from the image")

    @property
    def gsd(self) -> float:
        """Metres per scene pixel."""
        return float(self.transform[0])

    def map_to_pixel(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map metres -> continuous scene pixel (col, row), edges convention."""
        a, _, c, _, e, f = self.transform
        return (np.asarray(x) - c) / a, (np.asarray(y) - f) / e

    def pixel_to_map(self, col: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Continuous scene pixel (col, row) -> map metres."""
        a, _, c, _, e, f = self.transform
        return c + a * np.asarray(col), f + e * np.asarray(row)


def _reflect(v: np.ndarray, n: int) -> np.ndarray:
    """Mirror continuous pixel coordinates into [0, n] (edges convention)."""
    period = 2.0 * n
    v = np.mod(v, period)
    return np.where(v > n, period - v, v)


def sample_bilinear(
    scene: Scene, x: np.ndarray, y: np.ndarray, *, reflect: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear samples of the scene at map points.

    Args:
        x, y: map metres, any equal shapes S.
        reflect: continue the scene beyond its edges by mirroring (used for the far parts of
            oblique photos, which real photos always fill with ground); default: 0 outside.

    Returns:
        (S + (3,)) float32 values in [0, 255] and an (S) bool mask, True where all four
        neighbours are valid scene pixels (elsewhere the value is 0).
    """
    col, row = scene.map_to_pixel(x, y)
    h, w = scene.valid.shape
    if reflect:
        col, row = _reflect(col, w), _reflect(row, h)
    # Pixel centres sit at integer + 0.5 in the edges convention.
    fc, fr = col - 0.5, row - 0.5
    if reflect:
        fc, fr = np.clip(fc, 0, w - 1.000001), np.clip(fr, 0, h - 1.000001)
    c0, r0 = np.floor(fc).astype(np.int64), np.floor(fr).astype(np.int64)
    tc, tr = (fc - c0).astype(np.float32), (fr - r0).astype(np.float32)
    inside = (c0 >= 0) & (r0 >= 0) & (c0 + 1 < w) & (r0 + 1 < h)
    c0c, r0c = np.clip(c0, 0, w - 2), np.clip(r0, 0, h - 2)
    img = scene.image
    v00, v01 = img[r0c, c0c].astype(np.float32), img[r0c, c0c + 1].astype(np.float32)
    v10, v11 = img[r0c + 1, c0c].astype(np.float32), img[r0c + 1, c0c + 1].astype(np.float32)
    tc3, tr3 = tc[..., None], tr[..., None]
    out = (v00 * (1 - tc3) + v01 * tc3) * (1 - tr3) + (v10 * (1 - tc3) + v11 * tc3) * tr3
    ok = inside & scene.valid[r0c, c0c] & scene.valid[r0c, c0c + 1]
    ok &= scene.valid[r0c + 1, c0c] & scene.valid[r0c + 1, c0c + 1]
    out[~ok] = 0
    return out, ok


def dihedral(scene: Scene, k: int, flip: bool) -> Scene:
    """A virtual copy of ``scene`` rotated by ``k`` quarter turns (counter-clockwise) and
    optionally mirrored left-right, on a local grid with its origin at (0, 0) and no CRS.

    Used to multiply the geometric variety of the few real tiles in training; never used for
    held-out data (which keeps its real georeference).
    """
    img, valid = scene.image, scene.valid
    if flip:
        img, valid = img[:, ::-1], valid[:, ::-1]
    img, valid = np.rot90(img, k), np.rot90(valid, k)
    g = scene.gsd
    return Scene(
        name=f"{scene.name}~r{k % 4}{'f' if flip else ''}",
        image=np.ascontiguousarray(img),
        valid=np.ascontiguousarray(valid),
        transform=(g, 0.0, 0.0, 0.0, -g, float(img.shape[0]) * g),
        crs=None,
    )


def downsample(scene: Scene, factor: int) -> Scene:
    """The scene at ``factor`` times its pixel size, by block averaging (a pixel is valid when
    its whole block is); trailing rows/columns that do not fill a block are dropped."""
    if factor == 1:
        return scene
    h, w = (s // factor * factor for s in scene.valid.shape)
    img = scene.image[:h, :w].astype(np.float32)
    img = img.reshape(h // factor, factor, w // factor, factor, 3).mean(axis=(1, 3))
    valid = scene.valid[:h, :w].reshape(h // factor, factor, w // factor, factor).all(axis=(1, 3))
    a, b, c, d, e, f = scene.transform
    return Scene(
        name=scene.name,
        image=np.round(img).astype(np.uint8),
        valid=valid,
        transform=(a * factor, b, c, d, e * factor, f),
        crs=scene.crs,
    )


@dataclass(frozen=True)
class Objects:
    """Candidate targets of a scene.

    Attributes:
        boxes: (n, 4) axis-aligned boxes in map metres, (xmin, ymin, xmax, ymax).
        centroids: (n, 2) blob centroids in map metres (where a user would click).
        contrast: (n,) mean absolute band-pass response inside the blob (a saliency score).
        bright: (n,) bool, True for blobs brighter than their surroundings.
        hulls: n convex hulls (k_i, 2) of the blobs' pixels (their corners), map metres,
            counter-clockwise; their envelopes are ``boxes``.
        solidity: (n,) blob area / hull area (1 for convex blobs such as roofs seen from
            above, rotated or not).
    """

    boxes: np.ndarray
    centroids: np.ndarray
    contrast: np.ndarray
    bright: np.ndarray
    hulls: tuple[np.ndarray, ...]
    solidity: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


def find_objects(
    scene: Scene,
    *,
    object_gsd: float = 1.0,
    min_area_m2: float = 60.0,
    max_area_m2: float = 1600.0,
    min_fill: float = 0.45,
    max_aspect: float = 3.0,
    threshold: float = 0.6,
) -> Objects:
    """Compact bright or dark blobs of the scene (roofs, pools, trees, courtyards).

    The luminance at ``object_gsd`` is band-pass filtered (difference of Gaussians, sigmas
    1.5 m and 8 m); pixels above ``threshold`` standard deviations form bright blobs and below
    ``-threshold`` dark ones; connected components with an area in ``[min_area_m2,
    max_area_m2]``, a fill ratio (area / bounding-box area) of at least ``min_fill``, an
    aspect ratio of at most ``max_aspect`` and lying wholly on valid data are kept.
    """
    zoom = scene.gsd / object_gsd
    lum = scene.image.astype(np.float32).mean(axis=2)
    valid = scene.valid
    if abs(zoom - 1.0) > 1e-6:
        lum = ndimage.zoom(lum, zoom, order=1)
        valid = ndimage.zoom(valid.astype(np.float32), zoom, order=1) > 0.99
    g = object_gsd
    dog = ndimage.gaussian_filter(lum, 1.5 / g) - ndimage.gaussian_filter(lum, 8.0 / g)
    std = float(dog[valid].std()) if valid.any() else 1.0
    dog /= max(std, 1e-6)
    inner = ndimage.binary_erosion(valid, iterations=2)
    boxes, cents, contrast, bright, hulls, solidity = [], [], [], [], [], []
    oh, ow = lum.shape
    sy, sx = scene.valid.shape[0] / oh, scene.valid.shape[1] / ow
    for is_bright, mask in ((True, dog > threshold), (False, dog < -threshold)):
        mask = ndimage.binary_opening(mask, iterations=1)
        labels, n = ndimage.label(mask)
        if n == 0:
            continue
        for i, sl in enumerate(ndimage.find_objects(labels), start=1):
            if sl is None:
                continue
            blob = labels[sl] == i
            area = float(blob.sum()) * g * g
            bh, bw = blob.shape
            if not (min_area_m2 <= area <= max_area_m2):
                continue
            if blob.mean() < min_fill or max(bh, bw) > max_aspect * min(bh, bw):
                continue
            if not inner[sl][blob].all():
                continue
            rr, cc = np.nonzero(blob)
            # Object-grid pixel edges -> scene pixel edges -> map metres.
            c1, c2 = sl[1].start * sx, sl[1].stop * sx
            r1, r2 = sl[0].start * sy, sl[0].stop * sy
            x1, y2 = scene.pixel_to_map(c1, r1)
            x2, y1 = scene.pixel_to_map(c2, r2)
            cx, cy = scene.pixel_to_map(
                (sl[1].start + cc.mean() + 0.5) * sx, (sl[0].start + rr.mean() + 0.5) * sy
            )
            boxes.append((float(x1), float(y1), float(x2), float(y2)))
            cents.append((float(cx), float(cy)))
            contrast.append(float(np.abs(dog[sl][blob]).mean()))
            bright.append(is_bright)
            hull = _pixel_hull(rr + sl[0].start, cc + sl[1].start, sx, sy, scene)
            hulls.append(hull)
            solidity.append(area / _area(hull))
    return Objects(
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        np.asarray(cents, dtype=np.float64).reshape(-1, 2),
        np.asarray(contrast, dtype=np.float64),
        np.asarray(bright, dtype=bool),
        tuple(hulls),
        np.asarray(solidity, dtype=np.float64),
    )


def _pixel_hull(rows: np.ndarray, cols: np.ndarray, sx: float, sy: float, scene: Scene
                ) -> np.ndarray:
    """Counter-clockwise convex hull (k, 2), map metres, of the corners of object-grid
    pixels (rows, cols); (sx, sy) scale object-grid pixels to scene pixels."""
    corners = np.concatenate([np.column_stack([cols + dc, rows + dr])
                              for dc in (0, 1) for dr in (0, 1)]).astype(np.float64)
    corners = np.unique(corners, axis=0)
    x, y = scene.pixel_to_map(corners[:, 0] * sx, corners[:, 1] * sy)
    pts = np.column_stack([x, y])
    return pts[ConvexHull(pts).vertices]  # counter-clockwise in 2-D


def _area(poly: np.ndarray) -> float:
    """Area of a simple polygon (k, 2)."""
    x, y = poly[:, 0], poly[:, 1]
    return float(abs((x * np.roll(y, -1) - np.roll(x, -1) * y).sum()) / 2)


def scene_from_raster(
    path: str | os.PathLike[str], *, gsd: float = 0.5, bands: tuple[int, ...] | None = None
) -> Scene:
    """Resample a whole georeferenced raster to a north-up metric scene of ``gsd`` metres.

    Uses :func:`geomogeo.geo.raster.read_window` (rasters in geographic CRSs land in their
    local UTM zone), so the scene's intensities are exactly what inference sees.
    """
    from geomogeo.geo import georef, raster  # the GIS layer is needed only here

    src = raster.open_raster(path, bands=bands)
    left, bottom, right, top = src.bounds
    cx, cy = (left + right) / 2, (bottom + top) / 2
    work = src.crs
    if src.crs.is_geographic:
        work = georef.local_metric_crs(*georef.to_lonlat(cx, cy, src.crs))
    corners = georef.to_crs(
        np.array([left, right, left, right]), np.array([bottom, bottom, top, top]), src.crs, work
    )
    span = max(np.ptp(corners[0]), np.ptp(corners[1]))
    size = int(np.ceil(span / gsd / 2)) * 2
    win = raster.read_window(src, (cx, cy), size, gsd)
    t = win.transform
    image = np.round(win.image * 255).astype(np.uint8)
    return Scene(
        name=Path(path).stem,
        image=image,
        valid=win.valid & ~_undeclared_nodata(image),
        transform=(t.a, t.b, t.c, t.d, t.e, t.f),
        crs=win.crs.to_wkt(),
    )


def _undeclared_nodata(image: np.ndarray, min_area: int = 2000) -> np.ndarray:
    """Large connected areas of pure black: image collars that some tiles (e.g. SpaceNet)
    fill with 0 without declaring a nodata value. Dark but real pixels come in small
    patches and are kept."""
    zero = image.max(axis=2) == 0
    labels, n = ndimage.label(zero)
    if n == 0:
        return zero
    sizes = np.bincount(labels.ravel())
    big = sizes >= min_area
    big[0] = False
    return big[labels]


def save_scene(scene: Scene, path: str | os.PathLike[str]) -> None:
    """Write a scene as a compressed ``.npz`` (plain arrays and strings, no pickle)."""
    np.savez_compressed(
        path,
        name=np.array(scene.name),
        image=scene.image,
        valid=scene.valid,
        transform=np.array(scene.transform, dtype=np.float64),
        crs=np.array(scene.crs or ""),
    )


def load_scene(path: str | os.PathLike[str]) -> Scene:
    """Read a scene written by :func:`save_scene` (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as z:
        crs = str(z["crs"])
        return Scene(
            name=str(z["name"]),
            image=z["image"],
            valid=z["valid"],
            transform=tuple(float(v) for v in z["transform"]),  # type: ignore[arg-type]
            crs=crs or None,
        )
