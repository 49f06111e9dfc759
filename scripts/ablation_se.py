"""An ablation table with standard errors: checkpoints evaluated on the same photos.

    python scripts/ablation_se.py out/qgrid_val/manifest.jsonl --split val \\
        runs/qgrid/{full,no_mope,detgeo,no_cvmf,no_ls}/best.pt

For each checkpoint (its row is named after its folder) the photos of the manifest are packed
as its configuration says (query size and fit) and predicted (``--tta``, default one network
pass); a target is correct at t iff IoU > t, a photo iff all its targets are (accI). Each
figure comes with two standard errors: the binomial one, sqrt(p (1 - p) / n) over targets
(photos for accI), and the bootstrap one over photos (``--boot`` resamples of the photos with
replacement, seeded), which also counts the correlation of the targets of one photo. The last
two columns are each row's acc@0.25 and acc@0.5 minus the first row's, with the paired
bootstrap SE of the difference (the same resampled photos for both), to say whether a
difference is within noise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geomogeo.data.dataset import pack_manifest  # noqa: E402
from geomogeo.engine.checkpoint import load_checkpoint  # noqa: E402
from geomogeo.engine.metrics import box_iou  # noqa: E402
from geomogeo.engine.train import predict_boxes  # noqa: E402

THRESHOLDS = (0.25, 0.5)


def per_target_iou(checkpoint: Path, manifest: Path, split: str | None, tta: str
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(IoU of every target (T,), photo index of every target (T,))."""
    ck = load_checkpoint(checkpoint)
    cfg = ck.model_config
    data = pack_manifest(manifest, split, tuple(cfg.query_size), cfg.reference_size,
                         query_fit=cfg.query_fit)
    boxes, _ = predict_boxes(ck.model, data, batch_size=16, tta=tta)
    return box_iou(boxes, data.boxes), np.repeat(np.arange(len(data)), data.counts)


def rates(iou: np.ndarray, photo: np.ndarray, n_photos: int) -> np.ndarray:
    """[acc@0.25, acc@0.5, accI@0.25, accI@0.5] of the targets ``iou`` of photos ``photo``."""
    out = [float(np.mean(iou > t)) for t in THRESHOLDS]
    for t in THRESHOLDS:
        wrong = np.bincount(photo, weights=(iou <= t).astype(np.float64), minlength=n_photos)
        out.append(float(np.mean(wrong == 0)))
    return np.asarray(out)


def bootstrap(iou: np.ndarray, photo: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """(B, 4) rates on each resample ``draws`` (B, P) of photo indices."""
    n = int(photo.max()) + 1
    by_photo = [np.flatnonzero(photo == p) for p in range(n)]
    out = []
    for d in draws:
        idx = np.concatenate([by_photo[p] for p in d])
        new_photo = np.repeat(np.arange(len(d)), [len(by_photo[p]) for p in d])
        out.append(rates(iou[idx], new_photo, len(d)))
    return np.asarray(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest", type=Path)
    p.add_argument("checkpoints", type=Path, nargs="+")
    p.add_argument("--split", default=None)
    p.add_argument("--tta", default="none")
    p.add_argument("--boot", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    results = {}
    for ck in args.checkpoints:
        results[ck.parent.name] = per_target_iou(ck, args.manifest, args.split, args.tta)
    photo = next(iter(results.values()))[1]
    n_photos, n_targets = int(photo.max()) + 1, len(photo)
    draws = np.random.default_rng(args.seed).integers(0, n_photos, (args.boot, n_photos))
    boots = {name: bootstrap(iou, photo, draws) for name, (iou, _) in results.items()}
    first = next(iter(results))
    print(f"{args.manifest} ({args.split or 'all'}): {n_photos} photos, {n_targets} targets; "
          f"tta {args.tta}; SE: binomial / bootstrap over photos ({args.boot} resamples)\n")
    print("| variant | acc@0.25 | acc@0.5 | accI@0.25 | accI@0.5 | mean IoU | "
          f"acc@0.25 - {first} | acc@0.5 - {first} |")
    print("|---|---|---|---|---|---|---|---|")
    base = rates(*results[first], n_photos)
    for name, (iou, ph) in results.items():
        r = rates(iou, ph, n_photos)
        cells = []
        for k, v in enumerate(r):
            n = n_targets if k < 2 else n_photos
            se_binomial, se_boot = np.sqrt(v * (1 - v) / n), boots[name][:, k].std()
            cells.append(f"{v:.3f} ± {se_binomial:.3f} / {se_boot:.3f}")
        cells.append(f"{iou.mean():.3f}")
        for k in (0, 1):
            diff = boots[name][:, k] - boots[first][:, k]
            cells.append("–" if name == first else f"{r[k] - base[k]:+.3f} ± {diff.std():.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
