"""Train the shipped model and its ablations on data rendered from the sample tiles.

Stages (each reproducible from the seed):

1. scenes: the default tiles (``geomogeo.data.synth.engine.DEFAULT_TILES``) as metric scenes
   at 0.5 m, cached as ``.npz`` in ``--scenes`` (made with rasterio when missing, so the
   training machine itself needs only numpy, scipy, Pillow and torch);
2. data: ``--n-train`` photos from the training tiles (with their rotated/mirrored copies)
   and ``--n-val`` from the validation tiles, rendered in ``--workers`` processes, prepared as
   at inference and packed into ``.npz`` files in ``--work``;
3. training: one ``geomogeo train`` run per variant (full MOGeo, without MOPE, without CVMF,
   without L_s, DetGeo-style baseline) with the same data, seed, steps and schedule,
   side by side on one GPU with ``--parallel`` or one after another.

The held-out test tiles are not used here: evaluate the checkpoints with ``geomogeo
evaluate`` on a manifest from ``geomogeo synth`` (split ``test``).

Packs already in ``--work`` are reused only when they were made for the model of
``--query-stride`` (reference size, query size and query fit, read from the files' headers;
packs without a recorded fit were stretched) and with the same data settings. Each pack has
a sidecar ``packed_<split>.settings.json``: the data engine's configuration
(``--parallax``, ``--targets``, ``--min-object``...), the tiles of the split (``--holdout``),
the seed, the photo count and, for training, ``--rotations``, ``--procedural`` and (when used)
``--suburbs``. Otherwise
the script stops before anything else, with one line on standard error naming the file (and
the settings that differ) and exit code 3 (bad input, as ``geomogeo``): use a fresh ``--work``
folder. A pack without a sidecar (made before it existed) is reused with a warning. The
settings go into every run's configuration (``data.settings``), and so into its checkpoints.

Example (the shipped model)::

    python scripts/train_default.py --out runs/default --n-train 16000 --epochs 12 --parallel
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geomogeo.cli import EXIT_INPUT  # noqa: E402
from geomogeo.data.dataset import pack_items  # noqa: E402
from geomogeo.data.synth.engine import (  # noqa: E402
    DEFAULT_TILES,
    Sample,
    SynthConfig,
    build_worlds,
    generate,
    load_default_scenes,
    tile_splits,
)
from geomogeo.data.synth.scene import save_scene  # noqa: E402
from geomogeo.engine.train import check_packed  # noqa: E402
from geomogeo.errors import ConfigError  # noqa: E402
from geomogeo.nn.config import ModelConfig  # noqa: E402

log = logging.getLogger("train_default")

#: The compared variants: model overrides and loss weight. Everything else is shared.
VARIANTS: dict[str, dict[str, object]] = {
    "full": {},
    "no_mope": {"model": {"click_encoding": "gaussian"}},
    "no_cvmf": {"model": {"fusion": "multiply"}},
    "no_ls": {"optim": {"similarity_weight": 0.0}},
    "detgeo": {"model": {"variant": "detgeo", "click_encoding": "square"}},
    # DetGeo's (1 - d/diag)^2 map on the query feature grid: a very broad position prior
    # (opt-in, not in the default --variants)
    "no_mope_square": {"model": {"click_encoding": "square"}},
}
#: What ``--variants`` runs by default.
DEFAULT_VARIANTS = ("full", "no_mope", "no_cvmf", "no_ls", "detgeo")


#: The model preset of each ``--query-stride``.
PRESETS = {32: "light", 16: "light16"}


def prepare_scenes(folder: Path) -> None:
    """Cache the default tiles as scenes (needs rasterio, only when the cache is missing)."""
    stems = [Path(n).stem for tiles in DEFAULT_TILES.values() for n, _ in tiles]
    if all((folder / f"{s}.npz").is_file() for s in stems):
        return
    folder.mkdir(parents=True, exist_ok=True)
    for split_scenes in load_default_scenes(ROOT / "sample_tiles", SynthConfig()).values():
        for sc in split_scenes:
            save_scene(sc, folder / f"{sc.name}.npz")


SPLITS = ("train", "val")


def pack_path(work: Path, split: str) -> Path:
    return work / f"packed_{split}.npz"


def settings_path(work: Path, split: str) -> Path:
    return work / f"packed_{split}.settings.json"


def data_settings(args: argparse.Namespace, cfg: SynthConfig, split: str) -> dict[str, Any]:
    """How the ``split`` pack is made: JSON-ready, compared with a pack's sidecar."""
    n = args.n_train if split == "train" else args.n_val
    out: dict[str, Any] = {
        "split": split, "photos": n, "seed": args.seed, "holdout": args.holdout,
        "tiles": [name for name, _ in tile_splits(args.holdout)[split]],
        "synth": json.loads(json.dumps(dataclasses.asdict(cfg))),
    }
    if split == "train":
        out.update(rotations=args.rotations, procedural=args.procedural)
        if args.suburbs:  # recorded only when used: older sidecars stay comparable
            out.update(suburbs=args.suburbs)
    return out


