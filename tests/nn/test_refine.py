"""The box refiner: crop geometry, box transforms, equivariance, learning, checkpoints."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from nn_fixtures import rectangle_pack, refined_ious

from geomogeo.data.dataset import PackedData
from geomogeo.engine.checkpoint import load_checkpoint, load_refiner, save_checkpoint
from geomogeo.engine.refine_train import (
    RefinerTrainConfig,
    refiner_samples,
    train_refiner,
)
from geomogeo.errors import CheckpointError
from geomogeo.joint import JointConfig
from geomogeo.nn.refine import (
    BoxRefiner,
    RefinerConfig,
    TorchRefiner,
    crop_around,
    decode_boxes,
    dihedral_boxes,
    encode_boxes,
)
from geomogeo.predictor import refine_boxes


def test_crop_around_places_the_point_at_the_crop_centre_and_pads_with_zeros() -> None:
    img = np.arange(40 * 50 * 3, dtype=np.int64).reshape(40, 50, 3)
    crops, origins = crop_around(img, np.array([[20.4, 10.6], [2.0, 39.0]]), 16)
    # floor(x + 0.5) - 8: (20 - 8, 11 - 8) and (2 - 8, 39 - 8)
    assert origins.tolist() == [[12, 3], [-6, 31]]
    assert np.array_equal(crops[0], img[3:19, 12:28])
    # the second crop: columns -6..9, rows 31..46; only columns 0..9 and rows 31..39 exist
    assert np.array_equal(crops[1][:9, 6:], img[31:40, 0:10])
    assert not crops[1][:, :6].any() and not crops[1][9:].any()


def test_encode_decode_round_trip() -> None:
    boxes = np.array([[10.0, 12.0, 30.5, 20.0], [0.0, -4.0, 64.0, 70.0]])
    out = decode_boxes(encode_boxes(boxes, 64), 64)
    assert np.allclose(out, boxes, atol=1e-4)
    # centre offset in units of 8 px from the crop centre, log size in pixels
    assert np.allclose(encode_boxes(boxes, 64)[0], [(20.25 - 32) / 8, (16 - 32) / 8,
                                                  np.log(20.5), np.log(8.0)], atol=1e-6)


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_dihedral_boxes_follow_the_image(k: int, mirror: bool) -> None:
    size = 32
    mask = np.zeros((size, size), bool)
    mask[5:12, 20:29] = True  # rows y 5..11, columns x 20..28: box (20, 5, 29, 12)
    img = mask[:, ::-1] if mirror else mask
    img = np.rot90(img, k)
    ys, xs = np.nonzero(img)
    truth = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    got = dihedral_boxes(np.array([[20.0, 5.0, 29.0, 12.0]]), size, k, mirror)[0]
    assert got.tolist() == truth
    # undoing: turn back, then mirror back
    back = dihedral_boxes(dihedral_boxes(got[None], size, -k, False), size, 0, mirror)
    assert back[0].tolist() == [20.0, 5.0, 29.0, 12.0]


def test_refine_with_tta_is_equivariant_to_turns_and_mirrors() -> None:
    """The 8-view average makes the refiner's answer turn with the image, for any weights."""
    torch.manual_seed(3)
    model = BoxRefiner(RefinerConfig(crop_size=32, width=8)).eval()
    ref = TorchRefiner(model, name="t", sha256="", tta=True)
    rng = np.random.default_rng(0)
    img = rng.random((96, 96, 3)).astype(np.float32)
    pts = np.array([[40.0, 50.0], [30.0, 61.0]])  # pixel corners: crops are exact
    base = ref.refine(img, pts)
    w = img.shape[1]
    turned = ref.refine(np.ascontiguousarray(np.rot90(img)),
                        np.stack([pts[:, 1], w - pts[:, 0]], 1))
    expect = np.stack([base[:, 1], w - base[:, 2], base[:, 3], w - base[:, 0]], 1)
    assert np.allclose(turned, expect, atol=1e-3)
    mirrored = ref.refine(np.ascontiguousarray(img[:, ::-1]),
                          np.stack([w - pts[:, 0], pts[:, 1]], 1))
    expect = np.stack([w - base[:, 2], base[:, 1], w - base[:, 0], base[:, 3]], 1)
    assert np.allclose(mirrored, expect, atol=1e-3)


