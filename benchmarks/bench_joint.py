"""Cost of joint localization: one 5-target photo, default settings, against today's default.

Renders one drone photo with 5 targets from the held-out tile (Rotterdam c, the data engine's
camera) and times, in this process, with the shipped model and its default test-time
augmentation (rot4+s2):

* ``network, heading given``: the default localize before joint localization existed
  (``joint=False``, heading given, the network's own boxes and cells:
  ``refine_network=False, heading_vote_deg=None``);
* ``joint, no heading``: the default flow (registration, parallax correction of the clicks,
  re-centred window, prior, the box refiner; the heading comes from the registration; the
  network scores the refined targets in one pass, ``DEFAULT_JOINT_TTA``);
* ``joint, no heading, no parallax correction``: the same without the correction
  (``JointConfig(parallax=None)``), to show its cost;
* ``joint, no heading, no box refiner``: the same with the network's boxes
  (``JointConfig(refine=False)``, so with the full test-time augmentation);
* ``network, heading given, vote``: today's network-alone flow with a heading (the clicks'
  geometry voted on within ``heading_vote_deg`` of it, boxes by the refiner);
* ``network, no heading, rotation search``: the no-compass fallback (4 rotations from the
  edges' heading modulo 90 degrees, the perspective vote over the camera's tilts with the
  camera prior, each target's cell chosen under a prior around its consistent position,
  boxes by the refiner);
* ``network, no heading, similarity vote``: the same with the vote's similarity instead of
  the camera's tilts (``JointConfig(search_tilts_deg=None)``), to show their cost;
* ``network, no heading, no priors``: the same without the camera prior and the consistent
  positions' prior, with the similarity (``JointConfig(search_tilts_deg=None,
  camera_sigma_m=None, consistency_prior_m=None)``), to show their cost;
* ``network, no heading, 8 rotations from 0``: the same search as it was before the edges'
  heading, the priors and the tilts (``JointConfig(edge_heading=False, rotations=8,
  search_tilts_deg=None, camera_sigma_m=None, consistency_prior_m=None)``).

Prints the median of ``--repeats`` runs of each and its ratio to the first (the issue's goal:
joint <= 2x). With ``--baseline CHECKPOINT`` the first row runs that network instead (the
default before a new one was shipped: ``model/mogeo-light-v2.pt``), so that the ratios are
against the time users had, and ``network, heading given, shipped`` is added.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_joint.py --threads 2
    OMP_NUM_THREADS=2 python benchmarks/bench_joint.py --baseline model/mogeo-light-v2.pt
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from geomogeo.data.synth.engine import SynthConfig, World, render_sample
from geomogeo.data.synth.scene import scene_from_raster
from geomogeo.geo.raster import open_raster
from geomogeo.joint import JointConfig
from geomogeo.localize import Localizer

TILE = Path(__file__).resolve().parents[1] / "sample_tiles" / "rotterdam_pan_0p5m_c.tif"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per mode")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="network checkpoint of the first row (default: the shipped one)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = SynthConfig(targets=(5, 5), max_tries=1000, min_object_m2=100.0)
    world = World.build(scene_from_raster(TILE, gsd=0.5), cfg)
    src = open_raster(TILE)
    sample = None
    for seed in range(100):
        s = render_sample(world, np.random.default_rng([seed, 5]), cfg, "bench")
        if src.contains(*s.measured_xy):  # localize refuses a GPS position off the raster
            sample = s
            break
    assert sample is not None and len(sample.clicks) == 5
    loc = Localizer.load()
    base_loc = Localizer.load(args.baseline) if args.baseline else loc
    today = dict(heading=sample.heading, joint=False,
                 config=JointConfig(refine_network=False, heading_vote_deg=None))
    runs: dict[str, tuple[Localizer, dict]] = {
        "network, heading given" + (f" ({args.baseline.name})" if args.baseline else ""):
            (base_loc, today),
        "joint, no heading": (loc, {}),
        "joint, no heading, no parallax correction": (loc, dict(config=JointConfig(parallax=None))),
        "joint, no heading, no box refiner": (loc, dict(config=JointConfig(refine=False))),
        "network, heading given, vote": (loc, dict(heading=sample.heading, joint=False)),
        "network, no heading, rotation search": (loc, dict(joint=False)),
        "network, no heading, similarity vote": (loc, dict(joint=False, config=JointConfig(
            search_tilts_deg=None))),
        "network, no heading, no priors": (loc, dict(joint=False, config=JointConfig(
            search_tilts_deg=None, camera_sigma_m=None, consistency_prior_m=None))),
        "network, no heading, 8 rotations from 0": (loc, dict(joint=False, config=JointConfig(
            edge_heading=False, rotations=8, search_tilts_deg=None, camera_sigma_m=None,
            consistency_prior_m=None))),
    }
    if args.baseline:
        runs["network, heading given, shipped"] = (loc, today)
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "photo.jpg"
        photo.write_bytes(sample.jpeg)

        def once(run: tuple[Localizer, dict]) -> float:
            t0 = time.perf_counter()
            run[0].localize(photo, TILE, sample.clicks, sample.measured_xy,
                            center_crs="EPSG:32631", quiet=True,
                            **{"config": JointConfig(), **run[1]})
            return time.perf_counter() - t0

        for run in runs.values():
            once(run)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):  # interleaved, so that load changes hit every mode
            for name, run in runs.items():
                times[name].append(once(run))
    base = statistics.median(next(iter(times.values())))
    print(f"localize, 1 photo x 5 targets, shipped model {loc.predictor.name} "
          f"({loc.predictor.sha256[:12]}, tta {loc.predictor.tta}, registered photos "
          f"{loc.joint_predictor.tta}), {args.threads} CPU threads, median of {args.repeats}")
    print(f"{'mode':<44}{'ms':>9}{'x today':>9}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<44}{med * 1e3:>9.1f}{med / base:>9.2f}")


if __name__ == "__main__":
    main()
