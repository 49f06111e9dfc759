"""The network learns footprint boxes of building prisms: the light model overfits one batch
of photos rendered with parallax by the data engine (roofs displaced from their footprints,
walls, occlusion), whatever the thread count."""

from __future__ import annotations

import pytest
import torch
from nn_fixtures import tiny_config

from geomogeo.data.dataset import Batch, pack_items
from geomogeo.data.synth.camera import CameraRanges
from geomogeo.data.synth.engine import SynthConfig, build_worlds, generate
from geomogeo.nn.head import decode
from geomogeo.nn.losses import mogeo_loss
from geomogeo.nn.model import build_model

REF, QUERY = 128, (64, 64)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise IoU of (T, 4) boxes."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp_min(0).prod(1)
    union = (a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1) - inter
    return inter / union


def _prism_batch() -> Batch:
    """Four oblique photos of a procedural town, 2-3 building targets each (boxes: the
    footprints' envelopes in the 128 px reference)."""
    cfg = SynthConfig.parallax(
        reference_size=REF, kinds=(("building", 1.0),), targets=(2, 3), min_object_m2=60.0,
        no_heading_fraction=0.0, max_tries=400,
        camera=CameraRanges(altitude=(60.0, 80.0), pitch=(20.0, 35.0), sizes=((256, 192),)))
    worlds = build_worlds([], cfg, augment=False, procedural=1, seed=1)
    samples = generate(worlds, 4, seed=0, cfg=cfg, quiet=True)
    assert all(k == "building" for s in samples for k in s.kinds)
    assert all((s.heights > 0).all() for s in samples)
    packed = pack_items([s.pack_item() for s in samples], QUERY, REF)
    return packed.batch(range(len(packed)))


@pytest.fixture(scope="module")
def prism_batch() -> Batch:
    return _prism_batch()


def test_overfits_prism_footprint_boxes(prism_batch: Batch, threads: int) -> None:
    """Trained until every target has IoU > 0.5 at two evaluations 10 steps apart, within a
    budget: the criterion holds at some step whatever the summation order (a fixed step
    count would not be robust: a run can keep one target in a wrong cell for a while)."""
    torch.manual_seed(0)
    cfg = tiny_config(reference_size=REF, query_size=QUERY, width=0.25, embed_dim=64)
    model = build_model(cfg)
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    b = prism_batch
    ref = (b.reference.float() / 255 - mean) / std
    query = (b.query.float() / 255 - mean) / std

    def iou() -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            pred, _ = decode(model(ref, query, b.clicks, b.batch_index).raw, model.anchors,
                             cfg.stride)
        model.train()
        return box_iou(pred, b.boxes)

    assert len(b.boxes) >= 8 and not (iou() > 0.5).all()  # untrained
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    solved_in_a_row, step = 0, 0
    while step < BUDGET and solved_in_a_row < 2:
        loss = mogeo_loss(model(ref, query, b.clicks, b.batch_index), b.boxes, b.batch_index,
                          model.anchors, cfg.stride)
        opt.zero_grad()
        loss["total"].backward()
        opt.step()
        step += 1
        if step % 10 == 0:
            solved_in_a_row = solved_in_a_row + 1 if (iou() > 0.5).all() else 0
    assert solved_in_a_row == 2, f"not learnt in {BUDGET} steps ({threads} threads): {iou()}"


#: Optimiser steps allowed and learning rate. Measured on this batch (10 targets), 1 thread:
#: torch seeds 0, 2, 3 met the criterion after 80-90 steps, seed 1 (one target long in a
#: wrong cell) after 280; at 1e-3 some runs jumped away from a solved state.
BUDGET, LR = 400, 5e-4
