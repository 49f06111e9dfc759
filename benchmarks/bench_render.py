"""Cost of rendering parallax photos: prisms and bridge decks against the flat ground.

Renders oblique photos (512 x 384, pitch 10-35 degrees) of procedural towns through
:func:`~geomogeo.data.synth.render.render_view` (towns without bridges, and towns whose
crossing carries bridge decks) and through :func:`~geomogeo.data.synth.render.render_photo`
(the flat ground alone, the baseline), and prints the median time per photo of ``--repeats``
passes over the same cameras and its ratio to the baseline, all measured in this process.

With ``--rev REV`` the measurement of towns without bridges is also run on the package of
git revision REV (extracted with ``git archive`` into a temporary folder, in a subprocess,
alternating with this tree's), to compare the renderer before and after a change.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_render.py             # about a minute
    OMP_NUM_THREADS=1 python benchmarks/bench_render.py --rev a09d008
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from geomogeo.data.synth.camera import Camera, CameraRanges, sample_camera
from geomogeo.data.synth.engine import SynthConfig, build_worlds
from geomogeo.data.synth.render import render_photo, render_view

ROOT = Path(__file__).resolve().parents[1]
NO_BRIDGES = (("blob", 1.0), ("building", 3.0), ("road", 1.0))

def _shots(worlds: list, cams: int, seed: int) -> list:
    """``cams`` random oblique cameras over the middle of each world (or town tuple)."""
    rng = np.random.default_rng(seed)
    ranges = CameraRanges(pitch=(10.0, 35.0), sizes=((512, 384),))
    return [(w, sample_camera(rng, *rng.uniform(60, 260, 2), ranges))
            for w in worlds for _ in range(cams)]


def _median_ms(fn: Callable[[Any, Camera], object], shots: list, repeats: int) -> float:
    """Median over ``repeats`` passes of the mean ms per photo of ``fn(world, camera)``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for w, cam in shots:
            fn(w, cam)
        times.append((time.perf_counter() - t0) / len(shots))
    return statistics.median(times) * 1e3


def _plain_ms(pythonpath: Path, args: argparse.Namespace) -> float:
    """This script's ``--plain-only`` measurement with the package found in ``pythonpath``."""
    cmd = [sys.executable, __file__, "--plain-only", "--towns", str(args.towns), "--cams",
           str(args.cams), "--repeats", str(args.repeats)]
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1"}
    return float(subprocess.run(cmd, env=env, capture_output=True, text=True,
                                check=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--towns", type=int, default=3, help="procedural towns of each kind")
    ap.add_argument("--cams", type=int, default=8, help="photos per town")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes")
    ap.add_argument("--rev", help="also time the renderer of this git revision")
    ap.add_argument("--plain-only", action="store_true",
                    help="print only the ms/photo of towns without bridges (used by --rev)")
    args = ap.parse_args()
    plain = build_worlds([], SynthConfig.parallax(kinds=NO_BRIDGES), augment=False,
                         procedural=args.towns, seed=3)
    if args.plain_only:  # runs on older revisions too: only what they already had
        print(_median_ms(lambda w, cam: render_view(w.scene, cam, w.structures, w.sun_azimuth),
                         _shots(plain, args.cams, 0), args.repeats))
        return
    from geomogeo.data.synth.procedural import bridged_town

    bridged = [bridged_town(np.random.default_rng([3, 12, i]), bridge_chance=1.0)
               for i in range(args.towns)]
    flat = _median_ms(lambda w, cam: render_photo(w.scene, cam), _shots(plain, args.cams, 0),
                      args.repeats)
    prisms = _median_ms(lambda w, cam: render_view(w.scene, cam, w.structures, w.sun_azimuth),
                        _shots(plain, args.cams, 0), args.repeats)
    decks = _median_ms(lambda t, cam: render_view(t[0], cam, t[2], 0.0, t[1]),
                       _shots(bridged, args.cams, 0), args.repeats)
    n = args.towns * args.cams
    print(f"render ms/photo, 512 x 384, {n} photos per case, median of {args.repeats} passes")
    print(f"{'case':<36}{'ms':>8}{'x flat':>8}")
    for name, ms in (("flat ground (render_photo)", flat), ("towns without bridges", prisms),
                     ("towns with bridges", decks)):
        print(f"{name:<36}{ms:>8.1f}{ms / flat:>8.2f}")
    if args.rev:
        with tempfile.TemporaryDirectory() as tmp:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.rev, "geomogeo"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            old, new = [], []
            for _ in range(2):  # alternate, against drifts of the machine's load
                old.append(_plain_ms(Path(tmp), args))
                new.append(_plain_ms(ROOT, args))
        o, w = statistics.median(old), statistics.median(new)
        print(f"towns without bridges, {args.rev}: {o:.1f} ms, this tree: {w:.1f} ms "
              f"(x {w / o:.2f}; runs {[round(v, 1) for v in old]} / "
              f"{[round(v, 1) for v in new]})")


if __name__ == "__main__":
    main()
