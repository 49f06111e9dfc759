"""Test-time augmentation: the network asked several times, in turned and shifted frames.

A nadir reference tile and a north-up query photo keep their meaning when both are turned or
mirrored together, and the reference keeps it when shifted by a few pixels. A pass
``(shift, t)`` first shifts the reference content by ``shift = (dx, dy)`` pixels (right and
down; the uncovered band is filled with 0, the dataset mean after normalisation), then applies
``t = (mirror, k)`` to both views: a left-right mirror (when ``mirror``), then ``k`` quarter
turns counter-clockwise with the semantics of ``torch.rot90(img, k, dims=(-2, -1))``.

Each pass's dense output (every anchor of every cell) is mapped back to the original frame and
the passes vote on a FINE grid of cells ``stride / steps`` pixels wide: the shifts are the
multiples of that fine step in x and y, so each pass's coarse cell covers ``steps x steps``
fine cells and shifted passes interleave. Then

1. the fine cell with the largest confidence mass (a pass's coarse-cell mass summed over its 9
   anchors, summed over passes) is the target's cell;
2. the box is the confidence-weighted mean of the boxes of all anchors of the coarse cells that
   cover it, over all passes; its score is the mass divided by the number of passes, in [0, 1].

Anchors are summed before voting because a quarter turn swaps width and height, so the "same"
anchor has another index in a turned pass. Coordinates are continuous reference- or query-input
pixels, origin at the top-left corner of the top-left pixel; boxes are ``(x1, y1, x2, y2)`` pixel
edges. The grid must tile the reference exactly (``G * stride = R``), which every
:class:`~geomogeo.nn.config.ModelConfig` guarantees.

A mode is written ``"<group>"`` or ``"<group>+s<steps>"``: group ``none`` (one orientation),
``rot4`` (the 4 quarter turns) or ``d4`` (turns and mirrors, 8); ``steps`` in 1, 2, 4, 8
sub-cell positions per axis (``steps ** 2`` shifts). ``"rot4+s2"`` is 16 passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from geomogeo.nn.head import decode
from geomogeo.predictor import TTASpec, parse_tta

__all__ = [
    "TTAResult",
    "Transform",
    "dense_decode",
    "invert_points",
    "predict",
    "predict_tta",
    "transform_images",
    "transform_points",
]

#: ``(mirror, k)``: mirror left-right first (when True), then ``k`` quarter turns CCW
#: (the entries of :data:`geomogeo.predictor.TTA_GROUPS`).
Transform = tuple[bool, int]


def transform_images(img: Tensor, t: Transform) -> Tensor:
    """Apply ``t`` to (..., S, S) images (H == W needed whenever ``k`` is odd)."""
    mirror, k = t
    if mirror:
        img = img.flip(-1)
    return torch.rot90(img, k % 4, dims=(-2, -1)) if k % 4 else img


def transform_points(xy: Tensor, t: Transform, size: float) -> Tensor:
    """Apply ``t`` to (N, 2) (x, y) points of a square image of side ``size`` pixels.

    One CCW quarter turn sends (x, y) to (y, size - x), which is where ``torch.rot90`` moves
    the pixel whose corner-origin coordinates are (x, y).
    """
    mirror, k = t
    x, y = xy.unbind(-1)
    if mirror:
        x = size - x
    for _ in range(k % 4):
        x, y = y, size - x
    return torch.stack((x, y), dim=-1)


def invert_points(xy: Tensor, t: Transform, size: float) -> Tensor:
    """The inverse of :func:`transform_points`: points of the transformed image -> original."""
    mirror, k = t
    xy = transform_points(xy, (False, -k % 4), size)
    return transform_points(xy, (True, 0), size) if mirror else xy


def _shift_images(img: Tensor, dx: int, dy: int) -> Tensor:
    """(B, C, H, W) content moved ``dx`` px right and ``dy`` px down; the rest is 0."""
    if dx == dy == 0:
        return img
    out = torch.zeros_like(img)
    h, w = img.shape[-2:]
    out[..., dy:, dx:] = img[..., :h - dy, :w - dx]
    return out


def _invert_grid(maps: Tensor, t: Transform) -> Tensor:
    """(..., G, G) maps of a transformed pass -> the original frame."""
    mirror, k = t
    maps = torch.rot90(maps, -(k % 4), dims=(-2, -1)) if k % 4 else maps
    return maps.flip(-1) if mirror else maps


def _invert_boxes(boxes: Tensor, t: Transform, size: float) -> Tensor:
    """(..., 4) boxes of a transformed pass -> the original frame, corners re-sorted."""
    p1 = invert_points(boxes[..., :2], t, size)
    p2 = invert_points(boxes[..., 2:], t, size)
    return torch.cat((torch.minimum(p1, p2), torch.maximum(p1, p2)), dim=-1)


def dense_decode(raw: Tensor, anchors: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """Every anchor's box in every cell, with its softmax confidence.

    raw (T, 9, 5, G, G), anchors (9, 2) (w, h) px -> boxes (T, 9, G, G, 4) reference px
    (edges, not clipped) and prob (T, 9, G, G), summing to 1 per target. Float32. Uses the
    parametrisation of :func:`~geomogeo.nn.head.decode`, whose box is the entry of the
    largest ``prob``.
    """
    raw = raw.float()
    t, a, _, g, _ = raw.shape
    cells = torch.arange(g, device=raw.device, dtype=raw.dtype)
    anchors = anchors.to(raw).view(1, a, 2, 1, 1)
    cx = (raw[:, :, 0].sigmoid() + cells.view(1, 1, 1, g)) * stride  # (T, 9, G, G)
    cy = (raw[:, :, 1].sigmoid() + cells.view(1, 1, g, 1)) * stride
    w = raw[:, :, 2].exp() * anchors[:, :, 0]
    h = raw[:, :, 3].exp() * anchors[:, :, 1]
    boxes = torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)
    prob = raw[:, :, 4].reshape(t, -1).softmax(1).view(t, a, g, g)
    return boxes, prob


@dataclass
class TTAResult:
    """What :func:`predict_tta` returns, one row per target.

    Attributes:
        boxes: (T, 4) float32 (x1, y1, x2, y2) reference-input pixels (edges, not clipped).
        scores: (T,) float32 in [0, 1], the chosen fine cell's mass over the number of passes.
        attention: (T, G * steps, G * steps) float32 in [0, 1], the attention maps of the
            passes averaged on the fine grid (each fine cell over the passes that cover it).
    """

    boxes: Tensor
    scores: Tensor
    attention: Tensor


class _FineGrid:
    """Accumulates coarse (T, G, G, ...) maps of shifted passes on the fine voting grid.

    Fine cells are ``stride / steps`` px; the grid has ``steps - 1`` extra cells before the
    first one so that a pass shifted by (dx, dy) lands at offset ``steps - 1 - d / step``.
    """

    def __init__(self, g: int, steps: int, step_px: int) -> None:
        self.g, self.m, self.step_px = g, steps, step_px
        self.pad = steps - 1
        self.maps: dict[str, Tensor] = {}

    def add(self, name: str, coarse: Tensor, dx: int, dy: int) -> None:
        m = self.m
        up = coarse.repeat_interleave(m, 1).repeat_interleave(m, 2)  # (T, G*m, G*m, ...)
        if name not in self.maps:
            size = self.g * m + self.pad
            self.maps[name] = coarse.new_zeros((coarse.shape[0], size, size, *coarse.shape[3:]))
        ox, oy = self.pad - dx // self.step_px, self.pad - dy // self.step_px
        self.maps[name][:, oy:oy + self.g * m, ox:ox + self.g * m] += up

    def image_part(self, name: str) -> Tensor:
        """The accumulated map over the reference itself, (T, G*m, G*m, ...)."""
        return self.maps[name][:, self.pad:, self.pad:]


@torch.inference_mode()
def predict_tta(
    model: nn.Module, reference: Tensor, query: Tensor, clicks: Tensor, batch_index: Tensor,
    mode: str | TTASpec, *, autocast_bf16: bool = False,
) -> TTAResult:
    """Run ``model`` once per pass of ``mode`` and vote (see the module doc).

    Args:
        model: a :class:`~geomogeo.nn.model.MOGeoNet` (anything with its forward, ``config``
            with ``stride``, and ``anchors``).
        reference: (B, 3, R, R) normalised reference inputs.
        query: (B, 3, Q, Q) normalised query inputs; square whenever a pass turns.
        clicks: (T, 2) (x, y) query-input pixels.
        batch_index: (T,) long, the photo of each click.
        mode: e.g. ``"rot4+s2"`` or a :class:`TTASpec`.
        autocast_bf16: run the passes under bf16 autocast on the inputs' device.
    """
    spec = parse_tta(mode)
    size_r, size_q = reference.shape[-1], query.shape[-1]
    stride = model.config.stride
    grid = _FineGrid(size_r // stride, spec.steps, stride // spec.steps)
    cover = torch.ones(1, size_r // stride, size_r // stride, device=reference.device)
    for dx, dy in spec.shifts(stride):
        shifted = _shift_images(reference, dx, dy)
        offset = torch.tensor([dx, dy, dx, dy], device=reference.device, dtype=torch.float32)
        for t in spec.transforms:
            with torch.autocast(reference.device.type, torch.bfloat16, enabled=autocast_bf16):
                out = model(transform_images(shifted, t), transform_images(query, t),
                            transform_points(clicks.float(), t, size_q), batch_index)
            boxes, prob = dense_decode(out.raw, model.anchors, stride)
            # (T, 9, G, G, 4): coordinates back to the original frame, then the cells
            boxes = _invert_boxes(boxes, t, size_r) - offset
            boxes = _invert_grid(boxes.movedim(-1, 1), t).movedim(1, -1)
            prob = _invert_grid(prob, t)  # (T, 9, G, G)
            grid.add("mass", prob.sum(1), dx, dy)  # (T, G, G)
            grid.add("box", (prob[..., None] * boxes).sum(1), dx, dy)  # (T, G, G, 4)
            grid.add("attention", _invert_grid(out.attention.float(), t), dx, dy)
            grid.add("cover", cover, dx, dy)
    mass, box_sum = grid.maps["mass"], grid.maps["box"]
    n = mass.shape[0]
    best = mass.reshape(n, -1).argmax(1)  # (T,)
    rows = torch.arange(n, device=mass.device)
    chosen = mass.reshape(n, -1)[rows, best]  # (T,)
    box = box_sum.reshape(n, -1, 4)[rows, best] / chosen.clamp_min(1e-12)[:, None]
    attention = grid.image_part("attention") / grid.image_part("cover")
    return TTAResult(box, chosen / spec.passes, attention)


@torch.inference_mode()
def predict(
    model: nn.Module, reference: Tensor, query: Tensor, clicks: Tensor, batch_index: Tensor,
    mode: str | TTASpec, *, autocast_bf16: bool = False,
) -> TTAResult:
    """One box per click under ``mode``: what the predictor and the evaluation run.

    ``"none"`` is one pass and the network's own decoding (:func:`~geomogeo.nn.head.decode`:
    the best anchor of the best cell, its softmax probability as score, the (T, G, G)
    attention maps); any other mode is :func:`predict_tta`. Arguments as for
    :func:`predict_tta`.
    """
    spec = parse_tta(mode)
    if spec != TTASpec("none"):
        return predict_tta(model, reference, query, clicks, batch_index, spec,
                           autocast_bf16=autocast_bf16)
    with torch.autocast(reference.device.type, torch.bfloat16, enabled=autocast_bf16):
        out = model(reference, query, clicks, batch_index)
    boxes, scores = decode(out.raw, model.anchors, model.config.stride)
    return TTAResult(boxes, scores, out.attention.float())
