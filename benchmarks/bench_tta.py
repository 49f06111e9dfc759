"""Cost of test-time augmentation: latency of one photo per mode, against one pass.

Runs the shipped light configuration (random weights: the cost does not depend on them) on
one photo with 3 clicks through :class:`~geomogeo.nn.predictor.TorchPredictor` for each mode,
and prints the median latency of ``--repeats`` runs and its ratio to ``"none"`` (one network
pass and the network's own decoding), all measured in this process.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_tta.py            # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from geomogeo.nn.config import ModelConfig
from geomogeo.nn.model import build_model
from geomogeo.nn.predictor import TorchPredictor
from geomogeo.predictor import parse_tta

MODES = ("none", "rot4", "d4", "rot4+s2", "d4+s2", "rot4+s4")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per mode")
    ap.add_argument("--modes", default=",".join(MODES))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(ModelConfig.light())
    rng = np.random.default_rng(0)
    cfg = model.config
    ref = rng.random((cfg.reference_size, cfg.reference_size, 3), dtype=np.float32)
    qry = rng.random((*cfg.query_size, 3), dtype=np.float32)
    pts = rng.random((3, 2)) * np.array(cfg.query_size[::-1])
    rows = []
    for mode in args.modes.split(","):
        pred = TorchPredictor(model, name="light", sha256="0" * 64, tta=mode)
        pred.predict(ref, qry, pts)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            pred.predict(ref, qry, pts)
            times.append(time.perf_counter() - t0)
        rows.append((mode, parse_tta(mode).passes, statistics.median(times) * 1e3))
    base = rows[0][2]
    print(f"TTA cost, light model, 1 photo x 3 clicks, {args.threads} CPU threads, "
          f"median of {args.repeats}")
    print(f"{'mode':<10}{'passes':>8}{'ms':>10}{'x none':>9}")
    for mode, passes, ms in rows:
        print(f"{mode:<10}{passes:>8}{ms:>10.1f}{ms / base:>9.2f}")


if __name__ == "__main__":
    main()
