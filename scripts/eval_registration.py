"""Registration accuracy on rendered drone photos of a held-out tile (prints the figures).

Photos come from the data engine (``geomogeo.data.synth``) with its default settings (camera
60-120 m, 0-35 degrees off nadir, lens distortion, photometric degradation, GPS error 3 m per
axis). Each photo is registered against a north-up reference window read from the tile's
GeoTIFF with ``geomogeo.geo.raster.read_window`` around the photo's *measured* (GPS) position,
and also against a window of another place (Rotterdam tile a at the same relative position)
to measure false accepts.

Figures: success rate (``Registration.ok``), median click error on the ground (mapped click vs
the clicked ground point, metres), median heading error vs the camera's true yaw (degrees),
median camera-position error (nadir point, metres; with the focal length estimated from the
homography and with the true one, as EXIF ``FocalLengthIn35mmFilm`` would give it), median
time of ``register`` per photo, and the false-accept rate on the wrong windows.

    PYTHONPATH=. OMP_NUM_THREADS=2 .venv/bin/python scripts/eval_registration.py     # test tile
    PYTHONPATH=. .venv/bin/python scripts/eval_registration.py --split val --n 100   # tuning
    PYTHONPATH=. .venv/bin/python scripts/eval_registration.py --hint none           # no EXIF

``--other-sensor`` registers the photos of each tile against the other tile of the same place
(pan 0.5 m vs RGB 1 m), a proxy for a reference from another sensor.
``--hint exif`` (default) passes the scale hint EXIF would give (true height above ground and
focal length: ``altitude / focal_px / gsd``); ``--hint none`` registers without it.
"""

from __future__ import annotations

import argparse
import collections
import math
import time
from pathlib import Path

import numpy as np

from geomogeo.data.synth.engine import DEFAULT_TILES, SynthConfig, build_worlds, generate
from geomogeo.data.synth.scene import scene_from_raster
from geomogeo.geo import georef, raster
from geomogeo.geo.register import RegisterConfig, register

