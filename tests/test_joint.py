"""The joint localization's building blocks: the click prior (values by hand) and the
no-compass rotation search (a stand-in network whose score depends on the query's
orientation), with its cross-target consistency vote (confidence maps built by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geomogeo.geo.orient import turn_points
from geomogeo.joint import (
    CameraPrior,
    ConsistencySearch,
    JointConfig,
    click_prior,
    consistency_vote,
    ground_offsets,
    place_on_clicks,
    search_rotation,
)
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
    # started at 80 degrees (e.g. the edges' heading modulo 90): 80, 170, 260, 350; 80 is the
    # nearest to the bright side up (its top rows bright but for the turned canvas's corners)
    started = search_rotation(OrientationNet(), ref, photo, np.array([[30.0, 20.0]]), 4,
                              start=80.0)
    assert started.headings == (80.0, 170.0, 260.0, 350.0)
    assert started.heading == 80.0
    assert started.total == max(started.totals) > 2 * sorted(started.totals)[-2]
    with pytest.raises(ValueError, match="n >= 1"):
        search_rotation(net, ref, photo, np.zeros((1, 2)), 0)


def test_joint_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="rotation_search"):
        JointConfig(rotation_search="best")
    with pytest.raises(ValueError, match="footprint_m"):
        JointConfig(footprint_m=(300.0, 60.0))
    with pytest.raises(ValueError, match="floor"):
        JointConfig(floor=1.5)
    with pytest.raises(ValueError, match="positive"):
        JointConfig(sigma_m=0.0)
    with pytest.raises(ValueError, match="camera_sigma_m"):
        JointConfig(camera_sigma_m=0.0)
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="heading_vote_deg"):
            JointConfig(heading_vote_deg=bad)
    for inner in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="click_inner"):
            JointConfig(click_inner=inner)


def test_place_on_clicks_by_hand() -> None:
    """A 10 x 20 px box centred at (5, 10): moved, never resized, the least that keeps the
    click within ``inner`` half-sizes (5, 10 px) of its centre, per axis."""
    box = np.array([[0.0, 0.0, 10.0, 20.0]])
    inside, outside = np.array([[8.0, 3.0]]), np.array([[20.0, 10.0]])
    np.testing.assert_array_equal(place_on_clicks(box, inside, 0.0), [[3, -7, 13, 13]])
    # inner 0.5: the click within (2.5, 5) px of the centre -> centre (5.5, 8)
    np.testing.assert_array_equal(place_on_clicks(box, inside, 0.5), [[0.5, -2, 10.5, 18]])
    np.testing.assert_array_equal(place_on_clicks(box, inside, 1.0), box)  # contains it
    np.testing.assert_array_equal(place_on_clicks(box, outside, 1.0), [[10, 0, 20, 20]])
    two = place_on_clicks(np.vstack([box, box + 100]), np.array([[8.0, 3.0], [100.0, 100.0]]), 0)
    np.testing.assert_array_equal(two, [[3, -7, 13, 13], [95, 90, 105, 110]])


# A 128 px reference with 16 x 16 fine cells of 8 px: cell (i, j) has its centre at
# ((j + 0.5) * 8, (i + 0.5) * 8) px.
G, SIZE, CELL = 16, 128, 8.0


def peaks(cells: list[tuple[int, int]], value: float = 1.0) -> np.ndarray:
    """One map per target with ``value`` on cell (i, j) only."""
    mass = np.zeros((len(cells), G, G), np.float32)
    for k, (i, j) in enumerate(cells):
        mass[k, i, j] = value
    return mass


def test_consistency_vote_recovers_the_shift_and_scale() -> None:
    # Offsets (photo px, centroid 0) times 0.4 are (-16, -8), (16, -8), (0, 16) px = whole
    # cells (-2, -1), (2, -1), (0, 2); around the centre of cell (6, 7) (60, 52 px) the
    # targets are at cells (5, 5), (5, 9), (8, 7).
    offsets = np.array([[-40.0, -20.0], [40.0, -20.0], [0.0, 40.0]])
    mass = peaks([(5, 5), (5, 9), (8, 7)])
    mass[0, 12, 2] = 3.0  # a stronger, inconsistent peak of target 0 loses
    score, pos, scale = consistency_vote(mass, offsets, (0.2, 0.4, 0.8), SIZE, tolerance_px=0.0)
    assert scale == 0.4
    np.testing.assert_allclose(pos, [[44.0, 44.0], [76.0, 44.0], [60.0, 68.0]], atol=1e-9)
    # By hand: each map normalised (target 0: 1 / 4 on its consistent cell), eps = 1 / 256.
    expected = math.log(1 / 256 + 0.25) + 2 * math.log(1 / 256 + 1.0)
    assert score == pytest.approx(expected, rel=1e-9)
    # One cell right and two down: the positions move by (8, 16) px, the score stays.
    score2, pos2, scale2 = consistency_vote(np.roll(mass, (2, 1), axis=(1, 2)), offsets,
                                            (0.2, 0.4, 0.8), SIZE, tolerance_px=0.0)
    assert scale2 == 0.4 and score2 == pytest.approx(expected, rel=1e-9)
    np.testing.assert_allclose(pos2, pos + np.array([8.0, 16.0]), atol=1e-9)
    # Twice the offsets: half the scale.
    _, pos3, scale3 = consistency_vote(mass, 2 * offsets, (0.2, 0.4, 0.8), SIZE,
                                       tolerance_px=0.0)
    assert scale3 == 0.2
    np.testing.assert_allclose(pos3, pos, atol=1e-9)


CLICKS = np.array([[100.0, 150.0], [300.0, 150.0], [200.0, 50.0]])  # in a 400 x 300 photo


def consistent_cells(heading: float, scale: float, centre_cell: tuple[int, int]
                     ) -> list[tuple[int, int]]:
    """The cells where the clicks' targets lie for a photo of this heading and scale."""
    pos = turn_points(CLICKS - CLICKS.mean(axis=0), heading) * scale / CELL
    return [(round(centre_cell[0] + dy), round(centre_cell[1] + dx)) for dx, dy in pos]


