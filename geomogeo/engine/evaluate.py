"""Evaluation of a checkpoint on a manifest split (``geomogeo evaluate``), and of the whole
localization on rendered photos with their raster (``geomogeo evaluate --localize``:
:func:`evaluate_localize`, which compares the training-free baseline, the network alone and
joint localization, with and without a heading).

Writes ``metrics.json`` (everything, machine-readable) and ``metrics.md`` (the table) when an
output folder is given. Metric definitions: :mod:`geomogeo.engine.metrics`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from affine import Affine
from PIL import Image
from tqdm.auto import tqdm

from geomogeo.data.cvogl import read_cvogl
from geomogeo.data.dataset import pack_manifest, pack_records
from geomogeo.data.manifest import ManifestError, Record, read_manifest
from geomogeo.engine.checkpoint import load_checkpoint
from geomogeo.engine.metrics import PhotoEval, evaluate_boxes, metrics_markdown
from geomogeo.engine.train import evaluate_model, load_packed, resolve_device
from geomogeo.errors import OutputError
from geomogeo.geo import georef, raster
from geomogeo.geo.export import atomic_write
from geomogeo.joint import JointConfig
from geomogeo.predictor import DEFAULT_JOINT_TTA, DEFAULT_TTA, TTASpec, parse_tta

if TYPE_CHECKING:
    from geomogeo.localize import LocalizationResult, RefinerPaths

__all__ = ["LOCALIZE_RUNS", "evaluate", "evaluate_localize", "localize_markdown"]


def evaluate(
    checkpoint: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    *,
    split: str | None = "test",
    out_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    device: str = "auto",
    quiet: bool = True,
    cvogl_subset: str | None = None,
    tta: str | TTASpec = DEFAULT_TTA,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on the photos of ``split`` (None = all) of ``manifest``.

    With ``cvogl_subset`` (``"DroneAerial"`` or ``"SVI"``), ``manifest`` is a CVOGL root folder
    read as distributed; a ``.npz`` file is packed data (``PackedData.save``, e.g. the
    validation photos of ``scripts/train_default.py``), evaluated whole (``split`` unused).
    ``tta`` is the decoding (:func:`~geomogeo.engine.train.predict_boxes`); the default is
    inference's.

    Returns ``{"checkpoint", "sha256", "model", "manifest", "split", "tta", "photos", "targets",
    "metrics"}`` where ``metrics`` is :func:`~geomogeo.engine.metrics.evaluate_boxes`'s dict.
    """
    spec = parse_tta(tta)
    ck = load_checkpoint(checkpoint)
    cfg = ck.model_config
    size = (tuple(cfg.query_size), cfg.reference_size)
    if cvogl_subset is not None:
        records = read_cvogl(manifest, cvogl_subset, split or "test")  # type: ignore[arg-type]
        data = pack_records(records, *size, quiet=quiet,  # type: ignore[arg-type]
                            query_fit=cfg.query_fit)
    elif Path(manifest).suffix == ".npz":
        data, split = load_packed(manifest, cfg), None
    else:
        data = pack_manifest(manifest, split, *size, quiet=quiet,  # type: ignore[arg-type]
                             query_fit=cfg.query_fit)
    dev = resolve_device(device)
    metrics = evaluate_model(ck.model.to(dev), data, batch_size=batch_size, device=dev,
                             bf16=dev.type == "cuda", tta=spec)
    result = {
        "checkpoint": str(Path(checkpoint)),
        "sha256": ck.sha256,
        "model": cfg.name,
        "manifest": str(Path(manifest)),
        "split": split,
        "tta": str(spec),
        "photos": len(data),
        "targets": int(data.counts.sum()),
        "metrics": metrics,
    }
    if out_dir is not None:
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create the output folder {out}: {e.strerror or e}") from e
        title = f"{cfg.name} on {Path(manifest).name} ({split or 'all'}, tta {spec})"
        with atomic_write(out / "metrics.json") as p:
            Path(p).write_text(json.dumps(result, indent=2), encoding="utf-8")
        with atomic_write(out / "metrics.md") as p:
            Path(p).write_text(metrics_markdown(metrics, title=title), encoding="utf-8")
    return result


