"""Joint localization: one photo-to-orthophoto registration tells the network where to look.

All clicks of a photo share one geometry, the photo's projection onto the ground. When the
photo registers to the orthophoto (:mod:`geomogeo.geo.register`), every click has a ground
point; the network still decides which object is clicked and boxes it, but its per-cell
confidence (:attr:`geomogeo.predictor.Prediction.mass`) is weighed by a prior around the
registered click (:func:`click_prior`) before the cell is chosen
(:func:`geomogeo.predictor.select`). Without registration and without a heading, the query's
rotation is searched instead (:func:`search_rotation`).

Conventions: pixel coordinates are continuous, origin at the top-left corner of the top-left
pixel, x right, y down; the fine voting grid of a ``reference_size`` window has ``G x G`` cells
of ``c = reference_size / G`` pixels, cell (i, j) covering x in [j c, (j + 1) c) and
y in [i c, (i + 1) c). Headings are degrees clockwise from north.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from shapely.geometry import Polygon

from geomogeo.geo import georef, orient, photo, raster
from geomogeo.geo.register import Registration, register
from geomogeo.predictor import Prediction, Predictor

__all__ = [
    "JointConfig",
    "RegisteredScene",
    "RotationSearch",
    "click_prior",
    "register_scene",
    "search_rotation",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JointConfig:
    """The few parameters of joint localization.

    The prior's parameters were chosen on the validation tile (Rotterdam b, 119 registered
    photos, ``scripts/tune_joint.py``), never on the test tile: sigma 2 m, parallax 4 m and
    floor 0 gave the best acc@0.5 of the grid sigma {2, 4, 6, 10, 16} x parallax {0, 4, 8} x
    floor {0, 0.02, 0.1, 0.3}; the floor is 1e-6 rather than 0 so that a click far off the
    window still leaves every cell a (tiny) weight.

    Attributes:
        register_extent_m: side of the registration window on the ground, metres (covers a
            60-120 m drone photo's footprint plus the GPS error).
        register_gsd: finest ground sample distance of the registration window, metres per
            pixel (a coarser raster is read at its own GSD).
        sigma_m: spread of the prior around a registered click, metres (added in quadrature to
            the registration's reprojection error).
        parallax_m: how far an object's footprint may lie from its registered click towards
            the camera, metres (a roof of height h seen at off-nadir angle t is displaced
            h tan(t) away from the camera).
        floor: the prior's value far from the click, in [0, 1]: a network cell there keeps
            ``floor`` of its confidence.
        rotations: query rotations tried when neither a heading nor a registration is
            available (0 or 1: no search); 8 did better than 12 on the validation tile.
    """

    register_extent_m: float = 384.0
    register_gsd: float = 0.5
    sigma_m: float = 2.0
    parallax_m: float = 4.0
    floor: float = 1e-6
    rotations: int = 8

    def __post_init__(self) -> None:
        if not (self.register_extent_m > 0 and self.register_gsd > 0 and self.sigma_m > 0):
            raise ValueError("JointConfig: register_extent_m, register_gsd and sigma_m must be "
                             "positive")
        if self.parallax_m < 0 or not 0 <= self.floor <= 1 or self.rotations < 0:
            raise ValueError("JointConfig: parallax_m >= 0, 0 <= floor <= 1 and rotations >= 0 "
                             "needed")


def click_prior(
    clicks_px: np.ndarray,
    camera_px: tuple[float, float] | None,
    grid: int,
    reference_size: int,
    gsd: float,
    *,
    sigma_m: float,
    parallax_m: float,
    floor: float,
    error_m: float = 0.0,
) -> np.ndarray:
    """Per-target prior over the fine voting grid around each registered click.

    An anisotropic Gaussian: its centre is the registered click moved ``parallax_m / 2``
    towards the camera, its spread ``s = hypot(sigma_m, error_m)`` across that direction and
    ``hypot(s, parallax_m / 2)`` along it, so the footprint of a raised object (displaced away
    from the camera in the photo's ground projection) stays under the prior. With no camera
    position (or a click right below it) the Gaussian is round with the along-spread.

    Args:
        clicks_px: (m, 2) registered clicks in reference-input pixels (x, y).
        camera_px: the camera's ground position in the same pixels, or None.
        grid: G, fine cells per side.
        reference_size: side of the reference input, pixels.
        gsd: metres per reference-input pixel.
        sigma_m, parallax_m, floor: see :class:`JointConfig`.
        error_m: the registration's error at the clicks, metres.

    Returns:
        (m, G, G) float32 in [floor, 1], evaluated at the cell centres.
    """
    pts = np.asarray(clicks_px, dtype=np.float64).reshape(-1, 2)
    c = reference_size / grid
    centres = (np.arange(grid) + 0.5) * c  # cell centres, pixels
    cx, cy = np.meshgrid(centres, centres)  # (G, G): x varies along columns
    s = float(np.hypot(sigma_m, error_m)) / gsd
    half = parallax_m / 2.0 / gsd
    along = float(np.hypot(s, half))
    out = np.empty((len(pts), grid, grid), dtype=np.float32)
    for k, (px, py) in enumerate(pts):
        u = None
        if camera_px is not None:
            d = np.array([camera_px[0] - px, camera_px[1] - py])
            n = float(np.hypot(*d))
            u = d / n if n > 1e-6 else None
        if u is None:
            g = np.exp(-0.5 * ((cx - px) ** 2 + (cy - py) ** 2) / along**2)
        else:
            mx, my = px + u[0] * half, py + u[1] * half
            a = (cx - mx) * u[0] + (cy - my) * u[1]
            b = -(cx - mx) * u[1] + (cy - my) * u[0]
            g = np.exp(-0.5 * (a**2 / along**2 + b**2 / s**2))
        out[k] = floor + (1.0 - floor) * g
    return out


@dataclass(frozen=True)
class RotationSearch:
    """The best query rotation found by :func:`search_rotation`.

    Attributes:
        heading: the rotation applied to the photo, degrees clockwise (used as its heading).
        prediction: the predictor's output for that rotation.
        total: sum of the targets' scores for it.
        totals: the total of every rotation tried, in order of ``headings``.
        headings: the rotations tried, degrees.
    """

    heading: float
    prediction: Prediction
    total: float
    totals: tuple[float, ...]
    headings: tuple[float, ...]


def search_rotation(
    predictor: Predictor, reference: np.ndarray, image: np.ndarray, points: np.ndarray,
    n: int,
) -> RotationSearch:
    """Try ``n`` query rotations (``360 / n`` degrees apart, 0 first) and keep the one whose
    targets' scores sum highest (the first on ties).

    Args:
        predictor: the network.
        reference: the reference window, as :meth:`Predictor.predict` takes it.
        image: the photo, (H, W, 3) uint8.
        points: (m, 2) clicks in photo pixels.
        n: number of rotations (>= 1).
    """
    if n < 1:
        raise ValueError(f"search_rotation needs n >= 1 rotations, got {n}")
    headings = tuple(360.0 * k / n for k in range(n))
    best: tuple[float, Prediction, float] | None = None
    totals = []
    for h in headings:
        query, qpts = orient.prepare_query(image, points, h, predictor.spec.query_size,
                                            predictor.spec.query_fit)
        pred = predictor.predict(reference, query, qpts)
        total = float(np.sum(pred.scores))
        totals.append(total)
        if best is None or total > best[2]:
            best = (h, pred, total)
    assert best is not None
    log.debug("rotation search: totals %s, kept %.0f deg", np.round(totals, 3), best[0])
    return RotationSearch(best[0], best[1], best[2], tuple(totals), headings)


@dataclass(frozen=True)
class RegisteredScene:
    """A photo registered to a window of the raster around its GPS position.

    Attributes:
        registration: the :class:`~geomogeo.geo.register.Registration` (check ``ok``).
        window: the registration window (north-up, working CRS, ``config.register_gsd``).
        clicks_xy: (m, 2) the clicks' ground points, map coordinates of ``window.crs``
            (None when the registration failed).
        camera_xy: the camera's nadir point in ``window.crs``, or None.
        footprint: the photo's ground outline, a polygon in ``window.crs``, or None.
        heading: the photo's heading from the registration, degrees clockwise from north, or
            None.
        error_m: the registration's reprojection error, metres (inf when it failed).
    """

    registration: Registration
    window: raster.ReferenceWindow
    clicks_xy: np.ndarray | None
    camera_xy: tuple[float, float] | None
    footprint: Polygon | None
    heading: float | None
    error_m: float

    @property
    def ok(self) -> bool:
        return bool(self.registration.ok)

    def centre(self) -> tuple[float, float]:
        """Centre of the clicks' bounding box, ``window.crs``: where the model window goes."""
        assert self.clicks_xy is not None
        lo, hi = self.clicks_xy.min(axis=0), self.clicks_xy.max(axis=0)
        return float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2)

    def prior(self, win: raster.ReferenceWindow, grid: int, config: JointConfig) -> np.ndarray:
        """:func:`click_prior` of the clicks on the fine voting grid of model window ``win``."""
        assert self.clicks_xy is not None
        crs = self.window.crs
        xs, ys = georef.to_crs(self.clicks_xy[:, 0], self.clicks_xy[:, 1], crs, win.crs)
        clicks_px = np.column_stack(georef.map_to_pixel(win.transform, xs, ys))
        cam_px = None
        if self.camera_xy is not None:
            cam_px = georef.map_to_pixel(
                win.transform, *georef.to_crs(*self.camera_xy, crs, win.crs))
        return click_prior(clicks_px, cam_px, grid, win.size, win.gsd, sigma_m=config.sigma_m,
                           parallax_m=config.parallax_m, floor=config.floor,
                           error_m=self.error_m)


def register_scene(
    ph: photo.Photo, points: np.ndarray, src: raster.RasterSource,
    centre: tuple[float, float], config: JointConfig,
) -> RegisteredScene:
    """Register a photo to a north-up window of ``src`` centred on ``centre`` (raster CRS) and
    put its clicks, camera and footprint on the ground.

    The window is ``config.register_extent_m`` metres wide, at ``config.register_gsd`` metres
    per pixel or the raster's own GSD when coarser. The photo's EXIF altitude and 35 mm focal
    length, when present, give the registration a loose scale prior
    (:func:`~geomogeo.geo.photo.scale_hint_from_exif`) and the camera's focal length.

    Args:
        ph: the photo (:func:`~geomogeo.geo.photo.load_photo`).
        points: (m, 2) clicks, continuous photo pixels.
        src: the opened raster.
        centre: the photo's GPS position, raster CRS.
        config: the window and prior settings.
    """
    col, row = georef.map_to_pixel(src.transform, *centre)
    native = min(georef.ground_sample_distance(src.transform, src.crs, at=(col, row)))
    gsd = max(config.register_gsd, native)
    size = max(32, round(config.register_extent_m / gsd))
    win = raster.read_window(src, centre, size, gsd)
    hint = photo.scale_hint_from_exif(ph, gsd)
    reg = register(ph.image, win.image, reference_valid=win.valid, scale_hint=hint)
    h, w = ph.height, ph.width
    if not reg.ok:
        log.info("%s: registration failed (%s)", src.path.name, reg.reason)
        return RegisteredScene(reg, win, None, None, None, None, float("inf"))
    clicks = reg.map_points(points)
    clicks_xy = np.column_stack(georef.pixel_to_map(win.transform, clicks[:, 0], clicks[:, 1]))
    cam = reg.camera_position(w, h, photo.focal_px_from_exif(ph))
    cam_xy = None if cam is None else georef.pixel_to_map(win.transform, *cam)
    ring = reg.footprint(w, h)
    fx, fy = georef.pixel_to_map(win.transform, ring[:, 0], ring[:, 1])
    footprint = Polygon(np.column_stack([fx, fy]))
    heading = reg.heading(w, h)
    error_m = float(reg.reproj_error_px) * gsd
    log.info("%s: registered, %d inliers of %d matches, reprojection error %.2f px (%.2f m), "
             "heading %.1f deg", src.path.name, reg.n_inliers, reg.n_matches,
             reg.reproj_error_px, error_m, heading)
    return RegisteredScene(reg, win, clicks_xy, cam_xy, footprint, heading, error_m)
