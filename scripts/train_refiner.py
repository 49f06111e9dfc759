"""Train the box refiner (``geomogeo.nn.refine``) on packed photos.

The packs are those of ``scripts/train_default.py`` (``--work``: ``packed_train.npz``,
``packed_val.npz``); ``--procedural-val`` adds a validation pack of procedural towns that no
training run drew (their random streams start from ``--town-seed``), made here when missing,
so that the refiner is also selected on buildings with exact footprints.

The first shipped refiner (``model/box-refiner-v1.pt``, see the model card)::

    python scripts/train_refiner.py --train runs/lv16/work/packed_train.npz \\
        --val runs/lv16/work/packed_val.npz --procedural-val runs/refiner/proc_val.npz \\
        --out runs/refiner/box-refiner.pt --epochs 10

where ``runs/lv16/work`` holds the packs of the held-out-city model (no Las Vegas). The
default one (``model/box-refiner-v2.pt``) adds the hand-digitized buildings of Rotterdam a
(``--footprint-train``) and 60 suburbs of detached houses (``--suburb-train``) to training,
and Rotterdam c's buildings (``--footprint-val``) to selection::

    python scripts/train_refiner.py --train runs/lv16/work/packed_train.npz \\
        --val runs/lv16/work/packed_val.npz --procedural-val runs/refiner/proc_val.npz \\
        --footprint-train runs/refiner2/fp_train.npz --footprint-val runs/refiner2/fp_val.npz \\
        --suburb-train runs/refiner2/suburb_train.npz --out runs/refiner2/box-refiner.pt \\
        --epochs 10

The footprint and suburb packs are rendered (made when missing) with the data engine's
parallax settings; each validation pack's mean IoU counts equally in the selection.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from geomogeo.data.dataset import PackedData, pack_items
from geomogeo.data.synth.engine import Sample, SynthConfig, World, build_worlds, generate
from geomogeo.data.synth.scene import scene_from_raster
from geomogeo.engine.refine_train import RefinerTrainConfig, train_refiner
from geomogeo.nn.refine import RefinerConfig

#: The data engine's settings of every rendered pack: parallax photos, targets >= 150 m^2.
PARALLAX = SynthConfig.parallax(min_object_m2=150.0)
#: Where the sample tiles are.
TILES = Path(__file__).resolve().parents[1] / "sample_tiles"
#: The refiner's own split of the tiles with hand-digitized footprints (file, bands).
FOOTPRINT_TILES = {
    "train": (("rotterdam_pan_0p5m_a.tif", None), ("rotterdam_rgbn_1m_a.tif", (1, 2, 3))),
    "val": (("rotterdam_pan_0p5m_c.tif", None), ("rotterdam_rgbn_1m_c.tif", (1, 2, 3))),
}


def rendered_pack(path: Path, worlds: Callable[[], list[World]], photos: int, seed: int,
                  prefix: str, quiet: bool) -> PackedData:
    """A pack of ``photos`` parallax photos of the worlds ``worlds()`` builds (targets >=
    150 m^2, random streams from ``seed``) for the light16 network's inputs, read from ``path``
    when it exists (the worlds are then not built), else rendered and saved there."""
    if path.is_file():
        return PackedData.load(path)
    items = generate(worlds(), photos, seed=seed, cfg=PARALLAX, prefix=prefix, quiet=quiet,
                     post=Sample.pack_item)
    pack = pack_items(items, (320, 320), PARALLAX.reference_size, query_fit="letterbox")
    path.parent.mkdir(parents=True, exist_ok=True)
    pack.save(path)
    return pack


def procedural_val(path: Path, towns: int, photos: int, seed: int, quiet: bool) -> PackedData:
    """Photos of ``towns`` procedural towns that no training run drew (streams from
    ``seed``)."""
    return rendered_pack(path, lambda: build_worlds([], PARALLAX, augment=False, seed=seed,
                                                    procedural=towns),
                         photos, seed * 1000 + 777, "pval-", quiet)


def footprint_pack(path: Path, split: str, photos: int, seed: int, quiet: bool) -> PackedData:
    """Photos of the tiles with hand-digitized footprints (``geomogeo/data/footprints``) as they
    are (not turned, so that their buildings are those footprints): ``train`` Rotterdam a,
    ``val`` Rotterdam c (both sensors; b has no footprints)."""
    return rendered_pack(path, lambda: build_worlds(
        [scene_from_raster(TILES / name, gsd=PARALLAX.render_gsd, bands=bands)
         for name, bands in FOOTPRINT_TILES[split]], PARALLAX, augment=False, seed=seed),
        photos, seed * 1000 + 555, f"fp{split}-", quiet)


def suburb_pack(path: Path, towns: int, photos: int, seed: int, quiet: bool) -> PackedData:
    """Photos of ``towns`` suburbs of detached houses (:func:`~geomogeo.data.synth.procedural.
    suburb_town`, streams from ``seed``)."""
    return rendered_pack(path, lambda: build_worlds([], PARALLAX, augment=False, seed=seed,
                                                    suburbs=towns),
                         photos, seed * 1000 + 333, "sub-", quiet)


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


def add_training_options(p: argparse.ArgumentParser, epochs: int, batch: int) -> None:
    """The options of a refiner's training (:class:`RefinerTrainConfig`, :func:`training`)."""
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--jitter", type=float, default=2.0, help="crop offset sigma, pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float)
    p.add_argument("--quiet", action="store_true")


