"""Training: one loop for MOGeo, its ablations and the DetGeo baseline.

The whole training split is held in memory as uint8 arrays (:class:`PackedData`); each step
takes ``batch_size`` photos with all their targets, applies the joint augmentations, and
minimises L = L_cn + L_reg + w_s L_s. On CUDA the forward pass runs under bf16 autocast with
channels-last tensors; several GPUs are used with ``torchrun --nproc_per_node N -m
geomogeo.cli train CONFIG`` (DistributedDataParallel, photos sharded by rank).

A run folder holds ``config.json``, ``metrics.csv`` (one row per epoch), ``last.pt`` (fp32
weights, optimiser and progress: resume from it) and ``best.pt`` (fp16 weights of the epoch
with the best validation acc@0.5, ties broken by mean IoU).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import random
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from geomogeo.data.anchors import kmeans_anchors
from geomogeo.data.augment import augment_batch
from geomogeo.data.cvogl import read_cvogl
from geomogeo.data.dataset import (
    PackedData,
    PackGeometry,
    pack_manifest,
    pack_records,
    read_pack_geometry,
)
from geomogeo.engine.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
from geomogeo.engine.config import QUERY_GRID_FIELDS, TrainConfig, load_train_config
from geomogeo.engine.metrics import PhotoEval, evaluate_boxes
from geomogeo.errors import ConfigError, OutputError
from geomogeo.nn.config import ModelConfig
from geomogeo.nn.losses import mogeo_loss
from geomogeo.nn.model import MOGeoNet, build_model
from geomogeo.nn.tta import predict
from geomogeo.predictor import TTASpec, parse_tta

__all__ = [
    "TrainResult", "check_pack_geometry", "check_packed", "evaluate_model", "load_packed",
    "predict_boxes", "train", "train_from_file",
]

log = logging.getLogger(__name__)

CSV_FIELDS = ("epoch", "step", "lr", "loss", "cn", "reg", "s", "val_acc@0.25", "val_acc@0.5",
              "val_accI@0.5", "val_mean_iou", "minutes", "photos_per_s")


@dataclass(frozen=True)
class TrainResult:
    """Where a run left its checkpoints, and its per-epoch log."""

    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict[str, Any]]
    best_metrics: dict[str, Any] | None


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _normaliser(cfg: ModelConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(cfg.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=device).view(1, 3, 1, 1)
    return mean, std


def _model_input(x01: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 memory_format: torch.memory_format) -> torch.Tensor:
    """Images in [0, 1] (B, 3, H, W) -> normalised network input in ``memory_format``."""
    return ((x01 - mean) / std).contiguous(memory_format=memory_format)


@torch.inference_mode()
def predict_boxes(
    model: MOGeoNet, data: PackedData, *, batch_size: int = 32,
    device: torch.device | str = "cpu", bf16: bool = False, channels_last: bool = False,
    tta: str | TTASpec = "none",
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (T, 4) in reference pixels and scores (T,) for every target of ``data``.

    ``tta="none"`` is the network's own decoding (one pass, the best anchor of the best cell);
    other modes such as ``"rot4+s2"`` vote over turned and shifted passes
    (:mod:`geomogeo.nn.tta`).
    """
    device = torch.device(device)
    spec = parse_tta(tta)
    was_training = model.training
    model.eval()
    cfg = model.config
    mean, std = _normaliser(cfg, device)
    mf = torch.channels_last if channels_last else torch.contiguous_format
    boxes, scores = [], []
    for start in range(0, len(data), batch_size):
        b = data.batch(range(start, min(start + batch_size, len(data))), device)
        ref = _model_input(b.reference.float() / 255, mean, std, mf)
        qry = _model_input(b.query.float() / 255, mean, std, mf)
        res = predict(model, ref, qry, b.clicks, b.batch_index, spec, autocast_bf16=bf16)
        boxes.append(res.boxes.cpu().double().numpy())
        scores.append(res.scores.cpu().double().numpy())
    model.train(was_training)
    return np.concatenate(boxes), np.concatenate(scores)


