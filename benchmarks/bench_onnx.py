"""CPU latency of ONNX Runtime against PyTorch: one photo x 5 clicks, per TTA mode.

Exports the shipped checkpoint (``model/``) with ``geomogeo export-onnx``'s function for each
mode into a temporary folder, then times ``predict`` of
:class:`~geomogeo.nn.predictor.TorchPredictor` and of
:class:`~geomogeo.onnx_predictor.OnnxPredictor` on the same random window, photo and 5 clicks
(the cost does not depend on the pixels), and prints the median of the timed runs and the ratio
PyTorch / ONNX, all in this process. The predictors take turns in blocks (``--rounds`` rounds;
in each, one untimed run then ``--repeats`` timed runs per predictor), so that load drifting
on a shared machine hits all of them, while the idle threads that one runtime keeps spinning
for a moment after its runs do not land inside another's timed runs. For a mode with
several passes, the ONNX graph is timed both as exported by default (the passes batched into
one network call) and with one network call per pass, as PyTorch runs them.

Usage::

    python benchmarks/bench_onnx.py                 # a few minutes on 2 busy cores
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from geomogeo.engine.checkpoint import load_checkpoint
from geomogeo.engine.onnx_export import export_onnx
from geomogeo.localize import default_checkpoint
from geomogeo.nn.predictor import TorchPredictor
from geomogeo.onnx_predictor import OnnxPredictor
from geomogeo.predictor import DEFAULT_TTA


def _median_ms(
    fns: dict[str, Callable[[], object]], rounds: int, repeats: int
) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()  # untimed: warm-up, and the previous runtime's threads settle
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of both (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="blocks per predictor")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per block")
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--modes", default=f"none,{DEFAULT_TTA}")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ckpt, _ = default_checkpoint()
    loaded = load_checkpoint(ckpt)
    cfg = loaded.model_config
    rng = np.random.default_rng(0)
    ref = rng.random((cfg.reference_size, cfg.reference_size, 3), dtype=np.float32)
    qry = rng.random((*cfg.query_size, 3), dtype=np.float32)
    pts = rng.random((args.clicks, 2)) * np.array(cfg.query_size[::-1])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            tp = TorchPredictor(loaded.model, name=cfg.name, sha256=loaded.sha256, tta=mode)
            fns: dict[str, Callable[[], object]] = {
                "pytorch": lambda tp=tp: tp.predict(ref, qry, pts)}
            variants = [True] if tp.tta.passes == 1 else [True, False]
            for batched in variants:
                path = Path(tmp) / f"{mode}-{batched}.onnx"
                t0 = time.perf_counter()
                export_onnx(ckpt, path, tta=mode, batch_passes=batched)
                export_s = time.perf_counter() - t0
                op = OnnxPredictor(path, threads=args.threads)
                name = "onnx" if len(variants) == 1 else \
                    ("onnx, passes batched" if batched else "onnx, one call per pass")
                fns[name] = lambda op=op: op.predict(ref, qry, pts)
                print(f"{mode}: exported {name} in {export_s:.1f} s")
            ms = _median_ms(fns, args.rounds, args.repeats)
            rows += [(mode, name, v, ms["pytorch"] / v) for name, v in ms.items()]
    print(f"\n{cfg.name} ({loaded.sha256[:12]}), 1 photo x {args.clicks} clicks, "
          f"{args.threads} CPU threads, median of {args.rounds} x {args.repeats} runs")
    print(f"{'mode':<10}{'runtime':<26}{'ms':>9}{'pytorch / this':>16}")
    for mode, name, v, ratio in rows:
        print(f"{mode:<10}{name:<26}{v:>9.1f}{ratio:>16.2f}")


if __name__ == "__main__":
    main()
