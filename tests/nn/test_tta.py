"""Test-time augmentation: exact geometry of the turned passes and the vote."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch
from nn_fixtures import tiny_config
from torch import Tensor, nn

from geomogeo.nn.head import decode
from geomogeo.nn.model import MOGeoOutput, build_model
from geomogeo.nn.tta import (
    VoteMaps,
    dense_decode,
    invert_points,
    predict,
    predict_tta,
    transform_images,
    transform_points,
)
from geomogeo.predictor import TTASpec, parse_tta, select

D4 = TTASpec("d4").transforms


def test_modes() -> None:
    assert TTASpec("none").transforms == ((False, 0),)
    assert TTASpec("rot4").transforms == ((False, 0), (False, 1), (False, 2), (False, 3))
    assert len(set(D4)) == 8 and set(TTASpec("rot4").transforms) < set(D4)
    assert parse_tta("rot4+s2") == TTASpec("rot4", 2) and str(TTASpec("rot4", 2)) == "rot4+s2"
    assert parse_tta(" d4 ") == TTASpec("d4", 1) and str(TTASpec("d4")) == "d4"
    assert [parse_tta(m).passes for m in ("none", "rot4", "d4+s2", "none+s4")] == [1, 4, 32, 16]
    assert TTASpec("none", 2).shifts(16) == ((0, 0), (8, 0), (0, 8), (8, 8))
    assert TTASpec("none", 4).shifts(16)[:5] == ((0, 0), (4, 0), (8, 0), (12, 0), (0, 4))
    for bad, why in (("x", "group 'x'"), ("rot4+s3", "steps 3"), ("rot4+x2", "expected"),
                     ("", "expected")):
        with pytest.raises(ValueError, match=re.escape(f"augmentation {bad!r}: ") + f".*{why}"):
            parse_tta(bad)
    with pytest.raises(ValueError, match="8 sub-cell steps do not divide the stride 12"):
        TTASpec("none", 8).shifts(12)


@pytest.mark.parametrize("t", D4)
def test_images_turn_as_torch_rot90(t: tuple[bool, int]) -> None:
    """The ONNX-exportable flips and transposes move pixels exactly as ``torch.rot90``."""
    img = torch.arange(2 * 5 * 5, dtype=torch.float32).view(2, 5, 5)
    mirror, k = t
    want = torch.rot90(img.flip(-1) if mirror else img, k, dims=(-2, -1))
    assert torch.equal(transform_images(img, t), want)


@pytest.mark.parametrize("t", D4)
def test_points_follow_the_pixels(t: tuple[bool, int]) -> None:
    """A hot pixel's centre, mapped as a point, lands on the centre of the moved pixel."""
    size = 7
    for col, row in ((0, 0), (5, 1), (2, 6), (3, 3)):
        img = torch.zeros(1, size, size)
        img[0, row, col] = 1.0
        moved = transform_images(img, t)
        r2, c2 = (moved[0] == 1).nonzero()[0].tolist()
        pt = transform_points(torch.tensor([[col + 0.5, row + 0.5]]), t, size)
        assert pt.tolist() == [[c2 + 0.5, r2 + 0.5]]
        back = invert_points(pt, t, size)
        assert back.tolist() == [[col + 0.5, row + 0.5]]


def test_quarter_turn_by_hand() -> None:
    # One CCW turn of a 10 px image: (x, y) -> (y, 10 - x); a mirror: (x, y) -> (10 - x, y).
    p = torch.tensor([[2.0, 3.0]])
    assert transform_points(p, (False, 1), 10).tolist() == [[3.0, 8.0]]
    assert transform_points(p, (True, 0), 10).tolist() == [[8.0, 3.0]]
    assert transform_points(p, (True, 1), 10).tolist() == [[3.0, 2.0]]  # mirror, then turn
    assert invert_points(torch.tensor([[3.0, 2.0]]), (True, 1), 10).tolist() == [[2.0, 3.0]]


