"""TorchPredictor: the numpy interface of the network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nn_fixtures import tiny_config

from geomogeo.nn.head import decode
from geomogeo.nn.model import build_model
from geomogeo.nn.predictor import TorchPredictor
from geomogeo.nn.tta import predict_tta
from geomogeo.predictor import DEFAULT_TTA, Prediction, Predictor, TTASpec


def _predictor(tta: str = "none") -> TorchPredictor:
    torch.manual_seed(0)
    return TorchPredictor(build_model(tiny_config()), name="tiny", sha256="0" * 64, tta=tta)


def test_is_a_predictor_and_matches_the_network() -> None:
    pred = _predictor()
    assert isinstance(pred, Predictor)
    assert pred.spec.reference_size == 64 and pred.spec.query_size == (64, 64)
    rng = np.random.default_rng(0)
    ref = rng.random((64, 64, 3), dtype=np.float32)
    qry = rng.random((64, 64, 3), dtype=np.float32)
    pts = np.array([[10.0, 20.0], [50.5, 3.2], [32.0, 32.0]])
    res = pred.predict(ref, qry, pts)
    assert isinstance(res, Prediction)
    assert res.boxes.shape == (3, 4) and res.boxes.dtype == np.float64
    assert res.scores.shape == (3,) and ((res.scores > 0) & (res.scores <= 1)).all()
    assert res.heatmaps.shape == (3, 4, 4) and res.heatmaps.dtype == np.float32
    assert res.heatmaps.min() >= 0 and res.heatmaps.max() <= 1

    cfg = pred.model.config
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    r = (torch.from_numpy(ref).permute(2, 0, 1)[None] - mean) / std
    q = (torch.from_numpy(qry).permute(2, 0, 1)[None] - mean) / std
    with torch.no_grad():
        out = pred.model(r, q, torch.from_numpy(pts).float(), torch.zeros(3, dtype=torch.long))
        boxes, _ = decode(out.raw, pred.model.anchors, 16)
    np.testing.assert_allclose(res.boxes, boxes.double().numpy(), atol=1e-4)


def test_default_votes_over_turned_and_shifted_passes() -> None:
    torch.manual_seed(0)
    pred = TorchPredictor(build_model(tiny_config()), name="tiny", sha256="0" * 64)
    assert pred.tta == TTASpec("rot4", 2) and str(pred.tta) == DEFAULT_TTA == "rot4+s2"
    assert pred.tta.passes == 16
    rng = np.random.default_rng(2)
    ref = rng.random((64, 64, 3), dtype=np.float32)
    qry = rng.random((64, 64, 3), dtype=np.float32)
    pts = np.array([[10.0, 20.0], [50.5, 3.2]])
    res = pred.predict(ref, qry, pts)
    cfg = pred.model.config
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    r = (torch.from_numpy(ref).permute(2, 0, 1)[None] - mean) / std
    q = (torch.from_numpy(qry).permute(2, 0, 1)[None] - mean) / std
    voted = predict_tta(pred.model, r, q, torch.from_numpy(pts).float(),
                        torch.zeros(2, dtype=torch.long), "rot4+s2")
    np.testing.assert_allclose(res.boxes, voted.boxes.double().numpy(), atol=1e-5)
    np.testing.assert_allclose(res.scores, voted.scores.double().numpy(), atol=1e-6)
    assert res.heatmaps.shape == (2, 8, 8)  # the fine voting grid: 4 cells x 2 steps
    assert ((res.scores > 0) & (res.scores <= 1)).all()


def test_turning_tta_needs_a_square_query() -> None:
    model = build_model(tiny_config(query_size=(64, 96)))
    with pytest.raises(ValueError, match="must be square"):
        TorchPredictor(model, name="tiny", sha256="0" * 64, tta="rot4")
    with pytest.raises(ValueError, match="unknown test-time augmentation 'rot8'"):
        TorchPredictor(model, name="tiny", sha256="0" * 64, tta="rot8")
    # shifts alone keep the query as it is
    assert TorchPredictor(model, name="tiny", sha256="0" * 64, tta="none+s2").tta.passes == 4


def test_batch_and_empty() -> None:
    pred = _predictor()
    rng = np.random.default_rng(1)
    refs = [rng.random((64, 64, 3), dtype=np.float32) for _ in range(3)]
    qrys = [rng.random((64, 64, 3), dtype=np.float32) for _ in range(3)]
    pts = [np.array([[5.0, 5.0]]), np.zeros((0, 2)), np.array([[1.0, 60.0], [40.0, 40.0]])]
    many = pred.predict_batch(refs, qrys, pts)
    assert [len(p.boxes) for p in many] == [1, 0, 2]
    single = pred.predict(refs[2], qrys[2], pts[2])
    np.testing.assert_allclose(many[2].boxes, single.boxes, atol=1e-4)
    assert many[1].heatmaps.shape == (0, 4, 4)
