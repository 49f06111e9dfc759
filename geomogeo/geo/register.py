"""Register a photo to a north-up reference window: a homography from local features.

The photo's ground is (nearly) a plane, so photo pixels and reference pixels are related by a
homography. It is found with OpenCV: RootSIFT features on a downscaled photo and on the
reference (nodata masked out), a ratio test plus a mutual (cross) check, and a robust fit
(``cv2.USAC_MAGSAC``), followed by validity checks that decide whether the result can be
trusted (:attr:`Registration.ok`). A photo of another place, a blurred or a textureless photo
fails them and says why (:attr:`Registration.reason`).

Conventions: pixel coordinates are continuous ``(x, y)`` with the origin at the top-left
CORNER of the top-left pixel, x right, y down, both in the photo (as displayed, EXIF
orientation applied, at its full resolution) and in the reference. OpenCV keypoints use
pixel-centre integer coordinates; they are converted (``+ 0.5``) on the way in. The reference
is north-up, so an azimuth measured on it in reference pixels is an azimuth from north.

This module is pure numpy + OpenCV (no torch, no georeferencing: reference pixels become map
coordinates through :mod:`geomogeo.geo.georef` with the window's transform).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from geomogeo.geo.photo import focal_px_from_fov

__all__ = ["CameraPose", "RegisterConfig", "Registration", "register"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisterConfig:
    """Settings of :func:`register` (the defaults were chosen on the validation tile).

    Attributes:
        max_features: most SIFT keypoints kept per image (strongest first).
        ratio: Lowe's ratio test threshold (best / second-best descriptor distance).
        min_inliers: fewest homography inliers for a trusted registration.
        min_inlier_ratio: fewest inliers per tentative match (0..1).
        max_reproj_px: largest median inlier reprojection error, reference pixels.
        photo_max_side: the photo is downscaled so its longer side is at most this many pixels
            before anything else (features never need more).
        target_scale: with a scale hint, the photo is downscaled until one photo pixel covers
            about this many reference pixels (SIFT matches best near equal resolution).
        pyramid: without a scale hint, the photo scales tried, as fractions of the
            ``photo_max_side`` image, coarsest first; the best registration is kept.
        early_stop_inliers: the pyramid stops at the first valid registration with at least
            this many inliers (0: always try every scale).
        min_photo_side: the photo is never downscaled below this shorter side, pixels.
        ransac_px: MAGSAC threshold, reference pixels.
        max_iters: MAGSAC iterations.
        contrast_threshold: SIFT contrast threshold (lower finds more, weaker features).
        mask_erode_px: nodata is grown by this many reference pixels before detection, so
            that the edge between data and nodata yields no features.
        min_inlier_spread: fewest photo area covered by the inliers' convex hull (fraction).
        max_anisotropy: largest ratio of the local scales of the homography along two
            directions at the photo centre (an oblique view stretches one direction).
        max_depth_ratio: largest ratio between the projective depths of the photo corners
            (how much nearer one corner of an oblique view may be than another).
        scale_tolerance: with a scale hint, the registered scale must lie within
            ``[hint / tol, hint * tol]``.
    """

    max_features: int = 2000
    ratio: float = 0.85
    min_inliers: int = 12
    min_inlier_ratio: float = 0.15
    max_reproj_px: float = 2.0
    photo_max_side: int = 1024
    target_scale: float = 0.8
    pyramid: tuple[float, ...] = (1.0, 0.5, 0.25)
    early_stop_inliers: int = 60
    min_photo_side: int = 96
    ransac_px: float = 3.0
    max_iters: int = 5000
    contrast_threshold: float = 0.02
    mask_erode_px: int = 6
    min_inlier_spread: float = 0.08
    max_anisotropy: float = 5.0
    max_depth_ratio: float = 12.0
    scale_tolerance: float = 3.0

    def __post_init__(self) -> None:
        checks = {
            "max_features": self.max_features >= 8,
            "ratio": 0.0 < self.ratio <= 1.0,
            "min_inliers": self.min_inliers >= 4,
            "min_inlier_ratio": 0.0 <= self.min_inlier_ratio <= 1.0,
            "max_reproj_px": self.max_reproj_px > 0,
            "photo_max_side": self.photo_max_side >= 32,
            "target_scale": self.target_scale > 0,
            "pyramid": len(self.pyramid) >= 1 and all(0 < p <= 1 for p in self.pyramid),
            "early_stop_inliers": self.early_stop_inliers >= 0,
            "min_photo_side": self.min_photo_side >= 16,
            "ransac_px": self.ransac_px > 0,
            "max_iters": self.max_iters >= 10,
            "contrast_threshold": self.contrast_threshold > 0,
            "mask_erode_px": self.mask_erode_px >= 0,
            "min_inlier_spread": 0.0 <= self.min_inlier_spread <= 1.0,
            "max_anisotropy": self.max_anisotropy >= 1.0,
            "max_depth_ratio": self.max_depth_ratio >= 1.0,
            "scale_tolerance": self.scale_tolerance >= 1.0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                "RegisterConfig: invalid " + ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            )


def _apply(h: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(m, 2) points through the homography ``h``."""
    p = np.column_stack([xy, np.ones(len(xy))]) @ h.T
    return p[:, :2] / p[:, 2:3]


