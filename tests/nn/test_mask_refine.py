"""The mask refiner: the box of the component under the click, views mapped back, samples
from footprints, learning, checkpoints, and the mean of several refiners."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from nn_fixtures import rectangle_pack, refined_ious

from geomogeo.engine.checkpoint import load_checkpoint, load_refiner, save_checkpoint
from geomogeo.engine.refine_train import (
    MaskSamples,
    RefinerTrainConfig,
    mask_samples,
    train_mask_refiner,
)
from geomogeo.errors import CheckpointError
from geomogeo.localize import default_refiners, open_refiner
from geomogeo.nn.mask_refine import MaskRefiner, MaskRefinerConfig, TorchMaskRefiner, mask_box
from geomogeo.nn.refine import BoxRefiner, RefinerConfig, TorchRefiner
from geomogeo.predictor import MeanRefiner


def test_mask_box_is_the_envelope_of_the_component_under_the_centre() -> None:
    p = np.zeros((3, 32, 32))
    p[0, 10:20, 12:25] = 0.9  # under the centre (16, 16): box (12, 10, 25, 20)
    p[0, 2:6, 2:30] = 0.9  # another object, not touching it
    p[0, 20:22, 24:26] = 0.4  # below the threshold
    p[1, 15:17, 17:31] = 0.8  # touches the central 6 x 6 window (x 13..18) on its right
    p[1, 13:15, 10:14] = 0.8  # and so does a smaller piece on its left: the larger wins
    assert mask_box(p).tolist() == [[12, 10, 25, 20], [17, 15, 31, 17], [12, 12, 20, 20]]
    # (the third map is empty: the 8 x 8 square around the centre)


def test_mask_box_splits_components_by_4_connectivity() -> None:
    p = np.zeros((1, 32, 32))
    p[0, 12:20, 12:20] = 1.0
    p[0, 20:26, 20:28] = 1.0  # touches the first only at a corner
    assert mask_box(p).tolist() == [[12, 12, 20, 20]]


def test_config_validation_and_shapes() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        MaskRefinerConfig(crop_size=36)
    with pytest.raises(ValueError, match="threshold"):
        MaskRefinerConfig(threshold=1.0)
    with pytest.raises(ValueError, match="unknown fields"):
        MaskRefinerConfig.from_dict({"crop_size": 64, "depth": 3})
    model = MaskRefiner(MaskRefinerConfig(crop_size=32, width=4)).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 32, 32)
    # the click channel peaks on the four pixels around the crop centre (16, 16)
    click = model.click[0, 0]
    assert click[15:17, 15:17].min() == click.max() == pytest.approx(np.exp(-0.5**2 / 4))


class _Bright(MaskRefiner):
    """Paints every bright pixel (first input channel above its mean): equivariant under
    turns and mirrors, so all 8 views must agree once mapped back."""

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.where(crops[:, 0] > 0, 10.0, -10.0)


@pytest.mark.parametrize("tta", [False, True])
def test_views_are_mapped_back_to_the_crop(tta: bool) -> None:
    ref = np.zeros((100, 120, 3), np.float32)
    ref[30:42, 50:71] = 0.8  # the object: box (50, 30, 71, 42), off-centre from the click
    ref[60:64, 10:30] = 0.8  # another one
    runner = TorchMaskRefiner(_Bright(MaskRefinerConfig(crop_size=32)), name="b", sha256="",
                              tta=tta)
    got = runner.refine(ref, np.array([[55.3, 33.8], [20.0, 61.7]]))
    assert got.tolist() == [[50, 30, 71, 42], [10, 60, 30, 64]]
    assert runner.refine(ref, np.zeros((0, 2))).shape == (0, 4)


def test_mask_samples_rasterise_the_footprint_coverage() -> None:
    # a 1 m reference of 80 x 60 px whose top-left corner is at (1000, 2000) m
    image = np.full((60, 80, 3), 50, np.uint8)
    ref = SimpleNamespace(image=image, map_to_pixel=lambda x, y: (x - 1000.0, 2000.0 - y))
    square = np.array([[1020.5, 1990.0], [1040.5, 1990.0], [1040.5, 1970.0], [1020.5, 1970.0]])
    small = square / 100.0 + [990, 1960]  # 0.04 m^2: below the floor
    off = square + np.array([50.0, 0.0])  # reaches beyond the reference's right edge
    world = SimpleNamespace(reference=ref,
                            structures=SimpleNamespace(footprints=(square, small, off)),
                            objects=SimpleNamespace(hulls=(square - [10.0, -5.0],)))
    s = mask_samples([world], window=48, min_area_m2=150.0)
    assert len(s) == 2 and s.owner.tolist() == [0, 0]
    # columns 20.5..40.5, rows 10..30; the hull: columns 10.5..30.5, rows 5..25
    assert s.boxes.tolist() == [[20.5, 10.0, 40.5, 30.0], [10.5, 5.0, 30.5, 25.0]]
    # windows centred on the box centres (30.5, 20) and (20.5, 15): origins floor(c + 0.5) - 24
    assert s.origins.tolist() == [[7, -4], [-3, -9]]
    m = s.masks[0].astype(np.float64)
    assert m.sum() / 255.0 == pytest.approx(400.0, abs=0.5)  # the footprint's area, m^2
    rows = slice(10 + 4, 30 + 4)
    assert (m[rows, 21 - 7:40 - 7] == 255).all()  # wholly covered pixels
    assert np.allclose(m[rows, 20 - 7], 128) and np.allclose(m[rows, 40 - 7], 128)  # halves
    assert m[:14].sum() == m[34:].sum() == 0
    # crops without offsets: the masks centred on the crop as the box on the reference
    crops, masks = s.crops(32, 0.0, np.random.default_rng(0))
    assert crops.shape == (2, 32, 32, 3) and masks.shape == (2, 32, 32)
    # crop 0 starts at (31 - 16, 20 - 16) = (15, 4): footprint columns 5.5..25.5, rows 6..26
    assert (masks[0][6:26, 6:25] == 255).all() and masks[0][:6].sum() == 0
    assert np.array_equal(crops[0], image[4:36, 15:47])


def _rectangle_samples(pack: object) -> MaskSamples:
    """:func:`rectangle_pack`'s photos as mask samples (their target rectangles' masks)."""
    refs = list(pack.references)  # type: ignore[attr-defined]
    boxes = pack.boxes.astype(np.float64)  # type: ignore[attr-defined]
    side = refs[0].shape[0]
    masks = np.zeros((len(refs), side, side), np.uint8)
    for m, (x0, y0, x1, y1) in zip(masks, boxes.astype(int), strict=True):
        m[y0:y1, x0:x1] = 255
    # windows the size of the reference, at its origin (the box centres are near its middle)
    return MaskSamples(refs, np.arange(len(refs)), boxes, masks, np.zeros((len(refs), 2), int))


def test_the_mask_refiner_learns_to_box_rectangles(tmp_path: Path, threads: int) -> None:
    out = tmp_path / "mask.pt"
    train = _rectangle_samples(rectangle_pack(400, 0))
    hist = train_mask_refiner(train, [rectangle_pack(60, 1), rectangle_pack(20, 4)], out,
                              config=MaskRefinerConfig(crop_size=32, width=8),
                              train_config=RefinerTrainConfig(epochs=5, batch_size=16, lr=3e-3,
                                                              jitter_px=1.0), quiet=True)
    assert len(hist["epochs"]) == 5
    for row in hist["epochs"]:
        assert row["val_mean_iou"] == pytest.approx(np.mean(row["val_pack_mean_iou"]), abs=1e-12)
    loaded = load_refiner(out, expected_sha256=hist["sha256"])
    assert isinstance(loaded.model, MaskRefiner)
    assert loaded.metrics is not None and loaded.metrics["epoch"] == hist["best_epoch"]
    assert loaded.raw["kind"] == "mask-refiner"
    ref = TorchMaskRefiner(loaded.model, name="m", sha256=loaded.sha256)
    iou = refined_ious(ref, rectangle_pack(40, 2), seed=3)
    assert np.median(iou) > 0.9 and (iou > 0.5).mean() > 0.95


def test_mask_refiner_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MaskRefiner(MaskRefinerConfig(crop_size=32, width=4)).eval()
    path = tmp_path / "m.pt"
    digest = save_checkpoint(path, model)
    loaded = load_refiner(path, expected_sha256=digest)
    assert loaded.model_config == model.config
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    assert "click" not in loaded.raw["state_dict"]  # rebuilt from the configuration
    with pytest.raises(CheckpointError, match="a 'mask-refiner' checkpoint, not a 'network'"):
        load_checkpoint(path)


class _Fixed:
    def __init__(self, boxes: list[list[float]], gsd: float = 1.0, name: str = "f") -> None:
        self.boxes, self.gsd, self.name, self.sha256 = np.array(boxes), gsd, name, name * 3

    def refine(self, reference: np.ndarray, points: np.ndarray) -> np.ndarray:
        return self.boxes


def test_mean_refiner_averages_centres_and_sizes_geometrically() -> None:
    a = _Fixed([[0, 0, 4, 4], [10, 10, 20, 30]], name="a")
    b = _Fixed([[2, 2, 18, 18], [10, 10, 20, 30]], name="b")
    mean = MeanRefiner([a, b])
    # centres (2, 2) and (10, 10) -> (6, 6); sides 4 and 16 -> sqrt(64) = 8
    got = mean.refine(np.zeros((4, 4, 3)), np.zeros((2, 2)))
    assert np.allclose(got, [[2, 2, 10, 10], [10, 10, 20, 30]], atol=1e-12)
    assert (mean.name, mean.sha256, mean.gsd) == ("a+b", "aaa+bbb", 1.0)
    with pytest.raises(ValueError, match="different GSDs"):
        MeanRefiner([a, _Fixed([[0, 0, 1, 1]], gsd=0.5)])


def test_open_refiner_averages_several_checkpoints(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    paths = [tmp_path / "box.pt", tmp_path / "mask.pt", tmp_path / "box_05.pt"]
    digests = [save_checkpoint(p, m) for p, m in zip(paths, [
        BoxRefiner(RefinerConfig(crop_size=32, width=4)),
        MaskRefiner(MaskRefinerConfig(crop_size=32, width=4)),
        BoxRefiner(RefinerConfig(crop_size=32, width=4, gsd=0.5))], strict=True)]
    mean = open_refiner(paths[:2])
    assert isinstance(mean, MeanRefiner) and mean.sha256 == f"{digests[0]}+{digests[1]}"
    assert [type(m) for m in mean.members] == [TorchRefiner, TorchMaskRefiner]
    assert all(m.tta for m in mean.members)  # each with its 8 views
    assert isinstance(open_refiner(paths[1]), TorchMaskRefiner)
    monkeypatch.setenv("GEOMOGEO_REFINER", os.pathsep.join(map(str, paths[:2])))
    assert default_refiners() == [(paths[0], ""), (paths[1], "")]
    assert open_refiner().sha256 == mean.sha256
    with pytest.raises(CheckpointError, match=r"box_05\.pt.*different GSDs"):
        open_refiner([paths[0], paths[2]])


def test_train_mask_refiner_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/train_mask_refiner.py: the tiles of Rotterdam a as they are (their digitized
    footprints as structures) and their copies (blobs only), no other tile; a run records
    its data in the checkpoint."""
    from test_refine import _script

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "scripts"))
    script = _script("train_mask_refiner")
    worlds = script.training_worlds([], 0, 0)
    names = [w.scene.name for w in worlds]
    tiles = ["rotterdam_pan_0p5m_a", "rotterdam_rgbn_1m_a"]
    assert names[:2] == tiles  # as they are, then 7 turns/mirrors and 2 rotations of each
    assert len(names) == 2 * (1 + 7 + script.ROTATIONS) == len(set(names))
    assert all(n.split("~")[0] in tiles and "~" in n and not n.endswith("~r0")
               for n in names[2:])
    # a short run on one suburb (the worlds replaced, for time)
    from train_refiner import PARALLAX

    from geomogeo.data.synth.engine import build_worlds

    script.training_worlds = lambda seeds, towns, suburbs: build_worlds(
        [], PARALLAX, augment=False, seed=seeds[0], suburbs=suburbs)
    val = tmp_path / "val.npz"
    rectangle_pack(8, 1, size=96).save(val)
    out = tmp_path / "m.pt"
    assert script.main(["--val", str(val), "--world-seed", "5", "--towns", "0", "--suburbs",
                        "1", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    ck = load_refiner(out)
    assert isinstance(ck.model, MaskRefiner) and ck.model_config == MaskRefinerConfig()
    rec = ck.train_config
    assert (rec["world_seeds"], rec["towns"], rec["suburbs"]) == ([5], 0, 1)
    assert rec["val_packs"] == [str(val)] and rec["targets"] > 10 and rec["batch_size"] == 32
