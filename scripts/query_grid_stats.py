"""How often two clicks of one photo share a query feature cell, and how many cells an object
spans, for several query grids (issue 10, "query grid").

For each photo of a ``geomogeo synth`` manifest, the clicks and each target's footprint box
(the reference box, taken to the map with the record's georeference and projected into the
photo at the clicked point's height with the true camera of ``meta["camera"]``) are prepared
exactly as the model's input is (:func:`geomogeo.geo.orient.prepare_query`: north-up rotation
when the photo records a heading, then the fit into the query). A click's cell is
``floor(x / stride), floor(y / stride)`` in query-input pixels (corner origin), the cell MOPE's
impulse is set in. Printed per grid:

- photos with >= 2 clicks in which at least two clicks share a cell (fraction);
- click pairs (within a photo) that share a cell (fraction);
- the median object extent in cells: sqrt of the area of the projected footprint box, in
  query pixels, divided by the stride (a square object of that area spans this many cells a
  side); and the fraction of objects spanning at least 2 cells.

Example::

    geomogeo synth out/qgrid_val --n 40 --split val --targets 3,6 --min-object 60 \\
        --parallax --holdout las_vegas --seed 5
    python scripts/query_grid_stats.py out/qgrid_val/manifest.jsonl \\
        --grid 128:32:stretch --grid 256:16:letterbox
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
from affine import Affine
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geomogeo.data.manifest import Record, iter_manifest  # noqa: E402
from geomogeo.data.synth.camera import Camera  # noqa: E402
from geomogeo.geo import georef  # noqa: E402
from geomogeo.geo.orient import QueryFit, prepare_query  # noqa: E402


@dataclass(frozen=True)
class Grid:
    """A query input: side (pixels, square), feature stride (pixels) and fit."""

    size: int
    stride: int
    fit: QueryFit

    @classmethod
    def parse(cls, text: str) -> Grid:
        size, stride, fit = text.split(":")
        if fit not in ("stretch", "letterbox"):
            raise argparse.ArgumentTypeError(f"fit must be stretch or letterbox, not {fit!r}")
        return cls(int(size), int(stride), fit)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.size}x{self.size} px, stride {self.stride} ({self.fit})"


def footprint_quads(rec: Record) -> np.ndarray:
    """(m, 4, 2) photo pixels of each target's reference box corners, projected with the true
    camera at the clicked point's height (metres above ground)."""
    if rec.georef is None or "camera" not in rec.meta:
        raise ValueError(f"{rec.id}: needs a georeference and meta.camera (geomogeo synth)")
    with Image.open(rec.query) as im:
        w, h = im.size
    cam = Camera(**rec.meta["camera"], width=w, height=h)
    heights = np.asarray(rec.meta.get("heights", [0.0] * len(rec.boxes)), dtype=np.float64)
    quads = []
    for (x1, y1, x2, y2), z in zip(rec.boxes, heights, strict=True):
        xs, ys = georef.pixel_to_map(Affine(*rec.georef.transform), [x1, x2, x2, x1],
                                     [y1, y1, y2, y2])
        uv, _ = cam.project(np.column_stack([xs, ys, np.full(4, z)]))
        quads.append(uv)
    return np.asarray(quads, dtype=np.float64).reshape(-1, 4, 2)


def shoelace(quads: np.ndarray) -> np.ndarray:
    """(n, k, 2) polygons -> (n,) areas (absolute)."""
    x, y = quads[..., 0], quads[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(1))


def grid_stats(records: list[Record], grids: list[Grid]) -> dict[Grid, dict[str, float]]:
    """Shared-cell rates and object extents (see the module doc) per grid."""
    acc = {g: {"photos": 0, "shared_photos": 0, "pairs": 0, "shared_pairs": 0, "extent": []}
           for g in grids}
    for rec in records:
        with Image.open(rec.query) as im:
            photo = np.asarray(im.convert("RGB"))
        clicks = np.asarray(rec.clicks, dtype=np.float64)
        quads = footprint_quads(rec)
        pts = np.concatenate([clicks, quads.reshape(-1, 2)])
        m = len(clicks)
        for g in grids:
            _, q = prepare_query(photo, pts, rec.meta.get("heading"), (g.size, g.size), g.fit)
            cells = [tuple(c) for c in np.floor(q[:m] / g.stride).astype(int)]
            a = acc[g]
            a["extent"] += (np.sqrt(shoelace(q[m:].reshape(-1, 4, 2))) / g.stride).tolist()
            if m < 2:
                continue
            shared = [ci == cj for ci, cj in combinations(cells, 2)]
            a["photos"] += 1
            a["shared_photos"] += any(shared)
            a["pairs"] += len(shared)
            a["shared_pairs"] += sum(shared)
    out = {}
    for g, a in acc.items():
        ext = np.asarray(a["extent"])
        out[g] = {
            "photos": a["photos"], "pairs": a["pairs"], "objects": len(ext),
            "photo_shared": a["shared_photos"] / max(a["photos"], 1),
            "pair_shared": a["shared_pairs"] / max(a["pairs"], 1),
            "extent_median": float(np.median(ext)) if len(ext) else float("nan"),
            "extent_ge2": float(np.mean(ext >= 2)) if len(ext) else float("nan"),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest", type=Path)
    p.add_argument("--split", default=None, help="only records of this split")
    p.add_argument("--grid", type=Grid.parse, action="append", metavar="SIZE:STRIDE:FIT",
                   help="query side px, feature stride px, stretch|letterbox (repeatable; "
                   "default 128:32:stretch and 256:16:letterbox)")
    args = p.parse_args()
    grids = args.grid or [Grid(128, 32, "stretch"), Grid(256, 16, "letterbox")]
    records = [r for r in iter_manifest(args.manifest)
               if args.split is None or r.split == args.split]
    if not records:
        sys.exit(f"{args.manifest}: no records" + (f" in split {args.split!r}" if args.split
                                                    else ""))
    n_targets = sum(len(r.clicks) for r in records)
    print(f"{args.manifest}: {len(records)} photos, {n_targets} targets")
    print("| query grid | cells | photos sharing a cell | click pairs sharing a cell | "
          "median object extent, cells | objects >= 2 cells |")
    print("|---|---|---:|---:|---:|---:|")
    for g, s in grid_stats(records, grids).items():
        n = g.size // g.stride
        print(f"| {g} | {n}x{n} | {s['photo_shared']:.3f} ({s['photos']}) | "
              f"{s['pair_shared']:.3f} ({s['pairs']}) | {s['extent_median']:.2f} | "
              f"{s['extent_ge2']:.3f} |")


if __name__ == "__main__":
    main()