def test_the_refiner_learns_to_boxrectangle_pack(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "refiner.pt"
    val = [rectangle_pack(100, 1), rectangle_pack(20, 4)]
    hist = train_refiner([rectangle_pack(1500, 0)], val, out,
                         config=RefinerConfig(crop_size=32, width=8),
                         train_config=RefinerTrainConfig(epochs=4, batch_size=32, lr=3e-3,
                                                         jitter_px=1.0), quiet=True)
    assert len(hist["epochs"]) == 4
    # Selection weighs each validation pack's mean IoU equally, whatever its size.
    for row in hist["epochs"]:
        assert len(row["val_pack_mean_iou"]) == 2
        assert row["val_mean_iou"] == pytest.approx(np.mean(row["val_pack_mean_iou"]), abs=1e-12)
    assert hist["best_epoch"] == 1 + int(np.argmax([r["val_mean_iou"] for r in hist["epochs"]]))
    loaded = load_refiner(out, expected_sha256=hist["sha256"])
    assert isinstance(loaded.model, BoxRefiner)
    assert loaded.metrics is not None
    assert loaded.metrics["epoch"] == hist["best_epoch"]
    ref = TorchRefiner(loaded.model, name="r", sha256=loaded.sha256)
    iou = refined_ious(ref, rectangle_pack(60, 2), seed=3)
    assert np.median(iou) > 0.7 and (iou > 0.5).mean() > 0.8


def _one_square(x0: int, y0: int, side: int, size: int = 96) -> PackedData:
    """One photo whose reference is black but for a white square (the target)."""
    ref = np.zeros((1, size, size, 3), np.uint8)
    ref[0, y0:y0 + side, x0:x0 + side] = 255
    return PackedData(ids=np.array(["sq"]), references=ref,
                      queries=np.zeros((1, 4, 4, 3), np.uint8), clicks=np.zeros((1, 2), np.float32),
                      boxes=np.array([[x0, y0, x0 + side, y0 + side]], np.float32),
                      counts=np.ones(1, np.int64), metres_per_pixel=np.full(1, np.nan))


def test_samples_are_plain_crops_around_the_box_centre() -> None:
    pack = _one_square(30, 34, 20)
    crops, boxes = refiner_samples(pack, 32, 0.0, np.random.default_rng(0))
    # the crop around the pixel corner (40, 44) starts at (24, 28)
    assert boxes[0].tolist() == [6.0, 6.0, 26.0, 26.0]
    assert np.array_equal(crops[0], pack.references[0, 28:60, 24:56])


def test_refiner_checkpoints_have_their_own_kind(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = BoxRefiner(RefinerConfig(crop_size=32, width=4))
    path = tmp_path / "r.pt"
    digest = save_checkpoint(path, model)
    loaded = load_refiner(path, expected_sha256=digest)
    assert loaded.model_config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="a 'box-refiner' checkpoint, not a 'network'"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="sha256"):
        load_refiner(path, expected_sha256="0" * 64)


def test_the_shipped_refiners_are_not_networks() -> None:
    from geomogeo.localize import default_checkpoint, default_refiners

    with pytest.raises(CheckpointError, match="not a 'box-refiner' or 'mask-refiner' one"):
        load_refiner(default_checkpoint()[0])
    for path, digest in default_refiners():
        loaded = load_refiner(path, expected_sha256=digest)
        assert loaded.model_config.gsd == 1.0
        assert path.stat().st_size <= 25 * 1024 * 1024
        assert digest in (path.parent / "MODEL_CARD.md").read_text(encoding="utf-8")
        # trained and selected without the held-out city: its packs' recorded tiles
        rec = loaded.train_config
        settings = rec["pack_settings"]
        tiles = [t for s in settings.values() for t in s["tiles"]]
        assert tiles and not any("las_vegas" in t for t in tiles)
        assert all(s["holdout"] == "las_vegas" for s in settings.values())
        if isinstance(loaded.model, BoxRefiner):
            assert len(settings) == 2 and len(tiles) == 6
            # ... and its digitized-footprint packs' tiles (Rotterdam a to train, c to select)
            fp_tiles = [t for split in rec["footprint_tiles"].values() for t, _ in split]
        else:  # a mask refiner: the worlds of Rotterdam a's tiles and procedural towns
            fp_tiles = [t for t, _ in rec["footprint_tiles"]]
        assert fp_tiles and all(t.startswith("rotterdam_") for t in fp_tiles)


def _script(name: str) -> Any:
    """A module of ``scripts/`` (not a package), loaded from its file."""
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[2] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_train_refiner_script_renders_footprint_and_suburb_packs_once(tmp_path: Path) -> None:
    """scripts/train_refiner.py: the suburb and footprint packs are rendered when missing (the
    photo counts asked, for the light16 network's inputs), reused when present, and the
    checkpoint records which packs and tiles trained and selected it."""
    torch.set_num_threads(1)
    script = _script("train_refiner")
    train = tmp_path / "rect.npz"
    rectangle_pack(64, 0).save(train)
    sub, fpv, out = tmp_path / "sub.npz", tmp_path / "fp_val.npz", tmp_path / "r.pt"
    argv = ["--train", str(train), "--suburb-train", str(sub), "--suburbs", "1",
            "--suburb-photos", "3", "--footprint-val", str(fpv), "--footprint-photos", "6",
            "--epochs", "1", "--batch", "16", "--quiet"]
    assert script.main([*argv, "--out", str(out)]) == 0
    packs = {p: PackedData.load(p) for p in (sub, fpv)}
    assert [len(packs[sub]), len(packs[fpv])] == [3, 2]  # footprint-photos // 3 for selection
    for pack in packs.values():  # the light16 network's inputs, one box per target
        assert pack.references.shape[1:3] == (256, 256) and pack.queries.shape[1:3] == (320, 320)
        assert pack.query_fit == "letterbox" and len(pack.boxes) == pack.counts.sum()
    ck = load_refiner(out)
    rec = ck.train_config
    assert rec["train_packs"] == [str(train), str(sub)] and rec["val_packs"] == [str(fpv)]
    assert [t[0] for t in rec["footprint_tiles"]["val"]] == ["rotterdam_pan_0p5m_c.tif",
                                                            "rotterdam_rgbn_1m_c.tif"]
    assert (rec["suburbs"], rec["suburb_photos"]) == (1, 3)
    stamps = {p: p.stat().st_mtime_ns for p in (sub, fpv)}
    assert script.main([*argv, "--out", str(tmp_path / "r2.pt")]) == 0
    assert {p: p.stat().st_mtime_ns for p in (sub, fpv)} == stamps  # reused, not rendered


def test_eval_refiner_crops_boxes_a_tile_s_footprints_at_the_refiner_gsd() -> None:
    """scripts/eval_refiner_crops.py on a tile: the tile at 1 m and the envelopes of its
    digitized footprints of >= 150 m^2 in that image's pixels, checked against the GeoJSON
    projected with pyproj and placed with rasterio's bounds (the scene is the raster's extent
    rounded up to whole pixels, centred on the raster: 1 m pixels from its top-left corner)."""
    import json

    import rasterio
    import shapely
    from pyproj import Transformer
    from shapely.geometry import Polygon

    root = Path(__file__).resolve().parents[2]
    tile = root / "sample_tiles" / "rotterdam_pan_0p5m_c.tif"
    image, boxes = _script("eval_refiner_crops").footprint_crops(tile, 1.0, 150.0)
    with rasterio.open(tile) as ds:
        crs, b = ds.crs, ds.bounds
    side = 2 * np.ceil((b.right - b.left) / 1.0 / 2)  # 299.996 m -> 300 px
    left, top = (b.left + b.right - side) / 2, (b.bottom + b.top + side) / 2
    assert image.shape == (side, side, 3) and image.dtype == np.float32 and image.max() <= 1.0
    to_utm = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    gj = json.loads((root / "geomogeo" / "data" / "footprints" / f"{tile.stem}.geojson")
                    .read_text(encoding="utf-8"))
    want = []
    for f in gj["features"]:
        xs, ys = to_utm.transform(*np.array(f["geometry"]["coordinates"][0]).T)
        poly = Polygon(zip(xs, ys, strict=True))
        assert shapely.is_valid(poly)
        if poly.area >= 150.0:
            x0, y0, x1, y1 = poly.bounds
            want.append([x0 - left, top - y1, x1 - left, top - y0])
    assert len(want) == 12  # of the 15 footprints, 3 are smaller
    assert np.allclose(np.sort(boxes, axis=0), np.sort(np.array(want), axis=0), atol=1e-6)


class _HalfwayRefiner:
    """Boxes a 10 px square whose centre lies halfway from the point to the object at
    (40, 30): a refiner that is better the closer it looks."""

    name, sha256, gsd = "halfway", "", 1.0

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []

    def refine(self, reference: np.ndarray, points: np.ndarray) -> np.ndarray:
        self.calls.append(np.array(points, dtype=np.float64))
        c = (np.asarray(points, dtype=np.float64) + np.array([40.0, 30.0])) / 2
        return np.hstack([c - 5.0, c + 5.0])


def test_refine_boxes_looks_again_around_each_box_centre() -> None:
    ref = _HalfwayRefiner()
    image = np.zeros((64, 64, 3), np.float32)
    boxes = refine_boxes(ref, image, np.array([[8.0, 14.0], [40.0, 30.0]]), passes=3)
    # point (8, 14) -> centres 24, 32, 36 in x and 22, 26, 28 in y; (40, 30) stays put
    assert [c.tolist() for c in ref.calls] == [[[8, 14], [40, 30]], [[24, 22], [40, 30]],
                                               [[32, 26], [40, 30]]]
    assert boxes.tolist() == [[31.0, 23.0, 41.0, 33.0], [35.0, 25.0, 45.0, 35.0]]
    assert refine_boxes(ref, image, np.array([[8.0, 14.0]])).tolist() == [[19, 17, 29, 27]]
    with pytest.raises(ValueError, match="passes=0"):
        refine_boxes(ref, image, np.array([[8.0, 14.0]]), passes=0)
    with pytest.raises(ValueError, match="refine_passes must be >= 1"):
        JointConfig(refine_passes=0)
