"""Box-level evaluation of cross-view object geo-localization (numpy only).

Conventions
-----------
* Boxes are ``(x1, y1, x2, y2)`` in reference-image pixels, edges (not pixel centres): a box
  ``[0, 0, 10, 10]`` covers exactly 100 square pixels.
* A *target* is one clicked object; a *photo* is one query/reference pair holding ``N >= 1``
  targets. Predicted box k is compared with ground-truth box k of the same photo.
* ``acc@t``: fraction of targets whose IoU is strictly greater than ``t`` (IoU == t is a miss).
* ``accI@t``: fraction of photos in which every target has IoU > ``t``.
* ``mean_iou``: mean IoU over targets.
* ``centre_cell``: fraction of targets whose predicted box centre falls in the same
  ``stride x stride`` pixel cell as the ground-truth centre; the cell of a centre ``c`` is
  ``floor(c / stride)`` per axis, so a centre exactly on a boundary belongs to the cell after it.
* ``centre_error_m_*``: Euclidean distance between predicted and ground-truth box centres, in
  pixels times the photo's ground sample distance (metres per pixel); only photos with a known
  GSD contribute.

Rates of an empty group (or an empty metric subset) are ``None``, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["GROUPS", "PhotoEval", "box_iou", "evaluate_boxes", "metrics_markdown"]

#: Group name -> predicate on N (targets in the photo), in report order.
GROUPS: dict[str, Callable[[int], bool]] = {
    "all": lambda n: True,
    "N<=3": lambda n: n <= 3,
    "3<N<=6": lambda n: 3 < n <= 6,
    "N>6": lambda n: n > 6,
    "2<=N<=6": lambda n: 2 <= n <= 6,
}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise IoU of two (n, 4) arrays of ``(x1, y1, x2, y2)`` boxes (pixels, edges).

    Row k of ``a`` is compared with row k of ``b``. Boxes with x2 < x1 or y2 < y1 count as
    empty. A pair whose union has zero area gets IoU 0. Returns a float64 array of shape (n,).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if a.shape != b.shape:
        raise ValueError(f"box_iou: shapes differ, {a.shape} vs {b.shape}")
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0.0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0.0, None)
    inter = iw * ih
    area_a = np.clip(a[:, 2] - a[:, 0], 0.0, None) * np.clip(a[:, 3] - a[:, 1], 0.0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(b[:, 3] - b[:, 1], 0.0, None)
    union = area_a + area_b - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


@dataclass(frozen=True)
class PhotoEval:
    """Predictions and ground truth of one photo.

    ``pred`` and ``gt`` are (m, 4) arrays of ``(x1, y1, x2, y2)`` reference-input pixels
    (edges); the k-th prediction belongs to the k-th ground-truth target. ``metres_per_pixel``
    is the ground sample distance of that reference image (m/px), ``None`` when it is not
    georeferenced.
    """

    pred: np.ndarray
    gt: np.ndarray
    metres_per_pixel: float | None = None


def _threshold_key(prefix: str, t: float) -> str:
    return f"{prefix}@{t:g}"


def _rate(num: float, den: int) -> float | None:
    return None if den == 0 else float(num) / den


def _group_metrics(
    ious: list[np.ndarray],
    cells: list[np.ndarray],
    errors_m: list[np.ndarray],
    thresholds: Sequence[float],
) -> dict[str, Any]:
    """Aggregate per-photo arrays (IoU, same-cell flags, metre errors) into one group dict."""
    n_photos = len(ious)
    all_iou = np.concatenate(ious) if ious else np.zeros(0)
    all_cell = np.concatenate(cells) if cells else np.zeros(0, dtype=bool)
    all_err = np.concatenate(errors_m) if errors_m else np.zeros(0)
    n_targets = int(all_iou.size)
    out: dict[str, Any] = {"photos": n_photos, "targets": n_targets}
    for t in thresholds:
        out[_threshold_key("acc", t)] = _rate(int(np.count_nonzero(all_iou > t)), n_targets)
    for t in thresholds:
        ok = sum(bool(np.all(i > t)) for i in ious)
        out[_threshold_key("accI", t)] = _rate(ok, n_photos)
    out["mean_iou"] = float(all_iou.mean()) if n_targets else None
    out["centre_cell"] = _rate(int(np.count_nonzero(all_cell)), n_targets)
    out["centre_error_m_median"] = float(np.median(all_err)) if all_err.size else None
    out["centre_error_m_mean"] = float(all_err.mean()) if all_err.size else None
    return out


def evaluate_boxes(
    photos: Sequence[PhotoEval],
    stride: int = 16,
    thresholds: Sequence[float] = (0.25, 0.5),
    groups: Mapping[str, Callable[[int], bool]] = GROUPS,
) -> dict[str, dict[str, Any]]:
    """Evaluate per-target box predictions, overall and grouped by targets per photo N.

    Returns a JSON-serialisable dict ``{group: metrics}`` with the ``groups`` (name ->
    predicate on N; default :data:`GROUPS`: ``"all"``, ``"N<=3"``, ``"3<N<=6"``, ``"N>6"``,
    ``"2<=N<=6"``). Each metrics dict has ``photos``, ``targets``,
    ``acc@t`` and ``accI@t`` per threshold (key ``f"acc@{t:g}"``), ``mean_iou``,
    ``centre_cell`` (cell size ``stride`` pixels), ``centre_error_m_median`` and
    ``centre_error_m_mean`` (metres); see the module docstring for the definitions.
    Photos with zero targets are skipped.
    """
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    per_photo: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    for idx, ph in enumerate(photos):
        pred = np.asarray(ph.pred, dtype=np.float64).reshape(-1, 4)
        gt = np.asarray(ph.gt, dtype=np.float64).reshape(-1, 4)
        if pred.shape != gt.shape:
            raise ValueError(
                f"photo {idx}: {pred.shape[0]} predicted boxes but {gt.shape[0]} ground truth"
            )
        if gt.shape[0] == 0:
            continue
        iou = box_iou(pred, gt)
        cp = (pred[:, :2] + pred[:, 2:]) / 2.0
        cg = (gt[:, :2] + gt[:, 2:]) / 2.0
        same = np.all(np.floor(cp / stride) == np.floor(cg / stride), axis=1)
        gsd = ph.metres_per_pixel
        if gsd is not None and math.isfinite(gsd):
            err = np.hypot(cp[:, 0] - cg[:, 0], cp[:, 1] - cg[:, 1]) * float(gsd)
        else:
            err = np.zeros(0)
        per_photo.append((gt.shape[0], iou, same, err))

    result: dict[str, dict[str, Any]] = {}
    for name, keep in groups.items():
        sel = [p for p in per_photo if keep(p[0])]
        result[name] = _group_metrics(
            [p[1] for p in sel], [p[2] for p in sel], [p[3] for p in sel], thresholds
        )
    return result


_COLUMNS: tuple[tuple[str, str], ...] = (
    ("photos", "photos"),
    ("targets", "targets"),
    ("acc@0.25", "acc@0.25"),
    ("acc@0.5", "acc@0.5"),
    ("accI@0.25", "accI@0.25"),
    ("accI@0.5", "accI@0.5"),
    ("mean_iou", "mean IoU"),
    ("centre_cell", "centre cell"),
    ("centre_error_m_median", "centre error m (median)"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "–" if not math.isfinite(value) else f"{float(value):.3f}"
    return str(value)


def metrics_markdown(metrics: dict[str, dict[str, Any]], title: str | None = None) -> str:
    """Render :func:`evaluate_boxes` output as a markdown table, one row per group.

    Missing values and ``None`` are shown as "–"; counts as integers; rates and metres with
    3 decimals. With ``title``, a ``### title`` heading and a blank line come first.
    """
    lines: list[str] = []
    if title:
        lines += [f"### {title}", ""]
    lines.append("| group | " + " | ".join(h for _, h in _COLUMNS) + " |")
    lines.append("|---|" + "|".join("---:" for _ in _COLUMNS) + "|")
    for group in GROUPS:
        row = metrics.get(group)
        if row is None:
            continue
        cells = [_fmt(row.get(key)) for key, _ in _COLUMNS]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
