"""Loss values at initialisation and the behaviour of the similarity term."""

from __future__ import annotations

import math

import torch
from nn_fixtures import tiny_config

from geomogeo.nn.losses import mogeo_loss, similarity_loss
from geomogeo.nn.model import MOGeoOutput, build_model


def test_initial_confidence_loss_is_log_of_cells() -> None:
    cfg = tiny_config(reference_size=128)
    model = build_model(cfg)
    g = cfg.grid_size
    ref, query = torch.randn(2, 3, 128, 128), torch.randn(2, 3, 64, 64)
    clicks = torch.tensor([[10.0, 12.0], [40.0, 50.0], [33.0, 5.0]])
    bidx = torch.tensor([0, 0, 1])
    boxes = torch.tensor([[10.0, 10, 40, 50], [60.0, 70, 120, 90], [0.0, 0, 8, 8]])
    with torch.no_grad():
        loss = mogeo_loss(model(ref, query, clicks, bidx), boxes, bidx, model.anchors, cfg.stride)
    assert set(loss) == {"total", "cn", "reg", "s"}
    assert abs(float(loss["cn"]) - math.log(9 * g * g)) < 0.05 * math.log(9 * g * g)
    assert torch.isclose(loss["total"], loss["cn"] + loss["reg"] + loss["s"])


def _out(sim: torch.Tensor) -> MOGeoOutput:
    t, n = sim.shape
    g = math.isqrt(n)
    return MOGeoOutput(torch.zeros(t, 9, 5, g, g), torch.zeros(t, g, g), sim)


def test_similarity_loss_zero_for_one_target_or_zero_weight() -> None:
    sim = torch.randn(1, 16)
    assert float(similarity_loss(sim)) == 0.0
    box = torch.tensor([[1.0, 1.0, 20.0, 20.0]])
    loss = mogeo_loss(_out(sim), box, torch.zeros(1, dtype=torch.long), torch.ones(9, 2) * 10, 16)
    assert float(loss["s"]) == 0.0
    two = mogeo_loss(_out(torch.randn(2, 16)), box.repeat(2, 1), torch.zeros(2, dtype=torch.long),
                     torch.ones(9, 2) * 10, 16, similarity_weight=0.0)
    assert float(two["s"]) == 0.0 and torch.isclose(two["total"], two["cn"] + two["reg"])


def test_similarity_loss_prefers_separated_maps() -> None:
    g = 4
    separated = torch.zeros(3, g * g)
    for k, cell in enumerate((0, 7, 13)):  # one peak each, far apart
        separated[k, cell] = 1.0
    identical = separated[:1].repeat(3, 1)
    offset = identical + torch.tensor([[0.0], [0.5], [2.0]])  # same map, shifted: still identical
    s_sep, s_id = similarity_loss(separated), similarity_loss(identical)
    assert s_sep < 0.1 * s_id
    assert math.isclose(float(s_id), math.log(3), rel_tol=1e-5)
    assert math.isclose(float(similarity_loss(offset)), math.log(3), rel_tol=1e-5)


def test_similarity_loss_gradient_pushes_maps_apart() -> None:
    sim = torch.tensor([[1.0, 0.8, 0.0, 0.0], [0.8, 1.0, 0.0, 0.1]], requires_grad=True)
    before = float(similarity_loss(sim.detach()))
    similarity_loss(sim).backward()
    after = float(similarity_loss(sim.detach() - 0.1 * sim.grad))
    assert after < before
