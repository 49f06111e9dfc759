"""The query grid option (issue 10): stride-16 query features, MOPE on that grid, old
checkpoints as stride 32, config validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from nn_fixtures import tiny_config

from geomogeo.engine.checkpoint import load_checkpoint
from geomogeo.engine.config import TrainConfig
from geomogeo.errors import ConfigError
from geomogeo.nn.config import ModelConfig
from geomogeo.nn.encodings import MOPE
from geomogeo.nn.model import build_model
from geomogeo.nn.predictor import TorchPredictor

SHIPPED = Path(__file__).resolve().parents[2] / "model" / "mogeo-light-v2.pt"


@pytest.mark.parametrize("stride", [16, 32])
@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_query_features_are_on_a_size_over_stride_grid(stride: int, size: tuple[int, int]
                                                       ) -> None:
    cfg = tiny_config(query_size=size, query_stride=stride)
    model = build_model(cfg).eval()
    assert cfg.query_grid == (size[0] // stride, size[1] // stride)
    q = torch.randn(2, 3, *size)
    with torch.no_grad():
        fq = model.query_encoder(q)
        out = model(torch.randn(2, 3, 64, 64), q, torch.tensor([[5.0, 7.0], [60.0, 50.0],
                                                                [30.0, 30.0]]),
                    torch.tensor([0, 0, 1]))
    assert fq.shape == (2, cfg.embed_dim, *cfg.query_grid)
    assert out.raw.shape == (3, 9, 5, cfg.grid_size, cfg.grid_size)
    assert model.mope is not None and model.mope.stride == stride


def test_stride_16_keeps_every_weight_shape_and_dilates_layer4() -> None:
    s32, s16 = (build_model(tiny_config(query_stride=s)) for s in (32, 16))
    shapes32 = {k: v.shape for k, v in s32.state_dict().items()}
    assert shapes32 == {k: v.shape for k, v in s16.state_dict().items()}
    convs = [(m.stride, m.dilation) for m in s16.query_encoder.backbone.layer4.modules()
             if isinstance(m, torch.nn.Conv2d)]
    # block 0: conv1 3x3, conv2 3x3, 1x1 projection; block 1: conv1, conv2
    assert convs == [((1, 1), (1, 1)), ((1, 1), (2, 2)), ((1, 1), (1, 1)),
                     ((1, 1), (2, 2)), ((1, 1), (2, 2))]
    convs32 = [(m.stride, m.dilation) for m in s32.query_encoder.backbone.layer4.modules()
               if isinstance(m, torch.nn.Conv2d)]
    assert convs32 == [((2, 2), (1, 1)), ((1, 1), (1, 1)), ((2, 2), (1, 1)),
                       ((1, 1), (1, 1)), ((1, 1), (1, 1))]


def _identity_mope(kind: str, h: int, w: int, stride: int) -> MOPE:
    """MOPE over a one-hot F_q (one channel per cell) with fuse = [I | 0], bias 0: its output
    is then exactly the pooling weight of every cell."""
    mope = MOPE(h * w, kind, stride, sigma=stride * 0.6, image_size=(h * stride, w * stride))  # type: ignore[arg-type]
    with torch.no_grad():
        mope.fuse.weight.zero_()
        mope.fuse.weight[:, : h * w, 0, 0] = torch.eye(h * w)
        mope.fuse.bias.zero_()
    return mope


@pytest.mark.parametrize("kind", ["impulse", "gaussian"])
def test_mope_weight_peaks_in_the_cell_holding_the_click(kind: str) -> None:
    cfg = ModelConfig.light16()
    h, w = cfg.query_grid
    stride = cfg.query_stride
    assert (h, w, stride) == (20, 20, 16)
    fq = torch.eye(h * w).reshape(1, h * w, h, w)  # channel k = indicator of cell k
    g = torch.Generator().manual_seed(0)
    # random clicks strictly inside cells, plus each corner cell's centre
    clicks = torch.rand(200, 2, generator=g) * torch.tensor([w * stride, h * stride])
    clicks = torch.cat([clicks, torch.tensor([[8.0, 8.0], [312.0, 312.0], [8.0, 312.0]])])
    weights = _identity_mope(kind, h, w, stride)(fq, clicks, torch.zeros(len(clicks),
                                                                           dtype=torch.long))
    cell = (clicks[:, 1] // stride).long() * w + (clicks[:, 0] // stride).long()
    assert torch.equal(weights.argmax(1), cell)
    assert torch.allclose(weights.sum(1), torch.ones(len(clicks)), atol=1e-5)
    if kind == "impulse":
        # bilinear between the 2x2 nearest cell centres: no weight beyond the neighbours
        cy, cx = cell // w, cell % w
        ys, xs = torch.arange(h * w) // w, torch.arange(h * w) % w
        far = ((ys[None] - cy[:, None]).abs() > 1) | ((xs[None] - cx[:, None]).abs() > 1)
        assert (weights[far] == 0).all()
        # a click at a cell centre reads exactly that cell
        assert torch.equal(weights[-3:], fq.flatten(2)[0].t()[cell[-3:]])


def test_old_checkpoint_loads_as_stride_32_with_identical_outputs() -> None:
    raw = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    stored = json.loads(raw["model_config"])
    assert "query_stride" not in stored and "query_fit" not in stored  # written before them
    ck = load_checkpoint(SHIPPED)
    cfg = ck.model_config
    assert (cfg.query_stride, cfg.query_fit, cfg.query_grid) == (32, "stretch", (4, 4))
    # the new fields are the only difference from the stored configuration
    assert {k: v for k, v in json.loads(cfg.to_json()).items()
            if k not in ("query_stride", "query_fit")} == stored
    state = ck.model.state_dict()
    for k, v in raw["state_dict"].items():
        assert torch.equal(state[k], v.float()), k
    # the same weights in a network built with the stride spelled out give the same outputs
    explicit = build_model(ModelConfig.from_dict({**stored, "query_stride": 32,
                                                  "query_fit": "stretch"})).eval()
    explicit.load_state_dict(state)
    g = torch.Generator().manual_seed(1)
    ref, qry = torch.randn(1, 3, 256, 256, generator=g), torch.randn(1, 3, 128, 128, generator=g)
    clicks, bidx = torch.tensor([[20.0, 30.0], [100.0, 90.0]]), torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        a, b = ck.model(ref, qry, clicks, bidx), explicit(ref, qry, clicks, bidx)
        assert ck.model.query_encoder(qry).shape[2:] == (4, 4)
    assert torch.equal(a.raw, b.raw) and torch.equal(a.attention, b.attention)


@pytest.mark.parametrize("stride", [8, 64, 0, 16.0, True, "16"])
def test_other_strides_are_rejected_with_a_clear_error(stride: object) -> None:
    with pytest.raises(ValueError, match=r"query_stride=.*16.*32"):
        tiny_config(query_stride=stride)


def test_train_config_rejects_a_bad_stride_or_fit(tmp_path: Path) -> None:
    base = {"data": {"manifest": "m.jsonl"}}
    with pytest.raises(ConfigError, match="query_stride=8"):
        TrainConfig.from_dict({**base, "model": {"query_stride": 8}})
    with pytest.raises(ConfigError, match="query_fit='crop'"):
        TrainConfig.from_dict({**base, "model": {"query_fit": "crop"}})
    built = TrainConfig.from_dict({**base, "model": {"preset": "light16"}}).model.build()
    assert (built.query_stride, built.query_size, built.query_fit) == (16, (320, 320),
                                                                       "letterbox")
    assert built == ModelConfig.from_dict(json.loads(built.to_json()))


def test_predictor_spec_carries_the_query_fit() -> None:
    for fit in ("stretch", "letterbox"):
        model = build_model(tiny_config(query_stride=16, query_fit=fit))
        spec = TorchPredictor(model, name="t", sha256="-", tta="none").spec
        assert (spec.query_fit, spec.query_size) == (fit, (64, 64))
