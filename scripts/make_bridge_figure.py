"""Draw docs/bridge_example.jpg: a parallax sample of a bridged procedural town.

Left: the first photo of at least 25 degrees off nadir with a bridge target, as the data
engine writes it (degraded JPEG), with its clicks; right:
the reference window (the orthophoto, north-up) with the target boxes, scaled to the photo's
height. Colours by kind: bridge red, building yellow, road cyan, blob magenta.

Usage::

    .venv/bin/python scripts/make_bridge_figure.py [--out docs/bridge_example.jpg]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from geomogeo.data.synth.engine import SynthConfig, World, render_sample
from geomogeo.data.synth.procedural import bridged_town

COLOURS = {"bridge": (255, 40, 40), "building": (255, 220, 0), "road": (0, 230, 255),
           "blob": (255, 0, 255)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs"
                                         / "bridge_example.jpg"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = SynthConfig.parallax()
    scene, ground, st = bridged_town(np.random.default_rng(args.seed), bridge_chance=1.0,
                                     name="bridged-town")
    world = World.build(scene, cfg, st, ground)
    for i in range(200):  # the first oblique sample (>= 25 degrees) with a bridge target
        s = render_sample(world, np.random.default_rng([args.seed, i]), cfg, f"bridge-{i}")
        if "bridge" in s.kinds and s.camera.pitch >= 25.0:
            break
    else:
        raise SystemExit("no oblique sample with a bridge target in 200 tries")
    photo = Image.fromarray(s.photo())
    draw = ImageDraw.Draw(photo)
    for (u, v), kind in zip(s.clicks, s.kinds, strict=True):
        draw.ellipse([u - 5, v - 5, u + 5, v + 5], outline=COLOURS[kind], width=2)
    scale = photo.height / s.reference.shape[0]
    ref = Image.fromarray(s.reference).resize((photo.height, photo.height), Image.BILINEAR)
    draw = ImageDraw.Draw(ref)
    for box, kind in zip(s.boxes, s.kinds, strict=True):
        draw.rectangle([float(v) * scale for v in box], outline=COLOURS[kind], width=2)
    out = Image.new("RGB", (photo.width + 8 + ref.width, photo.height), (255, 255, 255))
    out.paste(photo, (0, 0))
    out.paste(ref, (photo.width + 8, 0))
    out.save(args.out, quality=90)
    print(f"{args.out}: sample {s.id}, pitch {s.camera.pitch:.1f} deg, kinds {s.kinds}")


if __name__ == "__main__":
    main()
