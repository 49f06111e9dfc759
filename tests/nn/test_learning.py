"""The network learns: a small model overfits a generated multi-object batch.

The overfit must not hinge on one CPU's floating-point path or on the thread count. Summation
order changes the trajectory of a few hundred Adam steps, and it matters: on an Intel Xeon,
six runs from the same start perturbed by 1e-5 (relative) reached 9 of the 11 targets after
20 to 60 steps, but one of them then kept one target in a wrong cell for over 100 steps (the AMD
EPYC failure: IoU 0 on some targets at a fixed step count). So the test trains until a stable
criterion with margin holds (acc@0.5 >= 9/11, at two evaluations 10 steps apart; chance is
~0: one of 9 * 8 * 8 anchor cells), within a budget several times the usual need, at a
learning rate where runs converge steadily, and it runs with 1 and 2 threads. A network that
ignores the clicks cannot pass: it gives every target of a photo the same box, which has
IoU > 0.5 with at most one of the photo's non-overlapping targets: 4 of 11 at best.
"""

from __future__ import annotations

import math

import torch
from nn_fixtures import synthetic_scene, tiny_config

from geomogeo.nn.head import decode
from geomogeo.nn.losses import mogeo_loss
from geomogeo.nn.model import MOGeoNet, build_model

#: Optimiser steps allowed: the criterion held after 30 to 70 steps in the runs above.
BUDGET = 400
#: Steps between two evaluations; the criterion must hold at two consecutive evaluations.
CHECK_EVERY = 10
#: Targets (of 11) that must be found with IoU > 0.5.
MIN_CORRECT = 9
LR = 5e-4  # at 1e-3 the batch was solved sooner, but some starts oscillated without settling


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise IoU of (T, 4) boxes."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp_min(0).prod(1)
    union = (a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1) - inter
    return inter / union


def _eval_iou(model: MOGeoNet, batch: tuple[torch.Tensor, ...], stride: int) -> torch.Tensor:
    ref, query, clicks, bidx, boxes = batch
    model.eval()
    with torch.no_grad():
        pred, _ = decode(model(ref, query, clicks, bidx).raw, model.anchors, stride)
    model.train()
    return box_iou(pred, boxes)


def test_overfits_multi_object_batch(threads: int) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(reference_size=128, query_size=(64, 64), width=0.25, embed_dim=64)
    model = build_model(cfg)
    batch = synthetic_scene(4, [2, 3, 4, 2], 128, query_size=64)
    ref, query, clicks, bidx, boxes = batch
    assert int((_eval_iou(model, batch, cfg.stride) > 0.5).sum()) < MIN_CORRECT  # untrained
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    first_cn, solved_in_a_row, step = None, 0, 0
    while step < BUDGET and solved_in_a_row < 2:
        loss = mogeo_loss(model(ref, query, clicks, bidx), boxes, bidx, model.anchors, cfg.stride)
        if first_cn is None:
            first_cn = float(loss["cn"].detach())
        opt.zero_grad()
        loss["total"].backward()
        opt.step()
        step += 1
        if step % CHECK_EVERY == 0:
            iou = _eval_iou(model, batch, cfg.stride)
            correct = int((iou > 0.5).sum())
            solved_in_a_row = solved_in_a_row + 1 if correct >= MIN_CORRECT else 0
    # acc@0.5 >= 9/11, at two evaluations 10 steps apart, within the budget
    assert solved_in_a_row == 2, f"not learnt in {BUDGET} steps ({threads} threads): {iou}"
    # At initialisation the anchor x cell softmax is near uniform: L_cn ~ ln(9 * G * G).
    g = cfg.grid_size
    assert first_cn is not None and abs(first_cn - math.log(9 * g * g)) < 0.3, first_cn