#: The localizations run per photo by :func:`evaluate_localize`: name -> (joint, heading
#: given, rotations searched when no heading is known: 0, or the config's ``rotations``).
LOCALIZE_RUNS: dict[str, tuple[bool, bool, int]] = {
    "network, no heading": (False, False, 0),
    "network, no heading, rotation search": (False, False, JointConfig().rotations),
    "network, heading": (False, True, 0),
    "joint, no heading": (True, False, JointConfig().rotations),
    "joint, heading": (True, True, JointConfig().rotations),
}

#: EXIF tag of the GPS IFD.
_GPS_IFD = 0x8825

#: Side of the training-free baseline's box around a registered click, metres.
BASELINE_BOX_M = 16.0

#: Targets-per-photo groups of :func:`evaluate_localize`'s ``by_targets`` breakdown.
TARGET_COUNT_GROUPS: dict[str, Callable[[int], bool]] = {
    "N=2": lambda n: n == 2,
    "3<=N<=4": lambda n: 3 <= n <= 4,
    "5<=N<=6": lambda n: 5 <= n <= 6,
}


def _window_boxes(polygons: Sequence[Any], crs: Any, rec: Record) -> np.ndarray:
    """North-up polygons (``crs``) -> (n, 4) pixel-edge boxes of the record's reference window
    (their bounding boxes in that window's pixels); None -> the empty box (0, 0, 0, 0)."""
    t = Affine(*rec.georef.transform)  # type: ignore[union-attr]
    out = []
    for p in polygons:
        if p is None:
            out.append([0.0, 0.0, 0.0, 0.0])
            continue
        xs, ys = np.asarray(p.exterior.coords).T
        xs, ys = georef.to_crs(xs, ys, crs, rec.georef.crs)  # type: ignore[union-attr]
        cols, rows = georef.map_to_pixel(t, xs, ys)
        out.append([np.min(cols), np.min(rows), np.max(cols), np.max(rows)])
    return np.asarray(out, dtype=np.float64).reshape(-1, 4)


def _baseline_polygons(res: LocalizationResult, side_m: float) -> list[Any]:
    """The training-free baseline: a ``side_m`` metre square around each registered click
    (raster CRS; for a geographic raster the square is made in the click's local UTM zone and
    its corners mapped back to lon/lat); None where the photo did not register."""
    from shapely.geometry import Polygon, box

    if georef.as_crs(res.crs).is_geographic:
        out: list[Any] = []
        for t in res.targets:
            if t.registered_xy is None:
                out.append(None)
                continue
            lon, lat = georef.to_lonlat(*t.registered_xy, res.crs)
            utm = georef.local_metric_crs(float(lon), float(lat))
            x, y = georef.to_crs(*t.registered_xy, res.crs, utm)
            h = side_m / 2
            cx, cy = georef.to_crs(np.array([x - h, x + h, x + h, x - h]),
                                   np.array([y - h, y - h, y + h, y + h]), utm, res.crs)
            out.append(Polygon(np.column_stack([cx, cy])))
        return out
    half = side_m / 2 / georef.linear_unit_factor(res.crs)
    return [None if t.registered_xy is None else
            box(t.registered_xy[0] - half, t.registered_xy[1] - half,
                t.registered_xy[0] + half, t.registered_xy[1] + half)
            for t in res.targets]


def _without_exif_heading(path: Path, folder: Path) -> Path:
    """The photo at ``path`` as a lossless PNG in ``folder`` with its EXIF but without the GPS
    heading (``GPSImgDirection``), so that a run "without heading" does not read it; the
    photo itself when it records no heading. Its pixels are the JPEG's decoded pixels."""
    with Image.open(path) as im:
        exif = im.getexif()
        gps = exif.get_ifd(_GPS_IFD)
        if 16 not in gps and 17 not in gps:
            return path
        for tag in (16, 17):  # GPSImgDirectionRef, GPSImgDirection
            gps.pop(tag, None)
        out = folder / f"{path.stem}.png"
        im.save(out, exif=exif)
    return out


