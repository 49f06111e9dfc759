"""Cross-view fusion: one attention map and one head input per target.

Each target reads the reference map of its own photo through ``batch_index``; the reference
backbone runs once per photo whatever the number of targets.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CrossViewFusion", "min_max"]


def min_max(s: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-row min-max normalisation to [0, 1]; min and max are treated as constants.

    (T, N) -> (T, N).
    """
    lo = s.detach().amin(1, keepdim=True)
    hi = s.detach().amax(1, keepdim=True)
    return (s - lo) / (hi - lo).clamp_min(eps)


class CrossViewFusion(nn.Module):
    """CVMF (``"cvmf"``) or DetGeo's product (``"multiply"``). Parameter-free.

    (v_q (T, D), v_r (B, D, G, G), batch_index (T,)) ->
    (head input (T, D + 1 for cvmf | D, G, G), attention A (T, G, G), similarity S (T, G*G)).

    S_k = norm(v_q[k]) . norm(v_r[b_k]) per cell (cosine similarity), A_k = min_max(S_k).
    ``"cvmf"`` feeds ``[A_k * norm(v_r[b_k]) ; A_k]``; ``"multiply"`` feeds ``A_k * v_r[b_k]``
    (un-normalised reference features, as DetGeo).
    """

    def __init__(self, mode: Literal["cvmf", "multiply"]) -> None:
        super().__init__()
        if mode not in ("cvmf", "multiply"):
            raise ValueError(f"unknown fusion {mode!r}")
        self.mode = mode

    def forward(
        self, vq: Tensor, vr: Tensor, batch_index: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        g = vr.shape[-1]
        vq_n = F.normalize(vq, dim=1)  # (T, D)
        vr_n = F.normalize(vr, dim=1)  # (B, D, G, G)
        ref_n = vr_n[batch_index]  # (B, D, G, G) -> (T, D, G, G)
        sim = torch.einsum("td,tdn->tn", vq_n.to(ref_n.dtype), ref_n.flatten(2))  # (T, G*G)
        att = min_max(sim).view(-1, 1, g, g)  # (T, G*G) -> (T, 1, G, G)
        if self.mode == "cvmf":
            fused = torch.cat([att * ref_n, att], dim=1)  # (T, D+1, G, G)
        else:
            fused = att * vr[batch_index]  # (T, D, G, G)
        return fused, att[:, 0], sim
