"""Shapes, gradients, batching equivalence and precision modes of MOGeoNet."""

from __future__ import annotations

import pytest
import torch
from nn_fixtures import tiny_config

from geomogeo.nn.config import ModelConfig
from geomogeo.nn.losses import mogeo_loss
from geomogeo.nn.model import MOGeoNet, MOGeoOutput, build_model


def _inputs(cfg: ModelConfig, counts: list[int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b, r = len(counts), cfg.reference_size
    qh, qw = cfg.query_size
    ref = torch.randn(b, 3, r, r, generator=g)
    query = torch.randn(b, 3, qh, qw, generator=g)
    bidx = torch.repeat_interleave(torch.arange(b), torch.tensor(counts))
    clicks = torch.rand(len(bidx), 2, generator=g) * torch.tensor([qw, qh])
    return ref, query, clicks, bidx


def _check(out: MOGeoOutput, t: int, g: int) -> None:
    assert out.raw.shape == (t, 9, 5, g, g)
    assert out.attention.shape == (t, g, g)
    assert out.similarity.shape == (t, g * g)
    assert torch.isfinite(out.raw).all()
    assert out.attention.min() >= 0 and out.attention.max() <= 1


def test_build_model_anchors_buffer() -> None:
    cfg = tiny_config()
    model = build_model(cfg)
    assert isinstance(model, MOGeoNet) and model.config is cfg
    assert model.anchors.shape == (9, 2) and model.anchors.dtype == torch.float32
    assert torch.equal(model.anchors, torch.tensor(cfg.anchors, dtype=torch.float32))
    assert "anchors" in model.state_dict()


@pytest.mark.parametrize("m", range(1, 9))
def test_shapes_and_gradients_single_image(m: int) -> None:
    cfg = tiny_config()
    model = build_model(cfg)
    out = model(*_inputs(cfg, [m]))
    _check(out, m, cfg.grid_size)
    (out.raw.square().mean() + out.similarity.mean()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    assert model.reference_encoder.trunk.stem.conv.weight.grad.abs().sum() > 0
    assert model.query_encoder.backbone.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"click_encoding": "gaussian"},
        {"click_encoding": "square", "fusion": "multiply"},
        {"variant": "detgeo", "click_encoding": "square", "fusion": "multiply"},
        {"variant": "detgeo", "click_encoding": "gaussian"},
    ],
)
def test_mixed_batch_all_variants(overrides: dict[str, str]) -> None:
    cfg = tiny_config(**overrides)
    model = build_model(cfg)
    out = model(*_inputs(cfg, [1, 4, 8]))
    _check(out, 13, cfg.grid_size)
    out.raw.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_rectangular_query() -> None:
    cfg = tiny_config(query_size=(64, 128))
    out = build_model(cfg)(*_inputs(cfg, [2, 3]))
    _check(out, 5, cfg.grid_size)


@pytest.mark.parametrize("encoding", ["impulse", "gaussian", "square"])
def test_one_pass_equals_single_target_passes(encoding: str) -> None:
    cfg = tiny_config(click_encoding=encoding)
    model = build_model(cfg).eval()
    ref, query, clicks, bidx = _inputs(cfg, [3, 5], seed=1)
    with torch.no_grad():
        joint = model(ref, query, clicks, bidx)
        for k in range(len(bidx)):
            b = int(bidx[k])
            zero = torch.zeros(1, dtype=torch.long)
            one = model(ref[b:b + 1], query[b:b + 1], clicks[k:k + 1], zero)
            torch.testing.assert_close(one.raw[0], joint.raw[k], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(one.attention[0], joint.attention[k], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(one.similarity[0], joint.similarity[k], atol=1e-5, rtol=1e-5)


def test_impulse_clicks_in_one_cell_differ() -> None:
    """Bilinear MOPE: two clicks in the same stride-32 cell get different query vectors."""
    cfg = tiny_config()
    model = build_model(cfg).eval()
    ref, query, _, _ = _inputs(cfg, [1])
    clicks = torch.tensor([[10.0, 10.0], [28.0, 20.0]])
    with torch.no_grad():
        out = model(ref, query, clicks, torch.zeros(2, dtype=torch.long))
    assert not torch.allclose(out.similarity[0], out.similarity[1])


def test_detgeo_runs_query_backbone_per_target() -> None:
    cfg = tiny_config(variant="detgeo", click_encoding="gaussian", fusion="multiply")
    model = build_model(cfg)
    seen: list[int] = []
    model.query_encoder.backbone.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    model.reference_encoder.register_forward_hook(lambda m, i, o: seen.append(-i[0].shape[0]))
    model(*_inputs(cfg, [2, 3]))
    assert sorted(seen) == [-2, 5]  # 2 reference passes, 5 query passes


def test_mogeo_runs_each_backbone_once_per_image() -> None:
    cfg = tiny_config()
    model = build_model(cfg)
    seen: list[int] = []
    model.query_encoder.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    model.reference_encoder.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    model(*_inputs(cfg, [2, 6]))
    assert seen == [2, 2]


@pytest.mark.parametrize("variant", ["mogeo", "detgeo"])
def test_channels_last_bf16_autocast(variant: str) -> None:
    enc = "impulse" if variant == "mogeo" else "gaussian"
    cfg = tiny_config(variant=variant, click_encoding=enc)
    model = build_model(cfg).to(memory_format=torch.channels_last)
    ref, query, clicks, bidx = _inputs(cfg, [1, 3])
    ref = ref.contiguous(memory_format=torch.channels_last)
    query = query.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ref, query, clicks, bidx)
    _check(out, 4, cfg.grid_size)
    boxes = torch.tensor([[4.0, 4.0, 30.0, 20.0]]).repeat(4, 1)
    loss = mogeo_loss(out, boxes, bidx, model.anchors, cfg.stride)["total"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_light_config_forward() -> None:
    cfg = ModelConfig.light()
    with torch.no_grad():
        out = build_model(cfg).eval()(*_inputs(cfg, [2]))
    _check(out, 2, cfg.grid_size)
