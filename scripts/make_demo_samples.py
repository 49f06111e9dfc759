"""Render the demo's sample photos from the held-out tile (``sample_tiles/demo/``).

Each photo is a synthetic drone view of ``rotterdam_pan_0p5m_c.tif`` (never used in
training or model selection) made by the data engine, saved as JPEG with EXIF GPS (the
GPS-like *measured* position, altitude above ground, and the compass heading), and listed
in ``sample_tiles/demo.json`` with its clicks and the known answer of every target as a
polygon in the raster's CRS. Deterministic: ``python scripts/make_demo_samples.py`` rewrites
the same files.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geomogeo.data.synth.engine import (  # noqa: E402
    SynthConfig,
    World,
    gps_exif,
    render_sample,
)
from geomogeo.data.synth.scene import scene_from_raster  # noqa: E402
from geomogeo.geo import georef  # noqa: E402

TILE = "rotterdam_pan_0p5m_c.tif"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--out", type=Path, default=ROOT / "sample_tiles")
    args = p.parse_args()
    cfg = SynthConfig(targets=(2, 6))
    scene = scene_from_raster(args.out / TILE, gsd=cfg.render_gsd)
    world = World.build(scene, cfg)
    (args.out / "demo").mkdir(parents=True, exist_ok=True)
    photos = []
    for i in range(args.n):
        s = render_sample(world, np.random.default_rng([args.seed, i]), cfg, f"demo-{i + 1}")
        lon, lat = georef.to_lonlat(s.measured_xy[0], s.measured_xy[1], scene.crs)
        rel = f"demo/photo_{i + 1}.jpg"
        im = Image.open(io.BytesIO(s.jpeg))
        im.save(args.out / rel, quality=95,
                exif=gps_exif(lon, lat, s.heading, altitude=s.camera.altitude))
        a, _, c, _, e, f = s.transform
        answers = [[[c + a * x, f + e * y] for x, y in
                    ((b[0], b[1]), (b[2], b[1]), (b[2], b[3]), (b[0], b[3]), (b[0], b[1]))]
                   for b in s.boxes]
        photos.append({
            "photo": rel,
            "clicks": [[round(float(x), 3), round(float(y), 3)] for x, y in s.clicks],
            "answers": answers,
            "camera": {"altitude_m": round(s.camera.altitude, 2),
                       "pitch_deg": round(s.camera.pitch, 2),
                       "hfov_deg": round(s.camera.hfov, 2),
                       "true_yaw_deg": round(s.camera.yaw, 2)},
        })
    spec = {
        "raster": TILE,
        "note": "synthetic drone views of a real held-out orthophoto tile, made by "
                "scripts/make_demo_samples.py; answers are polygons in the raster CRS "
                "(EPSG:32631)",
        "photos": photos,
    }
    (args.out / "demo.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    print(f"wrote {len(photos)} photos, {sum(len(p['clicks']) for p in photos)} targets")


if __name__ == "__main__":
    main()