class TableNet:
    """Returns prepared predictions in call order (search_rotation's headings, in order)."""

    name = "table"
    sha256 = "ab" * 32
    spec = InputSpec(SIZE, (32, 32), 1.0)

    def __init__(self, table: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.table, self.calls = table, 0

    def predict(self, reference: np.ndarray, query: np.ndarray, points: np.ndarray
                ) -> Prediction:
        mass, scores = self.table[min(self.calls, len(self.table) - 1)]
        self.calls += 1
        i, j = np.mgrid[0:G, 0:G] * CELL
        cell_boxes = np.broadcast_to(np.stack([j, i, j + CELL, i + CELL], -1),
                                     (*mass.shape, 4)).astype(np.float32)
        return Prediction(np.zeros((len(points), 4)), scores, np.zeros((len(points), 4, 4),
                          np.float32), mass, cell_boxes)


def test_the_consistent_rotation_beats_one_with_a_higher_raw_score() -> None:
    # At 90 degrees the three maps agree with one geometry (scale 0.24: offsets of 24-48 px
    # land on whole cells) but score 0.3 each; every other rotation scores 0.5 each with
    # peaks that fit no single geometry.
    cells = consistent_cells(90.0, 0.24, (7, 7))
    # By hand: offsets from the centroid (200, 350/3) turned a quarter, (x, y) -> (-y, x):
    # (-100/3, -100), (-100/3, 100), (200/3, 0) px; times 0.24 / 8: (-1, -3), (-1, 3), (2, 0).
    assert cells == [(4, 6), (10, 6), (7, 9)]
    rng = np.random.default_rng(0)
    wrong = [(peaks([tuple(c) for c in rng.integers(0, G, (3, 2))]), np.full(3, 0.5))
             for _ in range(8)]
    right = peaks(cells)
    right[0, 1, 14] = 2.0  # target 0's network prefers an inconsistent cell at 90 degrees
    table = [*wrong[:2], (right, np.full(3, 0.3)), *wrong[3:]]
    photo = np.zeros((300, 400, 3), np.uint8)
    ref = np.zeros((SIZE, SIZE, 3), np.float32)

    by_score = search_rotation(TableNet(table), ref, photo, CLICKS, 8)
    assert by_score.heading == 0.0 and by_score.positions is None

    settings = ConsistencySearch(scales=(0.12, 0.24, 0.48), tolerance_px=0.0, refine=False)
    net = TableNet(table)
    found = search_rotation(net, ref, photo, CLICKS, 8, consistency=settings)
    assert net.calls == 8 and found.heading == 90.0 and found.scale == 0.24
    np.testing.assert_allclose(found.positions, [[(j + 0.5) * CELL, (i + 0.5) * CELL]
                                                 for i, j in cells], atol=1e-9)
    assert found.totals[2] == found.total == max(found.totals)
    assert found.prediction.boxes[0].tolist() == [0.0, 0.0, 0.0, 0.0]  # no prior: unchanged

    # With a prior around the consistent positions, target 0 takes its consistent cell's box.
    net = TableNet(table)
    found = search_rotation(net, ref, photo, CLICKS, 8, consistency=ConsistencySearch(
        scales=(0.12, 0.24, 0.48), tolerance_px=0.0, prior_px=8.0, refine=False))
    i, j = cells[0]
    assert found.prediction.boxes[0].tolist() == [j * CELL, i * CELL, (j + 1) * CELL,
                                                  (i + 1) * CELL]
    assert found.prediction.scores[0] == pytest.approx(1.0)

    # One click: nothing to be consistent with; the summed score decides.
    one = search_rotation(TableNet(table), ref, photo, CLICKS[:1], 8, consistency=settings)
    assert one.heading == 0.0 and one.positions is None


def test_camera_prior_by_hand() -> None:
    # Camera at (64, 64) px looking east (90 degrees: ahead is +x, beside is +y), sigma 8 px.
    east = CameraPrior((64.0, 64.0), (0.0, 0.0), 90.0, 8.0)
    got = east.log_prior(np.array([[150.0, 64.0], [40.0, 64.0], [64.0, 76.0]]), 1.0)
    # any distance ahead: 0; 24 px behind: -(24 / 8)^2 / 2; 12 px beside: -(12 / 8)^2 / 2
    np.testing.assert_allclose(got, [0.0, -4.5, -1.125], atol=1e-12)
    # The photo's centre lies 10 photo px right of the clicks' centroid; at scale 2 that is
    # 20 px: a centroid 24 px behind puts the centre 4 px behind.
    off = CameraPrior((64.0, 64.0), (10.0, 0.0), 90.0, 8.0)
    assert off.log_prior(np.array([40.0, 64.0]), 2.0) == pytest.approx(-0.125, abs=1e-12)
    # Looking north (0 degrees, ahead is -y): 26 px south is behind.
    north = CameraPrior((64.0, 64.0), (0.0, 0.0), 0.0, 8.0)
    np.testing.assert_allclose(north.log_prior(np.array([[64.0, 30.0], [64.0, 90.0]]), 1.0),
                               [0.0, -0.5 * (26 / 8) ** 2], atol=1e-12)


def test_the_camera_prior_keeps_the_turn_that_looks_ahead_of_the_camera() -> None:
    # Two rotations half a turn apart whose maps are equally consistent (each with its own
    # heading), the clicks' centroid at cell (10, 7) = (60, 84) px both times. The photo's
    # centre (200, 150) lies 33.3 photo px below the clicks' centroid (200, 116.7): 8 px at
    # scale 0.24, turned by the heading. Heading 0: centre (60, 92), 28 px south of the camera
    # at (64, 64), behind it. Heading 180: centre (60, 76), 12 px ahead and 4 px beside.
    table = [(peaks(consistent_cells(h, 0.24, (10, 7))), np.full(3, 0.5)) for h in (0, 180)]
    photo = np.zeros((300, 400, 3), np.uint8)
    ref = np.zeros((SIZE, SIZE, 3), np.float32)
    plain = ConsistencySearch(scales=(0.24,), tolerance_px=0.0, refine=False)
    camera = ConsistencySearch(scales=(0.24,), tolerance_px=0.0, refine=False, camera_px=8.0)
    # without the prior (or without a camera position) the two tie and the first is kept
    for settings, position in ((plain, (64.0, 64.0)), (camera, None)):
        found = search_rotation(TableNet(table), ref, photo, CLICKS, 2, consistency=settings,
                                camera=position)
        assert found.heading == 0.0 and found.totals[0] == pytest.approx(found.totals[1])
    found = search_rotation(TableNet(table), ref, photo, CLICKS, 2, consistency=camera,
                            camera=(64.0, 64.0))
    assert found.heading == 180.0
    # the totals differ by the two priors: -(28^2 + 4^2) / 128 and -4^2 / 128
    assert found.totals[1] - found.totals[0] == pytest.approx((800 - 16) / 128, rel=1e-9)
    np.testing.assert_allclose(found.positions.mean(axis=0), [60.0, 84.0], atol=1e-9)


def test_one_click_is_placed_against_the_camera() -> None:
    # One click at (200, 50) in a 400 x 300 photo; both rotations, half a turn apart, put
    # its target on cell (10, 8), i.e. at (68, 84) px. The photo's centre lies 100 photo px
    # below the click: 24 px at scale 0.24, turned by the heading. Heading 0: centre (68,
    # 108), 44 px behind the camera at (64, 64) and 4 px beside it; heading 180: centre
    # (68, 60), 4 px behind and 4 beside.
    click = np.array([[200.0, 50.0]])
    table = [(peaks([(10, 8)]), np.full(1, 0.5))] * 2
    photo = np.zeros((300, 400, 3), np.uint8)
    ref = np.zeros((SIZE, SIZE, 3), np.float32)
    # (a residual step of 90 degrees: each rotation votes at its own heading only)
    kwargs = dict(scales=(0.24,), tolerance_px=0.0, prior_px=4.0, refine=False, camera_px=8.0,
                  residual_step=90.0)
    # Without the single-click vote (or without a camera position) the summed scores tie
    # and the first rotation is kept, with no position.
    for settings, position in ((ConsistencySearch(**kwargs, single=False), (64.0, 64.0)),
                               (ConsistencySearch(**kwargs, single=True), None)):
        found = search_rotation(TableNet(table), ref, photo, click, 2, consistency=settings,
                                camera=position)
        assert found.heading == 0.0 and found.positions is None
        assert found.totals == (0.5, 0.5)
    found = search_rotation(TableNet(table), ref, photo, click, 2,
                            consistency=ConsistencySearch(**kwargs, single=True),
                            camera=(64.0, 64.0))
    assert found.heading == 180.0
    np.testing.assert_allclose(found.positions, [[68.0, 84.0]], atol=1e-9)
    # At 180 degrees the peak's vote, log(1 / 256 + 1), minus the prior (4^2 + 4^2) / 128.
    assert found.totals[1] == pytest.approx(math.log(1 / 256 + 1) - 32 / 128, rel=1e-9)
    # At 0 degrees the peak would pay (44^2 + 4^2) / 128 = 15.25: an empty cell that puts the
    # centre ahead of the camera, 4 px beside it (cell centres lie at 4 + 8k px), votes
    # higher: log(1 / 256) - 4^2 / 128.
    assert found.totals[0] == pytest.approx(math.log(1 / 256) - 16 / 128, rel=1e-9)
    assert found.prediction.boxes[0].tolist() == [64.0, 80.0, 72.0, 88.0]


def test_a_known_heading_is_voted_on_within_its_spread() -> None:
    # One look at the compass heading 0; the maps fit a photo turned 10 degrees (the
    # compass's error). Within a spread of 10 degrees the vote finds that geometry, and the
    # prior around its positions picks each target's consistent cell; with no spread it
    # cannot, and a prior around the wrong positions picks other cells.
    cells = consistent_cells(10.0, 0.24, (7, 7))
    mass = peaks(cells, 0.5) + peaks([(1, 1), (1, 14), (14, 1)], 1.0)
    table = [(mass, np.full(3, 0.5))]
    photo = np.zeros((300, 400, 3), np.uint8)
    ref = np.zeros((SIZE, SIZE, 3), np.float32)
    settings = ConsistencySearch(scales=(0.24,), tolerance_px=0.0, prior_px=4.0, refine=False)
    net = TableNet(table)
    found = search_rotation(net, ref, photo, CLICKS, 1, consistency=settings, spread=10.0)
    assert net.calls == 1 and found.heading == 0.0 and found.headings == (0.0,)
    # the positions of the 10 degree geometry lie within half a cell of the cells they were
    # rounded to
    np.testing.assert_allclose(found.positions, [[(j + 0.5) * CELL, (i + 0.5) * CELL]
                                                 for i, j in cells], atol=CELL / 2)
    for k, (i, j) in enumerate(cells):
        assert found.prediction.boxes[k].tolist() == [j * CELL, i * CELL, (j + 1) * CELL,
                                                      (i + 1) * CELL]
    fixed = search_rotation(TableNet(table), ref, photo, CLICKS, 1, consistency=settings,
                            spread=0.0)
    assert fixed.total < found.total
    assert not np.allclose(fixed.positions, found.positions)


def test_refinement_looks_once_more_between_the_rotations() -> None:
    # Four rotations 90 degrees apart; at 90 the maps fit a photo turned 120 degrees, so
    # the vote's heading lies between the rotations: a fifth call looks there. Its maps are
    # empty (uniform), which votes lower: the 90 degree look is kept.
    fit = peaks(consistent_cells(120.0, 0.48, (7, 7)))
    flat = np.ones((3, G, G), np.float32)
    table = [(flat, np.full(3, 0.1)), (fit, np.full(3, 0.3)), (flat, np.full(3, 0.1)),
             (flat, np.full(3, 0.1)), (flat, np.full(3, 0.9))]
    net = TableNet(table)
    photo = np.zeros((300, 400, 3), np.uint8)
    found = search_rotation(net, np.zeros((SIZE, SIZE, 3), np.float32), photo, CLICKS, 4,
                            consistency=ConsistencySearch(scales=(0.24, 0.48),
                                                          tolerance_px=4.0))
    assert net.calls == 5 and found.headings[:4] == (0.0, 90.0, 180.0, 270.0)
    assert 105.0 <= found.headings[4] <= 135.0
    assert found.heading == 90.0 and found.prediction.scores[0] == 0.3
    assert found.totals[4] < found.totals[1] == found.total


def test_consistency_settings_from_the_config() -> None:
    # A 500 px photo covering 60..320 m of ground at 1 m: 0.12 .. 0.64 reference px per photo
    # px, in 15% steps (13 scales); a scale hint narrows it to hint / 1.25 .. hint * 1.6.
    s = ConsistencySearch.from_config(JointConfig(consistency_sigma_m=8.0,
                                                  consistency_prior_m=None,
                                                  camera_sigma_m=None), 500, 1.0)
    assert s.scales[0] == pytest.approx(0.12) and s.scales[-1] == pytest.approx(0.64)
    assert len(s.scales) == 13 and s.tolerance_px == 8.0 and s.prior_px is None
    h = ConsistencySearch.from_config(JointConfig(consistency_sigma_m=8.0,
                                                  consistency_prior_m=4.0,
                                                  refine_rotation=True), 500, 0.5, 0.25)
    assert h.scales[0] == pytest.approx(0.2) and h.scales[-1] == pytest.approx(0.4)
    assert h.prior_px == 8.0 and h.tolerance_px == 16.0 and h.refine and not s.refine
    assert s.camera_px is None
    # the defaults: a prior of 8 m around the consistent positions, a camera prior of 8 m
    d = ConsistencySearch.from_config(JointConfig(), 500, 0.5)
    assert (d.prior_px, d.camera_px) == (16.0, 16.0)
    assert ConsistencySearch.from_config(JointConfig(camera_sigma_m=6.0), 500, 0.5).camera_px \
        == 12.0


def project(ground: np.ndarray, height: float, focal: float, tilt_deg: float,
            size: tuple[int, int]) -> np.ndarray:
    """Ground points (forward, right) metres from the nadir -> photo pixels, for a camera
    ``height`` above them tilted forward by ``tilt_deg``: an independent pinhole model (a
    rotation matrix and a perspective division)."""
    t = math.radians(tilt_deg)
    # camera axes in the world (forward, right, down): x = right; z = the optical axis
    # tilted from down towards forward; y = z cross x (the photo's down, pointing backwards)
    x_axis = np.array([0.0, 1.0, 0.0])
    z_axis = np.array([math.sin(t), 0.0, math.cos(t)])
    y_axis = np.cross(z_axis, x_axis)
    rays = np.column_stack([ground[:, 0], ground[:, 1], np.full(len(ground), height)])
    cam = rays @ np.stack([x_axis, y_axis, z_axis]).T
    return np.column_stack([size[0] / 2 + focal * cam[:, 0] / cam[:, 2],
                            size[1] / 2 + focal * cam[:, 1] / cam[:, 2]])


@pytest.mark.parametrize("tilt", [0.0, 12.0, 35.0])
def test_ground_offsets_invert_an_independent_pinhole_projection(tilt: float) -> None:
    ground = np.array([[30.0, -10.0], [55.0, 20.0], [5.0, 0.0], [80.0, -35.0]])  # (F, R) m
    height, focal, size = 90.0, 420.0, (640, 480)
    px = project(ground, height, focal, tilt, size)
    got = ground_offsets(px, size, focal, tilt)
    # photo pixels at nadir scale: metres times focal / height, x right, y backwards
    expected = np.column_stack([ground[:, 1], -ground[:, 0]]) * focal / height
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_ground_offsets_by_hand_and_the_horizon() -> None:
    pts = np.array([[100.0, 50.0], [100.0, 100.0], [160.0, 50.0]])
    np.testing.assert_allclose(ground_offsets(pts, (200, 100), 100.0, 0.0),
                               pts - [100.0, 50.0], atol=1e-12)
    # tilted 30 degrees: the photo's centre lies tan 30 * f ahead; a point half a focal
    # below it at (sin 30 - 0.5 cos 30) / (cos 30 + 0.5 sin 30) f ahead
    got = ground_offsets(pts, (200, 100), 100.0, 30.0)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    np.testing.assert_allclose(got[0], [0.0, -100.0 * s / c], atol=1e-9)
    np.testing.assert_allclose(got[1], [0.0, -100.0 * (s - 0.5 * c) / (c + 0.5 * s)],
                               atol=1e-9)
    np.testing.assert_allclose(got[2], [60.0 / c, -100.0 * s / c], atol=1e-9)
    # tilted 80 degrees with a 90 degree field of view, the top row lies above the horizon
    assert ground_offsets(np.array([[100.0, 0.0]]), (200, 100), 100.0, 80.0) is None


def test_the_perspective_vote_undoes_the_tilt() -> None:
    # Three roofs on flat ground, (forward, right) metres from the camera's nadir, seen from
    # 100 m by a 400 px focal length tilted 30 degrees forward, heading 0 (north-up). At 1 m
    # per reference pixel the ground's scale is 100 / 400 = 0.25 reference px per photo px.
    # With the camera at (68, 116) px the roofs lie at (44, 76), (92, 76) and (68, 52) px:
    # cells (9, 5), (9, 11) and (6, 8).
    ground = np.array([[40.0, -24.0], [40.0, 24.0], [64.0, 0.0]])
    clicks = project(ground, 100.0, 400.0, 30.0, (400, 300))
    table = [(peaks([(9, 5), (9, 11), (6, 8)]), np.full(3, 0.5))]
    photo = np.zeros((300, 400, 3), np.uint8)
    ref = np.zeros((SIZE, SIZE, 3), np.float32)

    def search(tilts: tuple[float, ...], focal: float | None):
        settings = ConsistencySearch(scales=(0.25,), tolerance_px=0.0, refine=False,
                                     camera_px=8.0, tilts=tilts, focal_px=focal)
        return search_rotation(TableNet(table), ref, photo, clicks, 1, consistency=settings,
                               camera=(68.0, 116.0), spread=0.0)

    found = search((0.0, 30.0), 400.0)
    np.testing.assert_allclose(found.positions, [[44.0, 76.0], [92.0, 76.0], [68.0, 52.0]],
                               atol=1e-9)
    # every peak on its cell, and the camera exactly at the tilted view's nadir: no penalty
    assert found.total == pytest.approx(3 * math.log(1 / 256 + 1.0), rel=1e-9)
    # The similarity (no tilts, or no focal length) and a nadir view miss the geometry.
    for tilts, focal in (((), 400.0), ((0.0, 30.0), None), ((0.0,), 400.0)):
        assert search(tilts, focal).total < found.total - 1.0


def test_the_nadir_camera_prior_by_hand() -> None:
    # With ``nadir`` the offset points at the camera's own nadir, and any distance from the
    # camera costs: 20 px ahead of a camera looking east, sigma 8 px.
    east = CameraPrior((64.0, 64.0), (0.0, 0.0), 90.0, 8.0, nadir=True)
    np.testing.assert_allclose(east.log_prior(np.array([[84.0, 64.0], [64.0, 64.0]]), 1.0),
                               [-0.5 * (20 / 8) ** 2, 0.0], atol=1e-12)
    # the same point without ``nadir`` lies ahead: free
    assert CameraPrior((64.0, 64.0), (0.0, 0.0), 90.0, 8.0).log_prior(
        np.array([84.0, 64.0]), 1.0) == pytest.approx(0.0, abs=1e-12)


def test_tilts_need_a_focal_length() -> None:
    config = JointConfig(search_tilts_deg=(0.0, 15.0))
    assert ConsistencySearch.from_config(config, 500, 0.5, focal_px=400.0).tilts == (0.0, 15.0)
    assert ConsistencySearch.from_config(config, 500, 0.5).tilts == ()
    for bad in ((-5.0,), (0.0, 90.0)):
        with pytest.raises(ValueError, match="search_tilts_deg"):
            JointConfig(search_tilts_deg=bad)
    with pytest.raises(ValueError, match="search_hfov_deg"):
        JointConfig(search_hfov_deg=180.0)
