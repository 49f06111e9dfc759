"""The training loop end to end on tiny models: run folder contents, k-means anchors, best
checkpoint selection, determinism, exact resume, the loss at initialisation, evaluation."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from geomogeo.data.anchors import kmeans_anchors
from geomogeo.data.dataset import PackedData, PackItem, pack_items, pack_manifest
from geomogeo.data.manifest import Georef, Record, write_manifest
from geomogeo.engine import train as train_mod
from geomogeo.engine.checkpoint import load_checkpoint
from geomogeo.engine.config import DataConfig, ModelSpec, OptimConfig, TrainConfig
from geomogeo.engine.metrics import PhotoEval, evaluate_boxes, metrics_markdown
from geomogeo.engine.train import CSV_FIELDS, predict_boxes, train, train_from_file
from geomogeo.errors import ConfigError

#: The tiny network: 64 px reference (a 4 x 4 grid), 64 px query, width 1/8, 32-d embeddings.
TINY = {"reference_size": 64, "query_size": [64, 64], "width": 0.125, "embed_dim": 32}
EPOCHS = 3


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Any:
    """One thread for every run, module fixtures included: float sums in another order (more
    threads) would give other bits, and the runs here are compared bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _items(n: int, seed: int) -> list[PackItem]:
    """Flat-coloured rectangles on dark noise; the photo is the reference (an aligned view),
    each target clicked at its centre."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = rng.integers(0, 50, (64, 64, 3)).astype(np.uint8)
        boxes = []
        for _ in range(int(rng.integers(1, 4))):
            w, h = (int(v) for v in rng.integers(8, 24, 2))
            x, y = (int(v) for v in rng.integers(0, 64 - 24, 2))
            img[y:y + h, x:x + w] = rng.integers(60, 256, 3)
            boxes.append([x, y, x + w, y + h])
        b = np.array(boxes, np.float64)
        out.append(PackItem(f"s{seed}-{i}", img, img.copy(), (b[:, :2] + b[:, 2:]) / 2, b,
                            None, 0.5))
    return out


@pytest.fixture(scope="module")
def data() -> tuple[PackedData, PackedData]:
    return pack_items(_items(8, 0), (64, 64), 64), pack_items(_items(4, 1), (64, 64), 64)


def _config(out_dir: Path, **kw: Any) -> TrainConfig:
    optim = OptimConfig(lr=1e-3, batch_size=4, epochs=kw.pop("epochs", EPOCHS),
                        lr_steps=(1, 2), gamma=0.5)
    base: dict[str, Any] = dict(
        model=ModelSpec(preset="light", anchors="kmeans", overrides=dict(TINY)),
        data=DataConfig(packed_train="unused.npz"), optim=optim, out_dir=str(out_dir),
        device="cpu", seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, data: tuple[PackedData, PackedData]
        ) -> tuple[Path, Any]:
    """A 3-epoch run from a JSON file whose packed data paths are relative to it."""
    root = tmp_path_factory.mktemp("train")
    tr, va = data
    (root / "packed").mkdir()
    tr.save(root / "packed" / "train.npz")
    va.save(root / "packed" / "val.npz")
    cfg = _config(root / "run").to_dict()
    cfg["data"] = {"packed_train": "packed/train.npz", "packed_val": "packed/val.npz"}
    cfg["model"] = {"preset": "light", "anchors": "kmeans", **TINY}  # flat model keys
    path = root / "cfg.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    result = train_from_file(path, quiet=True)
    return root / "run", result


def test_run_folder(run: tuple[Path, Any]) -> None:
    folder, result = run
    assert result.best_checkpoint == folder / "best.pt" and result.best_checkpoint.is_file()
    assert result.last_checkpoint == folder / "last.pt" and result.last_checkpoint.is_file()
    rows = _rows(folder)
    assert len(rows) == EPOCHS
    assert tuple(rows[0]) == CSV_FIELDS
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [int(r["step"]) for r in rows] == [2, 4, 6]  # 8 photos, batches of 4
    # lr after each epoch: decayed x0.5 after epochs 1 and 2.
    assert [float(r["lr"]) for r in rows] == pytest.approx([5e-4, 2.5e-4, 2.5e-4], rel=1e-12)
    for r, h in zip(rows, result.history, strict=True):
        for k in CSV_FIELDS:
            assert r[k] != "", k
            assert float(r[k]) == h[k], k  # the csv holds the exact floats
        assert math.isfinite(float(r["loss"]))
        assert float(r["loss"]) == pytest.approx(float(r["cn"]) + float(r["reg"])
                                                 + float(r["s"]), rel=1e-6)
        assert 0.0 <= float(r["val_mean_iou"]) <= 1.0
    saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert saved["optim"]["epochs"] == EPOCHS and saved["seed"] == 3
    assert saved["data"]["packed_train"].endswith("packed/train.npz")
    assert Path(saved["data"]["packed_train"]).is_absolute()


def test_best_checkpoint(run: tuple[Path, Any], data: tuple[PackedData, PackedData]) -> None:
    folder, result = run
    tr, va = data
    ck = load_checkpoint(folder / "best.pt")
    wh = (tr.boxes[:, 2:] - tr.boxes[:, :2]).astype(np.float64)
    expected = kmeans_anchors(wh, 9, seed=3)
    np.testing.assert_allclose(np.array(ck.model_config.anchors), expected, rtol=0, atol=1e-5)
    assert torch.allclose(ck.model.anchors, torch.tensor(expected, dtype=torch.float32),
                          rtol=0, atol=1e-5)
    assert ck.model_config.reference_size == 64 and ck.model_config.query_size == (64, 64)
    assert ck.model_config.width == 0.125 and ck.model_config.embed_dim == 32
    assert ck.train_config is not None and ck.train_config["seed"] == 3
    # fp16 weights; last.pt keeps fp32 and the state to resume.
    assert ck.raw["state_dict"]["head.out.weight"].dtype == torch.float16
    last = torch.load(folder / "last.pt", weights_only=True)
    assert last["state_dict"]["head.out.weight"].dtype == torch.float32
    assert {"optimizer", "scheduler", "progress"} <= set(last)
    assert json.loads(last["progress"])["epoch"] == EPOCHS - 1
    # The best epoch: highest val acc@0.5, ties broken by mean IoU, the first one on full ties.
    rows = _rows(folder)
    key = [(float(r["val_acc@0.5"]), float(r["val_mean_iou"])) for r in rows]
    best = max(range(len(rows)), key=lambda i: (key[i], -i))
    m = ck.metrics
    assert m is not None and m["epoch"] == best + 1 and m["step"] == int(rows[best]["step"])
    a = m["val"]["all"]
    r = rows[best]
    assert a["acc@0.25"] == float(r["val_acc@0.25"])
    assert a["acc@0.5"] == float(r["val_acc@0.5"])
    assert a["accI@0.5"] == float(r["val_accI@0.5"])
    assert a["mean_iou"] == float(r["val_mean_iou"])
    assert a["photos"] == len(va) and a["targets"] == int(va.counts.sum())
    assert result.best_metrics == m["val"]
    if best == EPOCHS - 1:  # best.pt is last.pt's weights rounded to fp16
        for k, v in last["state_dict"].items():
            if v.is_floating_point() and k != "anchors":
                assert torch.equal(ck.raw["state_dict"][k], v.half()), k


def test_same_seed_same_weights(tmp_path: Path, run: tuple[Path, Any],
                                data: tuple[PackedData, PackedData]) -> None:
    folder, _ = run
    tr, va = data
    train(_config(tmp_path / "again"), quiet=True, train_data=tr, val_data=va)
    _assert_same_state(_state(tmp_path / "again" / "last.pt"), _state(folder / "last.pt"))
    assert [r["loss"] for r in _rows(tmp_path / "again")] == [r["loss"] for r in _rows(folder)]


def test_resume_equals_a_straight_run(tmp_path: Path, run: tuple[Path, Any],
                                      data: tuple[PackedData, PackedData]) -> None:
    folder, _ = run
    tr, va = data
    out = tmp_path / "resumed"
    first = train(_config(out, epochs=2), quiet=True, train_data=tr, val_data=va)
    assert len(first.history) == 2
    second = train(_config(out), resume=out / "last.pt", quiet=True, train_data=tr,
                   val_data=va)
    assert [h["epoch"] for h in second.history] == [3]
    _assert_same_state(_state(out / "last.pt"), _state(folder / "last.pt"))
    a = torch.load(out / "last.pt", weights_only=True)
    b = torch.load(folder / "last.pt", weights_only=True)
    assert a["scheduler"] == b["scheduler"]
    for k, st in b["optimizer"]["state"].items():
        for name, v in st.items():
            assert torch.equal(a["optimizer"]["state"][k][name], v), (k, name)
    assert json.loads(a["progress"]) == json.loads(b["progress"])
    assert [r["loss"] for r in _rows(out)] == [r["loss"] for r in _rows(folder)]
    assert [r["lr"] for r in _rows(out)] == [r["lr"] for r in _rows(folder)]


def test_first_step_loss_is_uniform_over_anchors_and_cells(
        tmp_path: Path, data: tuple[PackedData, PackedData]) -> None:
    tr, _ = data
    res = train(_config(tmp_path / "one", max_steps=1), quiet=True, train_data=tr)
    assert len(res.history) == 1 and res.history[0]["step"] == 1
    g = 64 // 16
    assert res.history[0]["cn"] == pytest.approx(math.log(9 * g * g), abs=0.3)
    # No validation data: the stopped epoch is kept as best, without metrics.
    ck = load_checkpoint(tmp_path / "one" / "best.pt")
    assert ck.metrics == {"val": None, "epoch": 1, "step": 1}
    assert res.best_metrics is None
    assert _rows(tmp_path / "one")[0]["val_acc@0.5"] == ""


def test_packed_data_of_other_sizes_is_refused(tmp_path: Path,
                                               data: tuple[PackedData, PackedData]) -> None:
    tr, _ = data
    tr.save(tmp_path / "tr.npz")
    cfg = _config(tmp_path / "bad", data=DataConfig(packed_train=str(tmp_path / "tr.npz")),
                  model=ModelSpec(overrides={**TINY, "reference_size": 96}))
    with pytest.raises(ValueError, match=r"tr.npz: packed at reference 64 px.*model takes 96 px"):
        train(cfg, quiet=True)


def _legacy(p: PackedData, path: Path) -> Path:
    """``p`` saved as packs were before the query fit was recorded (the seven arrays only)."""
    np.savez(path, **{f: getattr(p, f) for f in (
        "ids", "references", "queries", "clicks", "boxes", "counts", "metres_per_pixel")})
    return path


def test_packed_data_of_another_query_fit_is_refused(
        tmp_path: Path, data: tuple[PackedData, PackedData]) -> None:
    tr, _ = data
    stretched = tmp_path / "tr.npz"
    tr.save(stretched)
    letterbox = ModelSpec(overrides={**TINY, "query_fit": "letterbox"})
    cfg = _config(tmp_path / "bad", data=DataConfig(packed_train=str(stretched)), model=letterbox)
    msg = (f"^{re.escape(str(stretched))}: "
           r"packed at reference 64 px, query \(64, 64\) with query_fit 'stretch'; "
           r"the model takes 64 px, \(64, 64\) with query_fit 'letterbox': repack .* fresh "
           r"--work folder")
    with pytest.raises(ConfigError, match=msg):
        train(cfg, quiet=True)
    # A legacy pack (no fit recorded) is a stretched one: refused the same way ...
    old = _legacy(tr, tmp_path / "old.npz")
    with pytest.raises(ConfigError,
                       match=f"^{re.escape(str(old))}: .*query_fit 'stretch'; .*'letterbox'"):
        train_mod.load_packed(old, letterbox.build())
    # ... and loads for a stretch model, as it did before.
    back = train_mod.load_packed(old, ModelSpec(overrides=dict(TINY)).build())
    assert back.query_fit == "stretch" and back.ids.tolist() == tr.ids.tolist()
    np.testing.assert_array_equal(back.queries, tr.queries)
    # In-memory data is held to the same rule.
    with pytest.raises(ConfigError, match=r"^in-memory train_data: .*'stretch'.*'letterbox'"):
        train(cfg, quiet=True, train_data=tr)
    # A letterboxed pack trains a letterbox model.
    boxed = pack_items(_items(4, 0), (64, 64), 64, query_fit="letterbox")
    boxed.save(tmp_path / "boxed.npz")
    ok = train_mod.load_packed(tmp_path / "boxed.npz", letterbox.build())
    assert ok.query_fit == "letterbox"


def test_init_on_another_query_grid(tmp_path: Path, run: tuple[Path, Any]) -> None:
    """``init_query_grid="model"`` starts a letterboxed stride-16 network from a stretched
    stride-32 run's weights: the weights and anchors are the init's, the grid is the model's;
    ``"checkpoint"`` keeps the init's grid, so the letterboxed pack is refused."""
    folder, _ = run
    init = load_checkpoint(folder / "last.pt")
    boxed = pack_items(_items(8, 0), (64, 64), 64, query_fit="letterbox")
    boxed.save(tmp_path / "boxed.npz")
    grid16 = ModelSpec(overrides={**TINY, "query_stride": 16, "query_fit": "letterbox",
                                  "gaussian_sigma": 7.0})
    kw: dict[str, Any] = dict(data=DataConfig(packed_train=str(tmp_path / "boxed.npz")),
                              model=grid16, init_checkpoint=str(folder / "last.pt"),
                              optim=OptimConfig(lr=1e-12, batch_size=4, epochs=1))
    with pytest.raises(ConfigError, match=r"boxed.npz: .*'letterbox'; the model takes .*"
                                          r"'stretch'"):
        train(_config(tmp_path / "kept", **kw), quiet=True)
    train(_config(tmp_path / "regrid", init_query_grid="model", **kw), quiet=True)
    out = load_checkpoint(tmp_path / "regrid" / "last.pt")
    c = out.model_config
    assert (c.query_stride, c.query_fit, c.gaussian_sigma) == (16, "letterbox", 7.0)
    assert init.model_config.query_stride == 32 and init.model_config.query_fit == "stretch"
    assert c.anchors == init.model_config.anchors and c.width == init.model_config.width
    assert c.query_grid == (4, 4) and init.model_config.query_grid == (2, 2)
    before, after = dict(init.model.named_parameters()), dict(out.model.named_parameters())
    assert list(before) == list(after)
    for k, v in before.items():  # two steps at lr 1e-12: the init's weights (BN statistics move)
        torch.testing.assert_close(after[k], v, rtol=0, atol=1e-9, msg=k)