WRONG_TILE = "rotterdam_pan_0p5m_a.tif"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test", choices=sorted(DEFAULT_TILES))
    ap.add_argument("--n", type=int, default=200, help="photos (alternating over the tiles)")
    ap.add_argument("--size", type=int, default=512, help="reference window side, pixels")
    ap.add_argument("--gsd", type=float, default=0.5, help="reference metres per pixel")
    ap.add_argument("--hint", choices=("exif", "none"), default="exif")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] /
                    "sample_tiles")
    ap.add_argument("--no-wrong", action="store_true", help="skip the false-accept run")
    ap.add_argument("--other-sensor", action="store_true",
                    help="register each photo against the split's OTHER tile of the same place "
                    "(pan 0.5 m <-> RGB(N) 1 m): a change of sensor and resolution")
    args = ap.parse_args()

    cfg = SynthConfig()
    tiles = DEFAULT_TILES[args.split]
    scenes = [scene_from_raster(args.data / name, gsd=cfg.render_gsd, bands=bands)
              for name, bands in tiles]
    opened = [raster.open_raster(args.data / name, bands=bands) for name, bands in tiles]
    if args.other_sensor:
        opened = opened[::-1]
    sources = {Path(name).stem: src for (name, _), src in zip(tiles, opened, strict=True)}
    wrong_src = raster.open_raster(args.data / WRONG_TILE)
    worlds = build_worlds(scenes, cfg, augment=False)
    samples = generate(worlds, args.n, seed=args.seed, cfg=cfg, prefix=f"{args.split}-",
                       quiet=True)
    rcfg = RegisterConfig()

    ok, click_err, head_err, cam_err, cam_err_f, times, cpu = [], [], [], [], [], [], []
    reasons: collections.Counter[str] = collections.Counter()
    wrong_ok = 0
    for s in samples:
        cam = s.camera
        src = sources[s.scene]
        # read_window needs a centre on the raster; a GPS fix just off the tile is moved onto it.
        left, bottom, right, top = src.bounds
        centre = (min(max(s.measured_xy[0], left), right), min(max(s.measured_xy[1], bottom), top))
        win = raster.read_window(src, centre, args.size, args.gsd)
        hint = cam.altitude / cam.focal / args.gsd if args.hint == "exif" else None
        photo = s.photo()
        t0, c0 = time.perf_counter(), time.process_time()
        reg = register(photo, win.image, reference_valid=win.valid, scale_hint=hint, config=rcfg)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        ok.append(reg.ok)
        if not reg.ok:
            reasons[reg.reason.split(" (")[0].split(":")[0]] += 1
        else:
            px = reg.map_points(s.clicks)
            mx, my = georef.pixel_to_map(win.transform, px[:, 0], px[:, 1])
            click_err.extend(np.hypot(mx - s.ground[:, 0], my - s.ground[:, 1]).tolist())
            d = (reg.heading(cam.width, cam.height) - cam.yaw + 180.0) % 360.0 - 180.0
            head_err.append(abs(d))
            for f, out in ((None, cam_err), (cam.focal, cam_err_f)):
                pos = reg.camera_position(cam.width, cam.height, focal_px=f)
                if pos is None:
                    out.append(math.inf)
                    continue
                x, y = georef.pixel_to_map(win.transform, pos[0], pos[1])
                out.append(math.hypot(x - cam.x, y - cam.y))
        if not args.no_wrong:
            # Another place: the same relative position on another tile.
            l0, b0, r0, t0_ = src.bounds
            l1, b1, r1, t1 = wrong_src.bounds
            fx = (centre[0] - l0) / (r0 - l0)
            fy = (centre[1] - b0) / (t0_ - b0)
            wc = (l1 + fx * (r1 - l1), b1 + fy * (t1 - b1))
            wwin = raster.read_window(wrong_src, wc, args.size, args.gsd)
            wrong_ok += register(photo, wwin.image, reference_valid=wwin.valid,
                                 scale_hint=hint, config=rcfg).ok

    n = len(samples)
    ce = np.asarray(click_err)
    print(f"data: {n} rendered photos of the {args.split} tiles "
          f"({', '.join(t for t, _ in tiles)}), synth seed {args.seed}, default SynthConfig "
          f"(GPS sigma {cfg.gps_sigma_m} m); reference windows {args.size} px at {args.gsd} m "
          f"around the GPS position"
          f"{' of the other sensor' if args.other_sensor else ''}; scale hint: {args.hint}")
    print(f"success (ok): {np.mean(ok):.3f} ({sum(ok)}/{n})")
    if reasons:
        print("failures: " + "; ".join(f"{k} x{v}" for k, v in reasons.most_common()))
    if len(ce):
        print(f"click error on the ground (ok photos, {len(ce)} clicks): median {np.median(ce):.2f}"
              f" m, p90 {np.percentile(ce, 90):.2f} m, max {ce.max():.2f} m, "
              f"share <= 1 m {np.mean(ce <= 1.0):.3f}")
        print(f"heading error: median {np.median(head_err):.2f} deg, "
              f"p90 {np.percentile(head_err, 90):.2f} deg")
        for name, e in (("estimated focal", cam_err), ("true (EXIF) focal", cam_err_f)):
            e = np.asarray(e)
            print(f"camera position error ({name}): median {np.median(e):.2f} m, "
                  f"p90 {np.percentile(e, 90):.2f} m, none returned {np.mean(np.isinf(e)):.3f}")
    print(f"time per photo (register): median {1000 * np.median(times):.0f} ms wall-clock, "
          f"{1000 * np.median(cpu):.0f} ms CPU (all threads)")
    if not args.no_wrong:
        print(f"false accepts against a window of another place ({WRONG_TILE}): "
              f"{wrong_ok}/{n} = {wrong_ok / n:.3f}")


if __name__ == "__main__":
    main()
