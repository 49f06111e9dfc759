"""MOGeo's training loss: L = L_cn + L_reg + w_s * L_s, averaged over target rows.

* L_cn: softmax cross-entropy over the 9 * G * G confidence logits of each target, the positive
  (anchor, cell) of :func:`~geomogeo.nn.head.build_targets` as the class.
* L_reg: squared error of (sigmoid(tx), sigmoid(ty), tw, th) at the positive against the
  targets, summed over the four terms.
* L_s (ours, the paper gives only "d_pos to itself, d_neg to other targets"): InfoNCE over the
  targets' similarity maps. Each map S_k (the raw cosine similarity, before min-max) is
  centred and L2-normalised, z_k = norm(S_k - mean S_k), so that two maps differing by an
  offset count as the same; then ``L_s = mean_k -log softmax_j(z_k . z_j / tau)[k]`` over ALL
  targets of the batch (same photo and other photos). The positive of each row is the map
  itself (d_pos = 0); the loss falls as the other maps decorrelate from it. It is ln(T) for T
  identical maps, ~0 for mutually orthogonal ones, and 0 for T = 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geomogeo.nn.head import build_targets
from geomogeo.nn.model import MOGeoOutput

__all__ = ["mogeo_loss", "similarity_loss"]


def similarity_loss(similarity: Tensor, tau: float = 0.1) -> Tensor:
    """InfoNCE of each target's map against all others (see the module doc).

    similarity (T, N) -> scalar; 0 when T < 2.
    """
    t = similarity.shape[0]
    if t < 2:
        return similarity.new_zeros((), dtype=torch.float32)
    s = similarity.float()
    z = F.normalize(s - s.mean(1, keepdim=True), dim=1)  # (T, N)
    logits = z @ z.t() / tau  # (T, T)
    return F.cross_entropy(logits, torch.arange(t, device=s.device))


def mogeo_loss(
    out: MOGeoOutput, boxes: Tensor, batch_index: Tensor, anchors: Tensor, stride: int,
    similarity_weight: float = 1.0, tau: float = 0.1,
) -> dict[str, Tensor]:
    """The loss terms for one batch; boxes (T, 4) reference px, one row per output row.

    Returns ``{"total", "cn", "reg", "s"}``, scalars in float32; ``"s"`` is a zero tensor when
    ``similarity_weight == 0`` or T < 2. ``batch_index`` is only checked here: L_s contrasts
    targets of the same and of different photos alike.
    """
    raw = out.raw.float()
    t, _, _, g, _ = raw.shape
    if boxes.shape != (t, 4) or batch_index.shape != (t,):
        raise ValueError(
            f"mogeo_loss: {t} output rows but boxes {tuple(boxes.shape)}, "
            f"batch_index {tuple(batch_index.shape)}"
        )
    flat, reg_t = build_targets(boxes, anchors, stride, g)
    conf = raw[:, :, 4].reshape(t, -1)  # (T, 9, G, G) -> (T, 9*G*G)
    cn = F.cross_entropy(conf, flat)
    # (T, 9, 4, G, G) -> (T, 9, G, G, 4) -> (T, 9*G*G, 4)
    pred = raw[:, :, :4].permute(0, 1, 3, 4, 2).reshape(t, -1, 4)
    pos = pred[torch.arange(t, device=raw.device), flat]  # (T, 4)
    pos = torch.cat([pos[:, :2].sigmoid(), pos[:, 2:]], dim=1)
    reg = (pos - reg_t).square().sum(1).mean()
    s = raw.new_zeros(()) if similarity_weight == 0 else similarity_loss(out.similarity, tau)
    return {"total": cn + reg + similarity_weight * s, "cn": cn, "reg": reg, "s": s}
