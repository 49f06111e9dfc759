"""ONNX export and runtime: the shipped model exported with its default test-time augmentation
gives the boxes and scores of the PyTorch predictor on the demo photos, runs without torch,
and carries its configuration in the file's metadata (read back with ``onnx``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from geomogeo.cli import main
from geomogeo.demo import default_samples
from geomogeo.engine.checkpoint import load_checkpoint
from geomogeo.errors import CheckpointError
from geomogeo.localize import Localizer, default_checkpoint, default_refiners
from geomogeo.onnx_predictor import OnnxPredictor
from geomogeo.predictor import DEFAULT_TTA

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = default_samples()
DEMO = json.loads((SAMPLES / "demo.json").read_text(encoding="utf-8"))
EXPORT_CLICKS = 3  # the example the graph is traced with (engine.onnx_export)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped checkpoint exported by the CLI with the default test-time augmentation."""
    out = tmp_path_factory.mktemp("onnx") / "mogeo.onnx"
    assert main(["export-onnx", str(default_checkpoint()[0]), str(out)]) == 0
    return out


def _localize_demo(loc: Localizer) -> list[tuple[int, int, tuple[float, ...], float]]:
    rows = []
    for i, item in enumerate(DEMO["photos"]):
        res = loc.localize(SAMPLES / item["photo"], SAMPLES / DEMO["raster"], item["clicks"],
                           quiet=True)
        rows += [(i, t.index, t.box, t.score) for t in res.targets]
    return rows


def test_parity_with_pytorch_on_the_demo_photos(exported: Path) -> None:
    """Default TTA rot4+s2 and the shipped box refiner: boxes within 1e-3 px, scores within
    1e-4, on 2- and 3-click photos (the graph was traced with 3 clicks; 1 and 7 clicks are
    tested below)."""
    assert sorted({len(p["clicks"]) for p in DEMO["photos"]}) == [2, 3]
    # the graph's passes serve registered photos too, so torch scores those with them as well
    torch_loc = Localizer.load(None, joint_tta=DEFAULT_TTA)
    # an ONNX network runs without the (torch) box refiner unless given its path(s)
    assert Localizer.load(exported).refiner is None
    onnx_loc = Localizer.load(exported, refiner=[p for p, _ in default_refiners()])
    assert onnx_loc.refiner is not None and torch_loc.refiner is not None
    assert onnx_loc.refiner.sha256 == torch_loc.refiner.sha256
    assert isinstance(onnx_loc.predictor, OnnxPredictor)
    assert str(onnx_loc.predictor.tta) == str(torch_loc.predictor.tta) == DEFAULT_TTA
    assert onnx_loc.predictor.sha256 == torch_loc.predictor.sha256 == default_checkpoint()[1]
    assert onnx_loc.spec == torch_loc.spec
    a, b = _localize_demo(torch_loc), _localize_demo(onnx_loc)
    assert len(a) == len(b) == sum(len(p["clicks"]) for p in DEMO["photos"]) == 9
    for (pa, ka, box_a, score_a), (pb, kb, box_b, score_b) in zip(a, b, strict=True):
        assert (pa, ka) == (pb, kb)
        np.testing.assert_allclose(box_b, box_a, atol=1e-3, rtol=0)
        assert abs(score_b - score_a) < 1e-4


