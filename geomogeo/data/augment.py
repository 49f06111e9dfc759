"""Joint training augmentations for (reference, query) batches, torch only.

Conventions shared by every function here:

* ``ref``: float tensor (B, C, R, R), the reference (orthophoto) crops; any value range unless
  stated otherwise (geometric transforms do not look at values).
* ``qry``: float tensor (B, C, QH, QW), the field photos, already rotated north-up, so both views
  of a photo share orientation. Every geometric change is therefore applied to BOTH views of a
  photo jointly, with the same parameters.
* ``clicks``: float (T, 2), (x, y) in query-input pixels.
* ``boxes``: float (T, 4), (x1, y1, x2, y2) in reference-input pixels.
* ``batch_index``: long (T,), the photo ``b`` each target belongs to.

Points and box coordinates are continuous, with the origin at the top-left CORNER of the top-left
pixel: pixel ``i`` spans ``[i, i + 1)``, ``x`` grows to the right (columns) and ``y`` downwards
(rows). A horizontally mirrored ``x`` in an image of width ``W`` is ``W - x``; box values are pixel
edges.

Randomness comes only from a caller-supplied ``torch.Generator`` that lives on the CPU: random
numbers are drawn on the CPU and then moved to the images' device, so a seed gives identical
results on CPU and CUDA runs. No function modifies its inputs in place; all return new tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "AugmentConfig",
    "augment_batch",
    "bbox_safe_crop",
    "hflip_pair",
    "photometric",
    "rot90_pair",
]

# ITU-R BT.601 luma weights, used for grayscale in contrast/saturation.
_LUMA = (0.299, 0.587, 0.114)
# RGB -> YIQ; hue rotation is a rotation of the (I, Q) chroma plane.
_RGB2YIQ = (
    (0.299, 0.587, 0.114),
    (0.595716, -0.274453, -0.321263),
    (0.211456, -0.522591, 0.311135),
)


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_images(name: str, img: torch.Tensor) -> None:
    if img.ndim != 4:
        raise ValueError(f"{name} must be (B, C, H, W), got shape {tuple(img.shape)}")
    if not img.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {img.dtype}")


def _check_pair(
    ref: torch.Tensor,
    qry: torch.Tensor,
    clicks: torch.Tensor,
    boxes: torch.Tensor,
    batch_index: torch.Tensor,
) -> None:
    _check_images("ref", ref)
    _check_images("qry", qry)
    if ref.shape[-1] != ref.shape[-2]:
        raise ValueError(f"ref must be square (B, C, R, R), got shape {tuple(ref.shape)}")
    if ref.shape[0] != qry.shape[0]:
        raise ValueError(f"ref and qry batch sizes differ: {ref.shape[0]} vs {qry.shape[0]}")
    _check_targets(boxes, batch_index, ref.shape[0])
    if clicks.ndim != 2 or clicks.shape[1] != 2:
        raise ValueError(f"clicks must be (T, 2), got shape {tuple(clicks.shape)}")
    if clicks.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"clicks and boxes must have the same T, got {clicks.shape[0]} vs {boxes.shape[0]}"
        )


def _check_targets(boxes: torch.Tensor, batch_index: torch.Tensor, batch: int) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (T, 4), got shape {tuple(boxes.shape)}")
    if batch_index.ndim != 1 or batch_index.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"batch_index must be (T,) with T={boxes.shape[0]}, got {tuple(batch_index.shape)}"
        )
    if batch_index.dtype != torch.long:
        raise ValueError(f"batch_index must be torch.long, got {batch_index.dtype}")
    if batch_index.numel() and (int(batch_index.min()) < 0 or int(batch_index.max()) >= batch):
        raise ValueError(f"batch_index values must lie in [0, {batch}), got out-of-range values")


def _check_per_photo(name: str, values: torch.Tensor, batch: int) -> None:
    if values.ndim != 1 or values.shape[0] != batch:
        raise ValueError(f"{name} must be ({batch},), got shape {tuple(values.shape)}")


def _uniform(
    gen: torch.Generator, n: int, low: float, high: float, device: torch.device
) -> torch.Tensor:
    """(n,) float32 uniform in [low, high), drawn on CPU from ``gen`` then moved to ``device``."""
    u = torch.rand(n, generator=gen, dtype=torch.float32)
    return (low + (high - low) * u).to(device)


# --------------------------------------------------------------------------------------------
# geometric transforms
# --------------------------------------------------------------------------------------------


def hflip_pair(
    ref: torch.Tensor,
    qry: torch.Tensor,
    clicks: torch.Tensor,
    boxes: torch.Tensor,
    batch_index: torch.Tensor,
    flip: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mirror chosen photos left-right, both views and their targets jointly.

    Args:
        ref: (B, C, R, R) reference images.
        qry: (B, C, QH, QW) query images.
        clicks: (T, 2) (x, y) query pixels, corner origin.
        boxes: (T, 4) (x1, y1, x2, y2) reference pixel edges.
        batch_index: (T,) long, photo of each target.
        flip: (B,) bool, True for photos to mirror.

    Returns:
        ``(ref, qry, clicks, boxes)`` as new tensors. For flipped photos the images are mirrored
        along the width, clicks become ``x -> QW - x`` and boxes ``(R - x2, y1, R - x1, y2)``;
        other photos are returned unchanged (bit-for-bit). Flipping twice restores the images
        exactly and the coordinates up to float rounding (exactly for dyadic values).
    """
    _check_pair(ref, qry, clicks, boxes, batch_index)
    B, R, QW = ref.shape[0], ref.shape[-1], qry.shape[-1]
    _check_per_photo("flip", flip, B)
    flip = flip.to(device=ref.device, dtype=torch.bool)
    m = flip.view(B, 1, 1, 1)
    ref_out = torch.where(m, ref.flip(-1), ref)
    qry_out = torch.where(m.to(qry.device), qry.flip(-1), qry)

    t_flip = flip.to(boxes.device)[batch_index.to(boxes.device)]
    flipped_boxes = torch.stack((R - boxes[:, 2], boxes[:, 1], R - boxes[:, 0], boxes[:, 3]), dim=1)
    boxes_out = torch.where(t_flip[:, None], flipped_boxes, boxes)
    c_flip = t_flip.to(clicks.device)
    flipped_clicks = torch.stack((QW - clicks[:, 0], clicks[:, 1]), dim=1)
    clicks_out = torch.where(c_flip[:, None], flipped_clicks, clicks)
    return ref_out, qry_out, clicks_out, boxes_out


