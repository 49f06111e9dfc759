"""Multi-process training (DistributedDataParallel) through ``torchrun``, on CPU with gloo.

The same code path runs with NCCL on several GPUs; here two CPU processes check that the
photos are sharded by rank, that gradients are synchronised (both ranks end with the same
weights, which only rank 0 saves) and that the run folder is complete.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from geomogeo.data.dataset import pack_items
from geomogeo.engine.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import TINY, _items


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    train, val = pack_items(_items(12, 0), (64, 64), 64), pack_items(_items(4, 1), (64, 64), 64)
    train.save(tmp_path / "train.npz")
    val.save(tmp_path / "val.npz")
    cfg = {
        "model": {"preset": "light", **TINY},
        "data": {"packed_train": "train.npz", "packed_val": "val.npz"},
        "optim": {"lr": 1e-3, "batch_size": 2, "epochs": 2},
        "out_dir": str(tmp_path / "run"), "device": "cpu", "seed": 1,
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "geomogeo.cli", "-q",
         "train", str(tmp_path / "cfg.json")],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # 12 photos, 2 ranks, 2 photos per rank and step: 3 steps per epoch.
    assert [int(r["step"]) for r in rows] == [3, 6]
    assert all(r["val_acc@0.5"] != "" for r in rows)
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert best.model_config.reference_size == 64
    assert math.isfinite(float(rows[-1]["loss"]))
    assert json.loads(last["progress"])["step"] == 6
