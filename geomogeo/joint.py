"""Joint localization: one photo-to-orthophoto registration tells the network where to look.

All clicks of a photo share one geometry, the photo's projection onto the ground. When the
photo registers to the orthophoto (:mod:`geomogeo.geo.register`), every click has a ground
point, moved onto its object where the photo shows the parallax of a raised one
(:mod:`geomogeo.geo.parallax`); the network still decides which object is clicked and boxes
it, but its per-cell confidence (:attr:`geomogeo.predictor.Prediction.mass`) is weighed by a
prior around that point (:func:`click_prior`) before the cell is chosen
(:func:`geomogeo.predictor.select`), and the box is centred on it (:func:`place_on_clicks`).
Without registration and without a heading, the query's rotation is searched instead
(:func:`search_rotation`).

Conventions: pixel coordinates are continuous, origin at the top-left corner of the top-left
pixel, x right, y down; the fine voting grid of a ``reference_size`` window has ``G x G`` cells
of ``c = reference_size / G`` pixels, cell (i, j) covering x in [j c, (j + 1) c) and
y in [i c, (i + 1) c). Headings are degrees clockwise from north.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage
from shapely.geometry import Polygon

from geomogeo.geo import georef, orient, photo, raster
from geomogeo.geo.parallax import ParallaxConfig, correct_parallax
from geomogeo.geo.register import Registration, register
from geomogeo.predictor import Prediction, Predictor, select

__all__ = [
    "CameraPrior",
    "ConsistencySearch",
    "JointConfig",
    "RegisteredScene",
    "RotationSearch",
    "click_prior",
    "consistency_vote",
    "place_on_clicks",
    "register_scene",
    "search_rotation",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JointConfig:
    """The few parameters of joint localization.

    The prior's parameters were chosen on the validation tile (Rotterdam b,
    ``scripts/tune_joint.py``), never on the test tile. With the box centred on the
    parallax-corrected click (the default placement) the prior only picks the cell whose box
    size is kept: sigma 6 m, parallax 0 and floor 0 gave the best acc@0.5 of the grid sigma
    {2, 4, 6, 10, 16} x parallax {0, 2, 4, 6, 8, 12} x floor {0, 0.02, 0.1, 0.3} on 118
    parallax photos with 2-6 targets (0.928 against 0.876 for the former sigma 2 m, parallax
    4 m, which had been the best with the box where the network put it), and tied the
    others at 1.000 on 160 photos with 1-6 targets. The floor is 1e-6 rather than 0 so that
    a click far off the window still leaves every cell a (tiny) weight.

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
            available (0 or 1: no search), ``360 / rotations`` degrees apart. 4 with
            ``edge_heading`` (the default: a quarter turn apart from the edges' heading
            modulo 90 degrees); without it 8 did better than 12 on the validation tile. (With
            4 passes per rotation, :meth:`~geomogeo.localize.Localizer.load`'s
            ``search_tta="rot4"``, 12 did best there, but not on the test tiles: see
            ``search_tta``.)
        rotation_search: how the rotations are scored: ``"consistency"`` (the targets'
            confidence maps must agree with one photo geometry, :class:`ConsistencySearch`;
            photos with one click fall back to the score) or ``"score"`` (the summed target
            scores). On the validation tile (Rotterdam b, 40 photos with 2 targets,
            ``scripts/tune_rotation.py``) 8 rotations gave acc@0.5 0.425 with
            ``"consistency"`` (sigma 4 m, no prior, no refinement; sigma 2 or 6 m, a prior of
            4 or 8 m, 12 rotations and the refinement did not do better) against 0.312 with
            ``"score"`` and 0.163 without search; the true heading's nearest of the 8
            rotations gives 0.487.
        edge_heading: start the rotations at the photo's heading modulo 90 degrees found from
            its edges and the reference window's
            (:func:`~geomogeo.geo.heading.heading_mod90`) instead of at 0, so that one of 4
            rotations turns the photo near north-up wherever the scene has two perpendicular
            directions. Chosen on validation photos (Rotterdam b with parallax, 200 photos,
            500 targets, ``mogeo-light16-v3``): acc@0.5 0.294 with 8 rotations from 0, 0.322
            with 8 from the edges' heading, 0.340 with 4 from it (the kept rotation within
            22.5 degrees of the true yaw on 53%, 63% and 76% of the photos), at about half
            the time; on a second validation set (78 photos) 0.227 -> 0.278.
        footprint_m: the ground width the photo's width may cover, metres (min, max), for the
            consistency search's scales when EXIF gives no scale.
        consistency_sigma_m: the consistency vote's tolerance, metres.
        consistency_prior_m: spread of the prior around each target's consistent position
            when its cell is chosen at the kept rotation, metres, or None (no prior). It did
            not help while the kept rotation was often wrong (8 rotations from 0, above); with
            the edges' heading and the camera prior (Rotterdam b with parallax,
            ``mogeo-light16-v3``, 200 photos, 500 targets) acc@0.5 / accI@0.5 rose from 0.368
            / 0.090 without it to 0.424 / 0.140, 0.436 / 0.155 and 0.436 / 0.150 with 4, 8
            and 16 m, and on 78 more photos from 0.325 / 0.051 to 0.345 / 0.103 with 8 m.
        camera_sigma_m: where the window is centred on the camera's position (EXIF GPS or
            ``center``), the consistency vote also asks that the photo's centre lie on the
            ground ahead of the camera along the heading tried (a drone camera has no roll and
            tilts forward): a Gaussian log-prior of this spread, metres, on the photo centre's
            sideways and backward offset from the camera (:class:`CameraPrior`). None: no
            such prior. Chosen on validation photos (Rotterdam b with parallax,
            ``mogeo-light16-v3``, 4 rotations from the edges' heading): on 200 photos (500
            targets) acc@0.5 0.340 without it, 0.364 / 0.368 / 0.358 with 4 / 8 / 16 m, the
            kept rotation within 22.5 degrees of the true yaw on 76% -> 88% of the photos
            with 8 m; on 78 more photos 0.278 -> 0.325 (67% -> 87%).
        heading_vote_deg: with a heading (EXIF or given) but no registration, the network
            looks once at that heading, the consistency vote runs at headings within this many
            degrees of it (the compass's error) with the camera prior, and each target's cell
            is chosen under the prior around its consistent position
            (``consistency_prior_m``); None: the network's own choice.
        single_click_vote: a photo with one click is scored by the consistency vote too where
            the camera's position is known (its one map under the camera prior, its cell
            under ``consistency_prior_m``; the summed score otherwise). Chosen on validation
            (Rotterdam b, one-click photos with parallax, ``mogeo-light16-v3``, heading
            unknown): acc@0.5 0.610 -> 0.654 on 136 photos, 0.276 -> 0.296 on 196 more.
            With a heading but no registration, one such click takes the
            ``heading_vote_deg`` path too (on 322 validation photos with a heading 0.280 ->
            0.332).
        search_tilts_deg: the consistency vote models the photo as a pinhole camera
            (no roll) tilted forward from nadir by each of these angles, degrees, and keeps
            the best: the clicks' offsets become their ground offsets
            (:func:`ground_offsets`) and the camera prior pins the camera's nadir to its
            position (:class:`CameraPrior` ``nadir``). None: the similarity (the photo's own
            offsets). It needs the focal length: EXIF ``FocalLengthIn35mmFilm``, else
            ``search_hfov_deg``. Chosen on validation (Rotterdam b with parallax,
            ``mogeo-light16-v3``, heading unknown): acc@0.5 0.436 -> 0.458 on 200 photos,
            0.345 -> 0.381 on 78 more; with a heading but no registration 0.480 -> 0.507.
        search_hfov_deg: the horizontal field of view assumed where EXIF gives no focal
            length, degrees (drone cameras: about 60-84).
        refine_rotation: look once more at the heading the consistency vote found (one more
            network call).
        click_inner: where the joint box goes relative to its registered click, as a
            fraction of the box's half-size: the network's box (its size unchanged) is moved
            the least so that the click lies within ``click_inner`` half-sizes of its centre
            (0: centred on the click; 1: the box just contains it; None: the network's box
            stays where it is). See :func:`place_on_clicks`.
        parallax: move each registered click towards the camera onto its object where the
            photo's view of it says so (:func:`~geomogeo.geo.parallax.correct_parallax`: a
            roof is registered beyond its footprint), or None (the ground-plane points).
            The prior and the box placement then work from the moved points.
        refine: when the localizer has a box refiner (:mod:`geomogeo.nn.refine`), it boxes
            each joint target around its (moved) registered click, in place of the network's
            box; the network still decides the window and the score. On the validation tile
            (Rotterdam b with parallax, 120 photos, 294 targets, held-out-city network) it
            raised the joint acc@0.5 from 0.616 to 0.986.
        refine_network: the same for targets the network alone localized, around the
            network's box centre: on the same tile's first 60 photos (145 targets) it raised
            the rotation search's acc@0.5 from 0.103 to 0.193.
        refine_passes: how many times the refiner boxes each target, each pass after the
            first around the previous box's centre (:func:`geomogeo.predictor.refine_boxes`).
            A second pass helps where the point is far from the object's centre (crops of
            validation objects clicked anywhere in the central half of their box: mean IoU
            0.653 -> 0.694 on Rotterdam c renders) but drifts onto neighbours of small
            objects: on the validation tile's joint (Rotterdam b, 120 photos, targets >= 100
            m^2) acc@0.5 fell from 0.986 to 0.711, so the default is one pass.
    """

    register_extent_m: float = 384.0
    register_gsd: float = 0.5
    sigma_m: float = 6.0
    parallax_m: float = 0.0
    floor: float = 1e-6
    rotations: int = 4
    rotation_search: str = "consistency"
    edge_heading: bool = True
    footprint_m: tuple[float, float] = (60.0, 320.0)
    consistency_sigma_m: float = 4.0
    consistency_prior_m: float | None = 8.0
    camera_sigma_m: float | None = 8.0
    heading_vote_deg: float | None = 10.0
    single_click_vote: bool = True
    search_tilts_deg: tuple[float, ...] | None = (0.0, 10.0, 20.0, 30.0)
    search_hfov_deg: float = 75.0
    refine_rotation: bool = False
    click_inner: float | None = 0.0
    parallax: ParallaxConfig | None = field(default_factory=ParallaxConfig)
    refine: bool = True
    refine_network: bool = True
    refine_passes: int = 1

    def __post_init__(self) -> None:
        if not (self.register_extent_m > 0 and self.register_gsd > 0 and self.sigma_m > 0):
            raise ValueError("JointConfig: register_extent_m, register_gsd and sigma_m must be "
                             "positive")
        if self.parallax_m < 0 or not 0 <= self.floor <= 1 or self.rotations < 0:
            raise ValueError("JointConfig: parallax_m >= 0, 0 <= floor <= 1 and rotations >= 0 "
                             "needed")
        if self.rotation_search not in ("consistency", "score"):
            raise ValueError(f"JointConfig: rotation_search must be 'consistency' or 'score', "
                             f"got {self.rotation_search!r}")
        if self.refine_passes < 1:
            raise ValueError(f"JointConfig: refine_passes must be >= 1, got "
                             f"{self.refine_passes!r}")
        if self.click_inner is not None and not 0 <= self.click_inner <= 1:
            raise ValueError(f"JointConfig: click_inner must be in [0, 1] or None, got "
                             f"{self.click_inner!r}")
        if self.search_tilts_deg is not None and not all(
                0 <= t < 80 for t in self.search_tilts_deg):
            raise ValueError(f"JointConfig: search_tilts_deg must lie in [0, 80) degrees, got "
                             f"{self.search_tilts_deg!r}")
        if not 0 < self.search_hfov_deg < 180:
            raise ValueError(f"JointConfig: search_hfov_deg must lie in (0, 180) degrees, got "
                             f"{self.search_hfov_deg!r}")
        lo, hi = self.footprint_m
        priors = (self.consistency_prior_m, self.camera_sigma_m)
        if self.heading_vote_deg is not None and not self.heading_vote_deg >= 0:
            raise ValueError(f"JointConfig: heading_vote_deg must be >= 0 or None, got "
                             f"{self.heading_vote_deg!r}")
        if not (0 < lo < hi and self.consistency_sigma_m >= 0
                and all(p is None or p > 0 for p in priors)):
            raise ValueError("JointConfig: 0 < footprint_m[0] < footprint_m[1], "
                             "consistency_sigma_m >= 0, consistency_prior_m > 0 and "
                             "camera_sigma_m > 0 (or None) needed")


def place_on_clicks(boxes: np.ndarray, clicks_px: np.ndarray, inner: float) -> np.ndarray:
    """Move each box, its size unchanged, the least so that its registered click lies within
    ``inner`` half-sizes of its centre (per axis).

    Args:
        boxes: (m, 4) (x1, y1, x2, y2), pixels (edges) of any frame.
        clicks_px: (m, 2) registered clicks (x, y) in the same pixels.
        inner: in [0, 1]; 0 centres each box on its click, 1 only makes it contain the click.

    Returns:
        (m, 4) float64 boxes.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    p = np.asarray(clicks_px, dtype=np.float64).reshape(-1, 2)
    centre, half = (b[:, :2] + b[:, 2:]) / 2, (b[:, 2:] - b[:, :2]) / 2
    lim = half * inner
    c = np.clip(centre, p - lim, p + lim)
    return np.hstack([c - half, c + half])


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
class ConsistencySearch:
    """Settings of the cross-target consistency score of :func:`search_rotation`.

    All clicks of a photo share one geometry: near nadir, the clicked objects' positions in
    the north-up reference are the clicks' offsets from their centroid, turned north-up by
    the photo's heading, times one scale, plus one translation. A query rotation is scored by
    how well the network's per-target confidence maps agree with such a geometry
    (:func:`consistency_vote`), searched over headings within half a rotation step of the
    query's rotation (``residual_step`` apart), over ``scales`` and over the translation.

    Attributes:
        scales: the reference-input pixels per photo pixel tried (the photo's scale on the
            ground over the reference GSD), increasing.
        tolerance_px: spread of the Gaussian blur of each confidence map before the vote,
            reference-input pixels (the geometry is a similarity only near nadir).
        prior_px: spread of the prior around each target's consistent position when its cell
            is chosen (:func:`click_prior`), reference-input pixels; None: no prior (the
            network's own choice at the kept rotation).
        refine: look once more at the heading the vote found when it falls between two of
            the searched rotations (one extra network call), and keep it if it votes higher.
        residual_step: step of the headings tried around each query rotation, degrees.
        eps: the vote's floor, as a fraction of a uniform map's mass per cell (each map is
            normalised to sum 1 over its cells; a target contributes ``log(eps / cells +
            map)``, so one target found nowhere does not veto the rotation).
        floor: the prior's value far from a consistent position (see :class:`JointConfig`).
        camera_px: spread of the camera prior (:class:`CameraPrior`), reference-input
            pixels, or None (none).
        single: vote on a photo with one click too when the camera prior applies.
        tilts: camera tilts from nadir to try, degrees (with ``focal_px``): the clicks'
            offsets are then their ground offsets under a pinhole camera tilted forward
            (:func:`ground_offsets`) and the camera prior holds the camera's nadir; empty:
            the similarity.
        focal_px: the photo's focal length, photo pixels, or None (unknown).
    """

    scales: tuple[float, ...]
    tolerance_px: float
    prior_px: float | None = None
    refine: bool = True
    residual_step: float = 5.0
    eps: float = 1.0
    floor: float = JointConfig.floor
    camera_px: float | None = None
    single: bool = False
    tilts: tuple[float, ...] = ()
    focal_px: float | None = None

    @classmethod
    def from_config(cls, config: JointConfig, photo_width: int, reference_gsd: float,
                    scale_hint: float | None = None,
                    focal_px: float | None = None) -> ConsistencySearch:
        """The settings of ``config`` for a photo ``photo_width`` pixels wide and a reference
        at ``reference_gsd`` metres per pixel (``focal_px``: the photo's focal length in
        pixels, for ``config.search_tilts_deg``).

        The scales cover a photo width of ``config.footprint_m`` metres on the ground, in
        steps of 15%; with ``scale_hint`` (reference pixels per photo pixel at nadir, e.g.
        :func:`~geomogeo.geo.photo.scale_hint_from_exif`) they cover ``hint / 1.25 .. hint *
        1.6`` instead (an oblique photo is coarser than at nadir).
        """
        if scale_hint is not None and scale_hint > 0:
            lo, hi = scale_hint / 1.25, scale_hint * 1.6
        else:
            lo, hi = (f / photo_width / reference_gsd for f in config.footprint_m)
        count = max(2, math.ceil(math.log(hi / lo) / math.log(1.15)) + 1)
        px = config.consistency_sigma_m / reference_gsd
        prior, camera = (None if m is None else m / reference_gsd
                         for m in (config.consistency_prior_m, config.camera_sigma_m))
        return cls(tuple(float(v) for v in np.geomspace(lo, hi, count)), px, prior,
                   config.refine_rotation, floor=config.floor, camera_px=camera,
                   single=config.single_click_vote,
                   tilts=tuple(config.search_tilts_deg or ()) if focal_px else (),
                   focal_px=focal_px)


