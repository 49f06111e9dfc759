"""The vote's torch-free selection over the dense maps of a Prediction, computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from geomogeo.predictor import select


def _maps() -> tuple[np.ndarray, np.ndarray]:
    """2 targets on a 2 x 2 fine grid; cell (i, j) of target k has the box
    (10k + j, 10k + i, 10k + j + 1, 10k + i + 1)."""
    mass = np.array([[[0.1, 0.5], [0.3, 0.1]],
                     [[0.2, 0.2], [0.0, 0.6]]], np.float32)
    ii, jj = np.meshgrid(np.arange(2), np.arange(2), indexing="ij")
    cell_boxes = np.stack([np.stack([10 * k + jj, 10 * k + ii, 10 * k + jj + 1, 10 * k + ii + 1],
                                    -1) for k in range(2)]).astype(np.float32)
    return mass, cell_boxes


def test_argmax_of_the_mass_without_prior() -> None:
    mass, cell_boxes = _maps()
    boxes, scores, cells = select(mass, cell_boxes)
    # target 0: cell (0, 1) = flat 1; target 1: cell (1, 1) = flat 3
    assert cells.tolist() == [1, 3] and cells.dtype == np.int64
    np.testing.assert_array_equal(boxes, [[1, 0, 2, 1], [11, 11, 12, 12]])
    assert boxes.dtype == scores.dtype == np.float64
    np.testing.assert_allclose(scores, [0.5, 0.6], rtol=1e-7)


def test_the_prior_moves_the_choice_but_not_the_score() -> None:
    mass, cell_boxes = _maps()
    prior = np.ones((2, 2, 2))
    prior[0] = [[0.0, 0.2], [1.0, 0.0]]  # 0.5 * 0.2 = 0.1 < 0.3 * 1.0: cell (1, 0)
    prior[1] = [[1.0, 0.1], [1.0, 0.3]]  # 0.2, 0.02, 0, 0.18: cell (0, 0)
    boxes, scores, cells = select(mass, cell_boxes, prior)
    assert cells.tolist() == [2, 0]
    np.testing.assert_array_equal(boxes, [[0, 1, 1, 2], [10, 10, 11, 11]])
    np.testing.assert_allclose(scores, [0.3, 0.2], rtol=1e-7)  # the unweighted mass


def test_ties_go_to_the_first_cell_in_row_major_order() -> None:
    mass = np.full((1, 3, 3), 0.25, np.float32)
    cell_boxes = np.arange(36, dtype=np.float32).reshape(1, 3, 3, 4)
    prior = np.zeros((1, 3, 3))
    prior[0, 2, 0] = prior[0, 1, 2] = 2.0  # flat 6 and flat 5 tie: 5 wins
    boxes, scores, cells = select(mass, cell_boxes, prior)
    assert cells.tolist() == [5] and boxes.tolist() == [[20.0, 21.0, 22.0, 23.0]]
    assert scores.tolist() == [0.25]


def test_no_targets() -> None:
    boxes, scores, cells = select(np.zeros((0, 4, 4)), np.zeros((0, 4, 4, 4)))
    assert boxes.shape == (0, 4) and scores.shape == (0,) and cells.shape == (0,)


def test_bad_input_is_named() -> None:
    mass, cell_boxes = _maps()
    with pytest.raises(ValueError, match=r"cell_boxes \(m, Gf, Gf, 4\)"):
        select(mass, cell_boxes[..., :2])
    with pytest.raises(ValueError, match="prior has shape"):
        select(mass, cell_boxes, np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match="finite and >= 0"):
        select(mass, cell_boxes, -np.ones((2, 2, 2)))
    prior = np.ones((2, 2, 2))
    prior[1] = [[0.0, 0.0], [1.0, 0.0]]  # only where target 1 has no mass
    with pytest.raises(ValueError, match=r"target\(s\) \[1\] is 0 wherever"):
        select(mass, cell_boxes, prior)
