"""Train the mask refiner (``geomogeo.nn.mask_refine``) on the data engine's worlds.

Its samples are every known footprint and blob hull (>= 150 m^2) of the worlds' 1 m
references, with their soft masks (``geomogeo.engine.refine_train.mask_samples``): the tiles
with hand-digitized footprints (Rotterdam a, both sensors, as they are: their buildings are
those footprints), their turned, mirrored and rotated copies (blobs only: the copies lose the
tiles' georeference), and for each ``--world-seed`` ``--towns`` procedural towns and
``--suburbs`` suburbs of detached houses. No Las Vegas, no Rotterdam b or c. The epoch is
kept on the box refiner's validation packs (``--val``, made by ``scripts/train_refiner.py``).

The shipped one (``model/mask-refiner-v1.pt``, see the model card)::

    python scripts/train_mask_refiner.py --val runs/lv16/work/packed_val.npz \\
        --val runs/refiner2/fp_val.npz --val runs/refiner/proc_val.npz \\
        --world-seed 21 --world-seed 22 --out runs/mask/mask-refiner.pt --epochs 14
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from train_refiner import (
    FOOTPRINT_TILES,
    PARALLAX,
    TILES,
    add_training_options,
    pack_settings,
    training,
)

from geomogeo.data.dataset import PackedData
from geomogeo.data.synth.engine import World, build_worlds
from geomogeo.data.synth.scene import scene_from_raster
from geomogeo.engine.refine_train import mask_samples, train_mask_refiner
from geomogeo.nn.mask_refine import MaskRefinerConfig

#: Extra copies of each tile besides its 8 turns and mirrors (random rotation and zoom).
ROTATIONS = 2


def training_worlds(world_seeds: list[int], towns: int, suburbs: int) -> list[World]:
    """The training worlds (see the module doc)."""
    tiles = [scene_from_raster(TILES / name, gsd=PARALLAX.render_gsd, bands=bands)
             for name, bands in FOOTPRINT_TILES["train"]]
    worlds = build_worlds(tiles, PARALLAX, augment=False, seed=3)
    copies = build_worlds(tiles, PARALLAX, augment=True, rotations=ROTATIONS, seed=4)
    per_tile = 8 + ROTATIONS  # the first of each tile's copies is the tile as it is
    worlds += [w for i, w in enumerate(copies) if i % per_tile]
    for seed in world_seeds:
        worlds += build_worlds([], PARALLAX, augment=False, seed=seed, procedural=towns,
                               suburbs=suburbs)
    return worlds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--val", type=Path, action="append", required=True,
                   help="validation pack (scripts/train_refiner.py's)")
    p.add_argument("--world-seed", type=int, action="append", default=[],
                   help="seed of a set of procedural towns and suburbs (repeatable)")
    p.add_argument("--towns", type=int, default=40, help="procedural towns per seed")
    p.add_argument("--suburbs", type=int, default=40, help="suburbs per seed")
    add_training_options(p, epochs=14, batch=32)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = MaskRefinerConfig()
    worlds = training_worlds(a.world_seed, a.towns, a.suburbs)
    train = mask_samples(worlds, cfg.crop_size + 32, PARALLAX.min_object_m2, quiet=a.quiet)
    logging.info("train: %d worlds, %d targets", len(worlds), len(train))
    val = [PackedData.load(v) for v in a.val]
    record = {"val_packs": [str(v) for v in a.val], "pack_settings": pack_settings(a.val),
              "world_seeds": a.world_seed,
              "towns": a.towns, "suburbs": a.suburbs, "rotations": ROTATIONS,
              "footprint_tiles": FOOTPRINT_TILES["train"], "targets": len(train)}
    hist = train_mask_refiner(train, val, a.out, config=cfg, train_config=training(a),
                              quiet=a.quiet, record=record)
    print(json.dumps(hist, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
