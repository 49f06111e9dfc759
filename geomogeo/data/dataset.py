"""Training and evaluation data in memory: model-ready arrays for many photos.

:class:`PackedData` holds every photo of a split already prepared the way inference prepares
it (query rotated north-up by the recorded heading and resized with
:func:`geomogeo.geo.orient.prepare_query`; reference at the model's size), as uint8 arrays,
with the targets of all photos flattened into one list and a ``batch_index`` per target: the
form the network takes (a batch may mix photos with different numbers of targets).

Sources: a multi-object manifest (:func:`pack_manifest`), or samples straight from the data
engine (:func:`pack_items`). Packed data saves to and loads from ``.npz`` without pickle.

A pack bakes in its query geometry (:class:`PackGeometry`): the sizes are the shapes of its
arrays, the query fit is stored as ``query_fit``; :func:`read_pack_geometry` reads them from a
file without loading its photos. Files written before ``query_fit`` was stored were all
stretched and read as ``"stretch"``.
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from geomogeo.data.manifest import ManifestError, Record, read_manifest
from geomogeo.errors import PhotoError
from geomogeo.geo.orient import QueryFit, check_query_fit, prepare_query

__all__ = ["Batch", "PackGeometry", "PackItem", "PackedData", "pack_items", "pack_manifest",
           "pack_records", "read_pack_geometry"]

#: The query fit of packs written before it was recorded (they were all stretched).
LEGACY_QUERY_FIT: QueryFit = "stretch"

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
class PackGeometry:
    """How a pack's inputs were prepared; a model trains on it only if it takes the same.

    Attributes:
        reference_size: reference side in pixels.
        query_size: query (height, width) in pixels.
        query_fit: how each photo was fitted into the query (``"stretch"`` or
            ``"letterbox"``, see :func:`~geomogeo.geo.orient.prepare_query`).
    """

    reference_size: int
    query_size: tuple[int, int]
    query_fit: QueryFit

    def __post_init__(self) -> None:
        check_query_fit(self.query_fit)


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
        query_fit: how the photos were fitted into the queries (``"stretch"`` or
            ``"letterbox"``, see :func:`~geomogeo.geo.orient.prepare_query`).
    """

    ids: np.ndarray
    references: np.ndarray
    queries: np.ndarray
    clicks: np.ndarray
    boxes: np.ndarray
    counts: np.ndarray
    metres_per_pixel: np.ndarray
    query_fit: QueryFit = "stretch"

    def __post_init__(self) -> None:
        check_query_fit(self.query_fit)
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

    @property
    def geometry(self) -> PackGeometry:
        return PackGeometry(self.reference_size, self.query_size, self.query_fit)

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
        """Write as ``.npz`` (plain arrays, ``query_fit`` a 0-d string array; read back with
        :meth:`load`)."""
        np.savez(path, ids=self.ids.astype(str), references=self.references,
                 queries=self.queries, clicks=self.clicks, boxes=self.boxes,
                 counts=self.counts, metres_per_pixel=self.metres_per_pixel,
                 query_fit=np.array(self.query_fit))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PackedData:
        """Read a :meth:`save` file (no pickle); one without ``query_fit`` is ``"stretch"``."""
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        fit = arrays.pop("query_fit", None)
        return cls(**arrays, query_fit=LEGACY_QUERY_FIT if fit is None else str(fit))

    @classmethod
    def concatenate(cls, parts: Sequence[PackedData]) -> PackedData:
        """The photos of ``parts`` one after the other (all must share their query fit)."""
        fits = sorted({p.query_fit for p in parts})
        if len(fits) > 1:
            raise ValueError(f"cannot concatenate packs of different query fits {fits}")
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in (
            "ids", "references", "queries", "clicks", "boxes", "counts", "metres_per_pixel")),
            query_fit=fits[0])


def read_pack_geometry(path: str | os.PathLike[str]) -> PackGeometry:
    """The geometry of a :meth:`PackedData.save` file, read from its array headers and its
    ``query_fit`` (``"stretch"`` when absent: an older pack) without loading the photos.

    Raises:
        FileNotFoundError: no such file.
        ValueError, KeyError, zipfile.BadZipFile, OSError: not a packed data file.
    """
    with zipfile.ZipFile(path) as z:
        ref, qry = (_npy_shape(z, f"{k}.npy") for k in ("references", "queries"))
        fit = LEGACY_QUERY_FIT
        if "query_fit.npy" in z.namelist():
            with z.open("query_fit.npy") as f:
                fit = str(np.load(f, allow_pickle=False))  # type: ignore[assignment]
    if len(ref) != 4 or len(qry) != 4:
        raise ValueError(f"references {ref} / queries {qry} are not (N, H, W, 3) arrays")
    return PackGeometry(int(ref[1]), (int(qry[1]), int(qry[2])), fit)


def _npy_shape(z: zipfile.ZipFile, name: str) -> tuple[int, ...]:
    """The shape in the header of the ``.npy`` member ``name`` (the data is not read)."""
    with z.open(name) as f:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"{name}: unsupported .npy version {version}")
        return tuple(read(f)[0])


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
        query_fit=query_fit,
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
