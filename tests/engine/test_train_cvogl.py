"""Training straight from a CVOGL folder (as distributed), through the same loop."""

from __future__ import annotations

import csv
import json

import numpy as np
import torch
from PIL import Image

from geomogeo.data.cvogl import read_cvogl
from geomogeo.data.dataset import pack_records
from geomogeo.engine.train import train_from_file


def _cvogl(root, n=6):
    base = root / "CVOGL_DroneAerial"
    (base / "query").mkdir(parents=True)
    (base / "satellite").mkdir()
    rng = np.random.default_rng(0)
    recs = {"train": [], "val": []}
    for i in range(n):
        sat = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
        Image.fromarray(sat).save(base / "satellite" / f"s{i}.png")
        Image.fromarray(sat[::2, ::2].copy()).save(base / "query" / f"q{i}.png")
        box = [20.0 + i, 30.0, 60.0 + i, 70.0]  # satellite pixels (128 px image)
        rec = [i, f"q{i}.png", f"s{i}.png", [80, 100], [40.0, 50.0], box,
               [box[0], box[1], box[2], box[1], box[2], box[3], box[0], box[3]], "house"]
        recs["train" if i < n - 2 else "val"].append(rec)
    for split, r in recs.items():
        torch.save(r, base / f"CVOGL_DroneAerial_{split}.pth")
    return root


def test_train_on_a_cvogl_folder(tmp_path):
    root = _cvogl(tmp_path / "cvogl")
    packed = pack_records(read_cvogl(root, "DroneAerial", "train"), (64, 64), 64)
    # 128 px satellite images resized to the 64 px reference: boxes halve exactly.
    assert packed.boxes[0].tolist() == [10.0, 15.0, 30.0, 35.0]
    assert packed.clicks[0].tolist() == [40.0, 50.0]  # 64 px queries: unchanged
    cfg = {
        "model": {"preset": "light", "reference_size": 64, "query_size": [64, 64],
                  "width": 0.125, "embed_dim": 32, "anchors": "preset"},
        "data": {"cvogl_root": "cvogl", "cvogl_subset": "DroneAerial"},
        "optim": {"lr": 1e-3, "batch_size": 2, "epochs": 1},
        "out_dir": str(tmp_path / "run"), "device": "cpu",
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    res = train_from_file(tmp_path / "cfg.json", quiet=True)
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2]  # 4 training photos, batch 2
    assert rows[0]["val_acc@0.5"] != ""  # validated on the 2 val photos
    assert res.best_checkpoint.is_file()


def test_evaluate_a_cvogl_folder_from_the_cli(tmp_path, capsys):
    from geomogeo.cli import main

    _cvogl(tmp_path / "cvogl")
    cfg = {
        "model": {"preset": "light", "reference_size": 64, "query_size": [64, 64],
                  "width": 0.125, "embed_dim": 32, "anchors": "preset"},
        "data": {"cvogl_root": "cvogl"},
        "optim": {"epochs": 1, "batch_size": 2}, "out_dir": str(tmp_path / "run"),
        "device": "cpu",
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert main(["-q", "train", str(tmp_path / "cfg.json")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run" / "best.pt"), str(tmp_path / "cvogl"),
                 "--cvogl", "DroneAerial", "--split", "val", "-o", str(tmp_path / "ev"),
                 "--tta", "d4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert printed["photos"] == written["photos"] == 2
    assert printed["tta"] == written["tta"] == "d4"
    assert printed["metrics"] == written["metrics"]
    assert main(["evaluate", str(tmp_path / "run" / "best.pt"), str(tmp_path / "cvogl"),
                 "--cvogl", "DroneAerial", "--tta", "rot8"]) == 2  # a usage error
    assert "rot8" in capsys.readouterr().err