def evaluate_model(model: MOGeoNet, data: PackedData, **kw: Any) -> dict[str, Any]:
    """acc@t, accI@t, mean IoU, centre-cell hits and metres by group for ``data``.

    Keyword arguments go to :func:`predict_boxes` (``tta`` among them).
    """
    boxes, _ = predict_boxes(model, data, **kw)
    off = data.offsets
    photos = [
        PhotoEval(
            pred=boxes[off[i]:off[i] + data.counts[i]],
            gt=data.boxes[off[i]:off[i] + data.counts[i]].astype(np.float64),
            metres_per_pixel=None if math.isnan(data.metres_per_pixel[i])
            else float(data.metres_per_pixel[i]),
        )
        for i in range(len(data))
    ]
    return evaluate_boxes(photos, stride=model.config.stride)


def check_pack_geometry(geometry: PackGeometry, model_cfg: ModelConfig, source: str) -> None:
    """Refuse data packed for other model inputs: reference size, query size or query fit.

    Raises:
        ConfigError: the geometries differ; the message starts with ``source`` (the file),
            gives both and how to fix it.
    """
    qh, qw = model_cfg.query_size
    need = PackGeometry(model_cfg.reference_size, (int(qh), int(qw)), model_cfg.query_fit)
    if geometry != need:
        raise ConfigError(
            f"{source}: packed at reference {geometry.reference_size} px, query "
            f"{geometry.query_size} with query_fit {geometry.query_fit!r}; the model takes "
            f"{need.reference_size} px, {need.query_size} with query_fit {need.query_fit!r}: "
            "repack the data for this model (scripts/train_default.py: into a fresh --work "
            "folder) or use a model that takes what the pack holds")


def check_packed(path: str | os.PathLike[str], model_cfg: ModelConfig) -> PackGeometry:
    """Check a ``PackedData.save`` file against the model's inputs from its headers only (the
    photos are not loaded; a pack without a recorded ``query_fit`` is ``"stretch"``).

    Raises:
        FileNotFoundError: no such file.
        ConfigError: not such a file, or packed for other inputs (the message names it).
    """
    try:
        geometry = read_pack_geometry(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        raise ConfigError(f"{path}: not a packed data file (PackedData.save): {e}") from e
    check_pack_geometry(geometry, model_cfg, str(path))
    return geometry


def load_packed(path: str | os.PathLike[str], model_cfg: ModelConfig) -> PackedData:
    """A ``PackedData.save`` file (no pickle), checked first (:func:`check_packed`) against the
    model's input sizes and query fit.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: not such a file, or packed for other inputs (the message names it).
    """
    check_packed(path, model_cfg)
    try:
        return PackedData.load(path)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        raise ConfigError(f"{path}: not a packed data file (PackedData.save): {e}") from e


def _load_split(cfg: TrainConfig, model_cfg: ModelConfig, which: str, quiet: bool
                ) -> PackedData | None:
    d = cfg.data
    packed = d.packed_train if which == "train" else d.packed_val
    split = d.train_split if which == "train" else d.val_split
    if packed is not None:
        return load_packed(packed, model_cfg)
    if split is None:
        return None
    size = (tuple(model_cfg.query_size), model_cfg.reference_size)
    if d.cvogl_root is not None:
        records = read_cvogl(d.cvogl_root, d.cvogl_subset, split)  # type: ignore[arg-type]
        return pack_records(records, *size, quiet=quiet,  # type: ignore[arg-type]
                            query_fit=model_cfg.query_fit)
    if d.manifest is None:
        return None
    return pack_manifest(d.manifest, split, *size, quiet=quiet,  # type: ignore[arg-type]
                         query_fit=model_cfg.query_fit)


def _regrid(ckpt: LoadedCheckpoint, model: ModelConfig) -> LoadedCheckpoint:
    """``ckpt``'s network with the query grid (:data:`QUERY_GRID_FIELDS`) of ``model``.

    Raises:
        ConfigError: the weights do not fit the re-gridded network.
    """
    regridded = dataclasses.replace(
        ckpt.model_config, **{k: getattr(model, k) for k in QUERY_GRID_FIELDS})
    net = build_model(regridded)
    try:
        net.load_state_dict(ckpt.model.state_dict(), strict=True)
    except RuntimeError as e:
        raise ConfigError(f"{ckpt.path}: its weights do not fit the query grid of the run's "
                          f"model: {e}") from e
    log.info("%s: query grid %s -> %s", ckpt.path, ckpt.model_config.query_grid,
             regridded.query_grid)
    return dataclasses.replace(ckpt, model=net.eval(), model_config=regridded)


def _lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Any:
    o = cfg.optim

    def factor(step: int) -> float:
        epoch = step // max(steps_per_epoch, 1)
        warm = min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps else 1.0
        return warm * o.gamma ** sum(epoch >= s for s in o.lr_steps)

    return factor


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in CSV_FIELDS})


