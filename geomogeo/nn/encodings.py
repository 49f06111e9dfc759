"""How a click enters the query branch.

Two families:

* :class:`MOPE` works on the query FEATURE map F_q (one backbone pass per photo, any number of
  clicks): MOGeo's impulse encoding, or a smooth mask on the feature grid (the "w/o MOPE"
  ablation).
* :func:`click_channel` is DetGeo's INPUT-level encoding: a smooth map as a 4th image channel,
  so the query backbone runs once per click.

Click coordinates are continuous (x, y) query-input pixels, origin at the top-left corner of the
top-left pixel; pixel ``(i, j)`` has its centre at ``(i + 0.5, j + 0.5)``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["MOPE", "click_channel", "smooth_click_map"]

Smooth = Literal["gaussian", "square"]


def smooth_click_map(
    clicks: Tensor, size: tuple[int, int], step: float, kind: Smooth, sigma: float,
    image_size: tuple[int, int],
) -> Tensor:
    """A smooth click map evaluated at the centres of a ``size`` grid of ``step``-px cells.

    ``"gaussian"``: ``exp(-d^2 / (2 sigma^2))``; ``"square"`` (DetGeo): ``(1 - d / diag)^2`` with
    ``diag`` the diagonal of the ``image_size`` (H, W) query input. ``d`` is in query pixels.

    clicks (T, 2) -> (T, H, W) float in [0, 1].
    """
    h, w = size
    ys = (torch.arange(h, device=clicks.device, dtype=clicks.dtype) + 0.5) * step
    xs = (torch.arange(w, device=clicks.device, dtype=clicks.dtype) + 0.5) * step
    dx2 = (xs[None, None, :] - clicks[:, 0, None, None]) ** 2  # (T, 1, W)
    dy2 = (ys[None, :, None] - clicks[:, 1, None, None]) ** 2  # (T, H, 1)
    d2 = dx2 + dy2  # (T, H, W)
    if kind == "gaussian":
        return torch.exp(-d2 / (2.0 * sigma**2))
    if kind == "square":
        diag = math.hypot(*image_size)
        return (1.0 - d2.sqrt() / diag).clamp_min(0.0) ** 2
    raise ValueError(f"unknown smooth click encoding {kind!r}")


def click_channel(
    clicks: Tensor, image_size: tuple[int, int], kind: Smooth, sigma: float
) -> Tensor:
    """DetGeo's 4th input channel, one per click, at the query input's pixel centres.

    clicks (T, 2) -> (T, 1, H, W).
    """
    return smooth_click_map(clicks, image_size, 1.0, kind, sigma, image_size)[:, None]


class MOPE(nn.Module):
    """Per-click query vectors from the query feature map: v_k = pool(Conv1x1([F_q ; E_k]) * E_k).

    (F_q (B, D, h, w), clicks (T, 2), batch_index (T,)) -> v (T, D). The 1x1 conv ``fuse`` has
    the paper's shape (D, D + 1); it is never run over the grid. Writing W for its first D
    input columns, w_E for the mask column and b for its bias, the pooled output is
    ``v_k = W (sum E_k F_q / sum E_k) + w_E (sum E_k^2 / sum E_k) + b``, computed per click
    from the one F_q of its photo (gathered by ``batch_index``):

    * ``"impulse"`` (MOPE): E_k is the Dirac mask at the click, so v_k = W f_k + w_E + b. Ours:
      f_k is F_q BILINEARLY sampled at the exact click (feature cell ``i`` is centred at
      ``(i + 0.5) * stride`` px; clamped at the border) instead of read at the cell
      ``floor(click / stride)``. At a cell centre both agree; bilinear reading keeps two
      clicks that share a stride-32 cell (frequent on the 4x4 grid of a 128 px query, and for
      adjacent objects of a 256 px one) from getting identical vectors, and makes v_k
      continuous in the click.
    * ``"gaussian"`` / ``"square"`` (the "w/o MOPE" ablation): E_k is the smooth map sampled at
      the feature cell centres and the pooling is the E_k-weighted sum normalised by sum(E_k),
      i.e. a soft, blurred read around the click.
    """

    def __init__(self, dim: int, kind: Literal["impulse", "gaussian", "square"], stride: int,
                 sigma: float, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.kind = kind
        self.stride = stride
        self.sigma = sigma
        self.image_size = image_size
        self.fuse = nn.Conv2d(dim + 1, dim, 1)

    def forward(self, fq: Tensor, clicks: Tensor, batch_index: Tensor) -> Tensor:
        d = fq.shape[1]
        if self.kind == "impulse":
            pooled = self._bilinear(fq, clicks, batch_index)  # (T, D)
            mask_term = torch.ones_like(pooled[:, :1])  # (T, 1)
        else:
            h, w = fq.shape[2:]
            e = smooth_click_map(clicks.float(), (h, w), self.stride, self.kind, self.sigma,
                                 self.image_size).flatten(1)  # (T, h, w) -> (T, h*w)
            e_sum = e.sum(1, keepdim=True).clamp_min(1e-6)  # (T, 1)
            feats = fq.flatten(2)[batch_index]  # (B, D, h*w) -> (T, D, h*w)
            pooled = torch.einsum("tn,tdn->td", (e / e_sum).to(feats.dtype), feats)
            mask_term = (e.square().sum(1, keepdim=True) / e_sum).to(pooled.dtype)
        weight = self.fuse.weight.flatten(1)  # (D, D+1, 1, 1) -> (D, D+1)
        return (
            pooled @ weight[:, :d].t().to(pooled.dtype)
            + mask_term * weight[:, d].to(pooled.dtype)
            + self.fuse.bias.to(pooled.dtype)
        )

    def _bilinear(self, fq: Tensor, clicks: Tensor, batch_index: Tensor) -> Tensor:
        """F_q (B, D, h, w) sampled at each click -> (T, D)."""
        h, w = fq.shape[2:]
        flat = fq.flatten(2)  # (B, D, h, w) -> (B, D, h*w)
        u = (clicks[:, 0].float() / self.stride - 0.5).clamp(0, w - 1)  # (T,) feature x
        v = (clicks[:, 1].float() / self.stride - 0.5).clamp(0, h - 1)  # (T,) feature y
        x0, y0 = u.floor().long(), v.floor().long()
        x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
        fx, fy = (u - x0).to(fq.dtype)[:, None], (v - y0).to(fq.dtype)[:, None]  # (T, 1)

        def at(yy: Tensor, xx: Tensor) -> Tensor:
            return flat[batch_index, :, yy * w + xx]  # (T, D)

        top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
        bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
        return top * (1 - fy) + bottom * fy
