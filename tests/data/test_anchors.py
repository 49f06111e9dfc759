"""k-means anchors with the 1 - IoU distance."""

from __future__ import annotations

import numpy as np
import pytest

from geomogeo.data.anchors import kmeans_anchors, mean_best_iou, wh_iou


def _three_clusters(seed: int = 1) -> np.ndarray:
    """30 boxes around each of (10, 10), (40, 20), (120, 100); jitter at most +-1 px,
    symmetric so each cluster's per-axis median is exactly its nominal size."""
    rng = np.random.default_rng(seed)
    out = []
    for w, h in [(10.0, 10.0), (40.0, 20.0), (120.0, 100.0)]:
        jit = rng.uniform(0.0, 1.0, size=(15, 2))
        out.append(np.array([w, h]) + jit)
        out.append(np.array([w, h]) - jit)  # mirror: median of the pair set is exactly (w, h)
    wh = np.concatenate(out)
    return wh[rng.permutation(wh.shape[0])]


def test_recovers_three_separated_clusters() -> None:
    wh = _three_clusters()
    for seed in range(5):
        anchors = kmeans_anchors(wh, k=3, seed=seed)
        # Sorted by area: 100 < 800 < 12000. Each cluster has 30 members (15 mirrored pairs
        # w +- j); per axis the two middle values are w - j_min and w + j_min, whose mean is w
        # (up to one rounding of the sum).
        np.testing.assert_allclose(
            anchors, [[10.0, 10.0], [40.0, 20.0], [120.0, 100.0]], rtol=0, atol=1e-12
        )


def test_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(7)
    wh = rng.uniform(5, 200, size=(300, 2))
    a = kmeans_anchors(wh, k=9, seed=3)
    b = kmeans_anchors(wh, k=9, seed=3)
    assert a.shape == (9, 2)
    np.testing.assert_array_equal(a, b)


def test_sorted_by_area() -> None:
    rng = np.random.default_rng(11)
    wh = rng.uniform(5, 300, size=(500, 2))
    a = kmeans_anchors(wh, k=6, seed=0)
    area = a[:, 0] * a[:, 1]
    assert np.all(np.diff(area) >= 0)
    assert np.all(a > 0)


def test_mean_best_iou_by_hand() -> None:
    # anchors (10,10) and (20,20); boxes:
    #   (10,10): best IoU 1 with (10,10).
    #   (10,20): vs (10,10): inter 100, union 200+100-100 = 200 -> 0.5;
    #            vs (20,20): inter 10*20=200, union 200+400-200 = 400 -> 0.5. best 0.5.
    #   (20,20): best 1.
    #   (40,20): vs (20,20): inter 400, union 800+400-400 = 800 -> 0.5; vs (10,10): 100/800.
    # mean = (1 + 0.5 + 1 + 0.5) / 4 = 0.75
    wh = np.array([[10, 10], [10, 20], [20, 20], [40, 20]], dtype=float)
    anchors = np.array([[10, 10], [20, 20]], dtype=float)
    assert mean_best_iou(wh, anchors) == 0.75
    assert wh_iou(wh, anchors)[3].tolist() == [100 / 800, 0.5]


def test_perfect_anchors_give_one() -> None:
    wh = np.array([[3, 4], [5, 6], [7, 8]], dtype=float)
    a = kmeans_anchors(wh, k=3)
    np.testing.assert_array_equal(a, wh)  # each box its own cluster, already area-sorted
    assert mean_best_iou(wh, a) == 1.0


def test_errors() -> None:
    with pytest.raises(ValueError, match="distinct"):
        kmeans_anchors(np.array([[10, 10], [10, 10], [20, 20]], dtype=float), k=3)
    with pytest.raises(ValueError, match="positive"):
        kmeans_anchors(np.array([[10, 10], [0, 5], [20, 20]], dtype=float), k=2)
    with pytest.raises(ValueError, match="positive"):
        kmeans_anchors(np.array([[10, -1], [3, 5], [20, 20]], dtype=float), k=2)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        kmeans_anchors(np.zeros((4, 3)) + 1, k=2)
    with pytest.raises(ValueError, match="k must be"):
        kmeans_anchors(np.array([[1, 1.0]]), k=0)
    with pytest.raises(ValueError, match="positive"):
        mean_best_iou(np.array([[1, 1.0]]), np.array([[0, 1.0]]))
