"""CVOGL reader on a tiny fake dataset tree written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from geomogeo.data.cvogl import (
    CvoglError,
    georef_from_satellite_name,
    parse_satellite_name,
    read_cvogl,
)
from geomogeo.data.manifest import Georef

SAT = "539827_4880079_300_32615.jpg"
SAT2 = "not_georeferenced.png"

# Records in the CVOGL 8-field layout:
# id, query name, satellite name, full-res click, click, box, polygon, class.
RECORDS = [
    (
        131425,
        "131425_539733_4880095.jpg",
        SAT,
        (383, 380),
        (191, 190),
        [25.5, 30.0, 50.25, 60.0],
        [40.0, 30.0, 50.25, 45.0, 35.0, 60.0, 25.5, 44.0],
        "building_retail",
    ),
    [
        7,
        "q7.jpg",
        SAT2,
        [10, 12],
        [5.5, 6.0],
        [1, 2, 3, 4],
        [1, 2, 3, 2, 3, 4, 1, 4],
        "house",
    ],
]


class NotPlainData:
    """Stands in for an arbitrary pickled object that must never be unpickled."""

    def __init__(self) -> None:
        self.payload = "x"


def _tree(root: Path, subset: str = "DroneAerial", records: list | None = None) -> Path:
    base = root / f"CVOGL_{subset}"
    (base / "query").mkdir(parents=True)
    (base / "satellite").mkdir()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(base / "query" / RECORDS[0][1])
    Image.new("RGB", (32, 32), (10, 20, 30)).save(base / "query" / "q7.jpg")
    Image.new("RGB", (64, 64), (50, 60, 70)).save(base / "satellite" / SAT)
    Image.new("RGB", (16, 16), (50, 60, 70)).save(base / "satellite" / SAT2)
    torch.save(RECORDS if records is None else records, base / f"CVOGL_{subset}_test.pth")
    return base


def test_read_back_exact_values(tmp_path: Path) -> None:
    base = _tree(tmp_path)
    recs = read_cvogl(tmp_path, "DroneAerial", "test")
    assert len(recs) == 2
    r0, r1 = recs
    assert r0.id == "DroneAerial-test-131425"
    assert r0.query == (base / "query" / "131425_539733_4880095.jpg").resolve()
    assert r0.reference == (base / "satellite" / SAT).resolve()
    assert r0.clicks == ((191.0, 190.0),)
    assert r0.boxes == ((25.5, 30.0, 50.25, 60.0),)
    assert r0.georef is None  # not derived unless asked
    assert r0.split == "test"
    assert r0.meta == {
        "dataset": "CVOGL_DroneAerial",
        "index": 0,
        "class": "building_retail",
        "click_full_res": [383.0, 380.0],
        "polygon": [40.0, 30.0, 50.25, 45.0, 35.0, 60.0, 25.5, 44.0],
        "satellite_name": {
            "easting": 539827.0,
            "northing": 4880079.0,
            "extent": 300.0,
            "epsg": 32615,
        },
    }
    assert r1.id == "DroneAerial-test-7"
    assert r1.clicks == ((5.5, 6.0),)
    assert r1.boxes == ((1.0, 2.0, 3.0, 4.0),)
    assert "satellite_name" not in r1.meta
    assert r1.meta["class"] == "house" and r1.meta["index"] == 1


def test_georef_from_name(tmp_path: Path) -> None:
    # 300 m over a 64 px image: 300/64 = 4.6875 m/px; centre (539827, 4880079) ->
    # top-left corner x = 539827 - 150 = 539677, y = 4880079 + 150 = 4880229.
    records = [RECORDS[0]]
    _tree(tmp_path, "SVI", records)
    (r,) = read_cvogl(tmp_path, "SVI", "test", georef_from_name=True)
    assert r.georef == Georef("EPSG:32615", (4.6875, 0.0, 539677.0, 0.0, -4.6875, 4880229.0))
    assert r.id == "SVI-test-131425" and r.meta["dataset"] == "CVOGL_SVI"


def test_georef_from_name_refuses_unparseable_name(tmp_path: Path) -> None:
    _tree(tmp_path)
    with pytest.raises(CvoglError, match=r"record 1: satellite name 'not_georeferenced.png'"):
        read_cvogl(tmp_path, "DroneAerial", "test", georef_from_name=True)


def test_parse_satellite_name() -> None:
    assert parse_satellite_name("12_34_300_32631.png") == {
        "easting": 12.0,
        "northing": 34.0,
        "extent": 300.0,
        "epsg": 32631,
    }
    assert parse_satellite_name("tile_001.jpg") is None
    assert georef_from_satellite_name("tile_001.jpg", 10, 10) is None
    # 100 m over 50 x 25 px: 2 m/px in x, 4 m/px in y; corner (12-50, 34+50).
    assert georef_from_satellite_name("12_34_100_32631.png", 50, 25) == Georef(
        "EPSG:32631", (2.0, 0.0, -38.0, 0.0, -4.0, 84.0)
    )


def test_arbitrary_object_is_refused(tmp_path: Path) -> None:
    base = _tree(tmp_path, records=[[NotPlainData()]])
    pth = base / "CVOGL_DroneAerial_test.pth"
    with pytest.raises(CvoglError) as info:
        read_cvogl(tmp_path, "DroneAerial", "test")
    assert str(pth) in str(info.value)
    assert "refused" in str(info.value)


def test_not_a_torch_file(tmp_path: Path) -> None:
    base = _tree(tmp_path)
    pth = base / "CVOGL_DroneAerial_test.pth"
    pth.write_bytes(b"this is not a torch file")
    with pytest.raises(CvoglError, match=r"CVOGL_DroneAerial_test\.pth"):
        read_cvogl(tmp_path, "DroneAerial", "test")


def test_top_level_must_be_a_list(tmp_path: Path) -> None:
    _tree(tmp_path, records={"a": 1})  # type: ignore[arg-type]
    with pytest.raises(CvoglError, match="expected a list of records, got dict"):
        read_cvogl(tmp_path, "DroneAerial", "test")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (RECORDS[0][:7], "record 1: expected 8 fields, got 7"),
        ((1, 2, SAT, (0, 0), (1, 1), [0, 0, 1, 1], [], "c"), "record 1: query image name"),
        ((1, "q.jpg", None, (0, 0), (1, 1), [0, 0, 1, 1], [], "c"), "record 1: satellite"),
        ((1, "q.jpg", SAT, (0, 0), (1,), [0, 0, 1, 1], [], "c"), "record 1: click"),
        ((1, "q.jpg", SAT, (0, 0), (1, "a"), [0, 0, 1, 1], [], "c"), "record 1: click"),
        ((1, "q.jpg", SAT, (0, 0), (1, 1), [5, 0, 1, 1], [], "c"), "record 1: box"),
        ((1, "q.jpg", SAT, (0, 0), (1, 1), [0, 0, 1], [], "c"), "record 1: box"),
        ((1, "q.jpg", SAT, (0, 0), (1, 1), [0, 0, float("nan"), 1], [], "c"), "record 1: box"),
    ],
)
def test_malformed_record_names_file_and_index(tmp_path: Path, bad: object, message: str) -> None:
    _tree(tmp_path, records=[RECORDS[0], bad])
    with pytest.raises(CvoglError, match=r"CVOGL_DroneAerial_test\.pth") as info:
        read_cvogl(tmp_path, "DroneAerial", "test")
    assert message in str(info.value)


def test_missing_paths_and_bad_subset(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="CVOGL folder not found"):
        read_cvogl(tmp_path, "DroneAerial", "test")
    base = _tree(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"CVOGL_DroneAerial_train\.pth"):
        read_cvogl(tmp_path, "DroneAerial", "train")
    with pytest.raises(ValueError, match="subset must be one of"):
        read_cvogl(tmp_path, "Ground", "test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split must be a plain name"):
        read_cvogl(tmp_path, "DroneAerial", "../test")
    (base / "satellite" / SAT).unlink()
    (base / "satellite" / SAT2).unlink()
    (base / "satellite").rmdir()
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        read_cvogl(tmp_path, "DroneAerial", "test")
