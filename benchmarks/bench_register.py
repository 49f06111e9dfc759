"""Cost of registering one photo to its reference window, against today's default localization.

The photo: a 1024 x 768 drone view rendered by the data engine's camera (80 m, 20 degrees off
nadir) from Rotterdam tile a (a training tile: cost does not depend on the place); the
reference: a 512 x 512 window at 0.5 m read from the same tile with
``geomogeo.geo.raster.read_window``. ``register`` is timed with the scale hint EXIF would give
and without a hint (pyramid of photo scales). The baseline is the project's default
one-photo localization, ``Localizer.load().localize(...)`` (shipped model, default
test-time augmentation) on the first demo photo and its clicks, measured in this process.
Medians of ``--repeats`` runs after a warm-up, wall-clock and CPU time (the CPU time of all
threads of the process, less sensitive to other programs sharing the cores).

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_register.py         # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import torch

from geomogeo.data.synth.camera import Camera
from geomogeo.data.synth.render import render_photo
from geomogeo.data.synth.scene import scene_from_raster
from geomogeo.geo import raster
from geomogeo.geo.register import register
from geomogeo.localize import Localizer

TILES = Path(__file__).resolve().parents[1] / "sample_tiles"


def _median_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall-clock and median CPU time (all threads of this process), milliseconds."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per case")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    tile = TILES / "rotterdam_pan_0p5m_a.tif"
    scene = scene_from_raster(tile, gsd=0.5)
    cx, cy = scene.pixel_to_map(300.0, 300.0)
    cam = Camera(x=float(cx), y=float(cy), altitude=80.0, yaw=130.0, pitch=20.0, hfov=75.0,
                 width=1024, height=768)
    photo = render_photo(scene, cam)
    win = raster.read_window(raster.open_raster(tile), (float(cx), float(cy)), 512, 0.5)
    hint = cam.altitude / cam.focal / win.gsd
    for h in (hint, None):
        reg = register(photo, win.image, reference_valid=win.valid, scale_hint=h)
        if not reg.ok:
            raise SystemExit(f"benchmark photo did not register (hint {h}): {reg.reason}")

    demo = json.loads((TILES / "demo.json").read_text())
    item = demo["photos"][0]
    loc = Localizer.load()

    def baseline() -> object:
        return loc.localize(TILES / item["photo"], TILES / demo["raster"], item["clicks"],
                            quiet=True)

    base = _median_ms(baseline, args.repeats)
    with_hint = _median_ms(lambda: register(photo, win.image, reference_valid=win.valid,
                                            scale_hint=hint), args.repeats)
    no_hint = _median_ms(lambda: register(photo, win.image, reference_valid=win.valid),
                         args.repeats)
    print(f"registration, photo {cam.width}x{cam.height}, reference 512x512 @ 0.5 m, "
          f"{args.threads} CPU threads, median of {args.repeats}")
    print(f"{'case':<44}{'wall ms':>9}{'x baseline':>12}{'CPU ms':>9}{'x baseline':>12}")
    for name, (wall, cpu) in (("Localizer.load().localize (demo photo 1)", base),
                              ("register, EXIF scale hint", with_hint),
                              ("register, no hint (pyramid of 3 scales)", no_hint)):
        print(f"{name:<44}{wall:>9.1f}{wall / base[0]:>12.3f}{cpu:>9.1f}{cpu / base[1]:>12.3f}")


if __name__ == "__main__":
    main()