def training(a: argparse.Namespace) -> RefinerTrainConfig:
    """The :class:`RefinerTrainConfig` of :func:`add_training_options`' options."""
    return RefinerTrainConfig(epochs=a.epochs, batch_size=a.batch, lr=a.lr, jitter_px=a.jitter,
                              seed=a.seed, max_minutes=a.max_minutes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=Path, action="append", required=True, help="training pack")
    p.add_argument("--val", type=Path, action="append", default=[], help="validation pack")
    p.add_argument("--procedural-val", type=Path, help="procedural validation pack (made "
                   "when missing)")
    p.add_argument("--towns", type=int, default=30)
    p.add_argument("--town-photos", type=int, default=300)
    p.add_argument("--town-seed", type=int, default=99)
    p.add_argument("--footprint-train", type=Path, help="pack of the training tiles' "
                   "digitized buildings (made when missing)")
    p.add_argument("--footprint-val", type=Path, help="pack of the validation tiles' "
                   "digitized buildings (made when missing)")
    p.add_argument("--footprint-photos", type=int, default=1500,
                   help="photos per footprint pack")
    p.add_argument("--footprint-seed", type=int, default=41)
    p.add_argument("--suburb-train", type=Path, help="pack of suburbs of detached houses "
                   "(made when missing)")
    p.add_argument("--suburbs", type=int, default=60, help="suburb towns")
    p.add_argument("--suburb-photos", type=int, default=2000)
    p.add_argument("--suburb-seed", type=int, default=77)
    add_training_options(p, epochs=10, batch=64)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    val = [PackedData.load(v) for v in a.val]
    if a.procedural_val is not None:
        val.append(procedural_val(a.procedural_val, a.towns, a.town_photos, a.town_seed,
                                  a.quiet))
    if a.footprint_val is not None:
        val.append(footprint_pack(a.footprint_val, "val", a.footprint_photos // 3,
                                  a.footprint_seed + 1, a.quiet))
    if not val:
        p.error("give at least one --val, --procedural-val or --footprint-val pack")
    train = [PackedData.load(t) for t in a.train]
    if a.footprint_train is not None:
        train.append(footprint_pack(a.footprint_train, "train", a.footprint_photos,
                                    a.footprint_seed, a.quiet))
    if a.suburb_train is not None:
        train.append(suburb_pack(a.suburb_train, a.suburbs, a.suburb_photos, a.suburb_seed,
                                 a.quiet))
    for pk, name in ((train, "train"), (val, "val")):
        gsd = np.unique(np.concatenate([x.metres_per_pixel for x in pk]))
        logging.info("%s: %d photos, %d targets, reference GSD %s m", name,
                     sum(len(x) for x in pk), sum(len(x.boxes) for x in pk), gsd)
    record = {"train_packs": [str(t) for t in [*a.train, *filter(None, [a.footprint_train,
                                                                        a.suburb_train])]],
              "val_packs": [str(v) for v in [*a.val, *filter(None, [a.procedural_val,
                                                                    a.footprint_val])]],
              "pack_settings": pack_settings([*a.train, *a.val]),
              "towns": a.towns, "town_photos": a.town_photos, "town_seed": a.town_seed,
              "footprint_photos": a.footprint_photos, "footprint_seed": a.footprint_seed,
              "footprint_tiles": FOOTPRINT_TILES, "suburbs": a.suburbs,
              "suburb_photos": a.suburb_photos, "suburb_seed": a.suburb_seed}
    hist = train_refiner(train, val, a.out, config=RefinerConfig(), train_config=training(a),
                         quiet=a.quiet, record=record)
    print(json.dumps(hist, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