def _outline(width: int, height: int, n: int) -> np.ndarray:
    """The photo's outline, corners TL, TR, BR, BL, each side with ``n`` points (the corner
    it starts from included), as a ring without the closing repeat: (4 n, 2) photo pixels."""
    t = np.arange(n) / n
    w, h = float(width), float(height)
    sides = [
        np.column_stack([t * w, np.zeros(n)]),
        np.column_stack([np.full(n, w), t * h]),
        np.column_stack([w - t * w, np.full(n, h)]),
        np.column_stack([np.zeros(n), h - t * h]),
    ]
    return np.concatenate(sides)


class CameraPose(NamedTuple):
    """Where a registered photo was taken from, in the reference's pixels.

    Attributes:
        nadir: (x, y) the ground point straight below the camera, reference pixels (edges).
        height: the camera's height above the reference's ground plane, reference pixels
            (times the reference's GSD: metres).
        tilt: the optical axis' angle off nadir, degrees.
    """

    nadir: tuple[float, float]
    height: float
    tilt: float


@dataclass(frozen=True)
class Registration:
    """The result of :func:`register`.

    Attributes:
        ok: True when the registration passed all validity checks (trust it only then).
        reason: '' when ok, else why not (human readable).
        homography: (3, 3) float64, photo pixels -> reference pixels (both continuous, corner
            origin; the photo at its full input resolution), or None when none was found.
        n_matches: tentative matches after the ratio and mutual tests.
        n_inliers: matches consistent with the homography.
        inlier_ratio: ``n_inliers / n_matches`` (0 when there is no match).
        reproj_error_px: median inlier reprojection error, reference pixels (inf when none).
        photo_scale: the factor the photo was resized by before feature detection.
        inliers: (n_inliers, 4) the inlier correspondences ``(photo x, photo y, reference x,
            reference y)`` (same pixel conventions), or None.
    """

    ok: bool
    reason: str
    homography: np.ndarray | None
    n_matches: int
    n_inliers: int
    inlier_ratio: float
    reproj_error_px: float
    photo_scale: float = 1.0
    inliers: np.ndarray | None = field(default=None, repr=False, compare=False)

    def _h(self) -> np.ndarray:
        if self.homography is None:
            raise ValueError(f"registration failed ({self.reason}): no homography to apply")
        return self.homography

    def map_points(self, xy: np.ndarray) -> np.ndarray:
        """Photo pixels (m, 2) -> reference pixels (m, 2) (continuous, corner origin).

        Raises:
            ValueError: there is no homography (see :attr:`reason`).
        """
        pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return _apply(self._h(), pts)

    def footprint(self, width: int, height: int, n: int = 16) -> np.ndarray:
        """The photo's outline in reference pixels: (4 n, 2), the sides TL->TR->BR->BL each
        densified to ``n`` points, a ring without the closing repeat.

        ``width``, ``height``: the photo's size, pixels (the one given to :func:`register`).
        """
        if n < 1:
            raise ValueError(f"footprint: n must be >= 1, got {n}")
        return self.map_points(_outline(width, height, n))

    def heading(self, width: int, height: int) -> float:
        """The photo's heading, degrees clockwise from the reference's up (north for a north-up
        reference), in [0, 360): the azimuth, measured in reference pixels, from the mapped
        photo centre to the mapped centre of the photo's top edge.

        This is the project's heading convention (EXIF ``GPSImgDirection``, ``heading=`` of
        ``Localizer.localize``, :func:`geomogeo.geo.orient.rotate_north_up`, and the data
        engine's camera ``yaw``): the photo's "up" is the camera's forward direction, and
        ``rotate_north_up(photo, heading)`` turns this direction to the top. For the data
        engine's camera (:mod:`geomogeo.data.synth.camera`) the photo's up direction projected
        on the ground is exactly ``(sin yaw, cos yaw)`` (east, north), so the heading is ``yaw``
        (checked in the tests).
        """
        c, top = self.map_points(np.array([[width / 2, height / 2], [width / 2, 0.0]]))
        dx, dy = top - c
        az = math.degrees(math.atan2(dx, -dy)) % 360.0
        return 0.0 if az >= 360.0 else float(az)  # -1e-17 % 360 rounds to 360

    def focal_px(self, width: int, height: int) -> float | None:
        """The photo's focal length, pixels, estimated from the homography (principal point
        at the photo centre, square pixels, no skew), or None when the estimate has no
        solution or is implausible (outside a 30..120 degree horizontal field of view), as is
        common near nadir, where the focal length is barely observable."""
        g = self._ground_to_centred(width, height)
        g = g / np.linalg.norm(g)
        (a11, a12, _), (a21, a22, _), (a31, a32, _) = g
        # Orthogonality and equal norms of the first two columns of K^-1 G:
        # A w + B = 0 with w = 1 / f^2, two equations, least squares.
        a = np.array([a11 * a12 + a21 * a22, a11**2 + a21**2 - a12**2 - a22**2])
        b = np.array([a31 * a32, a31**2 - a32**2])
        den = float(a @ a)
        if den <= 0:
            return None
        w = -float(a @ b) / den
        if not (w > 0 and math.isfinite(w)):
            return None
        f = 1.0 / math.sqrt(w)
        lo, hi = focal_px_from_fov(width, 120.0), focal_px_from_fov(width, 30.0)
        if not lo <= f <= hi:
            return None
        return f

    def _ground_to_centred(self, width: int, height: int) -> np.ndarray:
        """Reference pixels (as a ground plane) -> photo pixels centred on the photo centre."""
        t = np.array([[1.0, 0, -width / 2], [0, 1.0, -height / 2], [0, 0, 1.0]])
        return t @ np.linalg.inv(self._h())

    def camera_position(
        self, width: int, height: int, focal_px: float | None = None
    ) -> tuple[float, float] | None:
        """The camera's nadir point (the ground point straight below it), reference pixels;
        :meth:`camera_pose`'s ``nadir``, or None when it returns None."""
        pose = self.camera_pose(width, height, focal_px)
        return None if pose is None else pose.nadir

    def camera_pose(
        self, width: int, height: int, focal_px: float | None = None
    ) -> CameraPose | None:
        """The camera's nadir point, height above the ground and tilt, from the homography.

        A planar pose decomposition of the homography with intrinsics ``K`` (focal length
        ``focal_px`` in photo pixels, e.g. from EXIF ``FocalLengthIn35mmFilm``; else estimated
        by :meth:`focal_px`; principal point at the photo centre). When the focal length cannot
        be estimated or the view is less than 8 degrees off nadir (where the estimate is barely
        observable), a typical drone focal length (84 degree diagonal field of view) is used:
        near nadir the nadir point lies close to the mapped photo centre whatever the focal
        length (the height, which scales with the focal length, is then only as good as that
        guess). Returns None when the decomposition is not reliable (no homography, or the
        camera would lie below the ground or the pose is degenerate).

        ``width``, ``height``: the photo's size, pixels. The result treats the reference as
        a plane with square pixels (north-up window of one GSD).
        """
        if self.homography is None:
            return None
        if focal_px is not None:
            return self._pose(width, height, focal_px)
        f = self.focal_px(width, height)
        pose = self._pose(width, height, f) if f is not None else None
        if pose is None or pose.tilt < _MIN_TILT_FOR_FOCAL:
            pose = self._pose(width, height, _default_focal(width, height))
        return pose

    def _pose(self, width: int, height: int, f: float) -> CameraPose | None:
        """The camera pose for focal length ``f`` (photo pixels), or None."""
        if not (math.isfinite(f) and f > 0):
            return None
        kinv = np.diag([1 / f, 1 / f, 1.0])
        m = kinv @ self._ground_to_centred(width, height)
        n1, n2 = np.linalg.norm(m[:, 0]), np.linalg.norm(m[:, 1])
        if min(n1, n2) <= 0 or max(n1, n2) / min(n1, n2) > 3.0:
            return None
        m = m / math.sqrt(n1 * n2)
        # The ground point seen at the photo centre must lie in front of the camera.
        q = self.map_points(np.array([[width / 2, height / 2]]))[0]
        if float(m[2] @ np.array([q[0], q[1], 1.0])) < 0:
            m = -m
        r = np.column_stack([m[:, 0], m[:, 1], np.cross(m[:, 0], m[:, 1])])
        u, _, vt = np.linalg.svd(r)
        r = u @ vt
        if np.linalg.det(r) < 0:
            return None
        c = -r.T @ m[:, 2]
        # Ground frame: x right, y down (south), z = x cross y into the ground; the camera is
        # above the ground, so at negative z. The optical axis in it is r's third row.
        if not (np.all(np.isfinite(c)) and c[2] < 0):
            return None
        tilt = math.degrees(math.acos(min(1.0, abs(float(r[2, 2])))))
        return CameraPose((float(c[0]), float(c[1])), float(-c[2]), tilt)


