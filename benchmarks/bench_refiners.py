"""Cost of the box refiners: 5 points on a 256 px reference, each refiner with its 8 views.

Times, in this process, box refiner v2 (the baseline), the mask refiner and the shipped
default (the two averaged, ``open_refiner()``), interleaved in rounds, and prints the median
of each and its ratio to v2's.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_refiners.py --threads 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from geomogeo.localize import open_refiner

MODEL = Path(__file__).resolve().parents[1] / "model"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per refiner per round")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    reference = np.random.default_rng(0).random((256, 256, 3)).astype(np.float32)
    points = np.random.default_rng(1).uniform(40, 216, (5, 2))
    refiners = {"box refiner v2": open_refiner(MODEL / "box-refiner-v2.pt"),
                "mask refiner v1": open_refiner(MODEL / "mask-refiner-v1.pt"),
                "default (both, averaged)": open_refiner()}
    times: dict[str, list[float]] = {name: [] for name in refiners}
    for r in refiners.values():  # warm-up
        r.refine(reference, points)
    for _ in range(args.rounds):
        for name, r in refiners.items():
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                r.refine(reference, points)
                times[name].append(time.perf_counter() - t0)
    base = float(np.median(times["box refiner v2"]))
    print(f"refine 5 points, 8 views each, {args.threads} CPU threads, median of "
          f"{args.rounds * args.repeats}")
    for name, ts in times.items():
        med = float(np.median(ts))
        print(f"{name:<28} {med * 1000:8.1f} ms {med / base:6.2f}x")


if __name__ == "__main__":
    main()