@dataclass(frozen=True)
class CameraPrior:
    """Where the photo's centre may lie on the ground, for one heading tried.

    A drone camera at ``position`` looking towards ``heading`` (no roll, tilted forward by
    0 degrees or more) sees at its photo's centre a ground point ahead of it along the
    heading. Given the clicks' centroid at ``c`` and the scale ``s`` of the consistent
    geometry, the photo's centre lies at ``c + s * centre_offset``; its offset from
    ``position`` splits into ``forward`` (along the heading) and ``side``, and the log-prior
    is ``-(side**2 + min(forward, 0)**2) / (2 sigma_px**2)``: nothing for any distance
    ahead (a nadir photo or one tilted 35 degrees), a penalty for a centre beside or behind
    the camera (a wrong quarter turn of an oblique photo). With ``nadir``, ``centre_offset``
    is the offset of the camera's own nadir point instead, and any offset from ``position``
    is penalised (a pinhole model that knows the tilt, :func:`ground_offsets`).

    Attributes:
        position: (x, y) the camera's ground position, reference-input pixels (x right, y
            down, north up; corner origin).
        centre_offset: (x, y) the photo centre's offset from the clicks' centroid, photo
            pixels turned north-up by ``heading`` (as the vote's offsets).
        heading: degrees clockwise from north.
        sigma_px: the spread, reference-input pixels (> 0): the GPS error and the
            similarity model's error for oblique photos.
    """

    position: tuple[float, float]
    centre_offset: tuple[float, float]
    heading: float
    sigma_px: float
    nadir: bool = False

    def log_prior(self, centres: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """The log-prior of clicks' centroids ``centres`` (..., 2) (reference-input pixels)
        at ``scales`` (broadcast against ``centres[..., 0]``; reference-input pixels per
        photo pixel)."""
        theta = math.radians(self.heading)
        ahead = np.array([math.sin(theta), -math.cos(theta)])
        beside = np.array([math.cos(theta), math.sin(theta)])
        dx = centres[..., 0] + scales * self.centre_offset[0] - self.position[0]
        dy = centres[..., 1] + scales * self.centre_offset[1] - self.position[1]
        forward = dx * ahead[0] + dy * ahead[1]
        side = dx * beside[0] + dy * beside[1]
        ahead_cost = forward if self.nadir else np.minimum(forward, 0.0)
        return -(side ** 2 + ahead_cost ** 2) / (2.0 * self.sigma_px ** 2)


def ground_offsets(points: np.ndarray, size: tuple[int, int], focal_px: float,
                   tilt_deg: float) -> np.ndarray | None:
    """Where clicks lie on flat ground relative to the camera's nadir, for a pinhole camera
    tilted forward by ``tilt_deg`` from nadir (no roll).

    Args:
        points: (m, 2) photo pixels (x right, y down; edges).
        size: the photo's (width, height), pixels; the principal point is its centre.
        focal_px: focal length, photo pixels.
        tilt_deg: the optical axis's angle from straight down, degrees (>= 0).

    Returns:
        (m, 2) ground offsets in the photo's own axes (x right, y towards the photo's bottom,
        i.e. backwards), in photo pixels at nadir scale (metres times focal / height), or
        None when a click lies at or above the horizon. At tilt 0 they are the clicks'
        offsets from the photo's centre.
    """
    t = math.radians(tilt_deg)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x = (pts[:, 0] - size[0] / 2.0) / focal_px
    y = (pts[:, 1] - size[1] / 2.0) / focal_px
    den = math.cos(t) + y * math.sin(t)
    if np.any(den <= 1e-6):
        return None
    forward = (math.sin(t) - y * math.cos(t)) / den
    return np.stack([x / den, -forward], axis=-1) * focal_px


def consistency_vote(
    mass: np.ndarray, offsets: np.ndarray, scales: tuple[float, ...], reference_size: int, *,
    tolerance_px: float, eps: float = 1.0, camera: CameraPrior | None = None,
) -> tuple[float, np.ndarray, float]:
    """The best joint placement of m targets whose positions are ``centre + scale * offsets``.

    Each target's confidence map (``mass[k]``, the fine voting grid of a ``reference_size``
    window) is blurred by a Gaussian of ``tolerance_px``, normalised to sum 1 and taken as
    ``log(eps / G**2 + map)``; the vote at a centre and scale is the sum over targets of
    their map at ``centre + scale * offsets[k]`` (bilinear between cell centres; the floor
    off the window). Centres are tried at the cell centres.

    Args:
        mass: (m, G, G) >= 0, :attr:`~geomogeo.predictor.Prediction.mass`.
        offsets: (m, 2) the clicks' offsets from their centroid in the photo turned north-up,
            photo pixels (x right, y down).
        scales: reference-input pixels per photo pixel to try.
        reference_size: side of the reference input, pixels.
        tolerance_px: the blur, reference-input pixels (0: none).
        eps: the floor, in units of a uniform map's value.
        camera: a log-prior on where the photo's centre lies, added to the vote at each
            centre and scale, or None.

    Returns:
        (score, positions, scale): the best vote, the targets' (m, 2) positions there
        (reference-input pixels, continuous, corner origin) and its scale; the first best in
        the order scales, then rows, then columns of the centre.
    """
    mass = np.asarray(mass, dtype=np.float64)
    m, g = mass.shape[0], mass.shape[-1]
    cell = reference_size / g
    logs = np.empty_like(mass)
    for k in range(m):
        mk = ndimage.gaussian_filter(mass[k], tolerance_px / cell, mode="constant") \
            if tolerance_px > 0 else mass[k]
        total = mk.sum()
        mk = mk / total if total > 0 else np.full_like(mk, 1.0 / mk.size)
        logs[k] = np.log(eps / mk.size + mk)
    floor = math.log(eps / (g * g))
    # Centre (x, y) in cell units at the cell centres; map_coordinates indexes cells by their
    # centres, so a position p (pixels) is at index p / cell - 0.5.
    cy, cx = np.mgrid[0:g, 0:g] + 0.5
    s = np.asarray(scales, dtype=np.float64)[:, None, None]
    off = np.asarray(offsets, dtype=np.float64).reshape(m, 2) / cell
    vote = np.zeros((len(s), g, g))
    for k in range(m):
        coords = [cy + s * off[k, 1] - 0.5, cx + s * off[k, 0] - 0.5]
        coords = [np.broadcast_to(c, vote.shape) for c in coords]
        vote += ndimage.map_coordinates(logs[k], coords, order=1, mode="constant", cval=floor)
    if camera is not None:
        vote += camera.log_prior(np.stack([cx * cell, cy * cell], axis=-1)[None], s)
    best = int(np.argmax(vote))
    si, i, j = np.unravel_index(best, vote.shape)
    scale = float(scales[si])
    centre = np.array([(j + 0.5) * cell, (i + 0.5) * cell])
    return float(vote.flat[best]), centre + scale * off * cell, scale


@dataclass(frozen=True)
class RotationSearch:
    """The best query rotation found by :func:`search_rotation`.

    Attributes:
        heading: the rotation applied to the photo, degrees clockwise (used as its heading).
        prediction: the predictor's output for that rotation (the ``final`` predictor's when
            one was given; with a consistency search and a prior: its boxes and scores are
            those chosen under the prior).
        total: the kept rotation's score (summed target scores, or the consistency vote).
        totals: the score of every rotation tried, in order of ``headings``.
        headings: the rotations tried, degrees (a refinement comes last).
        positions: (m, 2) the targets' consistent positions, reference-input pixels, or None
            (score search).
        scale: the consistent geometry's reference-input pixels per photo pixel, or None.
    """

    heading: float
    prediction: Prediction
    total: float
    totals: tuple[float, ...]
    headings: tuple[float, ...]
    positions: np.ndarray | None = None
    scale: float | None = None


def search_rotation(
    predictor: Predictor, reference: np.ndarray, image: np.ndarray, points: np.ndarray,
    n: int, *, consistency: ConsistencySearch | None = None, final: Predictor | None = None,
    start: float = 0.0, camera: tuple[float, float] | None = None,
    spread: float | None = None,
) -> RotationSearch:
    """Try ``n`` query rotations (``360 / n`` degrees apart, ``start`` first) and keep the
    best.

    With ``final`` (e.g. the same network with more test-time augmentation passes than
    ``predictor``), the kept rotation is looked at once more by it, and that look is the
    prediction: the search can then run on cheap looks.

    Without ``consistency`` (or with fewer than two clicks, or a predictor that returns no
    dense ``mass``), the best is the one whose targets' scores sum highest (the first on
    ties). With it, each rotation's score is the best :func:`consistency_vote` over the
    headings within half a step of it (``consistency.residual_step`` apart); with
    ``consistency.refine``, a heading between two rotations is looked at once more (n + 1
    network calls) and kept if it votes higher. Each target's cell is then chosen under a
    :func:`click_prior` around its consistent position when ``consistency.prior_px`` is set.

    Args:
        predictor: the network.
        reference: the reference window, as :meth:`Predictor.predict` takes it.
        image: the photo, (H, W, 3) uint8.
        points: (m, 2) clicks in photo pixels.
        n: number of rotations (>= 1).
        consistency: the consistency score's settings, or None (summed scores).
        final: the predictor of the kept rotation's last look, or None (``predictor``'s look
            is kept). It must take ``predictor``'s inputs.
        start: the first rotation, degrees clockwise (e.g. the photo's heading modulo 90
            degrees from its edges, :func:`~geomogeo.geo.heading.heading_mod90`).
        camera: the camera's ground position in the reference window, (x, y) reference-input
            pixels, or None (unknown). With ``consistency.camera_px``, each vote weighs where
            the photo's centre then lies (:class:`CameraPrior`).
        spread: the consistency vote's headings around each rotation reach this many degrees
            either side (e.g. a compass's error with ``n=1`` at its heading), or None: half
            a rotation step.
    """
    if n < 1:
        raise ValueError(f"search_rotation needs n >= 1 rotations, got {n}")
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    size = predictor.spec.reference_size
    headings = [(start + 360.0 * k / n) % 360.0 for k in range(n)]

    def look(h: float, net: Predictor = predictor) -> Prediction:
        query, qpts = orient.prepare_query(image, pts, h, net.spec.query_size,
                                            net.spec.query_fit)
        return net.predict(reference, query, qpts)

    # The vote's views of the clicks: (offsets, anchor, nadir), photo axes (x right, y down
    # or, on the ground, backwards). The similarity: the clicks' own offsets, anchored at the
    # photo's centre; with tilts and a focal length, their ground offsets under each tilt
    # (those with every click below the horizon), anchored at the camera's nadir.
    photo_size = (image.shape[1], image.shape[0])
    views: list[tuple[np.ndarray, np.ndarray, bool]] = []
    if consistency is not None and consistency.tilts and consistency.focal_px:
        for t in consistency.tilts:
            g = ground_offsets(pts, photo_size, consistency.focal_px, t)
            if g is not None:
                views.append((g, np.zeros(2), True))
    if not views:
        views.append((pts, np.array(photo_size, dtype=np.float64) / 2.0, False))

    def vote(pred: Prediction, h: float) -> tuple[float, np.ndarray, float]:
        """The best vote over the views at heading ``h`` (the first best on ties)."""
        assert consistency is not None and pred.mass is not None
        best: tuple[float, np.ndarray, float] | None = None
        for offsets, anchor, nadir in views:
            c = offsets.mean(axis=0)
            prior = None
            if camera is not None and consistency.camera_px is not None:
                off = orient.turn_points(anchor - c, h)[0]
                prior = CameraPrior((float(camera[0]), float(camera[1])),
                                    (float(off[0]), float(off[1])), h, consistency.camera_px,
                                    nadir=nadir)
            got = consistency_vote(pred.mass, orient.turn_points(offsets - c, h),
                                   consistency.scales, size,
                                   tolerance_px=consistency.tolerance_px, eps=consistency.eps,
                                   camera=prior)
            if best is None or got[0] > best[0]:
                best = got
        assert best is not None
        return best

    # headings within half a rotation step of each rotation, nearest first
    residuals: list[float] = []
    if consistency is not None:
        reach = 180.0 / n - 1e-9 if spread is None else spread + 1e-9
        k = math.floor(reach / consistency.residual_step)
        residuals = sorted(np.arange(-k, k + 1) * consistency.residual_step, key=abs)
    totals: list[float] = []
    best: tuple[float, float, Prediction, float, np.ndarray | None, float | None] | None = None
    # one click has nothing to be consistent with, but may be placed against the camera
    alone = len(pts) < 2 and not (consistency is not None and consistency.single
                                  and camera is not None and consistency.camera_px is not None)
    for h in headings:
        pred = look(h)
        if consistency is None or alone or pred.mass is None:
            total, phi, pos, scale = float(np.sum(pred.scores)), h, None, None
        else:
            total, phi, pos, scale = -math.inf, h, None, None
            for r in residuals:
                v, p, s = vote(pred, h + r)
                if v > total:
                    total, phi, pos, scale = v, (h + r) % 360.0, p, s
        totals.append(total)
        if best is None or total > best[0]:
            best = (total, h, pred, phi, pos, scale)
    assert best is not None
    total, heading, pred, phi, pos, scale = best
    if consistency is not None and consistency.refine and pos is not None and phi != heading:
        again = look(phi)
        v, p, s = vote(again, phi)
        headings.append(phi)
        totals.append(v)
        if v > total:
            total, heading, pred, pos, scale = v, phi, again, p, s
    if final is not None:
        pred = look(heading, final)
    if consistency is not None and consistency.prior_px is not None and pos is not None:
        assert pred.mass is not None and pred.cell_boxes is not None
        g = pred.mass.shape[-1]
        prior = click_prior(pos, None, g, size, 1.0, sigma_m=consistency.prior_px,
                            parallax_m=0.0, floor=consistency.floor)
        boxes, scores, _ = select(pred.mass, pred.cell_boxes, prior)
        pred = replace(pred, boxes=boxes, scores=scores)
    log.debug("rotation search: totals %s, kept %.1f deg", np.round(totals, 3), heading)
    return RotationSearch(heading, pred, total, tuple(totals), tuple(headings), pos, scale)


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
        camera_height_m: the camera's height above the ground plane from the registration's
            pose (:meth:`~geomogeo.geo.register.Registration.camera_pose`), metres, or None.
        objects_xy: (m, 2) the clicked objects' points in ``window.crs``: ``clicks_xy``
            moved towards the camera by the parallax found
            (:func:`~geomogeo.geo.parallax.correct_parallax`), or None (no correction: the
            objects are taken at ``clicks_xy``). Where the window goes, the prior and the box
            placement use them (:attr:`targets_xy`).
        shifts_m: (m,) the parallax shift of each click towards the camera, metres, or None.
    """

    registration: Registration
    window: raster.ReferenceWindow
    clicks_xy: np.ndarray | None
    camera_xy: tuple[float, float] | None
    footprint: Polygon | None
    heading: float | None
    error_m: float
    camera_height_m: float | None = None
    objects_xy: np.ndarray | None = None
    shifts_m: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        return bool(self.registration.ok)

    @property
    def targets_xy(self) -> np.ndarray:
        """(m, 2) where the clicked objects are, ``window.crs``: :attr:`objects_xy` when the
        parallax was corrected, else :attr:`clicks_xy`."""
        xy = self.objects_xy if self.objects_xy is not None else self.clicks_xy
        assert xy is not None
        return xy

    def centre(self) -> tuple[float, float]:
        """Centre of the targets' bounding box, ``window.crs``: where the model window goes."""
        xy = self.targets_xy
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        return float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2)

    def targets_px(self, win: raster.ReferenceWindow) -> np.ndarray:
        """(m, 2) the targets' points (:attr:`targets_xy`) in pixels (x, y; edges) of model
        window ``win``."""
        xy = self.targets_xy
        xs, ys = georef.to_crs(xy[:, 0], xy[:, 1], self.window.crs, win.crs)
        return np.column_stack(georef.map_to_pixel(win.transform, xs, ys))

    def place(self, boxes: np.ndarray, win: raster.ReferenceWindow,
              config: JointConfig) -> np.ndarray:
        """The joint boxes (pixels of ``win``) placed on their registered clicks as
        ``config.click_inner`` says (:func:`place_on_clicks`); unchanged when it is None."""
        if config.click_inner is None:
            return np.asarray(boxes, dtype=np.float64)
        return place_on_clicks(boxes, self.targets_px(win), config.click_inner)

    def with_parallax(self, image: np.ndarray, config: ParallaxConfig | None
                      ) -> RegisteredScene:
        """This scene with its clicks moved onto their objects
        (:func:`~geomogeo.geo.parallax.correct_parallax` of the photo ``image`` on the
        registration window): :attr:`objects_xy` and :attr:`shifts_m` set. Unchanged when
        ``config`` is None, the registration failed or the camera's pose is unknown."""
        if config is None or not self.ok or self.camera_xy is None:
            return self
        assert self.clicks_xy is not None and self.registration.homography is not None
        win = self.window
        clicks = np.column_stack(georef.map_to_pixel(win.transform, self.clicks_xy[:, 0],
                                                     self.clicks_xy[:, 1]))
        nadir = georef.map_to_pixel(win.transform, *self.camera_xy)
        par = correct_parallax(image, self.registration.homography, clicks, nadir, win.image,
                               win.gsd, config)
        objects = np.column_stack(georef.pixel_to_map(win.transform, par.points[:, 0],
                                                      par.points[:, 1]))
        return replace(self, objects_xy=objects, shifts_m=par.shift_px * win.gsd)

    def prior(self, win: raster.ReferenceWindow, grid: int, config: JointConfig) -> np.ndarray:
        """:func:`click_prior` of the clicks on the fine voting grid of model window ``win``."""
        crs = self.window.crs
        clicks_px = self.targets_px(win)
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
    pose = reg.camera_pose(w, h, photo.focal_px_from_exif(ph))
    cam_xy = None if pose is None else georef.pixel_to_map(win.transform, *pose.nadir)
    cam_height = None if pose is None else pose.height * gsd
    ring = reg.footprint(w, h)
    fx, fy = georef.pixel_to_map(win.transform, ring[:, 0], ring[:, 1])
    footprint = Polygon(np.column_stack([fx, fy]))
    heading = reg.heading(w, h)
    error_m = float(reg.reproj_error_px) * gsd
    log.info("%s: registered, %d inliers of %d matches, reprojection error %.2f px (%.2f m), "
             "heading %.1f deg", src.path.name, reg.n_inliers, reg.n_matches,
             reg.reproj_error_px, error_m, heading)
    scene = RegisteredScene(reg, win, clicks_xy, cam_xy, footprint, heading, error_m,
                            cam_height).with_parallax(ph.image, config.parallax)
    if scene.shifts_m is not None:
        log.info("%s: parallax shifts towards the camera %s m", src.path.name,
                 np.round(scene.shifts_m, 1).tolist())
    return scene
