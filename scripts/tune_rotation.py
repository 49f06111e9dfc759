"""Choose the no-compass rotation search's settings on VALIDATION photos.

Each photo's reference window is read at its GPS position, exactly as
:meth:`geomogeo.localize.Localizer.localize` does without registration, and the network looks
at the query turned by every multiple of ``360 / --cache-rotations`` degrees once; the looks
are cached (``--cache``, a ``.npz`` without pickles). :func:`geomogeo.joint.search_rotation`
then runs under every setting of the grid on a stand-in predictor that returns the cached
look nearest to the heading asked for (so a refinement between two cached headings gets the
nearest cached one: 15 degrees apart by default), and acc@0.5 / accI@0.5 and the kept
heading's error against the true yaw are printed. Run it on the validation split only
(Rotterdam b), never on the test tile. Its rotations start at 0 (``search_rotation``'s
``start``); the start at the edges' heading modulo 90 degrees (``JointConfig.edge_heading``,
the default since) was chosen with ``geomogeo evaluate --localize --edge-heading`` instead
(README, "The edges' heading").

With ``--passes MODE ...`` it instead caches the looks of each of those test-time
augmentation modes and compares the search's per-rotation passes (each mode x ``--rotations``,
with the kept rotation's prediction either that mode's look or a last look with the first
mode, the full passes), scoring the box refiner's boxes around the network's box centres as
the default flow does (``JointConfig.refine_network``), with the default search settings.

Usage::

    geomogeo synth out/joint_val3 --n 240 --split val --targets 1,6 --seed 9
    OMP_NUM_THREADS=1 python scripts/tune_rotation.py out/joint_val3/manifest.jsonl \\
        --split val --min-targets 2 --limit 40 --cache out/rotation_cache_val3.npz
    geomogeo synth out/rot_val_par --parallax --split val --n 40 --targets 2,6 \\
        --min-object 100 --seed 11
    OMP_NUM_THREADS=2 python scripts/tune_rotation.py out/rot_val_par/manifest.jsonl \\
        --split val --min-targets 2 --cache out/rotation_passes_val.npz \\
        --passes rot4+s2 rot4 none --rotations 8 12 24
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from affine import Affine

from geomogeo.data.manifest import Record, read_manifest
from geomogeo.engine.metrics import PhotoEval, evaluate_boxes
from geomogeo.geo import georef, orient, photo, raster
from geomogeo.joint import ConsistencySearch, JointConfig, RotationSearch, search_rotation
from geomogeo.localize import Localizer
from geomogeo.nn.predictor import TorchPredictor
from geomogeo.predictor import InputSpec, Prediction, parse_tta, refine_boxes


def gps_window(rec: Record, spec: InputSpec) -> raster.ReferenceWindow | None:
    """The reference window localize reads at the record's GPS position, or None when that
    lies off the raster."""
    src = raster.open_raster(rec.meta["raster"], bands=rec.meta.get("bands"))
    gps = georef.to_crs(*rec.meta["gps"], rec.georef.crs, src.crs)  # type: ignore[union-attr]
    if not src.contains(*gps):
        return None
    return raster.read_window(src, gps, spec.reference_size, spec.gsd)


def build_cache(args: argparse.Namespace, path: Path) -> None:
    """Look at every cached rotation of every selected photo (with each of ``args.passes``,
    or the default predictor); save to ``path``."""
    records = [r for r in read_manifest(args.manifest, args.split)
               if r.georef is not None and len(r.clicks) >= args.min_targets][: args.limit]
    loc = Localizer.load()
    spec = loc.spec
    modes = args.passes or [""]
    nets = {m: TorchPredictor(loc.predictor.model, name="", sha256="", tta=m) if m  # type: ignore[attr-defined]
            else loc.predictor for m in modes}
    arrays: dict[str, np.ndarray] = {}
    meta = []
    for rec in records:
        win = gps_window(rec, spec)
        if win is None:
            continue  # the GPS position is off the raster: localize refuses it
        ph = photo.load_photo(rec.query)
        pts = np.asarray(rec.clicks, dtype=np.float64)
        i = len(meta)
        for r in range(args.cache_rotations):
            q, qp = orient.prepare_query(ph.image, pts, 360.0 * r / args.cache_rotations,
                                         spec.query_size, spec.query_fit)
            for m, net in nets.items():
                p = net.predict(win.image, q, qp)
                for name in ("boxes", "scores", "mass", "cell_boxes"):
                    arrays[f"{i}_{r}_{m}{name}"] = getattr(p, name)
        meta.append({"id": rec.id, "clicks": pts.tolist(), "size": [ph.width, ph.height],
                     "window": list(win.transform)[:6], "crs": georef.as_crs(win.crs).to_wkt(),
                     "record": list(rec.georef.transform), "record_crs": rec.georef.crs,
                     "boxes": np.asarray(rec.boxes).tolist(),
                     "yaw": float(rec.meta["camera"]["yaw"])})
        print(f"cached {rec.id} ({len(meta)} photos)", flush=True)
    arrays["meta"] = np.array(json.dumps({"rotations": args.cache_rotations, "photos": meta,
                                          "passes": args.passes or []}))
    np.savez_compressed(path, **arrays)


class CachedLooks:
    """A stand-in predictor: the cached look nearest to the heading asked for, which it
    recovers from the query points (the clicks turned and stretched by ``prepare_query``)."""

    name = "cached"
    sha256 = "0" * 64

    def __init__(self, data: np.lib.npyio.NpzFile, i: int, photo_meta: dict, n: int,
                 spec: object, mode: str = "") -> None:
        self.data, self.i, self.n, self.spec, self.mode = data, i, n, spec, mode
        clicks = np.asarray(photo_meta["clicks"])
        w, h = photo_meta["size"]
        blank = np.zeros((h, w, 3), np.uint8)
        self.grid = np.arange(0.0, 360.0, 2.5)  # the searched headings are multiples of 5
        self.qpts = np.stack([orient.prepare_query(blank, clicks, g, spec.query_size,
                                                      spec.query_fit)[1]
                              for g in self.grid])

    def predict(self, reference: np.ndarray, query: np.ndarray, points: np.ndarray
                ) -> Prediction:
        asked = self.grid[int(np.argmin(np.abs(self.qpts - points).sum(axis=(1, 2))))]
        r = round(asked / (360.0 / self.n)) % self.n
        get = {name: self.data[f"{self.i}_{r}_{self.mode}{name}"]
               for name in ("boxes", "scores", "mass", "cell_boxes")}
        return Prediction(get["boxes"], get["scores"], np.zeros((len(points), 1, 1),
                          np.float32), get["mass"], get["cell_boxes"])


def record_boxes(boxes: np.ndarray, m: dict) -> np.ndarray:
    """Window-pixel boxes -> (n, 4) boxes in the record's reference-window pixels."""
    out = []
    for p in georef.boxes_to_polygons(np.asarray(boxes), Affine(*m["window"])):
        xs, ys = np.asarray(p.exterior.coords).T
        xs, ys = georef.to_crs(xs, ys, m["crs"], m["record_crs"])
        c, r = georef.map_to_pixel(Affine(*m["record"]), xs, ys)
        out.append([c.min(), r.min(), c.max(), r.max()])
    return np.asarray(out)