def test_dense_decode_contains_decode() -> None:
    torch.manual_seed(0)
    raw = torch.randn(3, 9, 5, 4, 4)
    anchors = torch.rand(9, 2) * 30 + 2
    boxes, prob = dense_decode(raw, anchors, 16)
    assert boxes.shape == (3, 9, 4, 4, 4) and prob.shape == (3, 9, 4, 4)
    torch.testing.assert_close(prob.sum((1, 2, 3)), torch.ones(3))
    ref_boxes, ref_scores = decode(raw, anchors, 16)
    flat = prob.reshape(3, -1).argmax(1)
    torch.testing.assert_close(boxes.reshape(3, -1, 4)[torch.arange(3), flat], ref_boxes)
    torch.testing.assert_close(prob.reshape(3, -1).max(1).values, ref_scores)


class HotPixelNet(nn.Module):
    """An exactly equivariant stand-in for the network: it boxes the brightest reference pixel.

    The confidence of anchor 0 (a square 6 x 6 px anchor) is 20 at the cell holding the hot
    pixel and 0 elsewhere; its offsets put the box centre on the pixel centre. Attention is 1
    at that cell.
    """

    def __init__(self, size: int = 64, stride: int = 16) -> None:
        super().__init__()
        self.config = SimpleNamespace(stride=stride)
        self.anchors = torch.tensor([[6.0, 6.0]] + [[20.0, 10.0]] * 8)
        self.size, self.stride = size, stride

    def forward(self, ref: Tensor, qry: Tensor, clicks: Tensor, bidx: Tensor) -> MOGeoOutput:
        g, s = self.size // self.stride, self.stride
        t = clicks.shape[0]
        raw = torch.zeros(t, 9, 5, g, g)
        att = torch.zeros(t, g, g)
        for k in range(t):
            flat = ref[bidx[k], 0].argmax()
            row, col = divmod(int(flat), self.size)
            cx, cy = (col + 0.5) / s, (row + 0.5) / s
            gi, gj = int(cx), int(cy)
            raw[k, 0, 0, gj, gi] = math.log((cx - gi) / (1 - (cx - gi)))
            raw[k, 0, 1, gj, gi] = math.log((cy - gj) / (1 - (cy - gj)))
            raw[k, 0, 4, gj, gi] = 20.0
            att[k, gj, gi] = 1.0
        return MOGeoOutput(raw, att, att.flatten(1))


def _hot_pixels() -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    ref = torch.zeros(2, 3, 64, 64)
    ref[0, 0, 40, 9] = 1.0  # photo 0: hot pixel at column 9, row 40
    ref[1, 0, 3, 50] = 1.0  # photo 1: column 50, row 3
    qry = torch.zeros(2, 3, 32, 32)
    clicks = torch.tensor([[4.0, 5.0], [30.0, 1.0], [16.0, 16.0]])
    bidx = torch.tensor([0, 1, 1])
    want = torch.tensor([[6.5, 37.5, 12.5, 43.5], [47.5, 0.5, 53.5, 6.5], [47.5, 0.5, 53.5, 6.5]])
    return ref, qry, clicks, bidx, want


