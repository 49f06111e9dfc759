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
from geomogeo.predictor import DEFAULT_TTA, Prediction, Predictor, TTASpec, parse_tta


def _predictor(tta: str = "none") -> TorchPredictor:
    torch.manual_seed(0)
    return TorchPredictor(build_model(tiny_config()), name="tiny", sha256="0" * 64, tta=tta)


def _normalised(pred: TorchPredictor, image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) in [0, 1] -> (1, 3, H, W) normalised with the model's mean and std (written
    out here, independently of the predictor's own code)."""
    cfg = pred.model.config
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    return (torch.from_numpy(image).permute(2, 0, 1)[None] - mean) / std


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

    r, q = _normalised(pred, ref), _normalised(pred, qry)
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
    r, q = _normalised(pred, ref), _normalised(pred, qry)
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
    assert many[1].heatmaps.shape == many[1].mass.shape == (0, 4, 4)
    assert many[1].cell_boxes.shape == (0, 4, 4, 4)
    np.testing.assert_allclose(many[2].mass, single.mass, atol=1e-6)


@pytest.mark.parametrize("mode", ["rot4", "d4", "none+s2", "rot4+s2", "d4+s4"])
def test_voted_box_is_the_best_cell_of_the_dense_maps(mode: str) -> None:
    """With test-time augmentation, boxes and scores are the argmax cell of ``mass``."""
    torch.manual_seed(0)
    pred = TorchPredictor(build_model(tiny_config()), name="tiny", sha256="0" * 64, tta=mode)
    rng = np.random.default_rng(3)
    res = pred.predict(rng.random((64, 64, 3), dtype=np.float32),
                       rng.random((64, 64, 3), dtype=np.float32),
                       np.array([[10.0, 20.0], [50.5, 3.2], [33.0, 60.0]]))
    gf = 4 * parse_tta(mode).steps
    assert res.mass.shape == (3, gf, gf) and res.mass.dtype == np.float32
    assert res.cell_boxes.shape == (3, gf, gf, 4) and res.cell_boxes.dtype == np.float32
    assert res.mass.min() >= 0 and res.mass.max() <= 1 and np.isfinite(res.cell_boxes).all()
    for k in range(3):
        best = res.mass[k].argmax()
        np.testing.assert_allclose(res.boxes[k], res.cell_boxes[k].reshape(-1, 4)[best],
                                   atol=1e-5)
        assert res.scores[k] == pytest.approx(res.mass[k].max(), abs=1e-7)


def test_one_pass_maps_sum_the_anchors_of_each_cell() -> None:
    """Mode "none": boxes stay the network's decoding; mass is the softmax summed over the
    anchors of each cell, cell_boxes the probability-weighted mean of their boxes."""
    pred = _predictor()
    rng = np.random.default_rng(4)
    ref = rng.random((64, 64, 3), dtype=np.float32)
    qry = rng.random((64, 64, 3), dtype=np.float32)
    pts = np.array([[10.0, 20.0], [40.0, 41.0]])
    res = pred.predict(ref, qry, pts)
    cfg = pred.model.config
    r, q = _normalised(pred, ref), _normalised(pred, qry)
    with torch.no_grad():
        out = pred.model(r, q, torch.from_numpy(pts).float(), torch.zeros(2, dtype=torch.long))
    raw = out.raw.double().numpy()  # (2, 9, 5, 4, 4), recomputed in numpy
    logits = raw[:, :, 4].reshape(2, -1)
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob = (prob / prob.sum(1, keepdims=True)).reshape(2, 9, 4, 4)
    anchors = np.array(cfg.anchors)
    gi = np.arange(4)[None, None, None, :]
    gj = np.arange(4)[None, None, :, None]
    sig = 1 / (1 + np.exp(-raw[:, :, :2]))
    cx, cy = (sig[:, :, 0] + gi) * 16, (sig[:, :, 1] + gj) * 16
    w = np.exp(raw[:, :, 2]) * anchors[None, :, 0, None, None]
    h = np.exp(raw[:, :, 3]) * anchors[None, :, 1, None, None]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)  # (2, 9, 4, 4, 4)
    mass = prob.sum(1)
    np.testing.assert_allclose(res.mass, mass, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(res.cell_boxes, (prob[..., None] * boxes).sum(1) / mass[..., None],
                               rtol=1e-5, atol=1e-4)
    # the box is the best anchor's, not the cell mean
    flat = prob.reshape(2, -1).argmax(1)
    np.testing.assert_allclose(res.boxes, boxes.reshape(2, -1, 4)[np.arange(2), flat], atol=1e-4)
    np.testing.assert_allclose(res.scores, prob.reshape(2, -1).max(1), rtol=1e-5)
