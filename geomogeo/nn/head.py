"""The detection head, the decoding of its output into one box per target, and the targets
the losses compare it with.

Layout of ``raw`` (T, 9, 5, G, G): for anchor ``a`` and cell (column ``gi``, row ``gj``),
``raw[t, a, :, gj, gi] = (tx, ty, tw, th, conf_logit)``. The confidence logits of one target are
flattened in (anchor, gj, gi) order: ``flat = a * G * G + gj * G + gi``.

Box parametrisation (DetGeo/YOLOv3, reference-input pixels, ``s`` = stride):
centre = ``((sigmoid(tx) + gi) * s, (sigmoid(ty) + gj) * s)``, size =
``(exp(tw) * a_w, exp(th) * a_h)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from geomogeo.nn.backbones import ConvBNAct

__all__ = ["NUM_ANCHORS", "DetectionHead", "build_targets", "decode"]

NUM_ANCHORS = 9


class DetectionHead(nn.Module):
    """Shared per-target head: 1x1 conv-BN-LeakyReLU then 1x1 conv to 9 x 5.

    (T, c_in, G, G) -> raw (T, 9, 5, G, G). The last conv starts small (weights N(0, 0.01),
    bias 0) so all confidence logits start near-equal (L_cn ~ ln(9 G^2)) and boxes start at
    the anchor sizes.
    """

    def __init__(self, c_in: int, hidden: int) -> None:
        super().__init__()
        self.hidden = ConvBNAct(c_in, hidden, 1)
        self.out = nn.Conv2d(hidden, NUM_ANCHORS * 5, 1)
        nn.init.normal_(self.out.weight, std=0.01)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        y = self.out(self.hidden(x))
        t, _, g, _ = y.shape
        return y.reshape(t, NUM_ANCHORS, 5, g, g)  # (T, 9*5, G, G) -> (T, 9, 5, G, G)


def decode(raw: Tensor, anchors: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """One box per target: the global argmax of the 9 * G * G confidence logits.

    raw (T, 9, 5, G, G), anchors (9, 2) (w, h) px -> boxes (T, 4) (x1, y1, x2, y2) reference px
    (edges), scores (T,) = softmax probability of the chosen logit. Computed in float32.
    Boxes are NOT clipped to the reference image: a box may extend past its border (clip in
    the caller if needed; the GIS layer keeps the geometry as predicted).
    """
    raw = raw.float()
    t, _, _, g, _ = raw.shape
    conf = raw[:, :, 4].reshape(t, -1)  # (T, 9, G, G) -> (T, 9*G*G)
    prob = conf.softmax(1)
    scores, idx = prob.max(1)
    a, cell = idx // (g * g), idx % (g * g)
    gj, gi = cell // g, cell % g
    rows = torch.arange(t, device=raw.device)
    tx, ty, tw, th = raw[rows, a, :4, gj, gi].unbind(1)  # (T, 4) -> 4 x (T,)
    anchors = anchors.to(raw)
    cx = (tx.sigmoid() + gi) * stride
    cy = (ty.sigmoid() + gj) * stride
    w = tw.exp() * anchors[a, 0]
    h = th.exp() * anchors[a, 1]
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
    return boxes, scores


def shape_iou(wh: Tensor, anchors: Tensor) -> Tensor:
    """IoU of boxes and anchors placed on a common centre. (T, 2), (9, 2) -> (T, 9)."""
    inter = torch.minimum(wh[:, None], anchors[None]).prod(-1)  # (T, 9)
    union = wh.prod(-1)[:, None] + anchors.prod(-1)[None] - inter
    return inter / union


def build_targets(boxes: Tensor, anchors: Tensor, stride: int, grid: int) -> tuple[Tensor, Tensor]:
    """Positive index and regression targets for each GT box.

    boxes (T, 4) (x1, y1, x2, y2) reference px, anchors (9, 2) ->
    flat_index (T,) long into the flattened (anchor, gj, gi) confidence logits,
    reg_targets (T, 4) = (tx, ty, tw, th): tx = cx / stride - gi in [0, 1), tw = log(w / a_w).

    The box is first clamped to the image [0, grid * stride]; widths/heights are floored at
    1 px so a degenerate box still has a finite log-size target. The positive anchor is the
    best shape-only IoU with (w, h).
    """
    boxes = boxes.float()
    anchors = anchors.to(boxes)
    size = float(grid * stride)
    b = boxes.clamp(0.0, size)
    wh = (b[:, 2:] - b[:, :2]).clamp_min(1.0)  # (T, 2)
    centre = (b[:, :2] + b[:, 2:]) / 2 / stride  # (T, 2) grid units
    cell = centre.floor().clamp(0, grid - 1)  # (T, 2) (gi, gj)
    offset = centre - cell  # (T, 2) in [0, 1]
    best = shape_iou(wh, anchors).argmax(1)  # (T,)
    log_wh = (wh / anchors[best]).log()  # (T, 2)
    gi, gj = cell.long().unbind(1)
    flat = best * grid * grid + gj * grid + gi
    return flat, torch.cat([offset, log_wh], dim=1)