@pytest.mark.parametrize("mode", ["none", "rot4", "d4", "none+s2", "rot4+s2", "d4+s4"])
def test_every_pass_maps_back_to_the_same_box(mode: str) -> None:
    """An equivariant model: every turned, mirrored and shifted pass agrees once mapped back,
    so the vote is the box around the hot pixel, with full confidence."""
    ref, qry, clicks, bidx, want = _hot_pixels()
    res = predict_tta(HotPixelNet(), ref, qry, clicks, bidx, mode)
    torch.testing.assert_close(res.boxes, want, atol=1e-4, rtol=0)
    assert res.scores.min() > 0.99
    steps = parse_tta(mode).steps
    assert res.attention.shape == (3, 4 * steps, 4 * steps)
    # the fine cell of each hot pixel is covered by every pass: attention 1 there
    fine = 16 // steps
    assert res.attention[0, 40 // fine, 9 // fine] == 1
    assert res.attention[1, 3 // fine, 50 // fine] == res.attention[2, 3 // fine, 50 // fine] == 1
    assert res.attention.max() == 1 and res.attention.min() == 0
    # the vote maps: all the mass of each target on the fine cell (row, column) of its pixel
    gf = 4 * steps
    assert res.mass.shape == (3, gf, gf) and res.cell_boxes.shape == (3, gf, gf, 4)
    _, scores, cells = select(res.mass.numpy(), res.cell_boxes.numpy())
    assert cells.tolist() == [40 // fine * gf + 9 // fine] + [3 // fine * gf + 50 // fine] * 2
    torch.testing.assert_close(torch.from_numpy(scores).float(), res.scores)


def test_vote_weights_the_anchors_of_the_winning_cell() -> None:
    """One pass, two anchors sharing the mass of cell (gi=1, gj=2); a rival cell loses."""
    raw = torch.full((1, 9, 5, 4, 4), 0.0)
    raw[0, :, 4] = -30.0  # every logit negligible ...
    raw[0, 0, 4, 2, 1] = math.log(3.0)  # ... but two anchors of cell (1, 2): p = 3/6 and 2/6
    raw[0, 1, 4, 2, 1] = math.log(2.0)
    raw[0, 2, 4, 0, 0] = math.log(1.0)  # a rival cell with 1/6
    # offsets 0 (sigmoid 0.5): both boxes centred on (24, 40); sizes from the anchors
    anchors = torch.tensor([[10.0, 10.0], [20.0, 30.0]] + [[5.0, 5.0]] * 7)

    class Fixed(nn.Module):
        config = SimpleNamespace(stride=16)

        def __init__(self) -> None:
            super().__init__()
            self.anchors = anchors

        def forward(self, *_: Tensor) -> MOGeoOutput:
            return MOGeoOutput(raw, torch.zeros(1, 4, 4), torch.zeros(1, 16))

    res = predict_tta(Fixed(), torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 32, 32),
                      torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), "none")
    # weights 0.6 and 0.4 of the cell's 5/6: w = 0.6 * 10 + 0.4 * 20 = 14, h = 6 + 12 = 18
    torch.testing.assert_close(res.boxes, torch.tensor([[17.0, 31.0, 31.0, 49.0]]))
    torch.testing.assert_close(res.scores, torch.tensor([5.0 / 6.0]), atol=1e-6, rtol=0)
    # the dense maps on the 4 x 4 grid: cell (row 2, column 1) has 5/6, (0, 0) 1/6
    torch.testing.assert_close(res.mass[0, 2, 1], torch.tensor(5.0 / 6.0))
    torch.testing.assert_close(res.mass[0, 0, 0], torch.tensor(1.0 / 6.0))
    assert res.mass.sum() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(res.cell_boxes[0, 2, 1], torch.tensor([17.0, 31.0, 31.0, 49.0]))
    # anchor 2 (5 x 5) alone at cell (0, 0), centred on (8, 8)
    torch.testing.assert_close(res.cell_boxes[0, 0, 0], torch.tensor([5.5, 5.5, 10.5, 10.5]))

    # predict() in one pass keeps the network's own decoding: the best anchor (0, p = 1/2,
    # 10 x 10 around (24, 40)) of the best cell, with the same vote maps
    one = predict(Fixed(), torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 32, 32),
                  torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), "none")
    torch.testing.assert_close(one.boxes, torch.tensor([[19.0, 35.0, 29.0, 45.0]]))
    torch.testing.assert_close(one.scores, torch.tensor([0.5]))
    assert torch.equal(one.mass, res.mass) and torch.equal(one.cell_boxes, res.cell_boxes)


