"""Box metrics on hand-computed cases (every expected value is derived in a comment)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geomogeo.engine.metrics import PhotoEval, box_iou, evaluate_boxes, metrics_markdown

GROUP_NAMES = ["all", "N<=3", "3<N<=6", "N>6", "2<=N<=6"]
RATE_KEYS = [
    "acc@0.25",
    "acc@0.5",
    "accI@0.25",
    "accI@0.5",
    "mean_iou",
    "centre_cell",
    "centre_error_m_median",
    "centre_error_m_mean",
]


def test_box_iou_known_pairs() -> None:
    a = np.array(
        [
            [0, 0, 10, 10],  # vs [5,0,15,10]: inter 5*10=50, union 100+100-50=150 -> 1/3
            [0, 0, 10, 10],  # vs [0,0,10,20]: inter 100, union 100+200-100=200 -> 0.5
            [0, 0, 10, 10],  # vs [20,20,30,30]: disjoint -> 0
            [3, 4, 7, 9],  # identical -> 1
            [1, 1, 1, 1],  # both zero-area: union 0 -> 0 (not NaN)
            [0, 0, 10, 10],  # vs [10,0,20,10]: touching edges, inter 0 -> 0
        ],
        dtype=float,
    )
    b = np.array(
        [
            [5, 0, 15, 10],
            [0, 0, 10, 20],
            [20, 20, 30, 30],
            [3, 4, 7, 9],
            [1, 1, 1, 1],
            [10, 0, 20, 10],
        ],
        dtype=float,
    )
    iou = box_iou(a, b)
    assert iou.tolist() == [1 / 3, 0.5, 0.0, 1.0, 0.0, 0.0]


def test_box_iou_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        box_iou(np.zeros((2, 4)), np.zeros((3, 4)))


def test_iou_exactly_threshold_is_a_miss() -> None:
    # pred [0,0,10,20] vs gt [0,0,10,10]: IoU = 100/200 = 0.5 exactly (float-exact).
    m = evaluate_boxes([PhotoEval(np.array([[0, 0, 10, 20.0]]), np.array([[0, 0, 10, 10.0]]))])
    assert m["all"]["acc@0.5"] == 0.0  # 0.5 is not > 0.5
    assert m["all"]["acc@0.25"] == 1.0
    assert m["all"]["accI@0.5"] == 0.0
    assert m["all"]["mean_iou"] == 0.5


def test_acci_fails_when_one_target_fails() -> None:
    # Photo with 2 targets: IoU 1 (identical) and IoU 1/3 ([5,0,15,10] vs [0,0,10,10]).
    pred = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], dtype=float)
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    m = evaluate_boxes([PhotoEval(pred, gt)])["all"]
    assert m["acc@0.25"] == 1.0  # 1 and 1/3 are both > 0.25
    assert m["acc@0.5"] == 0.5  # only the first target
    assert m["accI@0.25"] == 1.0  # every target > 0.25
    assert m["accI@0.5"] == 0.0  # 1/3 fails, so the photo fails


def _four_photos() -> list[PhotoEval]:
    """Photos P1 (N=1), P2 (N=2), P3 (N=4), P4 (N=7); stride 16.

    P1, GSD 0.5: pred [0,0,10,20] gt [0,0,10,10]: IoU 0.5; centres (5,10) vs (5,5): both in
        cell (0,0) -> same; error 5 px * 0.5 = 2.5 m.
    P2, no GSD: t1 pred = gt = [16,16,32,32]: IoU 1, centre (24,24) cell (1,1) same.
        t2 pred [5,0,15,10] gt [0,0,10,10]: IoU 1/3; centres (10,5) vs (5,5), cell (0,0) same.
    P3, GSD 2.0:
        t1 pred [0,0,30,32] gt [0,0,32,32]: IoU 960/1024 = 0.9375; centres (15,16) vs (16,16):
           cells (0,1) vs (1,1) -> different (16 is ON the boundary, floor(16/16)=1);
           error 1 px * 2 = 2 m.
        t2 pred = gt = [0,0,32,32]: IoU 1, centre (16,16) both cell (1,1) same; error 0 m.
        t3 pred [30,40,40,50] gt [0,0,10,10]: IoU 0; centres (35,45) vs (5,5): cells (2,2) vs
           (0,0) different; error sqrt(30^2+40^2) = 50 px * 2 = 100 m.
        t4 pred [0,0,10,20] gt [0,0,10,10]: IoU 0.5; cell (0,0) same; error 5 px * 2 = 10 m.
    P4, GSD 1.0: 7 identical boxes [0,0,10,10]: IoU 1, same cell, error 0 m.
    """
    p1 = PhotoEval(np.array([[0, 0, 10, 20.0]]), np.array([[0, 0, 10, 10.0]]), 0.5)
    p2 = PhotoEval(
        np.array([[16, 16, 32, 32], [5, 0, 15, 10]], dtype=float),
        np.array([[16, 16, 32, 32], [0, 0, 10, 10]], dtype=float),
        None,
    )
    p3 = PhotoEval(
        np.array([[0, 0, 30, 32], [0, 0, 32, 32], [30, 40, 40, 50], [0, 0, 10, 20]], dtype=float),
        np.array([[0, 0, 32, 32], [0, 0, 32, 32], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=float),
        2.0,
    )
    box = np.tile(np.array([[0, 0, 10, 10.0]]), (7, 1))
    p4 = PhotoEval(box, box.copy(), 1.0)
    return [p1, p2, p3, p4]


def test_evaluate_groups_by_hand() -> None:
    m = evaluate_boxes(_four_photos(), stride=16)
    assert list(m) == GROUP_NAMES
    # all: IoUs P1 [.5], P2 [1, 1/3], P3 [.9375, 1, 0, .5], P4 [1]*7 -> 14 targets.
    #   > 0.25: 1 + 2 + 3 + 7 = 13; > 0.5: 0 + 1 + 2 + 7 = 10.
    #   photos all > 0.25: P1, P2, P4 (P3 has 0) -> 3/4; all > 0.5: only P4 -> 1/4.
    #   same cell: 1 + 2 + 2 + 7 = 12 of 14.
    #   errors (P2 excluded, no GSD): [2.5] + [2, 0, 100, 10] + [0]*7 -> 12 values,
    #   sorted 0 x8, 2, 2.5, 10, 100: median = mean of 6th and 7th = 0; mean = 114.5 / 12.
    a = m["all"]
    assert a["photos"] == 4 and a["targets"] == 14
    assert a["acc@0.25"] == 13 / 14
    assert a["acc@0.5"] == 10 / 14
    assert a["accI@0.25"] == 3 / 4
    assert a["accI@0.5"] == 1 / 4
    assert a["mean_iou"] == pytest.approx((10.9375 + 1 / 3) / 14, rel=1e-12)
    assert a["centre_cell"] == 12 / 14
    assert a["centre_error_m_median"] == 0.0
    assert a["centre_error_m_mean"] == pytest.approx(114.5 / 12, rel=1e-12)

    # N<=3: P1 + P2, 3 targets, IoUs [.5, 1, 1/3]; errors only P1: [2.5].
    s = m["N<=3"]
    assert (s["photos"], s["targets"]) == (2, 3)
    assert s["acc@0.25"] == 1.0 and s["acc@0.5"] == 1 / 3
    assert s["accI@0.25"] == 1.0 and s["accI@0.5"] == 0.0
    assert s["mean_iou"] == pytest.approx((0.5 + 1 + 1 / 3) / 3, rel=1e-12)
    assert s["centre_cell"] == 1.0
    assert s["centre_error_m_median"] == 2.5 and s["centre_error_m_mean"] == 2.5

    # 3<N<=6: P3 alone: IoUs [.9375, 1, 0, .5] -> sum 2.4375 / 4 = 0.609375;
    #   cells [F, T, F, T] -> 0.5; errors [2, 0, 100, 10]: median (2+10)/2 = 6, mean 28.
    s = m["3<N<=6"]
    assert (s["photos"], s["targets"]) == (1, 4)
    assert s["acc@0.25"] == 0.75 and s["acc@0.5"] == 0.5
    assert s["accI@0.25"] == 0.0 and s["accI@0.5"] == 0.0
    assert s["mean_iou"] == 0.609375
    assert s["centre_cell"] == 0.5
    assert s["centre_error_m_median"] == 6.0 and s["centre_error_m_mean"] == 28.0

    # N>6: P4 alone, everything perfect.
    s = m["N>6"]
    assert (s["photos"], s["targets"]) == (1, 7)
    assert all(s[k] == 1.0 for k in ["acc@0.25", "acc@0.5", "accI@0.25", "accI@0.5"])
    assert s["mean_iou"] == 1.0 and s["centre_cell"] == 1.0
    assert s["centre_error_m_median"] == 0.0 and s["centre_error_m_mean"] == 0.0

    # 2<=N<=6: P2 + P3, 6 targets: > .25: 2 + 3 = 5; > .5: 1 + 2 = 3; photos: P2 ok at .25.
    #   cells 2 + 2 = 4 of 6; errors only P3 -> median 6, mean 28.
    s = m["2<=N<=6"]
    assert (s["photos"], s["targets"]) == (2, 6)
    assert s["acc@0.25"] == 5 / 6 and s["acc@0.5"] == 0.5
    assert s["accI@0.25"] == 0.5 and s["accI@0.5"] == 0.0
    assert s["mean_iou"] == pytest.approx((1 + 1 / 3 + 0.9375 + 1 + 0 + 0.5) / 6, rel=1e-12)
    assert s["centre_cell"] == 4 / 6
    assert s["centre_error_m_median"] == 6.0 and s["centre_error_m_mean"] == 28.0

    # JSON-serialisable, no NaN anywhere.
    json.dumps(m, allow_nan=False)


def test_empty_groups_have_none_rates() -> None:
    # Only one photo with N=1: groups 3<N<=6, N>6 and 2<=N<=6 are empty.
    m = evaluate_boxes([PhotoEval(np.array([[0, 0, 10, 10.0]]), np.array([[0, 0, 10, 10.0]]))])
    for g in ["3<N<=6", "N>6", "2<=N<=6"]:
        assert m[g]["photos"] == 0 and m[g]["targets"] == 0
        assert all(m[g][k] is None for k in RATE_KEYS)
    # No photo at all: every group empty.
    m = evaluate_boxes([])
    assert all(m[g]["photos"] == 0 and m[g]["acc@0.5"] is None for g in GROUP_NAMES)
    json.dumps(m, allow_nan=False)


def test_centre_cell_boundaries() -> None:
    # stride 10. gt [0,0,20,20] centre (10,10): floor(10/10) = 1 -> cell (1,1).
    #   pred [0,0,19,20] centre (9.5,10) -> cell (0,1): different.
    #   pred [1,0,21,20] centre (11,10) -> cell (1,1): same.
    #   pred [0,0,39.8,39.8] centre (19.9,19.9) -> cell (1,1): same (just below 20).
    #   pred [0,0,40,40] centre (20,20) -> cell (2,2): different (on the next boundary).
    gt = np.tile(np.array([[0, 0, 20, 20.0]]), (4, 1))
    pred = np.array([[0, 0, 19, 20], [1, 0, 21, 20], [0, 0, 39.8, 39.8], [0, 0, 40, 40]])
    m = evaluate_boxes([PhotoEval(pred, gt)], stride=10)
    assert m["all"]["centre_cell"] == 0.5


def test_centre_error_needs_georef() -> None:
    # No GSD anywhere -> no metre figure, even though centres differ.
    m = evaluate_boxes([PhotoEval(np.array([[0, 0, 10, 20.0]]), np.array([[0, 0, 10, 10.0]]))])
    assert m["all"]["centre_error_m_median"] is None
    assert m["all"]["centre_error_m_mean"] is None
    # GSD 0.25 m/px, centres (5,10) vs (5,5): 5 px -> 1.25 m.
    m = evaluate_boxes(
        [PhotoEval(np.array([[0, 0, 10, 20.0]]), np.array([[0, 0, 10, 10.0]]), 0.25)]
    )
    assert m["all"]["centre_error_m_median"] == 1.25


def test_custom_thresholds_keys() -> None:
    m = evaluate_boxes(
        [PhotoEval(np.array([[0, 0, 10, 10.0]]), np.array([[0, 0, 10, 10.0]]))],
        thresholds=(0.7, 0.75),
    )
    assert {"acc@0.7", "acc@0.75", "accI@0.7", "accI@0.75"} <= set(m["all"])


def test_mismatched_pred_gt_raises() -> None:
    with pytest.raises(ValueError, match="photo 0"):
        evaluate_boxes([PhotoEval(np.zeros((2, 4)), np.zeros((1, 4)))])


def test_markdown_contains_numbers() -> None:
    md = metrics_markdown(evaluate_boxes(_four_photos()), title="CVOGL test")
    lines = md.splitlines()
    assert lines[0] == "### CVOGL test"
    assert "mean IoU" in lines[2] and "centre error m (median)" in lines[2]
    # all: 13/14 = 0.92857 -> 0.929; 10/14 -> 0.714; 3/4; 1/4; mean IoU 11.2708/14 = 0.80506;
    # centre cell 12/14 = 0.857; median error 0.
    assert "| all | 4 | 14 | 0.929 | 0.714 | 0.750 | 0.250 | 0.805 | 0.857 | 0.000 |" in lines
    assert "| 3<N<=6 | 1 | 4 | 0.750 | 0.500 | 0.000 | 0.000 | 0.609 | 0.500 | 6.000 |" in lines
    # An empty group shows dashes.
    md = metrics_markdown(
        evaluate_boxes([PhotoEval(np.array([[0, 0, 10, 10.0]]), np.array([[0, 0, 10, 10.0]]))])
    )
    assert "| N>6 | 0 | 0 | – | – | – | – | – | – | – |" in md.splitlines()
    assert not md.startswith("###")
