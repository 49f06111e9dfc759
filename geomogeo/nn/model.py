"""MOGeoNet: m clicks of a query photo -> m boxes in the reference image, in one forward pass.

``variant="mogeo"``: the reference and query backbones run once per photo; each click becomes
a query vector by :class:`~geomogeo.nn.encodings.MOPE` on the query feature map.
``variant="detgeo"``: the single-target baseline; each click's smooth map is a 4th query input
channel, so the query backbone runs once per click (T passes) and the query vector is the global
mean of that pass's feature map. Either way, each target then gets its own attention map and head
input by fusion with the reference map of its photo, and the shared head predicts 9 anchors x 5
values per cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from geomogeo.nn.backbones import QueryEncoder, ReferenceEncoder, scaled
from geomogeo.nn.config import ModelConfig
from geomogeo.nn.encodings import MOPE, click_channel
from geomogeo.nn.fusion import CrossViewFusion
from geomogeo.nn.head import DetectionHead

__all__ = ["MOGeoNet", "MOGeoOutput", "build_model"]


@dataclass
class MOGeoOutput:
    """What one forward pass returns, one row per target.

    Attributes:
        raw: (T, 9, 5, G, G) per anchor (tx, ty, tw, th, conf_logit) per cell.
        attention: (T, G, G) in [0, 1], the min-max normalised attention map A_k.
        similarity: (T, G*G) raw cosine similarity of the query vector with each reference
            cell (before min-max); used by L_s.
    """

    raw: Tensor
    attention: Tensor
    similarity: Tensor


class MOGeoNet(nn.Module):
    """The network of :class:`~geomogeo.nn.config.ModelConfig`.

    forward(reference (B, 3, R, R), query (B, 3, Hq, Wq), clicks (T, 2) (x, y) query px,
    batch_index (T,) long in [0, B)) -> :class:`MOGeoOutput` with G = R // 16.
    Inputs are already normalised with ``config.mean/std``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.register_buffer(
            "anchors", torch.tensor(config.anchors, dtype=torch.float32), persistent=True
        )
        self.anchors: Tensor
        self.reference_encoder = ReferenceEncoder(config.width, d)
        detgeo = config.variant == "detgeo"
        self.query_encoder = QueryEncoder(config.width, d, c_in=4 if detgeo else 3,
                                          stride=config.query_stride)
        self.mope: MOPE | None = None
        if not detgeo:
            self.mope = MOPE(d, config.click_encoding, config.query_stride,
                             config.gaussian_sigma, config.query_size)
        self.fusion = CrossViewFusion(config.fusion)
        c_head = d + 1 if config.fusion == "cvmf" else d
        self.head = DetectionHead(c_head, scaled(256, config.width))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.head.out:
                nn.init.kaiming_normal_(m.weight, a=0.1, mode="fan_in", nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def encode_query(self, query: Tensor, clicks: Tensor, batch_index: Tensor) -> Tensor:
        """Query vectors V_q (T, D), one per click."""
        if self.mope is not None:
            fq = self.query_encoder(query)  # (B, D, Hq/s, Wq/s), s = query_stride; once a photo
            return self.mope(fq, clicks, batch_index)
        cfg = self.config
        enc = click_channel(clicks.float(), tuple(query.shape[2:]), cfg.click_encoding,
                            cfg.gaussian_sigma).to(query.dtype)  # (T, 1, Hq, Wq)
        x = torch.cat([query[batch_index], enc], dim=1)  # (T, 4, Hq, Wq): one pass per click
        return self.query_encoder(x).mean(dim=(2, 3))  # (T, D, h, w) -> (T, D)

    def forward(
        self, reference: Tensor, query: Tensor, clicks: Tensor, batch_index: Tensor
    ) -> MOGeoOutput:
        vr = self.reference_encoder(reference)  # (B, D, G, G), one pass per photo
        vq = self.encode_query(query, clicks, batch_index)  # (T, D)
        fused, attention, similarity = self.fusion(vq, vr, batch_index)
        return MOGeoOutput(self.head(fused), attention, similarity)


def build_model(config: ModelConfig) -> MOGeoNet:
    """A freshly initialised network for ``config``."""
    return MOGeoNet(config)
