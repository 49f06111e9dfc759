"""Choose the joint's parameters (prior: sigma, parallax, floor; click_inner) on VALIDATION photos.

Each photo is registered and run through the network once, at its GPS position, exactly as
:meth:`geomogeo.localize.Localizer.localize` does with ``joint=True``; the cached per-cell
mass is then re-voted (:func:`geomogeo.predictor.select`) under every parameter set of the
grid, and acc@0.5 / accI@0.5 / mean IoU of each are printed, with the boxes where the network
puts them and where the default ``click_inner`` places them (best acc@0.5 first, by each);
then, at the default prior, each ``click_inner`` (where the box goes relative to its
registered click); then the parallax correction of the registered clicks
(:func:`geomogeo.geo.parallax.correct_parallax`: off, and a grid of template radius x margin),
with the median distance from each target's point to its box's centre, raised and flat
targets apart. Run it on the validation split only (Rotterdam b), never on the test tile.

Usage::

    OMP_NUM_THREADS=1 python scripts/tune_joint.py out/joint_val/manifest.jsonl --split val
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from collections.abc import Callable

import numpy as np
from affine import Affine

from geomogeo.data.manifest import read_manifest
from geomogeo.engine.metrics import PhotoEval, evaluate_boxes
from geomogeo.geo import georef, orient, photo, raster
from geomogeo.geo.parallax import ParallaxConfig
from geomogeo.geo.raster import ReferenceWindow
from geomogeo.joint import JointConfig, RegisteredScene, register_scene
from geomogeo.localize import Localizer
from geomogeo.predictor import Prediction, select


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest")
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped one)")
    args = ap.parse_args()
    if args.split == "test":
        raise SystemExit("tune on validation data, never on the test tile")
    records = read_manifest(args.manifest, args.split)[: args.limit]
    loc = Localizer.load(args.model)
    spec = loc.spec
    base = JointConfig()
    cached = []
    for rec in records:
        src = raster.open_raster(rec.meta["raster"], bands=rec.meta.get("bands"))
        ph = photo.load_photo(rec.query)
        pts = np.asarray(rec.clicks)
        gps = georef.to_crs(*rec.meta["gps"], rec.georef.crs, src.crs)
        if not src.contains(*gps):
            continue  # the GPS position is off the raster: localize refuses it
        scene = register_scene(ph, pts, src, gps, base)
        if not scene.ok:
            continue
        centre = georef.to_crs(*scene.centre(), scene.window.crs, src.crs)
        win = raster.read_window(src, centre, spec.reference_size, spec.gsd)
        query, qpts = orient.prepare_query(ph.image, pts, scene.heading, spec.query_size,
                                             spec.query_fit)
        pred = loc.predictor.predict(win.image, query, qpts)
        t = Affine(*rec.georef.transform)
        cached.append((rec, scene, win, pred, t, ph.image))
    print(f"{len(cached)} of {len(records)} validation photos registered")
    def photo_evals(boxes_of: Callable[..., np.ndarray],
                    scenes: list[RegisteredScene] | None = None) -> list[PhotoEval]:
        """Each photo's ``boxes_of(scene, win, pred)`` (window pixels) against its truth, in
        the manifest's pixels, with ``scenes`` instead of the cached ones when given."""
        evals = []
        for i, (rec, scene, win, pred, t, _) in enumerate(cached):
            scene = scene if scenes is None else scenes[i]
            out = []
            for p in georef.boxes_to_polygons(boxes_of(scene, win, pred), win.transform):
                xs, ys = np.asarray(p.exterior.coords).T
                xs, ys = georef.to_crs(xs, ys, win.crs, rec.georef.crs)
                c, r = georef.map_to_pixel(t, xs, ys)
                out.append([c.min(), r.min(), c.max(), r.max()])
            evals.append(PhotoEval(np.asarray(out), np.asarray(rec.boxes), t.a))
        return evals

    def score(boxes_of: Callable[..., np.ndarray], scenes: list[RegisteredScene] | None = None
              ) -> tuple[float, float, float]:
        """acc@0.5, accI@0.5, mean IoU of :func:`photo_evals`."""
        m = evaluate_boxes(photo_evals(boxes_of, scenes))["all"]
        return m["acc@0.5"], m["accI@0.5"], m["mean_iou"]

    def joint_boxes(cfg: JointConfig) -> Callable[..., np.ndarray]:
        def boxes_of(scene: RegisteredScene, win: ReferenceWindow, pred: Prediction
                     ) -> np.ndarray:
            prior = scene.prior(win, pred.mass.shape[-1], cfg)
            return scene.place(select(pred.mass, pred.cell_boxes, prior)[0], win, cfg)
        return boxes_of

    # 1. The prior, boxes where the network puts them (the network alone: at the registered
    # window and heading).
    grid = itertools.product((2.0, 4.0, 6.0, 10.0, 16.0), (0.0, 2.0, 4.0, 6.0, 8.0, 12.0),
                             (0.0, 0.02, 0.1, 0.3))
    rows = [(*score(lambda scene, win, pred: pred.boxes), None, None, None, None)]
    for sigma, parallax, floor in grid:
        cfg = dataclasses.replace(base, sigma_m=sigma, parallax_m=parallax, floor=floor)
        rows.append((*score(joint_boxes(dataclasses.replace(cfg, click_inner=None))), sigma,
                     parallax, floor, score(joint_boxes(cfg))))
    print(f"{'sigma_m':>8}{'parallax':>9}{'floor':>7}{'acc@0.5':>9}{'accI@0.5':>9}{'mIoU':>7}"
          f"   placed (click_inner {base.click_inner}): acc@0.5, accI@0.5, mIoU")
    for order in ((lambda r: (r[3] is not None, -r[0], -r[2])),
                  (lambda r: (r[3] is None, -(r[6] or (0, 0, 0))[0], -(r[6] or (0, 0, 0))[2]))):
        for acc, acci, miou, s, p, f, placed in sorted(rows, key=order)[:15]:
            label = ("network alone", "", "") if s is None else (f"{s:g}", f"{p:g}", f"{f:g}")
            tail = "" if placed is None else "   {:.3f} {:.3f} {:.3f}".format(*placed)
            print(f"{label[0]:>8}{label[1]:>9}{label[2]:>7}{acc:>9.3f}{acci:>9.3f}{miou:>7.3f}"
                  f"{tail}")
        print("  (best 15 by the network's placement, then by the default placement)")
    # 2. Where the box goes relative to its registered click, at the default prior.
    print(f"\n{'click_inner':>12}{'acc@0.5':>9}{'accI@0.5':>9}{'mIoU':>7}")
    for inner in (None, 0.0, 0.25, 0.5, 1.0):
        acc, acci, miou = score(joint_boxes(dataclasses.replace(base, click_inner=inner)))
        print(f"{inner!s:>12}{acc:>9.3f}{acci:>9.3f}{miou:>7.3f}")
    # 3. The parallax correction of the registered clicks, at the default prior and placement
    # (the model window stays where the default put it).
    print(f"\n{'template_m':>11}{'margin':>7}{'acc@0.5':>9}{'accI@0.5':>9}{'mIoU':>7}"
          f"{'raised, m':>10}{'flat, m':>9}")
    variants = [None] + [ParallaxConfig(template_m=r, margin=g)
                         for r in (5.0, 7.0, 9.0, 11.0, 14.0) for g in (0.05, 0.1, 0.2)]
    for par in variants:
        moved = [dataclasses.replace(scene, objects_xy=None, shifts_m=None)
                 .with_parallax(image, par) for _, scene, _, _, _, image in cached]
        acc, acci, miou = score(joint_boxes(base), moved)
        errors: dict[bool, list[float]] = {True: [], False: []}
        for (rec, _, _, _, t, _), scene in zip(cached, moved, strict=True):
            xs, ys = georef.to_crs(scene.targets_xy[:, 0], scene.targets_xy[:, 1],
                                   scene.window.crs, rec.georef.crs)
            c, r = georef.map_to_pixel(t, xs, ys)
            b = np.asarray(rec.boxes)
            d = np.hypot(c - (b[:, 0] + b[:, 2]) / 2, r - (b[:, 1] + b[:, 3]) / 2) * abs(t.a)
            for height, e in zip(rec.meta["heights"], d, strict=True):
                errors[height > 0].append(float(e))
        label = ("off", "") if par is None else (f"{par.template_m:g}", f"{par.margin:g}")
        print(f"{label[0]:>11}{label[1]:>7}{acc:>9.3f}{acci:>9.3f}{miou:>7.3f}"
              f"{np.median(errors[True]):>10.2f}{np.median(errors[False]):>9.2f}")
    # 4. The joint box's size against the truth's, at the default settings: the side is the
    # square root of the box's area, metres.
    def side_m(boxes: np.ndarray, metres_per_pixel: float | None) -> np.ndarray:
        return np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)) * abs(metres_per_pixel or 1)

    evals = photo_evals(joint_boxes(base))
    pred = np.concatenate([side_m(e.pred, e.metres_per_pixel) for e in evals])
    truth = np.concatenate([side_m(e.gt, e.metres_per_pixel) for e in evals])
    p10, p50, p90 = np.percentile(pred / truth, [10, 50, 90])
    print(f"\njoint box side (default settings), 10th-90th percentile: "
          f"{np.percentile(pred, 10):.1f}-{np.percentile(pred, 90):.1f} m, truth "
          f"{np.percentile(truth, 10):.1f}-{np.percentile(truth, 90):.1f} m; ratio "
          f"{p10:.2f} / {p50:.2f} / {p90:.2f} (10th / 50th / 90th); correlation of the logs "
          f"{np.corrcoef(np.log(pred), np.log(truth))[0, 1]:.2f}")

if __name__ == "__main__":
    main()
