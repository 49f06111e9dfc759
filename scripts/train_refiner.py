"""Train the box refiner (``geomogeo.nn.refine``) on packed photos.

The packs are those of ``scripts/train_default.py`` (``--work``: ``packed_train.npz``,
``packed_val.npz``); ``--procedural-val`` adds a validation pack of procedural towns that no
training run drew (their random streams start from ``--town-seed``), made here when missing,
so that the refiner is also selected on buildings with exact footprints.

The shipped refiner (``model/box-refiner-v1.pt``, see the model card)::

    python scripts/train_refiner.py --train runs/lv16/work/packed_train.npz \\
        --val runs/lv16/work/packed_val.npz --procedural-val runs/refiner/proc_val.npz \\
        --out runs/refiner/box-refiner.pt --epochs 10

where ``runs/lv16/work`` holds the packs of the held-out-city model (no Las Vegas).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from geomogeo.data.dataset import PackedData, pack_items
from geomogeo.data.synth.engine import Sample, SynthConfig, build_worlds, generate
from geomogeo.engine.refine_train import RefinerTrainConfig, train_refiner
from geomogeo.nn.refine import RefinerConfig


def procedural_val(path: Path, towns: int, photos: int, seed: int, quiet: bool) -> PackedData:
    """A pack of ``photos`` parallax photos of ``towns`` procedural towns (streams from
    ``seed``), targets >= 150 m^2, for the light16 network's inputs."""
    if path.is_file():
        return PackedData.load(path)
    cfg = SynthConfig.parallax(min_object_m2=150.0)
    worlds = build_worlds([], cfg, augment=False, seed=seed, procedural=towns)
    items = generate(worlds, photos, seed=seed * 1000 + 777, cfg=cfg, prefix="pval-",
                     quiet=quiet, post=Sample.pack_item)
    pack = pack_items(items, (320, 320), cfg.reference_size, query_fit="letterbox")
    path.parent.mkdir(parents=True, exist_ok=True)
    pack.save(path)
    return pack


def pack_settings(packs: list[Path]) -> dict[str, object]:
    """Each pack's data settings, from the sidecar ``scripts/train_default.py`` writes next
    to it (``packed_<split>.settings.json``: tiles, hold-out city, seed...), where there is
    one."""
    out: dict[str, object] = {}
    for p in packs:
        side = p.with_suffix(".settings.json")
        if side.is_file():
            out[str(p)] = json.loads(side.read_text(encoding="utf-8"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=Path, action="append", required=True, help="training pack")
    p.add_argument("--val", type=Path, action="append", default=[], help="validation pack")
    p.add_argument("--procedural-val", type=Path, help="procedural validation pack (made "
                   "when missing)")
    p.add_argument("--towns", type=int, default=30)
    p.add_argument("--town-photos", type=int, default=300)
    p.add_argument("--town-seed", type=int, default=99)
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--jitter", type=float, default=2.0, help="crop offset sigma, pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    val = [PackedData.load(v) for v in a.val]
    if a.procedural_val is not None:
        val.append(procedural_val(a.procedural_val, a.towns, a.town_photos, a.town_seed,
                                  a.quiet))
    if not val:
        p.error("give at least one --val or --procedural-val pack")
    train = [PackedData.load(t) for t in a.train]
    for pk, name in ((train, "train"), (val, "val")):
        gsd = np.unique(np.concatenate([x.metres_per_pixel for x in pk]))
        logging.info("%s: %d photos, %d targets, reference GSD %s m", name,
                     sum(len(x) for x in pk), sum(len(x.boxes) for x in pk), gsd)
    record = {"train_packs": [str(t) for t in a.train],
              "val_packs": [str(v) for v in [*a.val, *filter(None, [a.procedural_val])]],
              "pack_settings": pack_settings([*a.train, *a.val]),
              "towns": a.towns, "town_photos": a.town_photos, "town_seed": a.town_seed}
    tc = RefinerTrainConfig(epochs=a.epochs, batch_size=a.batch, lr=a.lr, jitter_px=a.jitter,
                            seed=a.seed, max_minutes=a.max_minutes)
    hist = train_refiner(train, val, a.out, config=RefinerConfig(), train_config=tc,
                         quiet=a.quiet, record=record)
    print(json.dumps(hist, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
