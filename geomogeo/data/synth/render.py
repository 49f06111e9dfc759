"""Rendering: drone photos through a :class:`~.camera.Camera`, north-up reference windows,
and the photometric gap between a drone camera and a satellite image."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from geomogeo.data.synth.camera import Camera
from geomogeo.data.synth.scene import Scene, sample_bilinear

__all__ = ["PhotoEffects", "degrade", "render_photo", "render_reference"]


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
