"""Training and evaluation data in memory: model-ready arrays for many photos.

:class:`PackedData` holds every photo of a split already prepared the way inference prepares
it (query rotated north-up by the recorded heading and resized with
:func:`geomogeo.geo.orient.prepare_query`; reference at the model's size), as uint8 arrays,
with the targets of all photos flattened into one list and a ``batch_index`` per target: the
form the network takes (a batch may mix photos with different numbers of targets).

Sources: a multi-object manifest (:func:`pack_manifest`), or samples straight from the data
engine (:func:`pack_items`). Packed data saves to and loads from ``.npz`` without pickle.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from geomogeo.data.manifest import ManifestError, Record, read_manifest
from geomogeo.errors import PhotoError
from geomogeo.geo.orient import QueryFit, prepare_query

__all__ = ["Batch", "PackItem", "PackedData", "pack_items", "pack_manifest", "pack_records"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackItem:
    """One photo before packing.

    Attributes:
        id: name.
        reference: (R, R, 3) uint8 at the model's GSD.
        photo: (H, W, 3) uint8 as taken.
        clicks: (m, 2) photo pixels (corner origin).
        boxes: (m, 4) reference pixels (edges).
        heading: camera heading, degrees clockwise from north, or None (no rotation).
        metres_per_pixel: reference GSD in metres when georeferenced, else None.
    """

    id: str
    reference: np.ndarray
    photo: np.ndarray
    clicks: np.ndarray
    boxes: np.ndarray
    heading: float | None
    metres_per_pixel: float | None


@dataclass(frozen=True)
class Batch:
    """Tensors for one training/evaluation step (images still uint8, on their device).

    reference (B, 3, R, R) uint8, query (B, 3, QH, QW) uint8, clicks (T, 2) float32 in
    query-input pixels, boxes (T, 4) float32 in reference pixels, batch_index (T,) long.
    """

    reference: torch.Tensor
    query: torch.Tensor
    clicks: torch.Tensor
    boxes: torch.Tensor
    batch_index: torch.Tensor


@dataclass(frozen=True)
class PackedData:
    """Model-ready photos of one split.

    Attributes:
        ids: (N,) photo names.
        references: (N, R, R, 3) uint8.
        queries: (N, QH, QW, 3) uint8, north-up when a heading was known.
        clicks: (T, 2) float32, query-input pixels.
        boxes: (T, 4) float32, reference pixels (edges).
        counts: (N,) int64 targets per photo; photo i owns targets
            ``offsets[i]:offsets[i] + counts[i]``.
        metres_per_pixel: (N,) float64 reference GSD in metres, NaN when unknown.
    """

    ids: np.ndarray
    references: np.ndarray
    queries: np.ndarray
    clicks: np.ndarray
    boxes: np.ndarray
    counts: np.ndarray
    metres_per_pixel: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.ids)
        if not (len(self.references) == len(self.queries) == len(self.counts) == n):
            raise ValueError("PackedData: per-photo arrays differ in length")
        if int(self.counts.sum()) != len(self.clicks) or len(self.clicks) != len(self.boxes):
            raise ValueError("PackedData: counts do not match the number of clicks/boxes")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def offsets(self) -> np.ndarray:
        """(N,) index of each photo's first target."""
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    @property
    def reference_size(self) -> int:
        return int(self.references.shape[1])

    @property
    def query_size(self) -> tuple[int, int]:
        return int(self.queries.shape[1]), int(self.queries.shape[2])

    def target_slices(self, photos: Sequence[int]) -> np.ndarray:
        """Indexes of the targets of ``photos``, in photo order."""
        off, cnt = self.offsets, self.counts
        return np.concatenate([np.arange(off[i], off[i] + cnt[i]) for i in photos])

    def batch(self, photos: Sequence[int], device: torch.device | str = "cpu") -> Batch:
        """The photos ``photos`` as a :class:`Batch` on ``device``."""
        idx = np.asarray(photos, dtype=np.int64)
        t = self.target_slices(idx)
        bidx = np.repeat(np.arange(len(idx)), self.counts[idx])
        dev = torch.device(device)
        return Batch(
            reference=torch.from_numpy(self.references[idx]).to(dev).permute(0, 3, 1, 2),
            query=torch.from_numpy(self.queries[idx]).to(dev).permute(0, 3, 1, 2),
            clicks=torch.from_numpy(self.clicks[t]).to(dev),
            boxes=torch.from_numpy(self.boxes[t]).to(dev),
            batch_index=torch.from_numpy(bidx).to(dev),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write as ``.npz`` (plain arrays; read back with :meth:`load`)."""
        np.savez(path, ids=self.ids.astype(str), references=self.references,
                 queries=self.queries, clicks=self.clicks, boxes=self.boxes,
                 counts=self.counts, metres_per_pixel=self.metres_per_pixel)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PackedData:
        with np.load(path, allow_pickle=False) as z:
            return cls(**{k: z[k] for k in z.files})

    @classmethod
    def concatenate(cls, parts: Sequence[PackedData]) -> PackedData:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in (
            "ids", "references", "queries", "clicks", "boxes", "counts", "metres_per_pixel")))


def pack_items(
    items: Iterable[PackItem], query_size: tuple[int, int], reference_size: int,
    *, quiet: bool = True, total: int | None = None, query_fit: QueryFit = "stretch",
) -> PackedData:
    """Prepare items the way inference does and pack them (``query_fit``: see
    :func:`~geomogeo.geo.orient.prepare_query`; the model's ``config.query_fit``).

    References of another size than ``reference_size`` are resized (bilinear) with their
    boxes scaled, e.g. CVOGL's 1024 px satellite images for a 256 px model.
    """
    ids, refs, qrys, clicks, boxes, counts, mpp = [], [], [], [], [], [], []
    for it in tqdm(items, desc="packing", unit="photo", disable=quiet, total=total):
        ref, b = it.reference, np.asarray(it.boxes, dtype=np.float64).reshape(-1, 4)
        gsd = it.metres_per_pixel
        if ref.shape[:2] != (reference_size, reference_size):
            sx, sy = reference_size / ref.shape[1], reference_size / ref.shape[0]
            ref = np.asarray(Image.fromarray(ref).resize(
                (reference_size, reference_size), Image.Resampling.BILINEAR))
            b = b * np.array([sx, sy, sx, sy])
            gsd = None if gsd is None else gsd / math.sqrt(sx * sy)
        q, pts = prepare_query(it.photo, it.clicks, it.heading, query_size, query_fit)
        ids.append(it.id)
        refs.append(ref)
        qrys.append(np.round(q * 255).astype(np.uint8))
        clicks.append(pts.astype(np.float32))
        boxes.append(b.astype(np.float32))
        counts.append(len(b))
        mpp.append(np.nan if gsd is None else gsd)
    if not ids:
        raise ValueError("no photos to pack")
    return PackedData(
        ids=np.array(ids), references=np.stack(refs), queries=np.stack(qrys),
        clicks=np.concatenate(clicks), boxes=np.concatenate(boxes),
        counts=np.array(counts, dtype=np.int64), metres_per_pixel=np.array(mpp, np.float64),
    )


def _rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise PhotoError(f"{path}: cannot read image ({e})") from e


def _record_item(r: Record) -> PackItem:
    heading = r.meta.get("heading")
    mpp = None
    if r.georef is not None:
        a, b, _, d, e, _ = r.georef.transform
        mpp = math.sqrt(abs(a * e - b * d))  # metres when the CRS is projected in metres
    return PackItem(
        id=r.id, reference=_rgb(r.reference), photo=_rgb(r.query),
        clicks=np.asarray(r.clicks, dtype=np.float64), boxes=np.asarray(r.boxes),
        heading=None if heading is None else float(heading), metres_per_pixel=mpp,
    )


def pack_manifest(
    path: str | os.PathLike[str], split: str | None, query_size: tuple[int, int],
    reference_size: int, *, quiet: bool = True, query_fit: QueryFit = "stretch",
) -> PackedData:
    """Read a manifest's photos of ``split`` (all when None) and pack them.

    The queries are rotated north-up when the record's ``meta.heading`` is given (degrees
    clockwise from north). ``metres_per_pixel`` comes from ``georef.transform`` and assumes a
    projected CRS in metres.
    """
    records = read_manifest(path, split=split)
    if not records:
        raise ManifestError(f"{path}: no records for split {split!r}")
    return pack_records(records, query_size, reference_size, quiet=quiet, query_fit=query_fit)


def pack_records(
    records: Sequence[Record], query_size: tuple[int, int], reference_size: int,
    *, quiet: bool = True, query_fit: QueryFit = "stretch",
) -> PackedData:
    """Pack manifest records (from :func:`read_manifest` or the CVOGL reader)."""
    return pack_items((_record_item(r) for r in records), query_size, reference_size,
                      quiet=quiet, total=len(records), query_fit=query_fit)
