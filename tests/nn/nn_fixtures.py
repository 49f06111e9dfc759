"""Tiny configurations and synthetic scenes for the network tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from geomogeo.data.dataset import PackedData
from geomogeo.nn.config import ModelConfig


def tiny_config(**overrides: object) -> ModelConfig:
    """64 px reference (4x4 grid), 64 px query, width 1/8, 32-d embeddings; anchors scaled
    to the reference size."""
    base: dict[str, object] = dict(
        reference_size=64, query_size=(64, 64), width=0.125, embed_dim=32, gaussian_sigma=8.0
    )
    base.update(overrides)
    s = int(base["reference_size"]) / 1024  # type: ignore[call-overload]
    base.setdefault("anchors", tuple((w * s, h * s) for w, h in ModelConfig().anchors))
    return ModelConfig.light(**base)


def synthetic_scene(
    n_images: int, targets_per_image: list[int], size: int, query_size: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference images of random flat-coloured rectangles on noise; the query is the
    reference rescaled to ``query_size`` (an aligned drone view), a click at each target
    rectangle's centre in query pixels.

    Returns reference (B, 3, S, S), query (B, 3, S, S), clicks (T, 2), batch_index (T,),
    boxes (T, 4).
    """
    g = torch.Generator().manual_seed(seed)
    refs, clicks, bidx, boxes = [], [], [], []
    for b in range(n_images):
        img = 0.2 * torch.rand(3, size, size, generator=g)
        placed: list[tuple[float, float, float, float]] = []
        while len(placed) < targets_per_image[b]:
            w, h = (torch.randint(size // 6, size // 3, (2,), generator=g)).tolist()
            x, y = (torch.randint(0, size - max(w, h), (2,), generator=g)).tolist()
            box = (float(x), float(y), float(x + w), float(y + h))
            if any(not (box[2] <= p[0] or p[2] <= box[0] or box[3] <= p[1] or p[3] <= box[1])
                   for p in placed):
                continue
            placed.append(box)
            img[:, y:y + h, x:x + w] = torch.rand(3, 1, 1, generator=g)
        refs.append(img)
        for box in placed:
            clicks.append(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
            bidx.append(b)
            boxes.append(box)
    ref = (torch.stack(refs) - 0.45) / 0.25
    qs = query_size or size
    query = torch.nn.functional.interpolate(ref, size=(qs, qs), mode="bilinear", antialias=True)
    return ref, query, torch.tensor(clicks) * (qs / size), torch.tensor(bidx), torch.tensor(boxes)


def rectangle_pack(n: int, seed: int, size: int = 48) -> PackedData:
    """Photos whose reference shows one bright rectangle (the target) and a dimmer one
    elsewhere, on noise."""
    rng = np.random.default_rng(seed)
    refs = np.zeros((n, size, size, 3), np.uint8)
    boxes = np.zeros((n, 4), np.float32)
    for i in range(n):
        img = rng.normal(60, 12, (size, size))
        w, h = rng.integers(5, 15, 2)
        x0, y0 = (rng.uniform(20, 28, 2) - np.array([w, h]) / 2).astype(int)  # in 13..35
        d = rng.integers(0, 4)
        img[(0, 40)[d % 2]:(0, 40)[d % 2] + 8, (0, 38)[d // 2]:(0, 38)[d // 2] + 10] += 40
        img[y0:y0 + h, x0:x0 + w] += 110
        refs[i] = np.clip(img, 0, 255).astype(np.uint8)[..., None]
        boxes[i] = [x0, y0, x0 + w, y0 + h]
    return PackedData(ids=np.array([f"r{i}" for i in range(n)]), references=refs,
                      queries=np.zeros((n, 4, 4, 3), np.uint8), clicks=np.zeros((n, 2), np.float32),
                      boxes=boxes, counts=np.ones(n, np.int64),
                      metres_per_pixel=np.full(n, np.nan))


def refined_ious(refiner: Any, pack: PackedData, seed: int) -> np.ndarray:
    """IoUs of ``refiner``'s boxes of :func:`rectangle_pack`'s targets, each asked around its
    box centre moved by N(0, 1 px) per axis."""
    from geomogeo.engine.metrics import box_iou

    rng = np.random.default_rng(seed)
    got = np.concatenate([
        refiner.refine(pack.references[i].astype(np.float32) / 255.0,
                       (pack.boxes[i, :2] + pack.boxes[i, 2:])[None] / 2 + rng.normal(0, 1, 2))
        for i in range(len(pack))])
    return box_iou(got, pack.boxes.astype(np.float64))
