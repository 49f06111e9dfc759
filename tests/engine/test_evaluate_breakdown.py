"""evaluate --localize on a held-out city: the breakdown by targets per photo (computed by
hand), the training-free baseline's 16 m box on a geographic (EPSG:4326) raster, and runs
"without heading" on photos whose EXIF records one."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image
from pyproj import Geod
from shapely.geometry import Point

from geomogeo.data.synth.engine import gps_exif
from geomogeo.engine.evaluate import (
    BASELINE_BOX_M,
    TARGET_COUNT_GROUPS,
    _baseline_polygons,
    _without_exif_heading,
    localize_markdown,
)
from geomogeo.engine.metrics import PhotoEval, evaluate_boxes
from geomogeo.geo.photo import load_photo


def _photo(widths: list[float]) -> PhotoEval:
    """gt boxes [0, 0, 10, 10]; prediction [0, 0, 10, w]: IoU w / 10."""
    gt = np.tile([0.0, 0.0, 10.0, 10.0], (len(widths), 1))
    pred = gt.copy()
    pred[:, 3] = widths
    return PhotoEval(pred, gt, 1.0)


def test_target_count_groups_by_hand() -> None:
    photos = [
        _photo([6, 4]),              # N=2: 1 of 2 above 0.5, not all
        _photo([6, 6, 6]),           # N=3: 3 of 3, all
        _photo([7, 7, 7, 3]),        # N=4: 3 of 4, not all
        _photo([8, 8, 8, 8, 5]),     # N=5: IoU exactly 0.5 is a miss: 4 of 5
        _photo([9] * 6),             # N=6: 6 of 6, all
        _photo([9] * 7),             # N=7: in no group
    ]
    m = evaluate_boxes(photos, groups=TARGET_COUNT_GROUPS)
    assert list(m) == ["N=2", "3<=N<=4", "5<=N<=6"]
    assert (m["N=2"]["photos"], m["N=2"]["targets"]) == (1, 2)
    assert m["N=2"]["acc@0.5"] == 0.5 and m["N=2"]["accI@0.5"] == 0.0
    # 3 + 3 of 3 + 4 targets; one of the two photos all right.
    assert m["3<=N<=4"]["acc@0.5"] == 6 / 7 and m["3<=N<=4"]["accI@0.5"] == 0.5
    # 4 + 6 of 5 + 6 targets.
    assert m["5<=N<=6"]["acc@0.5"] == 10 / 11 and m["5<=N<=6"]["accI@0.5"] == 0.5
    # The default groups are unchanged.
    assert list(evaluate_boxes(photos)) == ["all", "N<=3", "3<N<=6", "N>6", "2<=N<=6"]
    result = {"manifest": "m.jsonl", "split": "test", "tta": "none",
              "metrics": {"joint": evaluate_boxes(photos)},
              "by_targets": {"joint": m}, "seconds_per_photo": {}, "registration": {}}
    md = localize_markdown(result)
    assert "| joint | 0.500 / 0.000 (1) | 0.857 / 0.500 (2) | 0.909 / 0.500 (2) |" in md


def test_baseline_box_is_16_m_on_a_lon_lat_raster() -> None:
    """A registered click in EPSG:4326 (Las Vegas): the baseline square has 16 m grid sides
    in the local UTM zone (11N), i.e. 16 / k on the ground with UTM's point scale k there
    (0.999912 at 1.77 deg from the central meridian), and is centred on the click."""
    lon, lat = -115.2320526, 36.1405827
    res = SimpleNamespace(crs="EPSG:4326", targets=[
        SimpleNamespace(registered_xy=(lon, lat)), SimpleNamespace(registered_xy=None)])
    square, none = _baseline_polygons(res, BASELINE_BOX_M)
    assert none is None
    xs, ys = np.asarray(square.exterior.coords)[:4].T
    k = 0.9996 * (1 + (np.radians(lon + 117.0) * np.cos(np.radians(lat))) ** 2 / 2)
    _, _, sides = Geod(ellps="WGS84").inv(xs, ys, np.roll(xs, -1), np.roll(ys, -1))
    np.testing.assert_allclose(sides, BASELINE_BOX_M / k, rtol=0, atol=1e-3)
    assert square.centroid.distance(Point(lon, lat)) < 1e-9


def test_runs_without_heading_do_not_read_the_exif_heading(tmp_path: Path) -> None:
    """A photo whose EXIF records GPS and a heading: the copy given to the runs without heading
    keeps the pixels and the GPS position and drops the heading; a photo without a heading is
    used as it is."""
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    with_h, without_h = tmp_path / "h.jpg", tmp_path / "n.jpg"
    img.save(with_h, exif=gps_exif(-115.2320526, 36.1405827, 123.45))
    img.save(without_h, exif=gps_exif(-115.2320526, 36.1405827, None))
    out = tmp_path / "out"
    out.mkdir()
    copy = _without_exif_heading(with_h, out)
    assert copy.parent == out and copy.suffix == ".png"
    a, b = load_photo(with_h), load_photo(copy)
    assert a.gps is not None and a.gps.heading == 123.45
    assert b.gps is not None and b.gps.heading is None
    assert (b.gps.lon, b.gps.lat) == (a.gps.lon, a.gps.lat)
    np.testing.assert_array_equal(a.image, b.image)
    assert _without_exif_heading(without_h, out) == without_h