def check_work(work: Path, model: ModelConfig, settings: dict[str, dict[str, Any]]) -> None:
    """Refuse packs in ``work`` made for another model's inputs (sizes, query fit) or with
    other data settings than ``settings`` (per split, :func:`data_settings`).

    Raises:
        ConfigError: naming the file, what it holds and what the model or the options ask.
    """
    for split in SPLITS:
        path = pack_path(work, split)
        if not path.is_file():
            continue
        geometry = check_packed(path, model)
        side = settings_path(work, split)
        if not side.is_file():
            log.warning("%s: no recorded data settings (a pack made before they were "
                        "recorded); reusing it as it is", path)
        else:
            try:
                recorded = json.loads(side.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise ConfigError(f"{side}: cannot read the pack's data settings ({e})") from e
            differ = sorted(k for k in {*recorded, *settings[split]}
                            if recorded.get(k) != settings[split].get(k))
            if differ:
                raise ConfigError(f"{path}: made with other data settings ({', '.join(differ)}) "
                                  f"than asked, see {side.name}: use a fresh --work folder")
        log.info("%s: reusing %s (%s)", split, path, geometry)


def make_data(args: argparse.Namespace, cfg: SynthConfig, model: ModelConfig,
              settings: dict[str, dict[str, Any]]) -> dict[str, Path]:
    """Pack the splits missing from ``args.work`` (those there: :func:`check_work`), each
    with its sidecar of ``settings[split]`` (:func:`data_settings`)."""
    scenes = load_default_scenes(args.scenes, cfg, args.holdout)
    out = {}
    for k, (split, n) in enumerate((("train", args.n_train), ("val", args.n_val))):
        path = pack_path(args.work, split)
        out[split] = path
        if path.is_file():
            continue
        train = split == "train"
        worlds = build_worlds(scenes[split], cfg, augment=train, seed=args.seed,
                              rotations=args.rotations if train else 0,
                              procedural=args.procedural if train else 0,
                              suburbs=args.suburbs if train else 0)
        log.info("%s: %d worlds", split, len(worlds))
        t = time.perf_counter()
        items = generate(worlds, n, seed=args.seed * 1000 + k, cfg=cfg, prefix=f"{split}-",
                         workers=args.workers, quiet=args.quiet, post=Sample.pack_item)
        packed = pack_items(items, tuple(model.query_size), model.reference_size,
                            query_fit=model.query_fit)
        packed.save(path)
        settings_path(args.work, split).write_text(
            json.dumps(settings[split], indent=1), encoding="utf-8")
        log.info("%s: %d photos, %d targets in %.0f s", split, len(packed),
                 int(packed.counts.sum()), time.perf_counter() - t)
    return out


def variant_config(name: str, args: argparse.Namespace, data: dict[str, Path],
                   settings: dict[str, dict[str, Any]]) -> dict:
    over = VARIANTS[name]
    return {
        "model": {"preset": PRESETS[args.query_stride],
                  "name": f"mogeo-light-{name}" if name != "full"
                  else "mogeo-light", **over.get("model", {})},
        "data": {"packed_train": str(data["train"]), "packed_val": str(data["val"]),
                 "settings": settings},
        "optim": {"lr": args.lr, "batch_size": args.batch, "epochs": args.epochs,
                  "lr_steps": [round(args.epochs * 0.7), round(args.epochs * 0.9)],
                  "gamma": 0.1, "warmup_steps": args.warmup, **over.get("optim", {})},
        "init_checkpoint": None if args.init is None else str(args.init),
        # the query grid of --query-stride, the rest (anchors too) from --init
        "init_query_grid": "model",
        "out_dir": str(args.out / name),
        "seed": args.seed,
        "device": args.device,
        "max_minutes": args.max_minutes,
        "max_steps": args.max_steps,
        "eval_batch_size": 64,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--scenes", type=Path, default=ROOT / ".cache" / "scenes")
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "packed")
    p.add_argument("--n-train", type=int, default=16000)
    p.add_argument("--n-val", type=int, default=400)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop each variant after this many optimiser steps (the same budget "
                   "for all, whatever the load of the machine)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated, among {', '.join(VARIANTS)}")
    p.add_argument("--parallel", action="store_true", help="run the variants side by side")
    p.add_argument("--rotations", type=int, default=0,
                   help="extra random rotation/scale copies per real training tile")
    p.add_argument("--procedural", type=int, default=0, help="procedural town scenes to add")
    p.add_argument("--suburbs", type=int, default=0,
                   help="suburbs of detached houses to add (procedural.suburb_town)")
    p.add_argument("--init", type=Path, default=None, help="start from these weights")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--data-only", action="store_true")
    p.add_argument("--parallax", action="store_true",
                   help="render with SynthConfig.parallax() (prisms, EXIF GPS, half without "
                   "heading); use a fresh --work folder")
    p.add_argument("--holdout", choices=["las_vegas"], default=None,
                   help="held-out-city split (engine.HOLDOUT_TILES); use a fresh --work folder")
    p.add_argument("--query-stride", type=int, choices=sorted(PRESETS), default=32,
                   help="query grid: 32 (the light preset, 128 px stretched query) or 16 "
                   "(light16: 320 px letterboxed query, the paper's stride); use a fresh --work "
                   "folder")
    p.add_argument("--targets", default=None, metavar="MIN,MAX",
                   help="targets per photo (SynthConfig.targets; default 1,8)")
    p.add_argument("--min-object", type=float, default=None,
                   help="smallest target area, m^2 (SynthConfig.min_object_m2; default 150)")
    p.add_argument("--max-tries", type=int, default=None,
                   help="camera placements tried per photo before the data engine gives up "
                   "(SynthConfig.max_tries; default 50; a scene with few large objects, e.g. "
                   "the validation tiles with --parallax, may need more)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # The per-variant configs resolve relative paths against their own folder.
    args.out, args.work = args.out.resolve(), args.work.resolve()
    args.scenes = args.scenes.resolve()
    args.init = None if args.init is None else args.init.resolve()
    model = ModelConfig.light16() if args.query_stride == 16 else ModelConfig.light()
    synth: dict[str, object] = {}
    if args.targets is not None:
        lo, hi = (int(v) for v in args.targets.split(","))
        synth["targets"] = (lo, hi)
    if args.min_object is not None:
        synth["min_object_m2"] = args.min_object
    if args.max_tries is not None:
        synth["max_tries"] = args.max_tries
    cfg = (SynthConfig.parallax if args.parallax else SynthConfig)(**synth)
    settings = {split: data_settings(args, cfg, split) for split in SPLITS}
    try:
        check_work(args.work, model, settings)
    except ConfigError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(EXIT_INPUT)
    prepare_scenes(args.scenes)
    args.work.mkdir(parents=True, exist_ok=True)
    data = make_data(args, cfg, model, settings)
    if args.data_only:
        return
    procs = []
    for name in args.variants.split(","):
        run = args.out / name
        run.mkdir(parents=True, exist_ok=True)
        cfg_path = run / "train.json"
        cfg_path.write_text(json.dumps(variant_config(name, args, data, settings), indent=2))
        cmd = [sys.executable, "-m", "geomogeo.cli", "-q", "-v", "train", str(cfg_path)]
        log.info("%s: %s", name, " ".join(cmd))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        log_file = (run / "train.log").open("w")
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        if args.parallel:
            procs.append((name, proc))
        else:
            proc.wait()
            procs.append((name, proc))
    for name, proc in procs:
        rc = proc.wait()
        log.info("%s finished with exit code %d", name, rc)


if __name__ == "__main__":
    main()