#: Below this tilt off nadir (degrees) the focal length estimated from the homography is not
#: trusted for the pose (it is barely observable), and a typical drone focal length is used.
_MIN_TILT_FOR_FOCAL = 8.0


def _default_focal(width: int, height: int) -> float:
    """A typical drone camera's focal length, pixels: an 84 degree diagonal field of view."""
    return focal_px_from_fov(math.hypot(width, height), 84.0)


def _gray_u8(image: np.ndarray, what: str) -> np.ndarray:
    """(H, W) uint8 from (H, W) / (H, W, 3|4) uint8 or float in [0, 1]."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = a[..., :3]
    elif a.ndim != 2:
        raise ValueError(f"register: {what} must be (H, W) or (H, W, 3), got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(np.nan_to_num(a.astype(np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if a.ndim == 3:
        a = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(a)


def _features(sift: cv2.SIFT, gray: np.ndarray, mask: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints as (n, 2) continuous corner-origin pixels and RootSIFT descriptors (n, 128)."""
    kps, desc = sift.detectAndCompute(gray, mask)
    if desc is None or len(kps) == 0:
        return np.zeros((0, 2)), np.zeros((0, 128), np.float32)
    xy = np.array([k.pt for k in kps], dtype=np.float64) + 0.5
    d = desc / np.maximum(desc.sum(axis=1, keepdims=True), 1e-7)
    return xy, np.sqrt(d).astype(np.float32)


