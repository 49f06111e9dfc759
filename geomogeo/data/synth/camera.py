"""A pinhole drone camera over flat ground and raised planes, with light radial lens distortion.

World frame: map metres of a scene, x east, y north, z up (metres above the ground); the
ground is the plane z = 0.
Camera frame: x to the image right, y to the image bottom, z along the optical axis.
Pose: ``yaw`` is the heading the camera looks towards, degrees clockwise from north;
``pitch`` is the optical axis' angle off nadir, degrees (0 = straight down, tilting forward).

Photo pixels use the continuous corner-origin convention (pixel (i, j) spans [i, i+1) x
[j, j+1)); the principal point is the image centre. The ground -> undistorted-pixel map is the
exact homography ``H = K [r1 r2 -R c]``; a point at height z projects through the full
pinhole model ``K [R | -R c] (x, y, z, 1)``, computed as ``H (x, y, 1) + z K r3`` so that
z = 0 is exactly the ground homography (and the plane z = h maps by ``K [r1 r2 h r3 - R c]``);
distortion is the one-parameter radial model
``p_u = p_d (1 + k1 |p_d|^2)`` in focal-normalised coordinates, inverted by fixed-point
iteration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Camera", "CameraRanges", "sample_camera"]


@dataclass(frozen=True)
class Camera:
    """A drone camera pose and its intrinsics.

    Attributes:
        x, y: ground position below the camera, map metres.
        altitude: height above ground, metres.
        yaw: heading of the optical axis' ground projection, degrees clockwise from north.
        pitch: off-nadir tilt, degrees in [0, 60].
        hfov: horizontal field of view, degrees.
        width, height: photo size, pixels.
        k1: radial distortion coefficient (normalised coordinates; negative = barrel).
    """

    x: float
    y: float
    altitude: float
    yaw: float
    pitch: float
    hfov: float
    width: int
    height: int
    k1: float = 0.0

    @property
    def focal(self) -> float:
        """Focal length, pixels."""
        return (self.width / 2) / math.tan(math.radians(self.hfov) / 2)

    def rotation(self) -> np.ndarray:
        """(3, 3) world -> camera rotation; rows are the camera axes in world coordinates."""
        psi, th = math.radians(self.yaw), math.radians(self.pitch)
        fwd = np.array([math.sin(psi), math.cos(psi), 0.0])
        right = np.array([math.cos(psi), -math.sin(psi), 0.0])
        z = math.cos(th) * np.array([0.0, 0.0, -1.0]) + math.sin(th) * fwd
        y = np.cross(z, right)
        return np.stack([right, y, z])

    def intrinsics(self) -> np.ndarray:
        """(3, 3) camera matrix K, pixels (principal point at the image centre)."""
        f = self.focal
        return np.array([[f, 0, self.width / 2], [0, f, self.height / 2], [0, 0, 1.0]])

    def homography(self, z: float = 0.0) -> np.ndarray:
        """(3, 3) map (x, y, 1) on the horizontal plane at height ``z`` metres (default: the
        ground) -> undistorted photo pixel (homogeneous)."""
        R = self.rotation()
        t = -R @ np.array([self.x, self.y, self.altitude])
        return self.intrinsics() @ np.column_stack([R[:, 0], R[:, 1], R[:, 2] * z + t])

    def project(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project 3-D points (n, 3) (map metres, z metres above ground) to photo pixels
        (n, 2), distorted, and an (n,) bool mask, True for points in front of the camera.

        For z = 0 the result is exactly :meth:`ground_to_photo`'s.
        """
        uv, front = self.project_undistorted(xyz)
        return self.distort(uv), front

    def project_undistorted(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`project`, without the lens distortion (pinhole pixels)."""
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        p = np.column_stack([xyz[:, :2], np.ones(len(xyz))]) @ self.homography().T
        p = p + xyz[:, 2:3] * (self.intrinsics() @ self.rotation()[:, 2])[None]
        return _dehomogenise(p)

    def ground_to_photo(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project ground points (n, 2) map metres to photo pixels (n, 2), distorted.

        Returns the pixels and an (n,) bool mask, True for points in front of the camera.
        """
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        uv, front = _dehomogenise(np.column_stack([xy, np.ones(len(xy))]) @ self.homography().T)
        return self.distort(uv), front

    def photo_to_ground(self, uv: np.ndarray) -> np.ndarray:
        """Back-project photo pixels (n, 2), distorted, onto the ground: (n, 2) map metres
        (NaN for rays that do not hit the ground in front of the camera)."""
        return self.photo_to_plane(uv, 0.0)

    def photo_to_plane(self, uv: np.ndarray, z: float) -> np.ndarray:
        """Back-project photo pixels (n, 2), distorted, onto the horizontal plane at height
        ``z`` metres (below the camera): (n, 2) map metres, NaN for rays that do not hit it in
        front of the camera."""
        und = self.undistort(np.asarray(uv, dtype=np.float64).reshape(-1, 2))
        return self.undistorted_to_plane(und, z)

    def undistorted_to_plane(self, und: np.ndarray, z: float) -> np.ndarray:
        """As :meth:`photo_to_plane` for undistorted (pinhole) pixels (n, 2)."""
        p = np.column_stack([und, np.ones(len(und))]) @ np.linalg.inv(self.homography(z)).T
        with np.errstate(divide="ignore", invalid="ignore"):
            g = p[:, :2] / p[:, 2:3]
        # A ray hits a plane below the camera only where its direction points downwards.
        ray = self._rays(und)
        g[(ray[:, 2] >= -1e-9) | (z >= self.altitude)] = np.nan
        return g

    def _rays(self, und: np.ndarray) -> np.ndarray:
        """World directions of the rays through undistorted pixels (n, 2)."""
        f = self.focal
        d = np.column_stack([(und[:, 0] - self.width / 2) / f,
                             (und[:, 1] - self.height / 2) / f, np.ones(len(und))])
        return d @ self.rotation()  # camera -> world is R^T: d_w = R^T d_c

    def _normalise(self, uv: np.ndarray) -> np.ndarray:
        return (uv - np.array([self.width / 2, self.height / 2])) / self.focal

    def _denormalise(self, n: np.ndarray) -> np.ndarray:
        return n * self.focal + np.array([self.width / 2, self.height / 2])

    def undistort(self, uv: np.ndarray) -> np.ndarray:
        """Distorted -> undistorted photo pixels (n, 2) (the direct direction of the model)."""
        if self.k1 == 0:
            return uv
        nd = self._normalise(uv)
        r2 = (nd**2).sum(axis=1, keepdims=True)
        return self._denormalise(nd * (1 + self.k1 * r2))

    def distort(self, uv: np.ndarray) -> np.ndarray:
        """Undistorted -> distorted photo pixels (n, 2), by fixed-point iteration (converges
        for the small |k1| used here; 20 iterations reach 1e-10 px on the photo area)."""
        if self.k1 == 0:
            return uv
        nu = self._normalise(uv)
        nd = nu.copy()
        for _ in range(20):
            r2 = (nd**2).sum(axis=1, keepdims=True)
            nd = nu / (1 + self.k1 * r2)
        return self._denormalise(nd)


def _dehomogenise(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Homogeneous pixels (n, 3) -> (n, 2) pixels and the in-front mask (n,) (w > 0)."""
    front = p[:, 2] > 1e-9
    w = np.where(front, p[:, 2], 1.0)
    return p[:, :2] / w[:, None], front


@dataclass(frozen=True)
class CameraRanges:
    """Ranges the data engine samples camera poses from (uniformly).

    Attributes:
        altitude: metres above ground (a drone flying 60-120 m).
        pitch: off-nadir tilt, degrees (0 = nadir).
        hfov: horizontal field of view, degrees (typical drone lenses: 60-84).
        sizes: photo (width, height) choices, pixels (4:3 and 16:9 landscape).
        k1: radial distortion coefficient range.
    """

    altitude: tuple[float, float] = (60.0, 120.0)
    pitch: tuple[float, float] = (0.0, 35.0)
    hfov: tuple[float, float] = (60.0, 84.0)
    sizes: tuple[tuple[int, int], ...] = ((512, 384), (512, 288))
    k1: tuple[float, float] = (-0.06, 0.03)


def sample_camera(
    rng: np.random.Generator, x: float, y: float, ranges: CameraRanges = CameraRanges()
) -> Camera:
    """A random camera above ground point (x, y) (map metres), yaw uniform in [0, 360)."""
    w, h = ranges.sizes[int(rng.integers(len(ranges.sizes)))]
    return Camera(
        x=float(x), y=float(y),
        altitude=float(rng.uniform(*ranges.altitude)),
        yaw=float(rng.uniform(0.0, 360.0)),
        pitch=float(rng.uniform(*ranges.pitch)),
        hfov=float(rng.uniform(*ranges.hfov)),
        width=int(w), height=int(h),
        k1=float(rng.uniform(*ranges.k1)),
    )