def test_two_shifted_passes_vote_on_the_fine_grid() -> None:
    """none+s2 by hand: 4 passes whose coarse cells are offset by 8 px; the fine cell they
    share wins and the box is the mean of theirs."""
    calls: list[tuple[int, int]] = []

    class Shifted(nn.Module):
        config = SimpleNamespace(stride=16)

        def __init__(self) -> None:
            super().__init__()
            self.anchors = torch.tensor([[10.0, 10.0]] * 9)

        def forward(self, ref: Tensor, *_: Tensor) -> MOGeoOutput:
            # the pass's shift is read from where the all-ones image starts
            rows, cols = (ref[0, 0] != 0).nonzero().min(0).values.tolist()
            calls.append((cols, rows))
            raw = torch.zeros(1, 9, 5, 4, 4)
            raw[0, :, 4] = -30.0
            raw[0, 0, 4, 1, 1] = 0.0  # all mass on cell (1, 1) of every pass
            raw[0, 0, 2] = math.log(1.0 + cols / 8)  # box width 10, 11.25, ... by shift
            return MOGeoOutput(raw, torch.zeros(1, 4, 4), torch.zeros(1, 16))

    res = predict_tta(Shifted(), torch.ones(1, 3, 64, 64), torch.zeros(1, 3, 32, 32),
                      torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), "none+s2")
    assert calls == [(0, 0), (8, 0), (0, 8), (8, 8)]
    # In original pixels, pass (dx, dy)'s cell (1, 1) spans [16 - dx, 32 - dx) x [16 - dy, ...):
    # all four cover the fine cell [16, 24) x [16, 24), which wins with mass 4 (score 1).
    # Centres: (24 - dx, 24 - dy); widths 10 (dx = 0) and 20 (dx = 8); heights 10.
    # Mean centre (20, 20), mean width 15, height 10.
    torch.testing.assert_close(res.boxes, torch.tensor([[12.5, 15.0, 27.5, 25.0]]))
    torch.testing.assert_close(res.scores, torch.tensor([1.0]))
    # fine cell (2, 2) is that [16, 24) x [16, 24); its neighbours get the passes covering
    # them: (1, 1) only pass (8, 8) -> mass 1/4, box centred (16, 16), width 20
    assert res.mass.shape == (1, 8, 8)
    torch.testing.assert_close(res.mass[0, 2, 2], torch.tensor(1.0))
    torch.testing.assert_close(res.mass[0, 1, 1], torch.tensor(0.25))
    torch.testing.assert_close(res.mass[0, 2, 1], torch.tensor(0.5))  # (8, 0) and (8, 8)
    torch.testing.assert_close(res.cell_boxes[0, 1, 1], torch.tensor([6.0, 11.0, 26.0, 21.0]))
    assert res.mass.sum() == pytest.approx(4.0)  # each pass's unit mass spread on 2 x 2 cells


@pytest.mark.parametrize("query_stride", [32, 16])
@pytest.mark.parametrize("mode", ["none", "d4", "rot4+s2"])
def test_batched_passes_give_the_same_maps(mode: str, query_stride: int) -> None:
    """One forward over all passes stacked along the batch (the ONNX graph) equals one
    forward per pass, on a real (tiny, random) network of either query grid and on the
    equivariant stand-in."""
    torch.manual_seed(0)
    model = build_model(tiny_config(query_stride=query_stride)).eval()
    g = torch.Generator().manual_seed(1)
    ref, qry = torch.randn(2, 3, 64, 64, generator=g), torch.randn(2, 3, 64, 64, generator=g)
    clicks, bidx = torch.rand(3, 2, generator=g) * 64, torch.tensor([0, 1, 1])
    with torch.no_grad():
        loop = VoteMaps(model, mode)(ref, qry, clicks, bidx)
        batched = VoteMaps(model, mode, batch_passes=True)(ref, qry, clicks, bidx)
    assert len(loop) == len(batched) == (5 if mode == "none" else 3)
    for a, b in zip(loop, batched, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    ref, qry, clicks, bidx, want = _hot_pixels()
    mass, cell_boxes, _ = VoteMaps(HotPixelNet(), mode, batch_passes=True)(ref, qry, clicks,
                                                                          bidx)[:3]
    boxes, scores, _ = select(mass.numpy(), cell_boxes.numpy())
    torch.testing.assert_close(torch.from_numpy(boxes).float(), want, atol=1e-4, rtol=0)
    assert scores.min() > 0.99
