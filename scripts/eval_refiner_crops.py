"""The box refiner against the network's box, target by target, around a known point.

Each target's reference window is boxed around its footprint box's centre moved by
N(0, ``--jitter`` px) per axis (where a registered click lands; fixed seed), and uniformly
within ``--spread`` of the box's size (a user clicks anywhere on the roof, not at its centre):

* ``refiner``: the box refiner (``--refiner``);
* ``network`` (packs only, with ``--model``): the joint box, the network's vote weighed by the
  joint prior (sigma 6 m) around the same point, centred on it;
* ``fixed``: a box of the network's median size (packs), or of 16 m (manifests), centred on it.

Inputs are packs (``.npz``), manifests (``.jsonl``, with ``--split``) or tiles with
hand-digitized footprints (``.tif``, ``geomogeo/data/footprints``): each footprint of at least
``--min-area`` m^2 is boxed in the tile's own reference image at the refiner's GSD (the
orthophoto as inference reads it), its box the footprint's envelope.

Prints acc@0.5, mean IoU, the predicted side over the true side (median) and the correlation
of their logarithms, per input and, for manifests, per target kind.

    python scripts/eval_refiner_crops.py --model model/mogeo-light16-holdout-lv.pt \\
        runs/lv16/work/packed_val.npz runs/refiner/proc_val.npz
    python scripts/eval_refiner_crops.py out/lv_test/manifest.jsonl --split test
    python scripts/eval_refiner_crops.py sample_tiles/rotterdam_pan_0p5m_c.tif
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from geomogeo.data.dataset import PackedData
from geomogeo.data.manifest import read_manifest
from geomogeo.data.synth.engine import boxes_to_ref
from geomogeo.data.synth.footprints import footprint_structures
from geomogeo.data.synth.scene import downsample, scene_from_raster
from geomogeo.engine.metrics import box_iou
from geomogeo.joint import click_prior, place_on_clicks
from geomogeo.localize import Localizer, open_refiner
from geomogeo.predictor import refine_boxes, select


def report(name: str, boxes: np.ndarray, truth: np.ndarray) -> None:
    iou = box_iou(boxes, truth)
    side = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))
    true = np.sqrt(np.prod(truth[:, 2:] - truth[:, :2], axis=1))
    print(f"{name:<44} {len(truth):>5} targets  acc@0.5 {(iou > 0.5).mean():.3f}  mean IoU "
          f"{iou.mean():.3f}  side ratio {np.median(side / true):.2f}  log corr "
          f"{np.corrcoef(np.log(side), np.log(true))[0, 1]:.2f}")


def click_points(boxes: np.ndarray, jitter: float, spread: float, rng: np.random.Generator
                 ) -> np.ndarray:
    """Where each box's object is clicked: its centre, moved uniformly within ``spread`` of
    the box's size (0: the centre; 0.5: anywhere in the central half of each side), plus
    N(0, ``jitter`` px) per axis."""
    size = boxes[:, 2:] - boxes[:, :2]
    points = (boxes[:, :2] + boxes[:, 2:]) / 2 + rng.normal(0, jitter, size.shape)
    if spread > 0:  # drawn after the jitter, so that spread 0 keeps the published figures
        points += rng.uniform(-spread / 2, spread / 2, size.shape) * size
    return points


def footprint_crops(tile: Path, gsd: float, min_area_m2: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The tile at ``gsd`` m (float RGB in 0..1, its first three bands; a 4-band tile its
    bands 1-3) and its footprints' envelopes of >= ``min_area_m2`` in its pixels (edges)."""
    scene = scene_from_raster(tile, gsd=gsd / 2, bands=(1, 2, 3) if "rgbn" in tile.stem
                              else None)
    st = footprint_structures(scene, min_area_m2)
    if st is None:
        raise SystemExit(f"{tile}: no footprints file for this tile")
    ref = downsample(scene, 2)
    return ref.image.astype(np.float32) / 255.0, boxes_to_ref(ref.transform, st.boxes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", type=Path, nargs="+", help="packs (.npz) or manifests (.jsonl)")
    p.add_argument("--model", help="network checkpoint for the 'network' rows (packs)")
    p.add_argument("--refiner", default=None,
                   help="refiner checkpoint, or several joined by os.pathsep (their boxes "
                   "averaged; default: the shipped one(s), model/checkpoints.json)")
    p.add_argument("--split", default=None, help="manifest split")
    p.add_argument("--jitter", type=float, default=1.5, help="point offset sigma, pixels")
    p.add_argument("--min-area", type=float, default=150.0,
                   help="smallest footprint of a tile, m^2")
    p.add_argument("--spread", type=float, default=0.0,
                   help="click anywhere in this fraction of the box around its centre")
    p.add_argument("--passes", type=int, default=1,
                   help="refiner passes, each around the previous box's centre")
    a = p.parse_args(argv)
    paths = a.refiner.split(os.pathsep) if a.refiner else None
    loc = Localizer.load(a.model, refiner=paths or True) if a.model else None
    refiner = open_refiner(paths) if loc is None else loc.refiner
    assert refiner is not None
    for path in a.inputs:
        rng = np.random.default_rng(5)
        if path.suffix == ".tif":
            image, truth = footprint_crops(path, refiner.gsd, a.min_area)
            points = click_points(truth, a.jitter, a.spread, rng)
            report(f"{path.name}: refiner, footprints",
                   refine_boxes(refiner, image, points, a.passes), truth)
            continue
        if path.suffix == ".npz":
            pk = PackedData.load(path)
            truth = pk.boxes.astype(np.float64)
            points = click_points(truth, a.jitter, a.spread, rng)
            ref, net = [], []
            for i, start in enumerate(pk.offsets):
                sl = slice(start, start + pk.counts[i])
                image = pk.references[i].astype(np.float32) / 255.0
                ref.append(refine_boxes(refiner, image, points[sl], a.passes))
                if loc is not None:
                    pred = loc.predictor.predict(image, pk.queries[i].astype(np.float32) / 255.0,
                                                 pk.clicks[sl])
                    prior = click_prior(points[sl], None, pred.mass.shape[-1],
                                        pk.reference_size, 1.0, sigma_m=6.0, parallax_m=0.0,
                                        floor=1e-6)
                    net.append(place_on_clicks(select(pred.mass, pred.cell_boxes, prior)[0],
                                               points[sl], 0.0))
            report(f"{path.name}: refiner", np.concatenate(ref), truth)
            if net:
                nb = np.concatenate(net)
                report(f"{path.name}: network (joint box)", nb, truth)
                half = np.median(nb[:, 2:] - nb[:, :2], axis=0) / 2
                report(f"{path.name}: fixed (network's median)",
                       np.hstack([points - half, points + half]), truth)
            continue
        boxes, truth_all, kinds = [], [], []
        for rec in read_manifest(path, a.split):
            gt = np.asarray(rec.boxes, dtype=np.float64)
            pts = click_points(gt, a.jitter, a.spread, rng)
            image = np.asarray(Image.open(rec.reference).convert("RGB"), np.float32) / 255.0
            boxes.append(refine_boxes(refiner, image, pts, a.passes))
            truth_all.append(gt)
            kinds += list(rec.meta.get("kinds", ["?"] * len(gt)))
        b, t, k = np.concatenate(boxes), np.concatenate(truth_all), np.asarray(kinds)
        report(f"{path.name}: refiner, all", b, t)
        for kind in np.unique(k):
            report(f"{path.name}: refiner, {kind}", b[k == kind], t[k == kind])
    return 0


if __name__ == "__main__":
    sys.exit(main())