def _score(metrics: dict[str, Any] | None) -> tuple[float, float]:
    if metrics is None:
        return (-1.0, -1.0)
    a = metrics["all"]
    return (a["acc@0.5"] or 0.0, a["mean_iou"] or 0.0)


def train(
    cfg: TrainConfig,
    *,
    resume: str | os.PathLike[str] | None = None,
    quiet: bool = False,
    train_data: PackedData | None = None,
    val_data: PackedData | None = None,
) -> TrainResult:
    """Run (or resume) a training run described by ``cfg``.

    ``train_data``/``val_data`` may be passed in memory instead of reading ``cfg.data``.
    """
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = 0, 1
    device = resolve_device(cfg.device)
    if distributed:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    main_proc = rank == 0
    quiet = quiet or not main_proc
    _seed_everything(cfg.seed)
    out = Path(cfg.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the run folder {out}: {e.strerror or e}") from e

    model_cfg = cfg.model.build()
    ckpt = None
    if resume is not None or cfg.init_checkpoint is not None:
        source = resume if resume is not None else cfg.init_checkpoint
        ckpt = load_checkpoint(source, map_location="cpu")  # type: ignore[arg-type]
        model_cfg = ckpt.model_config
        if resume is None and cfg.init_query_grid == "model":
            ckpt = _regrid(ckpt, cfg.model.build())
            model_cfg = ckpt.model_config
    train_data = train_data or _load_split(cfg, model_cfg, "train", quiet)
    if train_data is None:
        raise ConfigError("no training data: set data.manifest or data.packed_train")
    val_data = val_data or _load_split(cfg, model_cfg, "val", quiet)
    for which, d in (("train_data", train_data), ("val_data", val_data)):
        if d is not None:
            check_pack_geometry(d.geometry, model_cfg, f"in-memory {which}")
    if ckpt is None and cfg.model.anchors == "kmeans":
        wh = (train_data.boxes[:, 2:] - train_data.boxes[:, :2]).astype(np.float64)
        try:
            anchors = kmeans_anchors(wh, 9, seed=cfg.seed)
        except ValueError as e:  # too few distinct training boxes
            source = cfg.data.manifest or cfg.data.packed_train or cfg.data.cvogl_root
            raise ConfigError(f"{source}: k-means anchors: {e}; set model.anchors to "
                              "\"preset\" or use more training photos") from e
        model_cfg = dataclasses.replace(
            model_cfg, anchors=tuple((float(w), float(h)) for w, h in anchors))
    model = ckpt.model if ckpt is not None else build_model(model_cfg)
    cuda = device.type == "cuda"
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
    chl = cfg.channels_last == "on" or (cfg.channels_last == "auto" and cuda)
    mf = torch.channels_last if chl else torch.contiguous_format
    model = model.to(device=device, memory_format=mf).train()
    net: Any = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if cuda else None)
    if cfg.compile and cuda:
        net = torch.compile(net)
    o = cfg.optim
    opt = torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    n = len(train_data)
    steps_per_epoch = math.ceil(n / (o.batch_size * world))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(cfg, steps_per_epoch))
    start_epoch, step, best_metrics = 0, 0, None
    if resume is not None and ckpt is not None:
        opt.load_state_dict(ckpt.raw["optimizer"])
        sched.load_state_dict(ckpt.raw["scheduler"])
        prog = json.loads(ckpt.raw["progress"])
        start_epoch, step, best_metrics = prog["epoch"] + 1, prog["step"], prog["best_metrics"]
        log.info("resuming %s at epoch %d (step %d)", resume, start_epoch, step)
    train_json = cfg.to_dict()
    if main_proc:
        (out / "config.json").write_text(json.dumps(train_json, indent=2), encoding="utf-8")
    mean, std = _normaliser(model_cfg, device)
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    best_path, last_path = out / "best.pt", out / "last.pt"
    stop = False
    for epoch in range(start_epoch, o.epochs):
        perm = np.random.default_rng([cfg.seed, epoch]).permutation(n)[rank::world]
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        sums = {"loss": 0.0, "cn": 0.0, "reg": 0.0, "s": 0.0}
        done, seen, te = 0, 0, time.perf_counter()
        bar = tqdm(range(0, len(perm), o.batch_size), desc=f"epoch {epoch + 1}/{o.epochs}",
                   unit="step", disable=quiet, leave=False)
        for s0 in bar:
            idx = perm[s0:s0 + o.batch_size]
            b = train_data.batch(idx, device)
            ref01, qry01, clicks, boxes, bidx = augment_batch(
                b.reference.float() / 255, b.query.float() / 255, b.clicks, b.boxes,
                b.batch_index, cfg.augment, gen)
            ref = _model_input(ref01, mean, std, mf)
            qry = _model_input(qry01, mean, std, mf)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                res = net(ref, qry, clicks, bidx)
            losses = mogeo_loss(res, boxes, bidx, model.anchors, model_cfg.stride,
                                similarity_weight=o.similarity_weight, tau=o.similarity_tau)
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            if o.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            opt.step()
            sched.step()
            step += 1
            done += 1
            seen += len(idx)
            for k, key in (("loss", "total"), ("cn", "cn"), ("reg", "reg"), ("s", "s")):
                sums[k] += float(losses[key].detach())
            bar.set_postfix(loss=f"{sums['loss'] / done:.3f}")
            minutes = (time.perf_counter() - t0) / 60
            if (cfg.max_steps is not None and step >= cfg.max_steps) or \
                    (cfg.max_minutes is not None and minutes >= cfg.max_minutes):
                stop = True
                break
        bar.close()
        last_epoch = stop or epoch == o.epochs - 1
        row: dict[str, Any] = {"epoch": epoch + 1, "step": step,
                               "lr": opt.param_groups[0]["lr"],
                               **{k: v / max(done, 1) for k, v in sums.items()},
                               "minutes": (time.perf_counter() - t0) / 60,
                               "photos_per_s": seen * world / (time.perf_counter() - te)}
        metrics = None
        if main_proc and val_data is not None and ((epoch + 1) % cfg.eval_every == 0
                                                   or last_epoch):
            metrics = evaluate_model(model, val_data, batch_size=cfg.eval_batch_size,
                                     device=device, bf16=bf16, channels_last=chl)
            a = metrics["all"]
            row.update({"val_acc@0.25": a["acc@0.25"], "val_acc@0.5": a["acc@0.5"],
                        "val_accI@0.5": a["accI@0.5"], "val_mean_iou": a["mean_iou"]})
        history.append(row)
        if main_proc:
            _append_csv(out / "metrics.csv", row)
            log.info("epoch %d: %s", epoch + 1,
                     ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))
            improved = metrics is not None and _score(metrics) > _score(best_metrics)
            if improved or (val_data is None and last_epoch):
                best_metrics = metrics
                save_checkpoint(best_path, model, train_config=train_json,
                                metrics={"val": metrics, "epoch": epoch + 1, "step": step},
                                dtype=torch.float16)
            progress = json.dumps({"epoch": epoch, "step": step, "best_metrics": best_metrics})
            save_checkpoint(last_path, model, train_config=train_json,
                            metrics={"val": metrics, "epoch": epoch + 1, "step": step},
                            extra={"optimizer": opt.state_dict(),
                                   "scheduler": sched.state_dict(), "progress": progress})
        if stop:
            break
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(best_path, last_path, history, best_metrics)


def train_from_file(
    path: str | os.PathLike[str], *, resume: str | os.PathLike[str] | None = None,
    quiet: bool = False,
) -> TrainResult:
    """``geomogeo train CONFIG``: load and validate the JSON config, then :func:`train`."""
    return train(load_train_config(path), resume=resume, quiet=quiet)