def evaluate_localize(
    checkpoint: str | os.PathLike[str] | None,
    manifest: str | os.PathLike[str],
    *,
    split: str | None = "test",
    out_dir: str | os.PathLike[str] | None = None,
    tta: str | TTASpec = DEFAULT_TTA,
    joint_tta: str | TTASpec = DEFAULT_JOINT_TTA,
    search_tta: str | TTASpec | None = None,
    limit: int | None = None,
    start: int = 0,
    config: JointConfig | None = None,
    runs: Sequence[str] = tuple(LOCALIZE_RUNS),
    quiet: bool = True,
    refiner: bool | RefinerPaths = True,
) -> dict[str, Any]:
    """Evaluate the whole localization (:meth:`Localizer.localize`) on rendered photos WITH
    their raster, so that the photo-to-orthophoto registration runs.

    Every record needs ``meta["raster"]`` (the source GeoTIFF; written by ``geomogeo synth``
    for the validation and test tiles), ``meta["bands"]``, ``meta["gps"]`` (the measured
    position, map coordinates of the record's georeference CRS), ``meta["heading"]`` (the
    compass reading) and, for the registration figures, ``meta["ground"]`` (the clicked ground
    points) and ``meta["camera"]["yaw"]`` (the true heading). Photos whose GPS position lies
    off the raster are skipped (localize refuses them) and listed. Each photo is localized at its
    GPS position in each of ``runs`` (:data:`LOCALIZE_RUNS`); predicted polygons are compared
    with the ground-truth boxes in the record's reference-window pixels
    (:func:`~geomogeo.engine.metrics.evaluate_boxes`, 1 window pixel = the record's GSD).
    ``start`` and ``limit`` select records ``start .. start + limit - 1`` of the split. The
    runs without heading see the photo without its EXIF ``GPSImgDirection`` (a lossless
    copy), so they are without heading even for photos that record one. The
    training-free baseline (a ``BASELINE_BOX_M`` square around each registered click; an
    empty box, IoU 0, where the photo did not register) comes from the registration of the
    joint run without heading (the registration does not use the heading). ``refiner`` is
    :meth:`Localizer.load`'s (True: the shipped box refiner(s); False: none; paths: those),
    and so are ``tta``, ``joint_tta`` and ``search_tta``.

    Returns ``{"checkpoint", "model", "manifest", "split", "tta", "joint_tta", "search_tta",
    "photos", "targets",
    "config", "registration": {...}, "rotation_search": {"mode", heading error of the
    rotation search's kept rotation vs the true yaw: median, p90 and the fraction within
    22.5 degrees}, "seconds_per_photo": {run: s}, "metrics": {method:
    evaluate_boxes dict}, "by_targets": {method: evaluate_boxes dict by
    :data:`TARGET_COUNT_GROUPS`}}``; with ``out_dir``, also ``metrics.json`` and ``metrics.md``.
    """
    from geomogeo.localize import Localizer

    config = config or JointConfig()
    unknown = set(runs) - set(LOCALIZE_RUNS)
    if unknown:
        raise ValueError(f"unknown runs {sorted(unknown)}; expected {sorted(LOCALIZE_RUNS)}")
    records = [r for r in read_manifest(manifest, split) if r.georef is not None]
    records = records[start:None if limit is None else start + limit]
    missing = [r.id for r in records if "raster" not in r.meta or "gps" not in r.meta]
    if missing or not records:
        raise ManifestError(f"{manifest}: {len(missing)} record(s) of split {split!r} lack "
                            f"meta 'raster'/'gps' (e.g. {missing[:3]}), or none is "
                            "georeferenced; render them with `geomogeo synth`")
    loc = Localizer.load(checkpoint, tta=tta, refiner=refiner, joint_tta=joint_tta,
                         search_tta=search_tta)
    photos: dict[str, list[PhotoEval]] = {}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    reg_ok: list[bool] = []
    off_raster: list[str] = []
    click_err: list[float] = []
    heading_err: list[float] = []
    search_err: list[float] = []  # the rotation search's heading error, degrees
    any_plain = any(not LOCALIZE_RUNS[name][1] for name in runs)
    with tempfile.TemporaryDirectory(prefix="geomogeo-eval-") as tmp:
        for rec in tqdm(records, desc="photos", disable=quiet, unit="photo"):
            src = raster.open_raster(rec.meta["raster"], bands=rec.meta.get("bands"))
            if not src.contains(*georef.to_crs(*rec.meta["gps"], rec.georef.crs, src.crs)):  # type: ignore[union-attr]
                off_raster.append(rec.id)  # localize refuses a GPS position off the raster
                continue
            gt = np.asarray(rec.boxes, dtype=np.float64)
            gsd = float(rec.georef.transform[0])  # type: ignore[union-attr]
            registered = None  # the joint run without heading, when its registration succeeded
            # what the runs without heading read: the photo without its EXIF heading
            plain = _without_exif_heading(rec.query, Path(tmp)) if any_plain else rec.query
            for name in runs:
                joint, with_heading, rotations = LOCALIZE_RUNS[name]
                # a searching run searches config's rotations
                cfg = dataclasses.replace(config, rotations=config.rotations if rotations > 1
                                          else rotations)
                t0 = time.perf_counter()
                if joint and with_heading and registered is not None:
                    # A registered photo's heading comes from the registration, whatever heading
                    # is given: the joint run with heading is the one without (not re-run).
                    res = registered
                else:
                    query = rec.query if with_heading else plain
                    res = loc.localize(
                        query, rec.meta["raster"], np.asarray(rec.clicks),
                        tuple(rec.meta["gps"]), center_crs=rec.georef.crs,  # type: ignore[union-attr]
                        bands=rec.meta.get("bands"), heading=rec.meta["heading"] if with_heading
                        else None, heatmaps=False, quiet=True, joint=joint, config=cfg)
                seconds[name].append(time.perf_counter() - t0)
                if not joint and rotations > 1 and "camera" in rec.meta:
                    d = (res.targets[0].heading_used - float(rec.meta["camera"]["yaw"])) % 360.0
                    search_err.append(min(d, 360.0 - d))
                pred = _window_boxes([t.polygon for t in res.targets], res.crs, rec)
                photos.setdefault(name, []).append(PhotoEval(pred, gt, gsd))
                if joint and not with_heading:
                    base = _window_boxes(_baseline_polygons(res, BASELINE_BOX_M), res.crs, rec)
                    photos.setdefault("baseline: registration + fixed box", []).append(
                        PhotoEval(base, gt, gsd))
                    scene = res.registration
                    reg_ok.append(bool(scene is not None and scene.ok))
                    if scene is not None and scene.ok:
                        registered = res
                        if "ground" in rec.meta:
                            # In the record's metric CRS (the raster's may be in degrees).
                            reg = np.asarray([t.registered_xy for t in res.targets])
                            rx, ry = georef.to_crs(reg[:, 0], reg[:, 1], res.crs, rec.georef.crs)  # type: ignore[union-attr]
                            gx, gy = np.asarray(rec.meta["ground"], dtype=np.float64).T
                            click_err += np.hypot(rx - gx, ry - gy).tolist()
                        if "camera" in rec.meta and scene.heading is not None:
                            d = (scene.heading - float(rec.meta["camera"]["yaw"])) % 360.0
                            heading_err.append(min(d, 360.0 - d))
    metrics = {name: evaluate_boxes(p) for name, p in photos.items()}
    by_targets = {name: evaluate_boxes(p, groups=TARGET_COUNT_GROUPS)
                  for name, p in photos.items()}
    registration = {
        "photos": len(reg_ok),
        "success_rate": float(np.mean(reg_ok)) if reg_ok else None,
        "click_error_m_median": float(np.median(click_err)) if click_err else None,
        "click_error_m_p90": float(np.percentile(click_err, 90)) if click_err else None,
        "heading_error_deg_median": float(np.median(heading_err)) if heading_err else None,
        "heading_error_deg_p90": float(np.percentile(heading_err, 90)) if heading_err
        else None,
    }
    rotation_search = {
        "mode": config.rotation_search,
        "heading_error_deg_median": float(np.median(search_err)) if search_err else None,
        "heading_error_deg_p90": float(np.percentile(search_err, 90)) if search_err else None,
        "within_22.5_deg": float(np.mean(np.asarray(search_err) <= 22.5)) if search_err
        else None,
    }
    result = {
        "checkpoint": str(checkpoint) if checkpoint is not None else "default",
        "model": loc.predictor.name,
        "sha256": loc.predictor.sha256,
        "refiner": None if loc.refiner is None else loc.refiner.sha256,
        "manifest": str(Path(manifest)),
        "split": split,
        "tta": str(parse_tta(tta)),
        "joint_tta": str(parse_tta(joint_tta)),
        "search_tta": str(parse_tta(tta if search_tta is None else search_tta)),
        "photos": len(records) - len(off_raster),
        "targets": int(sum(len(r.boxes) for r in records if r.id not in off_raster)),
        "skipped_gps_off_raster": off_raster,
        "config": dataclasses.asdict(config),
        "registration": registration,
        "rotation_search": rotation_search,
        "seconds_per_photo": {k: float(np.median(v)) for k, v in seconds.items() if v},
        "metrics": metrics,
        "by_targets": by_targets,
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "metrics.json") as p:
            Path(p).write_text(json.dumps(result, indent=2), encoding="utf-8")
        with atomic_write(out / "metrics.md") as p:
            Path(p).write_text(localize_markdown(result), encoding="utf-8")
    return result


