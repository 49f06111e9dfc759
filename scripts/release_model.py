"""Copy a trained checkpoint into ``model/`` and record its sha256.

    python scripts/release_model.py runs/cpu/full/best.pt --name mogeo-light-v2.pt
    python scripts/release_model.py runs/refiner/box-refiner.pt --role refiner \
        --name box-refiner-v1.pt
    python scripts/release_model.py runs/mask/mask-refiner.pt --role refiner-add \
        --name mask-refiner-v1.pt

Checks that the file loads without pickle, is at most 25 MB and (a network) covers at least
250 m of ground; a checkpoint that records no ``content_sha256`` (written before geomogeo
recorded one) is re-saved with it, same tensors, so that copies of it verify themselves;
updates ``model/checkpoints.json`` (``{"default": name, "refiner": name or [names],
"files": {name: {"sha256", "bytes", "model", "reference_m"}}}``; other files' entries are
kept) atomically: ``--role default`` makes it the default network, ``refiner`` the default
box refiner, ``refiner-add`` one more default refiner (their boxes are averaged,
``geomogeo.predictor.MeanRefiner``), ``extra`` only lists it. The model card quotes the same hash.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from geomogeo.engine.checkpoint import (  # noqa: E402
    INDEX_NAME,
    content_sha256,
    load_checkpoint,
    load_refiner,
    sha256_file,
)
from geomogeo.geo.export import atomic_write  # noqa: E402

MAX_BYTES = 25 * 1024 * 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--name", default="mogeo-light-v2.pt")
    p.add_argument("--role", choices=["default", "refiner", "refiner-add", "extra"],
                   default="default")
    args = p.parse_args()
    refiner = args.role.startswith("refiner")
    ck = load_refiner(args.checkpoint) if refiner else load_checkpoint(args.checkpoint)
    size = args.checkpoint.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{args.checkpoint}: {size} bytes, over the 25 MB limit")
    entry = {"model": ck.model_config.name}
    if not refiner:
        extent = ck.model_config.reference_size * ck.model_config.gsd
        if extent < 250:
            raise SystemExit(f"{args.checkpoint}: reference window covers {extent} m < 250 m")
        entry["reference_m"] = extent
    dest = ROOT / "model" / args.name
    dest.parent.mkdir(exist_ok=True)
    with atomic_write(dest) as tmp:
        if "content_sha256" in ck.raw:
            shutil.copyfile(args.checkpoint, tmp)
        else:
            raw = ck.raw
            torch.save({**raw, "content_sha256": content_sha256(raw["model_config"],
                                                                raw["state_dict"])}, tmp)
    size = dest.stat().st_size
    digest = sha256_file(dest)
    index_path = ROOT / "model" / INDEX_NAME
    index = json.loads(index_path.read_text(encoding="utf-8")) if index_path.is_file() else {}
    index.setdefault("files", {})[args.name] = {"sha256": digest, "bytes": size, **entry}
    if args.role == "refiner-add":
        current = index.get("refiner", [])
        members = [current] if isinstance(current, str) else list(current)
        index["refiner"] = [*(m for m in members if m != args.name), args.name]
    elif args.role != "extra":
        index[args.role] = args.name
    with atomic_write(index_path) as tmp:
        Path(tmp).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    print(f"{dest} sha256 {digest} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