def test_cli_train_on_another_query_fit_exits_3_with_one_line(
        tmp_path: Path, data: tuple[PackedData, PackedData],
        capsys: pytest.CaptureFixture[str]) -> None:
    from geomogeo.cli import main

    old = _legacy(data[0], tmp_path / "old.npz")
    cfg = _config(tmp_path / "run").to_dict()
    cfg["data"] = {"packed_train": "old.npz"}
    cfg["model"] = {"preset": "light", **TINY, "query_fit": "letterbox"}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    assert main(["-q", "train", str(path)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {old}: packed at reference 64 px")
    assert "query_fit 'stretch'" in err and "query_fit 'letterbox'" in err
    assert not (tmp_path / "run" / "last.pt").exists()


class ReachedScenesError(Exception):
    """scripts/train_default.py got past its checks (to preparing the scenes)."""


@pytest.fixture
def train_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``run(*options)``: scripts/train_default.py's main on ``tmp_path / "work"`` (created),
    raising :class:`ReachedScenesError` once past its checks of the packs there."""
    spec = importlib.util.spec_from_file_location(
        "train_default", Path(__file__).resolve().parents[2] / "scripts" / "train_default.py")
    script = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(script)  # type: ignore[union-attr]

    def reached(folder: Path) -> None:
        raise ReachedScenesError

    monkeypatch.setattr(script, "prepare_scenes", reached)
    (tmp_path / "work").mkdir()

    def run(*extra: str) -> None:
        monkeypatch.setattr(sys, "argv", ["train_default.py", "--out", str(tmp_path / "out"),
                                          "--work", str(tmp_path / "work"), "--data-only",
                                          *extra])
        script.main()
    return run


def test_train_default_refuses_a_work_folder_of_another_query_fit(
        tmp_path: Path, train_default: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/train_default.py checks the packs it would reuse before anything else."""
    run = train_default
    work = tmp_path / "work"
    items = _items(2, 5)
    # light16's inputs (256 px reference, 320 px query) but stretched: a legacy pack
    _legacy(pack_items(items, (320, 320), 256), work / "packed_train.npz")

    with pytest.raises(SystemExit) as e:
        run("--query-stride", "16")
    assert e.value.code == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"error: {work / 'packed_train.npz'}: packed at reference 256 px, "
                          "query (320, 320) with query_fit 'stretch'; the model takes 256 px, "
                          "(320, 320) with query_fit 'letterbox'")
    assert "fresh --work folder" in err
    # Packed for light16 (letterbox), the same folder is reused.
    pack_items(items, (320, 320), 256, query_fit="letterbox").save(work / "packed_train.npz")
    with pytest.raises(ReachedScenesError):
        run("--query-stride", "16")
    # ... and then refused for the stride-32 model (128 px stretched query).
    with pytest.raises(SystemExit) as e:
        run()
    assert e.value.code == 3
    assert "query (320, 320) with query_fit 'letterbox'; the model takes 256 px, (128, 128) " \
        "with query_fit 'stretch'" in capsys.readouterr().err


def test_train_default_refuses_packs_of_other_data_settings(
        tmp_path: Path, train_default: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """The sidecar of a pack records its data settings; other options are refused."""
    work = tmp_path / "work"
    pack_items(_items(2, 5), (320, 320), 256, query_fit="letterbox").save(
        work / "packed_train.npz")
    side = work / "packed_train.settings.json"
    asked = ("--query-stride", "16", "--parallax", "--holdout", "las_vegas", "--n-train", "2")
    # What a run with these options writes next to its pack (copied from the source of truth:
    # SynthConfig.parallax() and the held-out split).
    from geomogeo.data.synth.engine import HOLDOUT_TILES, SynthConfig

    recorded = {"split": "train", "photos": 2, "seed": 0, "holdout": "las_vegas",
                "tiles": [n for n, _ in HOLDOUT_TILES["las_vegas"]["train"]],
                "synth": json.loads(json.dumps(dataclasses.asdict(SynthConfig.parallax()))),
                "rotations": 0, "procedural": 0}
    side.write_text(json.dumps(recorded), encoding="utf-8")
    with pytest.raises(ReachedScenesError):
        train_default(*asked)
    for other, differ in ((("--targets", "2,6"), "synth"), (("--seed", "1"), "seed"),
                          (("--procedural", "3"), "procedural")):
        with pytest.raises(SystemExit) as e:
            train_default(*asked, *other)
        assert e.value.code == 3
        err = capsys.readouterr().err
        assert err == (f"error: {work / 'packed_train.npz'}: made with other data settings "
                       f"({differ}) than asked, see packed_train.settings.json: use a fresh "
                       "--work folder\n")
    # Without --holdout, the tiles and the holdout differ; without --parallax, the engine.
    with pytest.raises(SystemExit):
        train_default("--query-stride", "16", "--parallax", "--n-train", "2")
    assert "(holdout, tiles)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_default("--query-stride", "16", "--holdout", "las_vegas", "--n-train", "2")
    assert "(synth)" in capsys.readouterr().err


def _manifest(root: Path) -> Path:
    """Three test photos (64 px PNG references at 0.5 m, JPEG queries) and one train photo."""
    (root / "img").mkdir(parents=True)
    records = []
    for i, it in enumerate(_items(4, 7)):
        ref, qry = root / "img" / f"r{i}.png", root / "img" / f"q{i}.jpg"
        Image.fromarray(it.reference).save(ref)
        Image.fromarray(it.photo).save(qry, quality=92)
        records.append(Record(
            id=it.id, query=qry, reference=ref,
            clicks=tuple((float(x), float(y)) for x, y in it.clicks),
            boxes=tuple(tuple(float(v) for v in b) for b in it.boxes),  # type: ignore[misc]
            georef=Georef("EPSG:32631", (0.5, 0.0, 1000.0, 0.0, -0.5, 5000.0)),
            split="test" if i < 3 else "train"))
    write_manifest(root / "manifest.jsonl", records)
    return root / "manifest.jsonl"


@pytest.mark.parametrize("tta", ["none", "rot4"])
def test_evaluate_writes_the_recomputed_metrics(
    tmp_path: Path, run: tuple[Path, Any], tta: str
) -> None:
    # Imported here: the geo export stack it pulls in is not needed by the other tests (and is
    # absent where only the CUDA test runs).
    from geomogeo.engine.evaluate import evaluate

    folder, _ = run
    manifest = _manifest(tmp_path / "set")
    out = tmp_path / "eval"
    result = evaluate(folder / "best.pt", manifest, split="test", out_dir=out, device="cpu",
                      tta=tta)  # type: ignore[arg-type]
    ck = load_checkpoint(folder / "best.pt")
    packed = pack_manifest(manifest, "test", (64, 64), 64)
    boxes, scores = predict_boxes(ck.model, packed, tta=tta)  # type: ignore[arg-type]
    assert boxes.shape == (int(packed.counts.sum()), 4) and scores.shape == (len(boxes),)
    off = packed.offsets
    expected = evaluate_boxes([
        PhotoEval(boxes[off[i]:off[i] + packed.counts[i]],
                  packed.boxes[off[i]:off[i] + packed.counts[i]].astype(np.float64), 0.5)
        for i in range(len(packed))], stride=16)
    written = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert written["metrics"] == expected
    assert result["metrics"] == expected
    assert written["photos"] == 3 and written["targets"] == int(packed.counts.sum())
    assert written["sha256"] == ck.sha256 and written["split"] == "test"
    assert written["model"] == "mogeo-light" and written["tta"] == tta
    assert expected["all"]["centre_error_m_mean"] is not None  # georeferenced: metres known
    md = (out / "metrics.md").read_text(encoding="utf-8")
    title = f"mogeo-light on manifest.jsonl (test, tta {tta})"
    assert md == metrics_markdown(expected, title=title)
    a = expected["all"]
    assert f"{a['mean_iou']:.3f}" in md and f"{a['centre_error_m_median']:.3f}" in md
    # the same photos packed into an .npz evaluate identically
    packed.save(tmp_path / "test.npz")
    from_npz = evaluate(folder / "best.pt", tmp_path / "test.npz", device="cpu",
                        tta=tta)  # type: ignore[arg-type]
    assert from_npz["metrics"] == expected and from_npz["split"] is None
    bigger = pack_manifest(manifest, "test", (64, 64), 128)
    bigger.save(tmp_path / "big.npz")
    with pytest.raises(ValueError, match=r"big.npz: packed at reference 128 px"):
        evaluate(folder / "best.pt", tmp_path / "big.npz", device="cpu")
    assert f"| all | 3 | {a['targets']} |" in md
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "metrics.md"]


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="needs CUDA")),
])
def test_bf16_channels_last_step(device: str, tmp_path: Path,
                                 data: tuple[PackedData, PackedData],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 autocast + channels-last (CUDA's defaults, forced on the CPU): two steps change
    the weights, keep them finite and keep the run's k-means anchors."""
    tr, va = data
    initial: dict[str, torch.Tensor] = {}
    build = train_mod.build_model

    def spy(cfg: Any) -> Any:
        m = build(cfg)
        initial.update({k: v.detach().clone() for k, v in m.state_dict().items()})
        return m

    monkeypatch.setattr(train_mod, "build_model", spy)
    forced = {"precision": "bf16", "channels_last": "on"} if device == "cpu" else \
        {"precision": "auto", "channels_last": "auto"}
    cfg = dataclasses.replace(_config(tmp_path / "run"), device=device, max_steps=2, **forced)
    res = train(cfg, quiet=True, train_data=tr, val_data=va)
    assert len(res.history) == 1 and res.history[0]["step"] == 2
    h = res.history[0]
    assert all(math.isfinite(h[k]) for k in ("loss", "cn", "reg", "s"))
    assert h["val_mean_iou"] is not None
    state = _state(tmp_path / "run" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    # the unpatched builder: the spy would overwrite ``initial`` with the preset anchors
    params = {k for k, _ in build(cfg.model.build()).named_parameters()}
    changed = [k for k in params if not torch.equal(state[k], initial[k].cpu())]
    assert len(changed) > len(params) // 2
    assert "head.out.weight" in changed
    assert torch.equal(state["anchors"], initial["anchors"].cpu())
