"""The joint localization's building blocks: the click prior (values by hand) and the
no-compass rotation search (a stand-in network whose score depends on the query's
orientation)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geomogeo.joint import JointConfig, click_prior, search_rotation
from geomogeo.predictor import InputSpec, Prediction


def test_click_prior_by_hand() -> None:
    # 64 px window at 2 m, 4 x 4 fine cells of 16 px (centres 8, 24, 40, 56 px).
    # s = hypot(4, 3) m / 2 = 2.5 px; half the parallax 8 m / 2 / 2 = 2 px; along = hypot.
    # Camera due north of the click: the prior's centre moves 2 px north, to (24, 38).
    prior = click_prior(np.array([[24.0, 40.0]]), (24.0, 0.0), 4, 64, 2.0, sigma_m=4.0,
                        parallax_m=8.0, floor=0.1, error_m=3.0)
    assert prior.shape == (1, 4, 4) and prior.dtype == np.float32
    along2, across2 = 2.5**2 + 2.0**2, 2.5**2

    def p(a: float, b: float) -> float:
        return 0.1 + 0.9 * math.exp(-0.5 * (a * a / along2 + b * b / across2))

    assert prior[0, 2, 1] == pytest.approx(p(2, 0), rel=1e-6)  # (24, 40): 2 px south
    assert prior[0, 1, 1] == pytest.approx(p(14, 0), rel=1e-6)  # (24, 24): 14 px north
    assert prior[0, 2, 2] == pytest.approx(p(2, 16), rel=1e-6)  # (40, 40): 16 px east
    assert prior[0, 0, 0] == pytest.approx(0.1, abs=1e-6)  # far away: the floor

    # No camera: round, with the along spread, centred on the click itself.
    round_ = click_prior(np.array([[24.0, 40.0]]), None, 4, 64, 2.0, sigma_m=4.0,
                         parallax_m=8.0, floor=0.0, error_m=3.0)
    assert round_[0, 2, 1] == pytest.approx(1.0)
    assert round_[0, 2, 2] == pytest.approx(math.exp(-0.5 * 256 / along2), rel=1e-6)
    assert round_[0, 1, 1] == pytest.approx(round_[0, 2, 2], rel=1e-6)


class OrientationNet:
    """Scores a query by the brightness of its top quarter; the box encodes the call."""

    name = "orientation"
    sha256 = "ef" * 32
    spec = InputSpec(32, (32, 32), 1.0)

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, reference: np.ndarray, query: np.ndarray, points: np.ndarray
                ) -> Prediction:
        self.calls += 1
        m = len(points)
        score = float(query[:8].mean())
        return Prediction(np.full((m, 4), float(self.calls)), np.full(m, score),
                          np.zeros((m, 4, 4), np.float32))


def test_rotation_search_finds_the_turn_that_puts_the_bright_side_up() -> None:
    # The photo's left third is bright: a clockwise quarter turn (heading 90) brings it up.
    photo = np.zeros((40, 60, 3), np.uint8)
    photo[:, :20] = 255
    net = OrientationNet()
    ref = np.zeros((32, 32, 3), np.float32)
    found = search_rotation(net, ref, photo, np.array([[30.0, 20.0], [10.0, 5.0]]), 8)
    assert net.calls == 8
    assert found.headings == (0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0)
    assert found.heading == 90.0
    assert found.total == max(found.totals) == pytest.approx(2.0, abs=0.02)
    assert found.prediction.boxes[0, 0] == 3.0  # the third call's prediction is kept
    assert found.totals[6] == pytest.approx(0.0, abs=0.02)  # 270: the dark side up
    with pytest.raises(ValueError, match="n >= 1"):
        search_rotation(net, ref, photo, np.zeros((1, 2)), 0)


def test_joint_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="floor"):
        JointConfig(floor=1.5)
    with pytest.raises(ValueError, match="positive"):
        JointConfig(sigma_m=0.0)
