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

The fine-grid maps (every cell's mass over the number of passes, the box it would return, the
averaged attention) are computed by one module, :class:`VoteMaps`, which is traceable for ONNX
export; step 1 and the look-up of step 2 are the torch-free :func:`geomogeo.predictor.select`,
which the PyTorch and the ONNX predictor share. Fine cell ``(i, j)`` (row, column) covers
reference pixels ``x in [j * c, (j + 1) * c)``, ``y in [i * c, (i + 1) * c)`` with
``c = stride / steps``.

A mode is written ``"<group>"`` or ``"<group>+s<steps>"``: group ``none`` (one orientation),
``rot4`` (the 4 quarter turns) or ``d4`` (turns and mirrors, 8); ``steps`` in 1, 2, 4, 8
sub-cell positions per axis (``steps ** 2`` shifts). ``"rot4+s2"`` is 16 passes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geomogeo.nn.head import decode
from geomogeo.predictor import TTASpec, parse_tta, select

__all__ = [
    "TTAResult",
    "Transform",
    "VoteMaps",
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


def _rot90(img: Tensor, k: int) -> Tensor:
    """``torch.rot90(img, k, dims=(-2, -1))`` written as flips and a transpose, the way torch
    computes it, because ONNX has no rot90 operator."""
    k %= 4
    if k == 1:
        return img.flip(-1).transpose(-2, -1)
    if k == 2:
        return img.flip(-2, -1)
    if k == 3:
        return img.flip(-2).transpose(-2, -1)
    return img


def transform_images(img: Tensor, t: Transform) -> Tensor:
    """Apply ``t`` to (..., S, S) images (H == W needed whenever ``k`` is odd)."""
    mirror, k = t
    if mirror:
        img = img.flip(-1)
    return _rot90(img, k)


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
    h, w = img.shape[-2:]
    return F.pad(img[..., :h - dy, :w - dx], (dx, 0, dy, 0))


def _invert_grid(maps: Tensor, t: Transform) -> Tensor:
    """(..., G, G) maps of a transformed pass -> the original frame."""
    mirror, k = t
    maps = _rot90(maps, -k)
    return maps.flip(-1) if mirror else maps


def _invert_boxes(boxes: Tensor, t: Transform, size: float) -> Tensor:
    """(..., 4) boxes of a transformed pass -> the original frame, corners re-sorted."""
    p1 = invert_points(boxes[..., :2], t, size)
    p2 = invert_points(boxes[..., 2:], t, size)
    return torch.cat((torch.minimum(p1, p2), torch.maximum(p1, p2)), dim=-1)


def _to_fine(coarse: Tensor, steps: int, sx: int, sy: int) -> Tensor:
    """(N, C, G, G) maps of a pass whose reference was shifted by (sx, sy) FINE cells ->
    (N, C, G * steps, G * steps) on the fine grid of the original reference.

    Each coarse cell covers ``steps x steps`` fine cells of the pass; fine cell ``o`` of the
    original is fine cell ``o + s`` of the pass; the cells the pass does not cover get 0.
    """
    _, c, g, _ = coarse.shape
    if steps > 1:
        coarse = coarse[:, :, :, None, :, None].expand(-1, -1, -1, steps, -1, steps)
        coarse = coarse.reshape(-1, c, g * steps, g * steps)
    if sx or sy:
        coarse = F.pad(coarse[..., sy:, sx:], (0, sx, 0, sy))
    return coarse


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


class VoteMaps(nn.Module):
    """The passes of a test-time augmentation mode and their fine-grid maps, as one module.

    forward(reference (B, 3, R, R), query (B, 3, Q, Q), clicks (T, 2) (x, y) query px,
    batch_index (T,) long) -> a tuple named by :attr:`output_names`:

    * ``mass`` (T, Gf, Gf) float32 in [0, 1], ``Gf = G * steps``: per fine cell, the coarse-cell
      mass (softmax probability summed over the 9 anchors) of every pass covering it, summed
      over the passes and divided by their number;
    * ``cell_boxes`` (T, Gf, Gf, 4) float32 (x1, y1, x2, y2) reference px (edges): the box the
      vote returns if that cell wins, the confidence-weighted mean of the boxes of all anchors
      voting there (0 where the mass is 0);
    * ``attention`` (T, Gf, Gf) float32 in [0, 1]: the passes' attention maps averaged per
      fine cell over the passes that cover it;
    * for mode ``"none"`` only, ``boxes`` (T, 4) float32 and ``scores`` (T,): the network's own
      decoding (:func:`~geomogeo.nn.head.decode`, the best anchor of the best cell).

    Fine cell ``(i, j)`` covers reference pixels ``[j * c, (j + 1) * c) x [i * c, (i + 1) * c)``,
    ``c = stride / steps``. The shapes R, Q, G are fixed by the first call (they are read as
    Python ints, so a traced graph keeps only B and T dynamic).

    ``batch_passes``: run the network once over all passes stacked along the batch instead of
    once per pass: the same maps to float rounding, ``passes`` times the activation memory; a
    traced graph then holds the network once instead of once per pass (the ONNX export uses
    it).
    """

    def __init__(self, model: nn.Module, mode: str | TTASpec, *,
                 autocast_bf16: bool = False, batch_passes: bool = False) -> None:
        super().__init__()
        self.model = model
        self.spec = parse_tta(mode)
        self.autocast_bf16 = autocast_bf16
        self.batch_passes = batch_passes

    @property
    def output_names(self) -> tuple[str, ...]:
        """Names of the tensors :meth:`forward` returns, in order."""
        names = ("mass", "cell_boxes", "attention")
        return (*names, "boxes", "scores") if self.spec == TTASpec("none") else names

    def _passes(
        self, reference: Tensor, query: Tensor, clicks: Tensor, batch_index: Tensor,
        passes: list[tuple[tuple[int, int], Transform]],
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """The network's (raw, attention) of each pass, in the order of ``passes``: one
        forward per pass, or (``batch_passes``) one forward over all passes stacked along the
        batch, which needs ``passes`` times the memory."""
        size_q = int(query.shape[-1])

        def inputs(p: int) -> tuple[Tensor, Tensor, Tensor]:
            (dx, dy), t = passes[p]
            return (transform_images(_shift_images(reference, dx, dy), t),
                    transform_images(query, t), transform_points(clicks.float(), t, size_q))

        def autocast() -> torch.autocast:
            return torch.autocast(reference.device.type, torch.bfloat16,
                                  enabled=self.autocast_bf16)

        if not self.batch_passes:
            for p in range(len(passes)):
                with autocast():
                    out = self.model(*inputs(p), batch_index)
                yield out.raw, out.attention
            return
        n, photos = len(passes), reference.shape[0]
        stacked = [torch.cat(x) for x in zip(*(inputs(p) for p in range(n)), strict=True)]
        with autocast():
            out = self.model(*stacked, torch.cat([batch_index + p * photos for p in range(n)]))
        # rows are pass-major: (n * T, ...) -> n x (T, ...)
        raw = out.raw.reshape(n, -1, *out.raw.shape[1:])
        attention = out.attention.reshape(n, -1, *out.attention.shape[1:])
        yield from zip(raw.unbind(0), attention.unbind(0), strict=True)

    def forward(
        self, reference: Tensor, query: Tensor, clicks: Tensor, batch_index: Tensor
    ) -> tuple[Tensor, ...]:
        spec, model = self.spec, self.model
        stride = model.config.stride
        size_r = int(reference.shape[-1])
        g, step = size_r // stride, stride // spec.steps
        device = reference.device
        passes = [(shift, t) for shift in spec.shifts(stride) for t in spec.transforms]
        acc = cover = None
        for ((dx, dy), t), (raw, attention) in zip(
            passes, self._passes(reference, query, clicks, batch_index, passes), strict=True
        ):
            offset = torch.tensor([dx, dy, dx, dy], device=device, dtype=torch.float32)
            boxes, prob = dense_decode(raw, model.anchors, stride)
            # (T, 9, G, G, 4): coordinates back to the original frame, then the cells
            # (permute, not movedim with negative dims, which the ONNX exporter mangles)
            boxes = _invert_boxes(boxes, t, size_r) - offset
            boxes = _invert_grid(boxes.permute(0, 4, 1, 2, 3), t).permute(0, 2, 3, 4, 1)
            prob = _invert_grid(prob, t)  # (T, 9, G, G)
            coarse = torch.cat((
                prob.sum(1)[:, None],  # mass (T, 1, G, G)
                (prob[..., None] * boxes).sum(1).permute(0, 3, 1, 2),  # box sum (T, 4, G, G)
                _invert_grid(attention.float(), t)[:, None],  # (T, 1, G, G)
            ), dim=1)
            fine = _to_fine(coarse, spec.steps, dx // step, dy // step)
            ones = _to_fine(torch.ones(1, 1, g, g, device=device), spec.steps, dx // step,
                            dy // step)
            acc = fine if acc is None else acc + fine
            cover = ones if cover is None else cover + ones
        mass_sum = acc[:, 0]  # (T, Gf, Gf)
        cell_boxes = (acc[:, 1:5] / mass_sum.clamp_min(1e-12)[:, None]).permute(0, 2, 3, 1)
        maps = (mass_sum / spec.passes, cell_boxes, acc[:, 5] / cover[:, 0])
        if spec != TTASpec("none"):
            return maps
        return (*maps, *decode(raw, model.anchors, stride))


@dataclass
class TTAResult:
    """What :func:`predict_tta` and :func:`predict` return, one row per target.

    Attributes:
        boxes: (T, 4) float32 (x1, y1, x2, y2) reference-input pixels (edges, not clipped).
        scores: (T,) float32 in [0, 1], the chosen fine cell's mass over the number of passes
            (mode ``"none"`` through :func:`predict`: the decoded anchor's probability).
        attention: (T, Gf, Gf) float32 in [0, 1], the attention maps of the passes averaged on
            the fine grid (each fine cell over the passes that cover it).
        mass, cell_boxes: (T, Gf, Gf) and (T, Gf, Gf, 4) float32, the vote maps of
            :class:`VoteMaps`.
    """

    boxes: Tensor
    scores: Tensor
    attention: Tensor
    mass: Tensor
    cell_boxes: Tensor


def _run(model: nn.Module, reference: Tensor, query: Tensor, clicks: Tensor,
         batch_index: Tensor, spec: TTASpec, autocast_bf16: bool, vote: bool) -> TTAResult:
    maps = VoteMaps(model, spec, autocast_bf16=autocast_bf16)(reference, query, clicks,
                                                             batch_index)
    mass, cell_boxes, attention, *decoded = maps  # decoded: mode "none" only
    if vote or not decoded:
        boxes, scores, _ = select(mass.cpu().numpy(), cell_boxes.cpu().numpy())
        decoded = [torch.from_numpy(boxes).to(mass), torch.from_numpy(scores).to(mass)]
    return TTAResult(*decoded, attention, mass, cell_boxes)


@torch.inference_mode()
def predict_tta(
    model: nn.Module, reference: Tensor, query: Tensor, clicks: Tensor, batch_index: Tensor,
    mode: str | TTASpec, *, autocast_bf16: bool = False,
) -> TTAResult:
    """Run ``model`` once per pass of ``mode`` and vote (see the module doc), also for
    ``"none"``.

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
    return _run(model, reference, query, clicks, batch_index, parse_tta(mode), autocast_bf16,
                vote=True)


@torch.inference_mode()
def predict(
    model: nn.Module, reference: Tensor, query: Tensor, clicks: Tensor, batch_index: Tensor,
    mode: str | TTASpec, *, autocast_bf16: bool = False,
) -> TTAResult:
    """One box per click under ``mode``: what the predictor and the evaluation run.

    ``"none"`` is one pass and the network's own decoding (:func:`~geomogeo.nn.head.decode`:
    the best anchor of the best cell, its softmax probability as score); any other mode is the
    vote of :func:`predict_tta`. The vote maps come back either way. Arguments as for
    :func:`predict_tta`.
    """
    return _run(model, reference, query, clicks, batch_index, parse_tta(mode), autocast_bf16,
                vote=False)
