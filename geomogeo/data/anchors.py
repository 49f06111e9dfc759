"""Anchor sizes from box statistics: k-means on (width, height) with the 1 - IoU distance.

Two boxes are compared as if they shared their top-left corner, so only their sizes matter:
``IoU = min(w1, w2) * min(h1, h2) / (w1 * h1 + w2 * h2 - min(w1, w2) * min(h1, h2))``.
Sizes are in pixels of whatever image the boxes live in (the model's reference input, usually).

The clustering is deterministic for a given seed: k-means++ style seeding over the *distinct*
sizes (first centre drawn uniformly, each next one with probability proportional to the squared
distance ``(1 - IoU)^2`` to its nearest chosen centre) from :func:`numpy.random.default_rng`,
then Lloyd iterations over all boxes in which each centre becomes the **median** width and
median height of its members (the median is robust to the long tail of box sizes). A cluster
left empty is re-seeded at the box worst served (lowest best IoU) by the current centres.
"""

from __future__ import annotations

import numpy as np

__all__ = ["kmeans_anchors", "mean_best_iou", "wh_iou"]


def wh_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU between every (w, h) in ``wh`` (n, 2) and every anchor in ``anchors`` (k, 2),
    boxes aligned at a common corner. Returns an (n, k) float64 array."""
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(
        wh[:, None, 1], anchors[None, :, 1]
    )
    union = (wh[:, 0] * wh[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
    return inter / union


def _validate(wh: np.ndarray, name: str = "wh") -> np.ndarray:
    arr = np.asarray(wh, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must be an (n, 2) array of (width, height), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite sizes")
    if np.any(arr <= 0):
        bad = int(np.argmax(np.any(arr <= 0, axis=1)))
        raise ValueError(
            f"{name} must hold positive widths and heights; row {bad} is {arr[bad].tolist()}"
        )
    return arr


def _seed_centres(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on distinct sizes with distance 1 - IoU."""
    centres = [wh[int(rng.integers(wh.shape[0]))]]
    for _ in range(1, k):
        d = 1.0 - wh_iou(wh, np.asarray(centres)).max(axis=1)
        w = np.clip(d, 0.0, None) ** 2
        total = w.sum()
        if total <= 0:  # cannot happen with >= k distinct sizes; keep a safe fallback
            idx = int(rng.integers(wh.shape[0]))
        else:
            idx = int(rng.choice(wh.shape[0], p=w / total))
        centres.append(wh[idx])
    return np.asarray(centres, dtype=np.float64)


def kmeans_anchors(wh: np.ndarray, k: int = 9, *, seed: int = 0, max_iter: int = 300) -> np.ndarray:
    """Cluster box sizes ``wh`` (n, 2) into ``k`` anchors with the 1 - IoU distance.

    Centres are updated as the per-axis median of their members. Returns a (k, 2) float64
    array of (width, height), sorted by area ascending (ties by width). Raises ``ValueError``
    when ``k < 1``, sizes are not positive and finite, or there are fewer than ``k`` distinct
    sizes.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    arr = _validate(wh)
    distinct = np.unique(arr, axis=0)
    if distinct.shape[0] < k:
        raise ValueError(
            f"need at least k={k} distinct box sizes, got {distinct.shape[0]} "
            f"(from {arr.shape[0]} boxes)"
        )
    rng = np.random.default_rng(seed)
    centres = _seed_centres(distinct, k, rng)
    assign = np.full(arr.shape[0], -1)
    for _ in range(max_iter):
        iou = wh_iou(arr, centres)
        new_assign = np.argmax(iou, axis=1)
        if np.array_equal(new_assign, assign):
            break
        assign = new_assign
        best = iou.max(axis=1)
        for j in range(k):
            members = arr[assign == j]
            if members.shape[0] == 0:
                # Re-seed an empty cluster at the box worst served by the current centres
                # (marking it so a second empty cluster picks another box).
                far = int(np.argmin(best))
                centres[j] = arr[far]
                assign[far] = j
                best[far] = np.inf
            else:
                centres[j] = np.median(members, axis=0)
    order = np.lexsort((centres[:, 0], centres[:, 0] * centres[:, 1]))
    return centres[order]


def mean_best_iou(wh: np.ndarray, anchors: np.ndarray) -> float:
    """Average over boxes ``wh`` (n, 2) of the best corner-aligned IoU with any anchor (k, 2).

    A usual fitness figure for an anchor set: 1.0 when every box size equals some anchor.
    """
    arr = _validate(wh)
    anc = _validate(anchors, "anchors")
    if arr.shape[0] == 0 or anc.shape[0] == 0:
        raise ValueError("mean_best_iou needs at least one box and one anchor")
    return float(wh_iou(arr, anc).max(axis=1).mean())