def _rot_points(xy: torch.Tensor, k: torch.Tensor, size: int) -> torch.Tensor:
    """Rotate continuous points by ``k * 90`` degrees CCW in a square image of side ``size``.

    Matches ``torch.rot90(img, k, dims=(-2, -1))``: one CCW step sends pixel (row r, col c) to
    (row S-1-c, col r), hence a continuous corner-origin point (x, y) to (y, S - x). Repeating:
    k=2 gives (S - x, S - y), k=3 gives (S - y, x).

    Args:
        xy: (N, 2) (x, y) points.
        k: (N,) long in 0..3.
        size: side S of the square image.

    Returns:
        (N, 2) rotated points.
    """
    x, y = xy[:, 0], xy[:, 1]
    k = k.view(-1)
    nx = torch.where(k == 1, y, torch.where(k == 2, size - x, torch.where(k == 3, size - y, x)))
    ny = torch.where(k == 1, size - x, torch.where(k == 2, size - y, torch.where(k == 3, x, y)))
    return torch.stack((nx, ny), dim=1)


def _rot_images(img: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate each image ``b`` of (B, C, S, S) ``img`` by ``k[b] * 90`` degrees CCW (new tensor)."""
    out = img.clone()
    for kk in (1, 2, 3):
        idx = (k == kk).nonzero(as_tuple=True)[0]
        if idx.numel():
            out[idx] = torch.rot90(img[idx], kk, dims=(-2, -1))
    return out


def rot90_pair(
    ref: torch.Tensor,
    qry: torch.Tensor,
    clicks: torch.Tensor,
    boxes: torch.Tensor,
    batch_index: torch.Tensor,
    k: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rotate both views of each photo ``b`` by ``k[b] * 90`` degrees counter-clockwise.

    Image semantics are those of ``torch.rot90(img, k[b], dims=(-2, -1))``. Targets move exactly:
    a corner-origin point (x, y) in a square image of side S goes to (y, S - x) per CCW step, so
    clicks use S = QW (= QH) and boxes S = R; a box's two corners are mapped and re-sorted into
    (x1, y1, x2, y2).

    Args:
        ref: (B, C, R, R) reference images.
        qry: (B, C, Q, Q) query images; must be square.
        clicks: (T, 2) (x, y) query pixels, corner origin.
        boxes: (T, 4) (x1, y1, x2, y2) reference pixel edges.
        batch_index: (T,) long, photo of each target.
        k: (B,) integer in 0..3 (taken modulo 4), number of CCW quarter turns per photo.

    Returns:
        ``(ref, qry, clicks, boxes)`` as new tensors; photos with k = 0 are unchanged. Four
        quarter turns restore the images exactly and the coordinates up to float rounding.

    Raises:
        ValueError: if the query is not square (QH != QW) or shapes are inconsistent.
    """
    _check_pair(ref, qry, clicks, boxes, batch_index)
    if qry.shape[-1] != qry.shape[-2]:
        raise ValueError(
            f"rot90_pair needs a square query (QH == QW), got {qry.shape[-2]} x {qry.shape[-1]}"
        )
    B, R, Q = ref.shape[0], ref.shape[-1], qry.shape[-1]
    _check_per_photo("k", k, B)
    if k.is_floating_point() or k.dtype == torch.bool:
        raise ValueError(f"k must be an integer tensor, got {k.dtype}")
    k = torch.remainder(k.long(), 4)

    ref_out = _rot_images(ref, k.to(ref.device))
    qry_out = _rot_images(qry, k.to(qry.device))

    kt = k.to(boxes.device)[batch_index.to(boxes.device)]
    p1 = _rot_points(boxes[:, 0:2], kt, R)
    p2 = _rot_points(boxes[:, 2:4], kt, R)
    boxes_out = torch.cat((torch.minimum(p1, p2), torch.maximum(p1, p2)), dim=1)
    clicks_out = _rot_points(clicks, kt.to(clicks.device), Q)
    return ref_out, qry_out, clicks_out, boxes_out


# --------------------------------------------------------------------------------------------
# photometric
# --------------------------------------------------------------------------------------------


def _hue_matrices(theta: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) RGB->RGB matrices rotating the YIQ chroma plane by ``theta`` (B,) radians."""
    T = torch.tensor(_RGB2YIQ, dtype=torch.float64)
    Tinv = torch.linalg.inv(T)
    c, s = torch.cos(theta.double()), torch.sin(theta.double())
    rot = torch.zeros(theta.shape[0], 3, 3, dtype=torch.float64)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2] = c, -s
    rot[:, 2, 1], rot[:, 2, 2] = s, c
    return (Tinv @ rot @ T).float()


def photometric(
    img: torch.Tensor,
    gen: torch.Generator,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
    hue_shift: float = 0.0,
    gamma: tuple[float, float] = (0.8, 1.25),
    noise_std: float = 0.02,
) -> torch.Tensor:
    """Per-image random colour jitter of RGB images in [0, 1].

    Steps, each with its own per-image random factor, in this order:

    1. brightness: ``img * f``, ``f ~ U[1 - brightness, 1 + brightness]``;
    2. contrast: blend with the image's mean luma, ``m + (img - m) * f``,
       ``f ~ U[1 - contrast, 1 + contrast]``;
    3. saturation: blend with the per-pixel luma, ``g + (img - g) * f``,
       ``f ~ U[1 - saturation, 1 + saturation]``;
    4. hue: rotation of the YIQ chroma plane by ``2 * pi * h``, ``h ~ U[-hue_shift, hue_shift]``
       (a linear approximation of an HSV hue shift; skipped when ``hue_shift == 0``);
    5. gamma: ``img ** g`` on the clamped image, ``g`` log-uniform in ``gamma``;
    6. additive Gaussian noise with standard deviation ``noise_std`` per value (skipped if 0).

    The image is clamped to [0, 1] after step 4 and at the end.

    Args:
        img: (B, 3, H, W) float RGB in [0, 1], on any device.
        gen: CPU generator; all random numbers are drawn on the CPU from it and then moved.
        brightness, contrast, saturation: jitter strengths in [0, 1].
        hue_shift: maximum hue rotation as a fraction of a full turn, in [0, 0.5].
        gamma: (low, high) with 0 < low <= high.
        noise_std: noise standard deviation, >= 0.

    Returns:
        (B, 3, H, W) new tensor in [0, 1], same dtype and device as ``img``.
    """
    _check_images("img", img)
    if img.shape[1] != 3:
        raise ValueError(f"photometric needs RGB images (B, 3, H, W), got {tuple(img.shape)}")
    for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {v}")
    if not 0.0 <= hue_shift <= 0.5:
        raise ValueError(f"hue_shift must lie in [0, 0.5], got {hue_shift}")
    if len(gamma) != 2 or not 0.0 < gamma[0] <= gamma[1]:
        raise ValueError(f"gamma must be (low, high) with 0 < low <= high, got {gamma}")
    if noise_std < 0.0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")

    B, dev, dt = img.shape[0], img.device, img.dtype
    # Fixed draw order so a seed always gives the same factors.
    f_b = _uniform(gen, B, 1.0 - brightness, 1.0 + brightness, dev).to(dt).view(B, 1, 1, 1)
    f_c = _uniform(gen, B, 1.0 - contrast, 1.0 + contrast, dev).to(dt).view(B, 1, 1, 1)
    f_s = _uniform(gen, B, 1.0 - saturation, 1.0 + saturation, dev).to(dt).view(B, 1, 1, 1)
    h = torch.rand(B, generator=gen) * 2.0 - 1.0  # CPU, scaled below
    log_g = _uniform(gen, B, math.log(gamma[0]), math.log(gamma[1]), dev)
    g = torch.exp(log_g).to(dt).view(B, 1, 1, 1)

    luma_w = torch.tensor(_LUMA, dtype=dt, device=dev).view(1, 3, 1, 1)
    out = img * f_b
    mean_luma = (out * luma_w).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    out = mean_luma + (out - mean_luma) * f_c
    luma = (out * luma_w).sum(dim=1, keepdim=True)
    out = luma + (out - luma) * f_s
    if hue_shift > 0.0:
        M = _hue_matrices(h * (2.0 * math.pi * hue_shift)).to(device=dev, dtype=dt)
        out = torch.einsum("bij,bjhw->bihw", M, out)
    out = out.clamp(0.0, 1.0) ** g
    if noise_std > 0.0:
        # Full-size noise is drawn on the images' device, from a generator seeded by ``gen``
        # (drawing it on the CPU and copying would dominate a GPU training step).
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        dev_gen = torch.Generator(device=dev).manual_seed(seed)
        noise = torch.randn(tuple(img.shape), generator=dev_gen, device=dev, dtype=dt)
        out = out + noise * noise_std
    return out.clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------------
# box-safe crop (scale augmentation)
# --------------------------------------------------------------------------------------------


def bbox_safe_crop(
    ref: torch.Tensor,
    boxes: torch.Tensor,
    batch_index: torch.Tensor,
    gen: torch.Generator,
    min_scale: float = 0.7,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random square zoom-in crop of each reference that keeps all of that photo's boxes.

    Per photo ``b`` a side ``s ~ U[min_scale * R, R]`` is drawn. If a square of that side cannot
    contain the union of the photo's boxes (clipped to [0, R]), ``s`` grows to the smallest side
    that can (at most ``R``, i.e. no crop). The top-left corner ``(x0, y0)`` is then drawn
    uniformly among the positions that keep the crop inside the image and the boxes inside the
    crop. The crop ``[x0, x0 + s) x [y0, y0 + s)`` (continuous, not snapped to pixels) is
    resampled back to R x R with bilinear interpolation (``grid_sample``, align_corners=False),
    and boxes map as ``(v - origin) * R / s`` and are clamped to [0, R].

    Only the reference is changed, so this alters the reference's ground sampling distance
    relative to the query (objects look up to ``1 / min_scale`` times larger): it is a scale
    augmentation, not a joint geometric one, and leaves clicks untouched.

    Args:
        ref: (B, C, R, R) reference images, any value range.
        boxes: (T, 4) (x1, y1, x2, y2) reference pixel edges.
        batch_index: (T,) long, photo of each target.
        gen: CPU generator; draws 3 numbers per photo (side, x0, y0).
        min_scale: smallest crop side as a fraction of R, in (0, 1].

    Returns:
        ``(ref, boxes)``: (B, C, R, R) and (T, 4) new tensors.
    """
    _check_images("ref", ref)
    if ref.shape[-1] != ref.shape[-2]:
        raise ValueError(f"ref must be square (B, C, R, R), got shape {tuple(ref.shape)}")
    B, R = ref.shape[0], ref.shape[-1]
    _check_targets(boxes, batch_index, B)
    if not 0.0 < min_scale <= 1.0:
        raise ValueError(f"min_scale must lie in (0, 1], got {min_scale}")

    u = torch.rand(B, 3, generator=gen, dtype=torch.float64)  # side, x0, y0 on CPU
    bx = boxes.detach().to(device="cpu", dtype=torch.float64).clamp(0.0, float(R))
    bi = batch_index.to("cpu")
    lo = torch.full((B, 2), float(R), dtype=torch.float64)  # union min (x, y); R when empty
    hi = torch.zeros((B, 2), dtype=torch.float64)  # union max (x, y); 0 when empty
    if bi.numel():
        idx2 = bi[:, None].expand(-1, 2)
        lo = lo.scatter_reduce(0, idx2, bx[:, 0:2], reduce="amin", include_self=True)
        hi = hi.scatter_reduce(0, idx2, bx[:, 2:4], reduce="amax", include_self=True)
    need = (hi - lo).clamp(min=0.0).amax(dim=1)  # (B,)
    s = torch.maximum(min_scale * R + (1.0 - min_scale) * R * u[:, 0], need).clamp(max=float(R))
    o_lo = torch.maximum(torch.zeros_like(hi), hi - s[:, None])  # (B, 2)
    o_hi = torch.minimum(lo, R - s[:, None])
    o_hi = torch.maximum(o_hi, o_lo)  # guards rounding; lo <= hi holds mathematically
    origin = o_lo + (o_hi - o_lo) * u[:, 1:3]  # (B, 2) (x0, y0)

    # Output pixel centre u_out (normalised) samples input at x0 + (u_out + 1) / 2 * s.
    scale = s / R
    theta = torch.zeros(B, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = (2.0 * origin + s[:, None]) / R - 1.0
    grid = F.affine_grid(
        theta.to(device=ref.device, dtype=ref.dtype), list(ref.shape), align_corners=False
    )
    ref_out = F.grid_sample(ref, grid, mode="bilinear", padding_mode="border", align_corners=False)

    o_t = origin[bi].repeat(1, 2)  # (T, 4) (x0, y0, x0, y0)
    f_t = (R / s)[bi][:, None]
    new_boxes = ((boxes.detach().to("cpu", torch.float64) - o_t) * f_t).clamp(0.0, float(R))
    boxes_out = new_boxes.to(device=boxes.device, dtype=boxes.dtype)
    return ref_out, boxes_out


# --------------------------------------------------------------------------------------------
# configuration and pipeline
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentConfig:
    """Which training augmentations :func:`augment_batch` applies.

    Attributes:
        flip_p: probability per photo of a joint horizontal flip, in [0, 1].
        rot90: whether to apply a joint random quarter-turn (k ~ U{0..3}) per photo; needs a
            square query.
        photometric: whether to colour-jitter both views (independently) with the defaults of
            :func:`photometric`.
        crop_p: probability per photo of a :func:`bbox_safe_crop` of the reference, in [0, 1].
        crop_min_scale: ``min_scale`` of that crop, in (0, 1].
    """

    flip_p: float = 0.5
    rot90: bool = True
    photometric: bool = True
    crop_p: float = 0.0
    crop_min_scale: float = 0.7

    def __post_init__(self) -> None:
        for name in ("flip_p", "crop_p"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must lie in [0, 1], got {v!r}")
        v = self.crop_min_scale
        if not isinstance(v, (int, float)) or not 0.0 < float(v) <= 1.0:
            raise ValueError(f"AugmentConfig.crop_min_scale must lie in (0, 1], got {v!r}")


def augment_batch(
    ref01: torch.Tensor,
    qry01: torch.Tensor,
    clicks: torch.Tensor,
    boxes: torch.Tensor,
    batch_index: torch.Tensor,
    cfg: AugmentConfig,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply the configured augmentations to a training batch.

    Order: box-safe crop of the reference (each photo with probability ``crop_p``), joint
    horizontal flip (``flip_p``), joint random quarter-turn (``rot90``), then photometric jitter
    on the reference and on the query with independent draws (``photometric``). Disabled steps
    draw no random numbers. Normalisation is left to the caller (after this function).

    Args:
        ref01: (B, 3, R, R) reference images in [0, 1].
        qry01: (B, 3, QH, QW) north-up query images in [0, 1]; square if ``cfg.rot90``.
        clicks: (T, 2) (x, y) query pixels, corner origin.
        boxes: (T, 4) (x1, y1, x2, y2) reference pixel edges.
        batch_index: (T,) long, photo of each target.
        cfg: which augmentations to apply.
        gen: CPU generator, the only source of randomness.

    Returns:
        ``(ref01, qry01, clicks, boxes, batch_index)`` as new tensors (``batch_index`` is a copy;
        targets keep their order).
    """
    _check_pair(ref01, qry01, clicks, boxes, batch_index)
    B = ref01.shape[0]
    dev = ref01.device
    ref, qry = ref01, qry01
    clicks_in, boxes_in = clicks, boxes
    if cfg.crop_p > 0.0:
        do_crop = torch.rand(B, generator=gen) < cfg.crop_p
        cropped, cropped_boxes = bbox_safe_crop(ref, boxes, batch_index, gen, cfg.crop_min_scale)
        ref = torch.where(do_crop.to(dev).view(B, 1, 1, 1), cropped, ref)
        t_crop = do_crop.to(boxes.device)[batch_index.to(boxes.device)]
        boxes = torch.where(t_crop[:, None], cropped_boxes, boxes)
    if cfg.flip_p > 0.0:
        flip = torch.rand(B, generator=gen) < cfg.flip_p
        ref, qry, clicks, boxes = hflip_pair(ref, qry, clicks, boxes, batch_index, flip)
    if cfg.rot90:
        k = torch.randint(0, 4, (B,), generator=gen)
        ref, qry, clicks, boxes = rot90_pair(ref, qry, clicks, boxes, batch_index, k)
    if cfg.photometric:
        ref = photometric(ref, gen)
        qry = photometric(qry, gen)
    inputs = (ref01, qry01, clicks_in, boxes_in, batch_index)
    outs = (ref, qry, clicks, boxes, batch_index)
    new = tuple(o.clone() if o is i else o for o, i in zip(outs, inputs, strict=True))
    return new[0], new[1], new[2], new[3], new[4]