def search_cached(look: CachedLooks, reference: np.ndarray, m: dict, n: int,
                  settings: ConsistencySearch | None, final: CachedLooks | None = None
                  ) -> tuple[RotationSearch, float]:
    """:func:`search_rotation` of ``n`` rotations on a photo's cached looks (a blank photo of
    its size: the looks are found from the turned clicks), and the kept heading's error
    against the camera's true yaw, degrees. The window was read at the photo's GPS
    position, so the camera is at its centre (``JointConfig.camera_sigma_m``)."""
    size = look.spec.reference_size  # type: ignore[attr-defined]
    found = search_rotation(look, reference, np.zeros((m["size"][1], m["size"][0], 3),
                            np.uint8), np.asarray(m["clicks"]), n, consistency=settings,
                            final=final, camera=(size / 2.0, size / 2.0))
    d = (found.heading - m["yaw"]) % 360.0
    return found, min(d, 360.0 - d)


def passes_table(args: argparse.Namespace, data: np.lib.npyio.NpzFile, info: dict) -> None:
    """acc@0.5 of the search with each cached mode's passes per rotation x ``--rotations``,
    its kept rotation's prediction that mode's look or the first mode's (``final``), boxes by
    the shipped refiner around the network's box centres."""
    loc = Localizer.load()
    spec, modes, n_cached = loc.spec, info["passes"], info["rotations"]
    records = {r.id: r for r in read_manifest(args.manifest, args.split)}
    cfg = JointConfig()
    photos = []
    for i, m in enumerate(info["photos"]):
        rec = records[m["id"]]
        win = gps_window(rec, spec)
        assert win is not None
        hint = photo.scale_hint_from_exif(photo.load_photo(rec.query), spec.gsd)
        photos.append((i, m, win, ConsistencySearch.from_config(cfg, m["size"][0], spec.gsd,
                                                                hint)))
    print(f"{len(photos)} photos, {sum(len(m['clicks']) for _, m, _, _ in photos)} targets; "
          f"boxes by the refiner around the network's box centres")
    print(f"{'passes':>9}{'rot':>5}{'last look':>10}{'network passes':>16}{'acc@0.5':>9}"
          f"{'accI@0.5':>9}{'mean IoU':>9}{'head. err med':>14}{'<=22.5':>7}")
    for mode, n, final in itertools.product(modes, args.rotations, (False, True)):
        if final and mode == modes[0]:
            continue
        evals, errors = [], []
        for i, m, win, settings in photos:
            look = CachedLooks(data, i, m, n_cached, spec, mode)
            last = CachedLooks(data, i, m, n_cached, spec, modes[0]) if final else None
            found, error = search_cached(look, win.image, m, n, settings, last)
            b = found.prediction.boxes
            boxes = refine_boxes(loc.refiner, win.image, (b[:, :2] + b[:, 2:]) / 2.0)  # type: ignore[arg-type]
            evals.append(PhotoEval(record_boxes(boxes, m), np.asarray(m["boxes"]),
                                   abs(m["record"][0])))
            errors.append(error)
        acc = evaluate_boxes(evals)["all"]
        cost = n * parse_tta(mode).passes + (parse_tta(modes[0]).passes if final else 0)
        print(f"{mode:>9}{n:>5}{modes[0] if final else 'same':>10}{cost:>16}"
              f"{acc['acc@0.5']:>9.3f}{acc['accI@0.5']:>9.3f}{acc['mean_iou']:>9.3f}"
              f"{np.median(errors):>14.1f}{np.mean(np.asarray(errors) <= 22.5):>7.2f}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest")
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--min-targets", type=int, default=1)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--cache-rotations", type=int, default=24)
    ap.add_argument("--rotations", type=int, nargs="+", default=[8, 12])
    ap.add_argument("--sigma", type=float, nargs="+", default=[4.0, 8.0, 12.0],
                    help="consistency_sigma_m values")
    ap.add_argument("--prior", type=float, nargs="+", default=[0.0, 4.0, 8.0],
                    help="consistency_prior_m values (0: no prior)")
    ap.add_argument("--passes", nargs="+", default=None, metavar="MODE",
                    help="compare these test-time augmentation modes per rotation (the first "
                    "is the full one) instead of the search settings")
    args = ap.parse_args()
    if args.split == "test":
        raise SystemExit("tune on validation data, never on the test tile")
    if not args.cache.exists():
        build_cache(args, args.cache)
    data = np.load(args.cache, allow_pickle=False)
    info = json.loads(str(data["meta"]))
    n_cached, photos = info["rotations"], info["photos"]
    if args.passes:
        if info.get("passes") != args.passes:
            raise SystemExit(f"{args.cache} holds the passes {info.get('passes')}, not "
                             f"{args.passes}: give another --cache")
        passes_table(args, data, info)
        return
    spec = Localizer.load().spec
    looks = [CachedLooks(data, i, m, n_cached, spec) for i, m in enumerate(photos)]
    reference = np.zeros((spec.reference_size, spec.reference_size, 3), np.float32)
    print(f"{len(photos)} photos, {sum(len(m['clicks']) for m in photos)} targets, "
          f"{n_cached} cached rotations")
    grid = [(1, None)] + [(n, None) for n in (8, 12)] + [
        (n, JointConfig(consistency_sigma_m=s, consistency_prior_m=p or None,
                        refine_rotation=r))
        for n, s, p, r in itertools.product(args.rotations, args.sigma, args.prior,
                                            (False, True))]
    print(f"{'rot':>4}{'search':>12}{'sigma':>6}{'prior':>6}{'refine':>7}{'acc@0.5':>9}"
          f"{'accI@0.5':>9}{'head. err med':>14}{'<=22.5':>7}")
    for n in (8, 24):  # the ceiling: the cached look nearest to the true yaw
        evals = []
        for i, m in enumerate(photos):
            d = (np.arange(n) * 360.0 / n - m["yaw"]) % 360.0
            r = int(np.argmin(np.minimum(d, 360.0 - d))) * (n_cached // n)
            evals.append(PhotoEval(record_boxes(data[f"{i}_{r}_boxes"], m),
                                   np.asarray(m["boxes"]), abs(m["record"][0])))
        acc = evaluate_boxes(evals)["all"]
        print(f"{n:>4}{'true yaw':>12}{'':>19}{acc['acc@0.5']:>9.3f}{acc['accI@0.5']:>9.3f}")
    for n, cfg in grid:
        evals, errors = [], []
        for m, net in zip(photos, looks, strict=True):
            settings = None if cfg is None else ConsistencySearch.from_config(
                cfg, m["size"][0], spec.gsd)
            found, error = search_cached(net, reference, m, n, settings)
            evals.append(PhotoEval(record_boxes(found.prediction.boxes, m),
                                   np.asarray(m["boxes"]), abs(m["record"][0])))
            errors.append(error)
        acc = evaluate_boxes(evals)["all"]
        label = ("score", "", "", "") if cfg is None else (
            "consistency", f"{cfg.consistency_sigma_m:g}", str(cfg.consistency_prior_m),
            str(cfg.refine_rotation))
        print(f"{n:>4}{label[0]:>12}{label[1]:>6}{label[2]:>6}{label[3]:>7}"
              f"{acc['acc@0.5']:>9.3f}{acc['accI@0.5']:>9.3f}{np.median(errors):>14.1f}"
              f"{np.mean(np.asarray(errors) <= 22.5):>7.2f}", flush=True)


if __name__ == "__main__":
    main()