def localize_markdown(result: dict[str, Any], group: str = "2<=N<=6") -> str:
    """The :func:`evaluate_localize` result as markdown: one row per method (``group`` of
    targets per photo), acc@0.5 / accI@0.5 of each method by targets per photo
    (:data:`TARGET_COUNT_GROUPS`, when the result has them), then the registration figures
    and the median time per photo."""
    cols = ("photos", "targets", "acc@0.25", "acc@0.5", "accI@0.5", "mean_iou",
            "centre_error_m_median")
    lines = [f"### localize on {Path(result['manifest']).name} ({result['split'] or 'all'}, "
             f"tta {result['tta']}, registered photos {result.get('joint_tta', 'the same')}, "
             f"photos with {group} targets)", "",
             "| method | " + " | ".join(cols) + " | s / photo |",
             "|---|" + "|".join("---:" for _ in cols) + "|---:|"]
    for name, m in result["metrics"].items():
        row = m[group]
        cells = ["–" if row[c] is None else (f"{row[c]:.3f}" if isinstance(row[c], float)
                                             else str(row[c])) for c in cols]
        secs = result["seconds_per_photo"].get(name)
        lines.append(f"| {name} | " + " | ".join(cells) + " | "
                     + ("–" if secs is None else f"{secs:.2f}") + " |")
    if "by_targets" in result:
        lines += ["", "acc@0.5 / accI@0.5 by targets per photo (photos):", "",
                  "| method | " + " | ".join(TARGET_COUNT_GROUPS) + " |",
                  "|---|" + "|".join("---:" for _ in TARGET_COUNT_GROUPS) + "|"]
        for name, groups in result["by_targets"].items():
            cells = ["–" if g["acc@0.5"] is None else
                     f"{g['acc@0.5']:.3f} / {g['accI@0.5']:.3f} ({g['photos']})"
                     for g in (groups[k] for k in TARGET_COUNT_GROUPS)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for what in ("registration", "rotation_search"):
        lines += ["", f"| {what.replace('_', ' ')} | value |", "|---|---:|"]
        lines += [f"| {k} | {'–' if v is None else (f'{v:.3f}' if isinstance(v, float) else v)} |"
                  for k, v in result.get(what, {}).items()]
    return "\n".join(lines) + "\n"
