"""Packed training data: query preparation and scaling, batches of mixed photos, ``.npz``
round trip, manifests, and packing straight from the data engine."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_synth import SMALL, _blocks

from geomogeo.data.dataset import (
    PackedData,
    PackGeometry,
    PackItem,
    pack_items,
    pack_manifest,
    read_pack_geometry,
)
from geomogeo.data.manifest import Georef, Record, write_manifest
from geomogeo.data.synth.engine import Sample, SynthConfig, World, generate
from geomogeo.geo.orient import prepare_query, rotate_north_up

FIELDS = ("ids", "references", "queries", "clicks", "boxes", "counts", "metres_per_pixel")


def _img(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth-ish uint8 image (gradients plus noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
    return np.clip(base + rng.integers(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)


def _item(i: int, m: int, *, ref_size: int = 64, photo: tuple[int, int] = (48, 80),
          heading: float | None = None, mpp: float | None = 1.0) -> PackItem:
    rng = np.random.default_rng(100 + i)
    h, w = photo
    clicks = rng.uniform([0, 0], [w, h], size=(m, 2))
    x1 = rng.uniform(0, ref_size / 2, size=(m, 2))
    boxes = np.column_stack([x1, x1 + rng.uniform(4, ref_size / 2, size=(m, 2))])
    return PackItem(f"photo-{i}", _img(ref_size, ref_size, i), _img(h, w, 50 + i), clicks,
                    boxes, heading, mpp)


def _assert_same(a: PackedData, b: PackedData) -> None:
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype, f
        np.testing.assert_array_equal(x, y, err_msg=f)


def test_pack_without_heading_scales_clicks_exactly() -> None:
    it = _item(0, 3)
    qh, qw = 64, 96
    p = pack_items([it], (qh, qw), 64)
    h, w = it.photo.shape[:2]
    expected = (it.clicks * np.array([qw / w, qh / h])).astype(np.float32)
    assert p.clicks.dtype == np.float32
    np.testing.assert_array_equal(p.clicks, expected)
    # The query is the photo resized (bilinear), stretched to (qh, qw).
    resized = np.asarray(Image.fromarray(it.photo).resize((qw, qh), Image.Resampling.BILINEAR))
    assert p.queries.shape == (1, qh, qw, 3) and p.queries.dtype == np.uint8
    np.testing.assert_array_equal(p.queries[0], resized)
    # The reference already has the model's size: untouched, boxes untouched.
    np.testing.assert_array_equal(p.references[0], it.reference)
    np.testing.assert_array_equal(p.boxes, it.boxes.astype(np.float32))
    assert p.counts.tolist() == [3] and p.counts.dtype == np.int64
    assert p.metres_per_pixel.tolist() == [1.0]
    assert p.ids.tolist() == ["photo-0"]
    assert p.reference_size == 64 and p.query_size == (qh, qw)


def test_pack_letterboxed_keeps_the_photo_aspect() -> None:
    it = _item(0, 3)  # 48 x 80 photo into a 64 x 64 query: scale 0.8 -> 38 x 64, 13 rows down
    p = pack_items([it], (64, 64), 64, query_fit="letterbox")
    expected = (it.clicks * np.array([64 / 80, 38 / 48]) + np.array([0, 13])).astype(np.float32)
    np.testing.assert_allclose(p.clicks, expected, atol=1e-5, rtol=0)
    resized = np.asarray(Image.fromarray(it.photo).resize((64, 38), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(p.queries[0, 13:51], resized)
    assert (p.queries[0, :13] == 0).all() and (p.queries[0, 51:] == 0).all()


def test_pack_with_heading_rotates_the_clicks_north_up() -> None:
    it = _item(1, 4, heading=90.0)
    qh, qw = 64, 64
    p = pack_items([it], (qh, qw), 64)
    rot, pts = rotate_north_up(it.photo, it.clicks, 90.0)
    rh, rw = rot.shape[:2]
    h, w = it.photo.shape[:2]
    assert (rh, rw) == (w, h)
    expected = (pts * np.array([qw / rw, qh / rh])).astype(np.float32)
    np.testing.assert_array_equal(p.clicks, expected)
    # A clockwise quarter turn of an H-high photo: (x, y) -> (H - y, x).
    by_hand = np.column_stack([h - it.clicks[:, 1], it.clicks[:, 0]]) * [qw / h, qh / w]
    np.testing.assert_allclose(p.clicks, by_hand, atol=1e-4)
    q, _ = prepare_query(it.photo, it.clicks, 90.0, (qh, qw))
    np.testing.assert_array_equal(p.queries[0], np.round(q * 255).astype(np.uint8))


def test_references_of_another_size_are_resized_with_their_boxes() -> None:
    rng = np.random.default_rng(3)
    ref = _img(96, 128, 7)  # 96 rows, 128 columns
    boxes = np.array([[10.0, 12.0, 50.0, 40.0], [64.0, 0.0, 128.0, 96.0]])
    it = PackItem("big", ref, _img(48, 80, 8), rng.uniform(5, 40, (2, 2)), boxes, None, 0.3)
    p = pack_items([it], (64, 64), 64)
    sx, sy = 64 / 128, 64 / 96
    np.testing.assert_array_equal(
        p.boxes, (boxes * np.array([sx, sy, sx, sy])).astype(np.float32))
    np.testing.assert_allclose(p.boxes[1], [32.0, 0.0, 64.0, 64.0], rtol=0, atol=1e-5)
    assert p.metres_per_pixel[0] == pytest.approx(0.3 / math.sqrt(sx * sy), rel=1e-12)
    expected = np.asarray(Image.fromarray(ref).resize((64, 64), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(p.references[0], expected)
    # Unknown GSD stays unknown (NaN).
    it2 = PackItem("nogsd", ref, it.photo, it.clicks, boxes, None, None)
    assert np.isnan(pack_items([it2], (64, 64), 64).metres_per_pixel[0])


def test_batch_of_mixed_photos() -> None:
    items = [_item(0, 3), _item(1, 1), _item(2, 2)]
    p = pack_items(items, (64, 64), 64)
    assert p.counts.tolist() == [3, 1, 2]
    assert p.offsets.tolist() == [0, 3, 4]
    np.testing.assert_array_equal(p.target_slices([2, 0]), [4, 5, 0, 1, 2])
    b = p.batch([2, 0])
    assert b.reference.shape == (2, 3, 64, 64) and b.reference.dtype == torch.uint8
    assert torch.equal(b.reference, torch.from_numpy(p.references[[2, 0]]).permute(0, 3, 1, 2))
    assert torch.equal(b.query, torch.from_numpy(p.queries[[2, 0]]).permute(0, 3, 1, 2))
    assert b.batch_index.tolist() == [0, 0, 1, 1, 1]
    assert b.batch_index.dtype == torch.int64
    assert torch.equal(b.boxes, torch.from_numpy(np.concatenate([
        items[2].boxes, items[0].boxes]).astype(np.float32)))
    assert torch.equal(b.clicks, torch.from_numpy(p.clicks[[4, 5, 0, 1, 2]]))
    assert b.clicks.dtype == torch.float32 and b.boxes.dtype == torch.float32
    single = p.batch([1])
    assert single.batch_index.tolist() == [0]
    assert torch.equal(single.boxes, torch.from_numpy(items[1].boxes.astype(np.float32)))


def test_save_load_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = [_item(0, 3), _item(1, 1, mpp=None), _item(2, 2, heading=33.0)]
    p = pack_items(items, (64, 96), 64)
    path = tmp_path / "train.npz"
    p.save(path)
    seen: list[object] = []
    real_load = np.load

    def spy(*a: object, **k: object) -> object:
        seen.append(k.get("allow_pickle"))
        return real_load(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(np, "load", spy)
    back = PackedData.load(path)
    assert seen == [False]
    _assert_same(back, p)
    assert back.query_size == (64, 96)
    # concatenate puts the photos (and their targets) one after the other.
    both = PackedData.concatenate([p, back])
    assert len(both) == 6 and both.counts.tolist() == [3, 1, 2, 3, 1, 2]
    np.testing.assert_array_equal(both.boxes[6:], p.boxes)
    _assert_same(PackedData.concatenate([p]), p)


@pytest.mark.parametrize("fit", ["stretch", "letterbox"])
def test_the_query_fit_is_recorded(tmp_path: Path, fit: str) -> None:
    items = [_item(0, 2), _item(1, 1, heading=30.0)]
    p = pack_items(items, (64, 96), 64, query_fit=fit)  # type: ignore[arg-type]
    assert p.query_fit == fit
    assert p.geometry == PackGeometry(64, (64, 96), fit)  # type: ignore[arg-type]
    path = tmp_path / f"{fit}.npz"
    p.save(path)
    # Read back by plain numpy (no pickle) and by both readers of the package.
    with np.load(path, allow_pickle=False) as z:
        assert z["query_fit"].shape == () and str(z["query_fit"]) == fit
        assert z["queries"].shape == (2, 64, 96, 3) and z["references"].shape == (2, 64, 64, 3)
    back = PackedData.load(path)
    assert back.query_fit == fit
    _assert_same(back, p)
    assert read_pack_geometry(path) == PackGeometry(64, (64, 96), fit)  # type: ignore[arg-type]


def test_a_pack_without_recorded_fit_is_stretched(tmp_path: Path) -> None:
    """Packs written before the fit was recorded (only the seven arrays) were stretched."""
    p = pack_items([_item(0, 2)], (64, 64), 64)
    path = tmp_path / "old.npz"
    np.savez(path, **{f: getattr(p, f) for f in FIELDS})
    with np.load(path) as z:
        assert sorted(z.files) == sorted(FIELDS)
    back = PackedData.load(path)
    assert back.query_fit == "stretch"
    _assert_same(back, p)
    assert read_pack_geometry(path) == PackGeometry(64, (64, 64), "stretch")


def test_packs_of_other_fits_do_not_mix(tmp_path: Path) -> None:
    a = pack_items([_item(0, 2)], (64, 64), 64)
    b = pack_items([_item(1, 1)], (64, 64), 64, query_fit="letterbox")
    with pytest.raises(ValueError, match=r"different query fits \['letterbox', 'stretch'\]"):
        PackedData.concatenate([a, b])
    assert PackedData.concatenate([b, b]).query_fit == "letterbox"
    path = tmp_path / "odd.npz"
    np.savez(path, **{f: getattr(a, f) for f in FIELDS}, query_fit=np.array("crop"))
    with pytest.raises(ValueError, match="query_fit='crop'"):
        PackedData.load(path)
    with pytest.raises(ValueError, match="query_fit='crop'"):
        read_pack_geometry(path)


def test_inconsistent_or_empty_packs_are_refused() -> None:
    p = pack_items([_item(0, 2)], (64, 64), 64)
    with pytest.raises(ValueError, match="counts"):
        PackedData(p.ids, p.references, p.queries, p.clicks, p.boxes, p.counts + 1,
                   p.metres_per_pixel)
    with pytest.raises(ValueError, match="no photos"):
        pack_items([], (64, 64), 64)


def test_pack_manifest(tmp_path: Path) -> None:
    root = tmp_path / "set"
    (root / "q").mkdir(parents=True)
    (root / "r").mkdir()
    specs = [
        # id, split, reference size, georef transform, heading, targets
        ("a", "train", 64, (0.5, 0.0, 500.0, 0.0, -0.5, 900.0), None, 2),
        ("b", "val", 64, None, 90.0, 1),
        ("c", "train", 128, (0.3, 0.4, 0.0, 0.4, -0.3, 0.0), 45.0, 3),
    ]
    records, items = [], []
    for k, (rid, split, rs, transform, heading, m) in enumerate(specs):
        ref, photo = _img(rs, rs, 10 + k), _img(48, 80, 20 + k)
        Image.fromarray(ref).save(root / "r" / f"{rid}.png")
        Image.fromarray(photo).save(root / "q" / f"{rid}.jpg", quality=90)
        decoded = np.asarray(Image.open(root / "q" / f"{rid}.jpg").convert("RGB"))
        it = _item(k, m, ref_size=rs)
        records.append(Record(
            id=rid, query=root / "q" / f"{rid}.jpg", reference=root / "r" / f"{rid}.png",
            clicks=tuple((float(x), float(y)) for x, y in it.clicks),
            boxes=tuple(tuple(float(v) for v in b) for b in it.boxes),  # type: ignore[misc]
            georef=None if transform is None else Georef("EPSG:32631", transform),
            split=split, meta={} if heading is None else {"heading": heading}))
        mpp = None if transform is None else math.sqrt(abs(
            transform[0] * transform[4] - transform[1] * transform[3]))
        items.append(PackItem(rid, ref, decoded, np.asarray(records[-1].clicks),
                              np.asarray(records[-1].boxes), heading, mpp))
    manifest = root / "manifest.jsonl"
    write_manifest(manifest, records)

    everything = pack_manifest(manifest, None, (64, 64), 64)
    _assert_same(everything, pack_items(items, (64, 64), 64))
    assert everything.ids.tolist() == ["a", "b", "c"]
    assert everything.metres_per_pixel[0] == 0.5
    assert np.isnan(everything.metres_per_pixel[1])
    # c: |a e - b d| = |-0.09 - 0.16| = 0.25 -> 0.5 m, then the 128 -> 64 px resize doubles it.
    assert everything.metres_per_pixel[2] == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(everything.boxes[3:], np.asarray(records[2].boxes) / 2,
                               atol=1e-5)
    train = pack_manifest(manifest, "train", (64, 64), 64)
    _assert_same(train, pack_items([items[0], items[2]], (64, 64), 64))
    with pytest.raises(ValueError, match="no records for split 'test'"):
        pack_manifest(manifest, "test", (64, 64), 64)


@pytest.fixture(scope="module")
def small_world() -> tuple[World, SynthConfig]:
    scene, _ = _blocks()
    cfg = SynthConfig(reference_size=96, camera=SMALL, targets=(1, 3))
    return World.build(scene, cfg), cfg


def test_generate_packs_the_same_in_parallel(small_world: tuple[World, SynthConfig]) -> None:
    world, cfg = small_world
    serial = generate([world], 4, seed=5, cfg=cfg, quiet=True, post=Sample.pack_item,
                      prefix="s-")
    parallel = generate([world], 4, seed=5, cfg=cfg, quiet=True, post=Sample.pack_item,
                        prefix="s-", workers=2)
    assert all(isinstance(x, PackItem) for x in serial + parallel)
    a = pack_items(serial, (64, 64), 64)
    b = pack_items(parallel, (64, 64), 64)
    _assert_same(a, b)
    assert a.ids.tolist() == [f"s-{i:06d}" for i in range(4)]
    assert ((a.counts >= 1) & (a.counts <= 3)).all()
    # Georeferenced scene: the GSD is the reference's, scaled by the 96 -> 64 px resize.
    np.testing.assert_allclose(a.metres_per_pixel, cfg.gsd * 96 / 64, rtol=1e-12)
    # pack_item is the sample as rendered: decoded JPEG, clicks, boxes and heading.
    s = generate([world], 1, seed=5, cfg=cfg, quiet=True, prefix="s-")[0]
    it = serial[0]
    np.testing.assert_array_equal(it.photo, s.photo())
    np.testing.assert_array_equal(it.clicks, s.clicks)
    np.testing.assert_array_equal(it.boxes, s.boxes)
    np.testing.assert_array_equal(it.reference, s.reference)
    assert it.heading == s.heading and it.metres_per_pixel == cfg.gsd
