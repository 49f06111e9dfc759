"""Decoding and target building: exact round trips, cell edges, anchor choice."""

from __future__ import annotations

import math

import torch

from geomogeo.nn.head import DetectionHead, build_targets, decode

ANCHORS = torch.tensor(
    [[37, 41], [78, 84], [96, 215], [129, 129], [194, 82],
     [198, 179], [246, 280], [395, 342], [550, 573]], dtype=torch.float64
) / 4  # 256 px reference
STRIDE, GRID = 16, 16


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p) - torch.log1p(-p)


def _encode(flat: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """A raw tensor whose decoding is exactly the given targets."""
    t = flat.shape[0]
    raw = torch.zeros(t, 9, 5, GRID, GRID, dtype=torch.float64)
    raw[:, :, 4] = -5.0
    a, cell = flat // (GRID * GRID), flat % (GRID * GRID)
    gj, gi = cell // GRID, cell % GRID
    for k in range(t):
        conf = torch.tensor([5.0], dtype=torch.float64)
        raw[k, a[k], :, gj[k], gi[k]] = torch.cat([_logit(reg[k, :2].double()), reg[k, 2:], conf])
    return raw


def test_round_trip() -> None:
    boxes = torch.tensor(
        [[10.3, 20.7, 60.1, 55.2], [100.0, 100.0, 200.0, 230.0], [0.5, 3.0, 9.0, 250.0],
         [140.2, 7.9, 255.5, 40.0]], dtype=torch.float64
    )
    flat, reg = build_targets(boxes, ANCHORS, STRIDE, GRID)
    assert flat.dtype == torch.long and flat.shape == (4,)
    assert ((reg[:, :2] >= 0) & (reg[:, :2] < 1)).all()
    decoded, scores = decode(_encode(flat, reg), ANCHORS, STRIDE)
    torch.testing.assert_close(decoded.double(), boxes, atol=1e-4, rtol=0)
    assert (scores > 0.5).all() and (scores <= 1).all()


def test_box_at_cell_edge() -> None:
    # centre exactly on the boundary between cells 3 and 4 (x = 64) -> cell 4, offset 0
    box = torch.tensor([[48.0, 40.0, 80.0, 88.0]])
    flat, reg = build_targets(box, ANCHORS, STRIDE, GRID)
    cell = int(flat) % (GRID * GRID)
    assert (cell % GRID, cell // GRID) == (4, 4)
    torch.testing.assert_close(reg[0, :2], torch.tensor([0.0, 0.0]))
    reg[0, :2] = 1e-6  # sigmoid cannot reach 0; decode within a hair
    decoded, _ = decode(_encode(flat, reg).float(), ANCHORS.float(), STRIDE)
    torch.testing.assert_close(decoded, box, atol=1e-3, rtol=0)


def test_box_on_image_border_is_clamped_into_last_cell() -> None:
    box = torch.tensor([[200.0, 230.0, 300.0, 290.0]])  # clamped to (200, 230, 256, 256)
    flat, reg = build_targets(box, ANCHORS, STRIDE, GRID)
    cell = int(flat) % (GRID * GRID)
    assert (cell % GRID, cell // GRID) == (14, 15)
    assert math.isclose(float(reg[0, 0]), 228 / 16 - 14, abs_tol=1e-6)


def test_anchor_choice_by_hand_computed_iou() -> None:
    w, h = 30.0, 50.0
    box = torch.tensor([[10.0, 10.0, 10.0 + w, 10.0 + h]])
    ious = []
    for aw, ah in ANCHORS.tolist():
        inter = min(w, aw) * min(h, ah)
        ious.append(inter / (w * h + aw * ah - inter))
    best = max(range(9), key=ious.__getitem__)
    flat, reg = build_targets(box, ANCHORS, STRIDE, GRID)
    assert int(flat) // (GRID * GRID) == best
    assert math.isclose(float(reg[0, 2]), math.log(w / ANCHORS[best, 0]), abs_tol=1e-6)
    assert math.isclose(float(reg[0, 3]), math.log(h / ANCHORS[best, 1]), abs_tol=1e-6)


def test_decode_is_global_argmax_and_unclipped() -> None:
    raw = torch.zeros(1, 9, 5, GRID, GRID)
    raw[0, 8, 4, 0, 0] = 3.0  # biggest anchor in the corner cell: extends past the border
    boxes, scores = decode(raw, ANCHORS.float(), STRIDE)
    assert boxes[0, 0] < 0 and boxes[0, 1] < 0
    expected = math.exp(3.0) / (math.exp(3.0) + 9 * GRID * GRID - 1)
    assert math.isclose(float(scores[0]), expected, rel_tol=1e-5)


def test_head_layout_matches_flat_index() -> None:
    head = DetectionHead(8, 16).eval()
    x = torch.randn(2, 8, GRID, GRID)
    raw = head(x)
    assert raw.shape == (2, 9, 5, GRID, GRID)
    y = head.out(head.hidden(x))  # (T, 45, G, G), channel = a * 5 + k
    torch.testing.assert_close(raw[1, 3, 4, 5, 6], y[1, 3 * 5 + 4, 5, 6])
    flat = raw[:, :, 4].reshape(2, -1)
    torch.testing.assert_close(flat[1, 3 * GRID * GRID + 5 * GRID + 6], y[1, 19, 5, 6])