def _mutual_matches(d1: np.ndarray, d2: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Indexes (i, j) of descriptors d1[i] <-> d2[j] passing the ratio test (d1 -> d2) and
    the mutual nearest-neighbour check."""
    if len(d1) < 2 or len(d2) < 2:
        return np.zeros(0, int), np.zeros(0, int)
    # RootSIFT descriptors have unit L2 norm: squared distance = 2 - 2 * dot product.
    sim = d1 @ d2.T
    rows = np.arange(len(d1))
    back = np.argmax(sim, axis=0)
    j = np.argmax(sim, axis=1)
    best = sim[rows, j]
    sim[rows, j] = -np.inf
    second = sim.max(axis=1)
    d_best = np.sqrt(np.maximum(2.0 - 2.0 * best, 0.0))
    d_second = np.sqrt(np.maximum(2.0 - 2.0 * second, 0.0))
    keep = (d_best < ratio * d_second) & (back[j] == rows)
    return rows[keep], j[keep]


def _is_convex_simple(ring: np.ndarray) -> bool:
    """A polygon (k, 2) is convex and not self-intersecting, wound clockwise on screen (the
    photo's TL->TR->BR->BL order with y down, i.e. orientation kept)."""
    d = np.roll(ring, -1, axis=0) - ring
    cross = d[:, 0] * np.roll(d, -1, axis=0)[:, 1] - d[:, 1] * np.roll(d, -1, axis=0)[:, 0]
    if not np.all(cross > 0):
        return False
    # Convex turns everywhere and a total turn of exactly one revolution: simple.
    ang = np.arctan2(d[:, 1], d[:, 0])
    turn = np.mod(np.diff(np.append(ang, ang[0])), 2 * np.pi)
    return bool(abs(turn.sum() - 2 * np.pi) < 1e-6)


def _check(h: np.ndarray, n_inl: int, n_match: int, reproj: float, spread: float,
           width: int, height: int, scale_hint: float | None, cfg: RegisterConfig) -> str:
    """'' when the homography passes every validity check, else the reason."""
    if n_inl < cfg.min_inliers:
        return f"too few inliers ({n_inl} < {cfg.min_inliers}): another place, or changed scene"
    ratio = n_inl / max(n_match, 1)
    if ratio < cfg.min_inlier_ratio:
        return (f"inlier ratio {ratio:.2f} < {cfg.min_inlier_ratio}: matches are mostly "
                "inconsistent (another place?)")
    if reproj > cfg.max_reproj_px:
        return f"median reprojection error {reproj:.2f} px > {cfg.max_reproj_px} px"
    if spread < cfg.min_inlier_spread:
        return (f"inliers cover {spread:.0%} of the photo (< {cfg.min_inlier_spread:.0%}): "
                "the fit is not constrained over the photo")
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    depth = np.column_stack([corners, np.ones(4)]) @ h[2]
    if not (np.all(depth > 0) or np.all(depth < 0)):
        return "the photo's outline crosses the horizon of the homography"
    depth = np.abs(depth)
    if depth.max() / depth.min() > cfg.max_depth_ratio:
        return (f"implausible perspective (corner depth ratio {depth.max() / depth.min():.1f} "
                f"> {cfg.max_depth_ratio})")
    # Local linear map at the photo centre: its determinant and singular values.
    c = np.array([width / 2, height / 2, 1.0])
    wc = float(h[2] @ c)
    q = (h @ c)[:2] / wc
    jac = (h[:2, :2] - np.outer(q, h[2, :2])) / wc
    det = float(np.linalg.det(jac))
    if det <= 0:
        return "the homography mirrors the photo (negative determinant)"
    sv = np.linalg.svd(jac, compute_uv=False)
    if sv[0] / sv[1] > cfg.max_anisotropy:
        return f"implausible shear/stretch (anisotropy {sv[0] / sv[1]:.1f} > {cfg.max_anisotropy})"
    scale = math.sqrt(det)
    if scale_hint is not None and not (
        scale_hint / cfg.scale_tolerance <= scale <= scale_hint * cfg.scale_tolerance
    ):
        return (f"scale {scale:.3g} reference px per photo px is far from the expected "
                f"{scale_hint:.3g}")
    ring = _apply(h, corners)
    if not np.all(np.isfinite(ring)) or not _is_convex_simple(ring):
        return "the photo's mapped outline is not convex or self-intersects"
    return ""


def _register_level(photo_gray: np.ndarray, scale: float, ref_xy: np.ndarray,
                    ref_desc: np.ndarray, sift: cv2.SIFT, scale_hint: float | None,
                    cfg: RegisterConfig) -> Registration:
    """One photo scale: features, matches, MAGSAC, checks. ``scale`` = working / input size."""
    h0, w0 = photo_gray.shape
    width, height = w0, h0
    sw, sh = max(1, round(w0 * scale)), max(1, round(h0 * scale))
    img = photo_gray if (sw, sh) == (w0, h0) else cv2.resize(
        photo_gray, (sw, sh), interpolation=cv2.INTER_AREA)
    xy, desc = _features(sift, img, None)
    # Continuous corner-origin coordinates scale exactly (INTER_AREA aligns the corners).
    xy = xy * np.array([w0 / sw, h0 / sh])
    if len(xy) < cfg.min_inliers:
        return Registration(False, f"the photo has too few features ({len(xy)}): blurred, "
                            "textureless or overexposed?", None, 0, 0, 0.0, math.inf, scale)
    i, j = _mutual_matches(desc, ref_desc, cfg.ratio)
    n = len(i)
    if n < cfg.min_inliers:
        return Registration(False, f"too few matches ({n} < {cfg.min_inliers}): another place, "
                            "blurred or textureless photo?", None, n, 0, 0.0, math.inf, scale)
    src, dst = xy[i], ref_xy[j]
    h, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, cfg.ransac_px,
                                 maxIters=cfg.max_iters, confidence=0.9999)
    if h is None or mask is None or not np.all(np.isfinite(h)):
        return Registration(False, "no homography fits the matches", None, n, 0, 0.0,
                            math.inf, scale)
    inl = mask.ravel().astype(bool)
    # Least-squares refinement (Levenberg-Marquardt inside OpenCV) on the inliers.
    if inl.sum() >= 8:
        h2, _ = cv2.findHomography(src[inl], dst[inl], 0)
        if h2 is not None and np.all(np.isfinite(h2)):
            h = h2
    h = h / h[2, 2] if abs(h[2, 2]) > 1e-12 else h
    err = np.linalg.norm(_apply(h, src) - dst, axis=1)
    inl = inl & (err <= cfg.ransac_px)
    n_inl = int(inl.sum())
    reproj = float(np.median(err[inl])) if n_inl else math.inf
    spread = 0.0
    if n_inl >= 3:
        hull = cv2.convexHull(src[inl].astype(np.float32))
        spread = float(cv2.contourArea(hull)) / (width * height)
    reason = _check(h, n_inl, n, reproj, spread, width, height, scale_hint, cfg)
    return Registration(not reason, reason, h, n, n_inl, n_inl / n, reproj, scale,
                        inliers=np.column_stack([src[inl], dst[inl]]))


def register(
    photo: np.ndarray,
    reference: np.ndarray,
    *,
    reference_valid: np.ndarray | None = None,
    scale_hint: float | None = None,
    config: RegisterConfig = RegisterConfig(),
) -> Registration:
    """Register ``photo`` to ``reference``: the homography photo pixels -> reference pixels.

    Args:
        photo: (H, W, 3) or (H, W), uint8 or float32 in [0, 1], as displayed (EXIF
            orientation applied). Its rotation relative to the reference is unknown (0..360).
        reference: (h, w, 3) or (h, w), same value conventions, a north-up window (e.g.
            :attr:`geomogeo.geo.raster.ReferenceWindow.image`).
        reference_valid: (h, w) bool, False on nodata (no features are taken there).
        scale_hint: the expected number of reference pixels per photo pixel (photo ground
            resolution / reference GSD) near the photo centre, e.g. from
            :func:`geomogeo.geo.photo.scale_hint_from_exif`; None = unknown (a small pyramid
            of photo scales, ``config.pyramid``, is tried). A loose prior only: the photo is
            first registered at the hinted scale, where a result more than
            ``config.scale_tolerance`` off the hint is rejected; when that fails, the pyramid
            is tried without the hint.
        config: thresholds and sizes (:class:`RegisterConfig`).

    Returns:
        A :class:`Registration`; check ``ok`` before using it (``reason`` says why not).
        The homography maps continuous corner-origin photo pixels (of the input photo) to
        continuous corner-origin reference pixels.
    """
    pg = _gray_u8(photo, "photo")
    rg = _gray_u8(reference, "reference")
    height, width = pg.shape
    if reference_valid is not None and np.asarray(reference_valid).shape != rg.shape:
        raise ValueError(f"register: reference_valid shape {np.asarray(reference_valid).shape}"
                         f" differs from the reference's {rg.shape}")
    if scale_hint is not None and not (math.isfinite(scale_hint) and scale_hint > 0):
        raise ValueError(f"register: scale_hint must be a positive number, got {scale_hint!r}")
    sift = cv2.SIFT_create(nfeatures=config.max_features,
                           contrastThreshold=config.contrast_threshold,
                           enable_precise_upscale=True)
    # Photo scales (working / input size): the hinted one, else a small pyramid below
    # photo_max_side; never below min_photo_side.
    base = min(1.0, config.photo_max_side / max(width, height))
    lowest = min(1.0, config.min_photo_side / min(width, height))
    pyramid = sorted({max(lowest, base * p) for p in config.pyramid})
    mask = None
    if reference_valid is not None:
        valid = np.asarray(reference_valid, dtype=bool)
        if not valid.any():
            return Registration(False, "the reference window has no valid pixel", None, 0, 0,
                                0.0, math.inf)
        mask = valid.astype(np.uint8) * 255
        if config.mask_erode_px > 0:
            k = 2 * config.mask_erode_px + 1
            mask = cv2.erode(mask, np.ones((k, k), np.uint8), borderType=cv2.BORDER_CONSTANT,
                             borderValue=0)
    ref_xy, ref_desc = _features(sift, rg, mask)
    if len(ref_xy) < config.min_inliers:
        return Registration(False, f"the reference has too few features ({len(ref_xy)}): "
                            "textureless or mostly nodata", None, 0, 0, 0.0, math.inf)
    best: Registration | None = None
    if scale_hint is not None:
        hinted = min(base, max(lowest, scale_hint / config.target_scale))
        best = _register_level(pg, hinted, ref_xy, ref_desc, sift, scale_hint, config)
        log.debug("register: photo scale %.3f (hint %.3g): %s", hinted, scale_hint, best)
        if best.ok:
            return best
        # The hint is a loose prior only: when it gives nothing, search without it.
        log.info("register: the scale hint %.3g gave no registration (%s); trying photo "
                 "scales %s", scale_hint, best.reason, pyramid)
    for s in pyramid:
        reg = _register_level(pg, s, ref_xy, ref_desc, sift, None, config)
        log.debug("register: photo scale %.3f: %s", s, reg)
        if best is None or (reg.ok, reg.n_inliers) > (best.ok, best.n_inliers):
            best = reg
        if best.ok and 0 < config.early_stop_inliers <= best.n_inliers:
            break
    assert best is not None
    return best
