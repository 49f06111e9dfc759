"""Training the box refiner (:class:`~geomogeo.nn.refine.BoxRefiner`) on packed photos.

Every target of a :class:`~geomogeo.data.dataset.PackedData` pack gives one sample: its
reference window cropped around the target's box centre moved by a random offset (Gaussian,
``jitter_px`` per axis: where a registered, parallax-corrected click lands), and the target's
box in that crop. Each epoch draws new offsets and turns and mirrors each batch (one of the
8 dihedral transforms), so the refiner learns no preferred direction. The loss is the
smooth L1 loss on :func:`~geomogeo.nn.refine.encode_boxes`' targets. The epoch with the best
validation mean IoU (fixed offsets; each pack's mean IoU, averaged over the packs, so that a
small pack of real buildings counts as much as a large synthetic one) is kept.

The mask refiner (:class:`~geomogeo.nn.mask_refine.MaskRefiner`) needs each target's outline,
which packs do not keep: its samples (:class:`MaskSamples`) come from the data engine's worlds,
one per known footprint and blob hull (:func:`mask_samples`), and it learns the footprint's
soft mask (its pixel coverage) with the binary cross-entropy plus the Dice loss;
offsets, turns, mirrors and the selection are the box refiner's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from geomogeo.data.dataset import PackedData
from geomogeo.data.synth.engine import World
from geomogeo.data.synth.structures import signed_area
from geomogeo.engine.checkpoint import save_checkpoint
from geomogeo.engine.metrics import box_iou
from geomogeo.nn.mask_refine import MaskRefiner, MaskRefinerConfig, TorchMaskRefiner, mask_box
from geomogeo.nn.refine import (
    BoxRefiner,
    RefinerConfig,
    crop_around,
    crop_origins,
    crops_to_input,
    decode_boxes,
    dihedral_array,
    dihedral_boxes,
    encode_boxes,
)

__all__ = [
    "MaskSamples",
    "RefinerTrainConfig",
    "mask_samples",
    "refiner_samples",
    "train_mask_refiner",
    "train_refiner",
]

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
    model = BoxRefiner(cfg)

    def samples(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        parts = [refiner_samples(p, size, tc.jitter_px, rng) for p in train]
        return np.concatenate([c for c, _ in parts]), np.concatenate([b for _, b in parts])

    def loss(crops: np.ndarray, boxes: np.ndarray, k: int, mirror: bool) -> torch.Tensor:
        x = dihedral_array(crops, k, mirror)
        y = encode_boxes(dihedral_boxes(boxes, size, k, mirror), size)
        return F.smooth_l1_loss(model(crops_to_input(x)), torch.from_numpy(y), beta=0.1)

    return _fit(model, tc, int(sum(len(p.boxes) for p in train)), val, samples, loss,
                lambda crops: _predict(model, crops), out, record, quiet)


def _fit(model: BoxRefiner | MaskRefiner, tc: RefinerTrainConfig, n_train: int,
         val: Sequence[PackedData],
         samples: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]],
         loss: Callable[[np.ndarray, np.ndarray, int, bool], torch.Tensor],
         predict: Callable[[np.ndarray], np.ndarray], out: str | Path,
         record: dict[str, Any] | None, quiet: bool) -> dict[str, Any]:
    """The training loop of both refiners (see the module doc).

    Each epoch ``samples(rng)`` draws the ``n_train`` training crops and their targets, each
    batch is turned and mirrored and scored by ``loss(crops, targets, k, mirror)``, and
    ``predict(crops)`` boxes the fixed validation crops (crop pixels). The best epoch is saved
    at ``out``; returns the history (:func:`train_refiner`'s).
    """
    name = model.config.name
    rng = np.random.default_rng(tc.seed)
    vx, vb = zip(*(refiner_samples(p, model.config.crop_size, tc.jitter_px,
                                   np.random.default_rng(1)) for p in val), strict=True)
    val_crops, val_boxes = np.concatenate(vx), np.concatenate(vb)
    val_pack = np.repeat(np.arange(len(vb)), [len(b) for b in vb])
    steps = n_train // tc.batch_size
    if steps < 1:
        raise ValueError(f"{n_train} training targets make no batch of {tc.batch_size}")
    opt = torch.optim.AdamW(model.parameters(), tc.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, tc.lr, total_steps=tc.epochs * steps)
    history: list[dict[str, Any]] = []
    best, sha = -1.0, ""
    t0 = time.perf_counter()
    for epoch in range(tc.epochs):
        crops, targets = samples(rng)
        perm = rng.permutation(len(crops))
        model.train()
        losses = []
        for s in tqdm(range(steps), desc=f"{name} epoch {epoch + 1}/{tc.epochs}",
                      disable=quiet, unit="step"):
            idx = perm[s * tc.batch_size:(s + 1) * tc.batch_size]
            k, mirror = int(rng.integers(4)), bool(rng.integers(2))
            value = loss(crops[idx], targets[idx], k, mirror)
            opt.zero_grad()
            value.backward()
            opt.step()
            sched.step()
            losses.append(value.item())
        model.eval()
        iou = box_iou(predict(val_crops), val_boxes)
        per_pack = [float(iou[val_pack == k].mean()) for k in range(len(vb))]
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
               "val_mean_iou": float(np.mean(per_pack)), "val_pack_mean_iou": per_pack,
               "val_acc50": float((iou > 0.5).mean()),
               "minutes": (time.perf_counter() - t0) / 60.0}
        history.append(row)
        log.info("%s epoch %d: loss %.4f, validation mean IoU %.3f (by pack %s), acc@0.5 %.3f",
                 name, row["epoch"], row["loss"], row["val_mean_iou"],
                 " ".join(f"{v:.3f}" for v in per_pack), row["val_acc50"])
        if row["val_mean_iou"] > best:
            best = row["val_mean_iou"]
            sha = save_checkpoint(out, model, dtype=torch.float16, metrics=row,
                                  train_config={**asdict(tc), **(record or {})})
        if tc.max_minutes is not None and row["minutes"] > tc.max_minutes:
            break
    best_row = max(history, key=lambda r: r["val_mean_iou"])
    return {"epochs": history, "best_epoch": best_row["epoch"], "sha256": sha}


@dataclass(frozen=True)
class MaskSamples:
    """Targets with their outlines, for :func:`train_mask_refiner`.

    Attributes:
        references: the worlds' reference images, (H_i, W_i, 3) uint8 each.
        owner: (T,) int64 index into ``references`` of each target.
        boxes: (T, 4) float64 footprint envelopes (x1, y1, x2, y2), reference pixels (edges).
        masks: (T, S, S) uint8 soft masks (0-255: the fraction of each pixel the footprint
            covers) of a window of side S centred on each box centre.
        origins: (T, 2) int64 top-left pixel (x0, y0) of each window in its reference
            (:func:`~geomogeo.nn.refine.crop_around`'s origins of the box centres).
    """

    references: list[np.ndarray]
    owner: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray
    origins: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)

    def crops(self, size: int, jitter_px: float, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
        """Every target as (crops (T, size, size, 3) uint8, masks (T, size, size) uint8),
        centred on the box centre moved by a Gaussian offset of ``jitter_px`` per axis (cut
        where the window ends)."""
        margin = (self.masks.shape[1] - size) // 2
        if margin < 0:
            raise ValueError(f"mask windows of {self.masks.shape[1]} px are smaller than "
                             f"crops of {size} px")
        shift = np.clip(rng.normal(0.0, jitter_px, (len(self), 2)), -margin, margin)
        centres = (self.boxes[:, :2] + self.boxes[:, 2:]) / 2.0 + shift
        crops = np.zeros((len(self), size, size, 3), np.uint8)
        masks = np.zeros((len(self), size, size), np.uint8)
        for i in np.unique(self.owner):
            sel = np.flatnonzero(self.owner == i)
            crops[sel], _ = crop_around(self.references[i], centres[sel], size)
        for j, (m, o, c) in enumerate(zip(self.masks, self.origins, centres, strict=True)):
            masks[j] = crop_around(m[..., None], (c - o)[None], size)[0][0, ..., 0]
        return crops, masks


def _soft_mask(poly_px: np.ndarray, origin: np.ndarray, side: int, supersample: int = 4
               ) -> np.ndarray:
    """(side, side) uint8 coverage (0-255) of the polygon (k, 2) reference pixels by the
    pixels of the window at ``origin``: the share of ``supersample`` x ``supersample``
    sample points (sub-pixel centres) inside it (GDAL's centre rule)."""
    from rasterio.features import rasterize
    from rasterio.transform import Affine

    ring = [tuple(map(float, p)) for p in poly_px - origin]
    fine = rasterize([({"type": "Polygon", "coordinates": [[*ring, ring[0]]]}, 255)],
                     out_shape=(side * supersample, side * supersample),
                     transform=Affine.scale(1.0 / supersample), fill=0, dtype="uint8")
    cover = fine.reshape(side, supersample, side, supersample).mean(axis=(1, 3))
    return np.round(cover).astype(np.uint8)


def mask_samples(worlds: Sequence[World], window: int, min_area_m2: float = 150.0,
                 quiet: bool = True) -> MaskSamples:
    """Every target structure's footprint and every blob's hull of at least ``min_area_m2``
    lying wholly on its world's reference, with its soft mask in a ``window`` px window."""
    refs: list[np.ndarray] = []
    owner, boxes, masks, origins = [], [], [], []
    for w in tqdm(worlds, desc="mask samples", disable=quiet, unit="world"):
        ref = w.reference
        image = np.asarray(ref.image)
        h, wd = image.shape[:2]
        for poly in (*w.structures.footprints, *w.objects.hulls):
            if abs(signed_area(poly)) < min_area_m2:
                continue
            col, row = ref.map_to_pixel(poly[:, 0], poly[:, 1])
            if col.min() < 0 or row.min() < 0 or col.max() > wd or row.max() > h:
                continue
            box = np.array([col.min(), row.min(), col.max(), row.max()])
            origin = crop_origins((box[:2] + box[2:]) / 2, window)[0]
            owner.append(len(refs))
            boxes.append(box)
            origins.append(origin)
            masks.append(_soft_mask(np.column_stack([col, row]), origin, window))
        refs.append(image)
    if not boxes:
        raise ValueError("mask_samples: no target of the worlds lies on its reference")
    return MaskSamples(refs, np.array(owner, np.int64), np.array(boxes, np.float64),
                       np.stack(masks), np.array(origins, np.int64))


def train_mask_refiner(
    train: MaskSamples, val: Sequence[PackedData], out: str | Path, *,
    config: MaskRefinerConfig | None = None, train_config: RefinerTrainConfig | None = None,
    quiet: bool = False, record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a mask refiner on ``train``'s targets (their reference images at
    ``config.gsd``), keep the epoch with the best validation mean IoU of the boxes
    (:func:`~geomogeo.nn.mask_refine.mask_box` of one view; packs as in :func:`train_refiner`)
    at ``out`` (fp16 checkpoint) and return the history (as :func:`train_refiner`'s)."""
    cfg = config or MaskRefinerConfig()
    tc = train_config or RefinerTrainConfig(batch_size=32)
    torch.manual_seed(tc.seed)
    model = MaskRefiner(cfg)
    runner = TorchMaskRefiner(model, name=cfg.name, sha256="", tta=False)

    def loss(crops: np.ndarray, masks: np.ndarray, k: int, mirror: bool) -> torch.Tensor:
        x, y = dihedral_array(crops, k, mirror), dihedral_array(masks, k, mirror)
        target = torch.from_numpy(np.ascontiguousarray(y)).float() / 255.0
        logits = model(crops_to_input(x))
        prob = torch.sigmoid(logits)
        dice = 1 - (2 * (prob * target).sum((1, 2)) + 1) / (
            prob.sum((1, 2)) + target.sum((1, 2)) + 1)
        return F.binary_cross_entropy_with_logits(logits, target) + dice.mean()

    return _fit(model, tc, len(train), val,
                lambda rng: train.crops(cfg.crop_size, tc.jitter_px, rng), loss,
                lambda crops: mask_box(runner.probabilities(crops), cfg.threshold), out,
                record, quiet)