def test_dense_maps_and_any_number_of_clicks(exported: Path) -> None:
    """1 and 7 clicks on a random window: the dense vote maps agree too, and the ONNX boxes
    are the argmax cell of its own maps."""
    torch_pred = Localizer.load(None).predictor
    onnx_pred = OnnxPredictor(exported, threads=1)
    rng = np.random.default_rng(0)
    r, (qh, qw) = onnx_pred.spec.reference_size, onnx_pred.spec.query_size
    ref = rng.random((r, r, 3), dtype=np.float32)
    qry = rng.random((qh, qw, 3), dtype=np.float32)
    for m in (1, 7):
        assert m != EXPORT_CLICKS
        pts = rng.random((m, 2)) * [qw, qh]
        want, got = torch_pred.predict(ref, qry, pts), onnx_pred.predict(ref, qry, pts)
        assert got.boxes.shape == (m, 4) and got.mass.shape == (m, 32, 32)
        assert got.cell_boxes.shape == (m, 32, 32, 4) and got.heatmaps.shape == (m, 32, 32)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3, rtol=0)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-4, rtol=0)
        np.testing.assert_allclose(got.mass, want.mass, atol=1e-5, rtol=0)
        np.testing.assert_allclose(got.heatmaps, want.heatmaps, atol=1e-5, rtol=0)
        for k in range(m):
            best = got.mass[k].argmax()
            np.testing.assert_array_equal(got.boxes[k], got.cell_boxes[k].reshape(-1, 4)[best])
    empty = onnx_pred.predict(ref, qry, np.zeros((0, 2)))
    assert empty.boxes.shape == (0, 4) and empty.mass.shape == (0, 32, 32)


def test_metadata_read_back(exported: Path) -> None:
    model = onnx.load(exported)
    meta = {p.key: p.value for p in model.metadata_props}
    ckpt = load_checkpoint(default_checkpoint()[0])
    assert meta["format"] == "geomogeo-onnx" and meta["format_version"] == "1"
    assert json.loads(meta["model_config"]) == json.loads(ckpt.model_config.to_json())
    cfg = json.loads(meta["model_config"])
    assert cfg["reference_size"] == 256 and cfg["query_size"] == [320, 320]  # light16
    assert cfg["query_stride"] == 16 and cfg["query_fit"] == "letterbox"
    assert cfg["gsd"] == 1.0 and cfg["band_names"] == ["red", "green", "blue"]
    assert len(cfg["anchors"]) == 9 and cfg["mean"] == [0.485, 0.456, 0.406]
    assert meta["checkpoint_sha256"] == default_checkpoint()[1] == ckpt.sha256
    assert meta["model_name"] == "mogeo-light" and meta["tta"] == "rot4+s2"
    assert meta["fine_grid"] == "32"  # 16 cells of 16 px, 2 steps
    assert meta["outputs"] == '["mass", "cell_boxes", "attention"]'
    opsets = {o.domain: o.version for o in model.opset_import}
    assert meta["opset"] == "17" and opsets[""] == 17
    names = [i.name for i in model.graph.input]
    assert names == ["reference", "query", "clicks", "batch_index"]
    clicks = model.graph.input[2].type.tensor_type.shape.dim
    assert clicks[0].dim_param == "targets" and clicks[1].dim_value == 2
    onnx.checker.check_model(model)


def test_runs_without_torch(exported: Path, tmp_path: Path) -> None:
    """The runtime module and a whole localization import no torch (blocked in a child)."""
    item = DEMO["photos"][0]
    code = f"""
import sys
sys.modules["torch"] = None  # any "import torch" now raises ImportError
import geomogeo.onnx_predictor
from geomogeo.localize import Localizer
loc = Localizer.load({str(exported)!r})
res = loc.localize({str(SAMPLES / item["photo"])!r}, {str(SAMPLES / DEMO["raster"])!r},
                   {item["clicks"]!r}, quiet=True)
print(len(res.targets), [round(t.score, 6) for t in res.targets])
print(sorted(m for m, v in sys.modules.items() if v is not None and m.split(".")[0] == "torch"))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=env, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith(f"{len(item['clicks'])} [") and lines[-1] == "[]"


def test_one_pass_export_keeps_the_network_decoding(tmp_path: Path) -> None:
    """--tta none: the graph also returns the network's own box and score, as PyTorch does."""
    out = tmp_path / "none.onnx"
    assert main(["export-onnx", str(default_checkpoint()[0]), str(out), "--tta", "none"]) == 0
    onnx_loc = Localizer.load(out, tta="none")
    assert json.loads(onnx_loc.predictor.metadata["outputs"])[3:] == ["boxes", "scores"]
    # both with the network's own boxes (an ONNX network runs without the refiner)
    a = _localize_demo(Localizer.load(None, tta="none", refiner=False))
    b = _localize_demo(onnx_loc)
    for (_, _, box_a, score_a), (_, _, box_b, score_b) in zip(a, b, strict=True):
        np.testing.assert_allclose(box_b, box_a, atol=1e-3, rtol=0)
        assert abs(score_b - score_a) < 1e-4
    with pytest.raises(ValueError, match="exported with test-time augmentation 'none', not "
                                         "'rot4\\+s2'; re-export"):
        Localizer.load(out)  # the default mode is rot4+s2


