"""Training the box refiner (:class:`~geomogeo.nn.refine.BoxRefiner`) on packed photos.

Every target of a :class:`~geomogeo.data.dataset.PackedData` pack gives one sample: its
reference window cropped around the target's box centre moved by a random offset (Gaussian,
``jitter_px`` per axis: where a registered, parallax-corrected click lands), and the target's
box in that crop. Each epoch draws new offsets and turns and mirrors each batch (one of the
8 dihedral transforms), so the refiner learns no preferred direction. The loss is the
smooth L1 loss on :func:`~geomogeo.nn.refine.encode_boxes`' targets. The epoch with the best
validation mean IoU (fixed offsets; each pack's mean IoU, averaged over the packs, so that a
small pack of real buildings counts as much as a large synthetic one) is kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from geomogeo.data.dataset import PackedData
from geomogeo.engine.checkpoint import save_checkpoint
from geomogeo.engine.metrics import box_iou
from geomogeo.nn.refine import (
    BoxRefiner,
    RefinerConfig,
    crop_around,
    crops_to_input,
    decode_boxes,
    dihedral_boxes,
    encode_boxes,
)

__all__ = ["RefinerTrainConfig", "refiner_samples", "train_refiner"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefinerTrainConfig:
    """How a box refiner is trained.

    Attributes:
        epochs: passes over the training targets.
        batch_size: crops per step.
        lr: peak learning rate of the one-cycle schedule (AdamW, weight decay 1e-4).
        jitter_px: standard deviation of the crop centre's offset from the box centre, pixels
            per axis (training and validation).
        seed: random seed (offsets, batches, initial weights).
        max_minutes: stop after the epoch that passes this wall time (None: no limit).
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    jitter_px: float = 2.0
    seed: int = 0
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0 or self.jitter_px < 0:
            raise ValueError("RefinerTrainConfig: epochs, batch_size >= 1, lr > 0, jitter >= 0")


def refiner_samples(pack: PackedData, size: int, jitter_px: float, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Every target of ``pack`` as (crops (T, size, size, 3) uint8, boxes (T, 4) crop px)."""
    photo = np.repeat(np.arange(len(pack)), pack.counts)
    centres = (pack.boxes[:, :2] + pack.boxes[:, 2:]) / 2.0
    centres = centres + rng.normal(0.0, jitter_px, centres.shape)
    crops = np.zeros((len(centres), size, size, 3), np.uint8)
    boxes = np.zeros((len(centres), 4))
    for i in np.unique(photo):
        sel = np.flatnonzero(photo == i)
        crops[sel], origins = crop_around(pack.references[i], centres[sel], size)
        boxes[sel] = pack.boxes[sel] - np.hstack([origins, origins])
    return crops, boxes


def _predict(model: BoxRefiner, crops: np.ndarray, batch: int = 256) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(crops), batch):
            out.append(model(crops_to_input(crops[s:s + batch])).numpy())
    return decode_boxes(np.concatenate(out) if out else np.zeros((0, 4)),
                        model.config.crop_size)


def train_refiner(
    train: Sequence[PackedData], val: Sequence[PackedData], out: str | Path, *,
    config: RefinerConfig | None = None, train_config: RefinerTrainConfig | None = None,
    quiet: bool = False, record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a refiner on ``train``'s targets, keep the epoch with the best validation mean
    IoU at ``out`` (fp16 checkpoint) and return the history.

    Args:
        train, val: packs (their reference windows must have the GSD of ``config.gsd``).
        out: checkpoint path.
        record: extra entries saved in the checkpoint's ``train_config`` (e.g. data settings).

    Returns:
        ``{"epochs": [{"epoch", "loss", "val_mean_iou" (the packs' mean IoUs averaged),
        "val_pack_mean_iou", "val_acc50" (all targets), "minutes"}, ...],
        "best_epoch", "sha256"}``.
    """
    cfg, tc = config or RefinerConfig(), train_config or RefinerTrainConfig()
    size = cfg.crop_size
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    model = BoxRefiner(cfg)
    vx, vb = zip(*(refiner_samples(p, size, tc.jitter_px, np.random.default_rng(1))
                   for p in val), strict=True)
    val_crops, val_boxes = np.concatenate(vx), np.concatenate(vb)
    val_pack = np.repeat(np.arange(len(vb)), [len(b) for b in vb])
    n_train = int(sum(len(p.boxes) for p in train))
    steps_per_epoch = n_train // tc.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{n_train} training targets make no batch of {tc.batch_size}")
    opt = torch.optim.AdamW(model.parameters(), tc.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, tc.lr,
                                                total_steps=tc.epochs * steps_per_epoch)
    history: list[dict[str, Any]] = []
    best, sha = -1.0, ""
    t0 = time.perf_counter()
    for epoch in range(tc.epochs):
        parts = [refiner_samples(p, size, tc.jitter_px, rng) for p in train]
        crops = np.concatenate([c for c, _ in parts])
        boxes = np.concatenate([b for _, b in parts])
        perm = rng.permutation(len(boxes))
        model.train()
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"refiner epoch {epoch + 1}/{tc.epochs}",
                   disable=quiet, unit="step")
        for s in bar:
            idx = perm[s * tc.batch_size:(s + 1) * tc.batch_size]
            k, mirror = int(rng.integers(4)), bool(rng.integers(2))
            x = crops[idx][:, :, ::-1] if mirror else crops[idx]
            x = np.rot90(x, k, axes=(1, 2))
            y = encode_boxes(dihedral_boxes(boxes[idx], size, k, mirror), size)
            loss = F.smooth_l1_loss(model(crops_to_input(x)), torch.from_numpy(y), beta=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        iou = box_iou(_predict(model, val_crops), val_boxes)
        per_pack = [float(iou[val_pack == k].mean()) for k in range(len(vb))]
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
               "val_mean_iou": float(np.mean(per_pack)), "val_pack_mean_iou": per_pack,
               "val_acc50": float((iou > 0.5).mean()),
               "minutes": (time.perf_counter() - t0) / 60.0}
        history.append(row)
        log.info("refiner epoch %d: loss %.4f, validation mean IoU %.3f (by pack %s), "
                 "acc@0.5 %.3f", row["epoch"], row["loss"], row["val_mean_iou"],
                 " ".join(f"{v:.3f}" for v in per_pack), row["val_acc50"])
        if row["val_mean_iou"] > best:
            best = row["val_mean_iou"]
            sha = save_checkpoint(out, model, dtype=torch.float16, metrics=row,
                                  train_config={**asdict(tc), **(record or {})})
        if tc.max_minutes is not None and row["minutes"] > tc.max_minutes:
            break
    best_row = max(history, key=lambda r: r["val_mean_iou"])
    return {"epochs": history, "best_epoch": best_row["epoch"], "sha256": sha}