def test_bad_files_and_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CheckpointError, match=r"ONNX model not found: .*missing\.onnx"):
        OnnxPredictor(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    with pytest.raises(CheckpointError, match=r"junk\.onnx: not a loadable ONNX model"):
        OnnxPredictor(junk)
    # a valid ONNX model that geomogeo did not write
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [x], [y])
    other = tmp_path / "other.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]),
              other)
    with pytest.raises(CheckpointError, match=r"other\.onnx: not a geomogeo ONNX export"):
        OnnxPredictor(other)
    ckpt = str(default_checkpoint()[0])
    assert main(["export-onnx", ckpt, str(tmp_path / "x.pt")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err
    assert main(["export-onnx", str(tmp_path / "nope.pt"), str(tmp_path / "x.onnx")]) == 3
    assert "checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("batch_passes, query_stride", [(True, 32), (False, 32), (True, 16)])
def test_export_of_another_checkpoint(tmp_path: Path, batch_passes: bool,
                                      query_stride: int) -> None:
    """A small non-default network (64 px views, a 4 x 4 grid; query grid 2 x 2 at stride 32,
    4 x 4 at stride 16 with a letterboxed query) exported with rot4, its passes batched or one
    network call each: the boxes of the PyTorch predictor with rot4."""
    import torch

    from geomogeo.engine.checkpoint import save_checkpoint
    from geomogeo.engine.onnx_export import export_onnx
    from geomogeo.nn.config import ModelConfig
    from geomogeo.nn.model import build_model
    from geomogeo.nn.predictor import TorchPredictor

    torch.manual_seed(0)
    cfg = ModelConfig.light(name="tiny", reference_size=64, query_size=(64, 64), width=0.125,
                            embed_dim=32, gsd=0.5, band_names=("nir", "red", "green"),
                            query_stride=query_stride,
                            query_fit="letterbox" if query_stride == 16 else "stretch")
    ckpt = tmp_path / "tiny.pt"
    sha = save_checkpoint(ckpt, build_model(cfg))
    meta = export_onnx(ckpt, tmp_path / "tiny.onnx", tta="rot4", opset=18,
                       batch_passes=batch_passes)
    assert meta["checkpoint_sha256"] == sha and meta["fine_grid"] == "4"
    assert {o.domain: o.version for o in onnx.load(tmp_path / "tiny.onnx").opset_import}[""] == 18
    got = OnnxPredictor(tmp_path / "tiny.onnx", tta="rot4", threads=1)
    assert got.spec.band_names == ("nir", "red", "green") and got.spec.gsd == 0.5
    assert got.spec.query_fit == cfg.query_fit
    want = TorchPredictor(load_checkpoint(ckpt).model, name="tiny", sha256=sha, tta="rot4")
    rng = np.random.default_rng(5)
    ref, qry = rng.random((64, 64, 3), dtype=np.float32), rng.random((64, 64, 3), dtype=np.float32)
    pts = np.array([[3.0, 60.0], [31.5, 20.0]])
    a, b = want.predict(ref, qry, pts), got.predict(ref, qry, pts)
    np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3, rtol=0)
    np.testing.assert_allclose(b.scores, a.scores, atol=1e-4, rtol=0)
    np.testing.assert_allclose(b.mass, a.mass, atol=1e-5, rtol=0)
