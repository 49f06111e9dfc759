"""Evaluation of a checkpoint on a manifest split (``geomogeo evaluate``).

Writes ``metrics.json`` (everything, machine-readable) and ``metrics.md`` (the table) when an
output folder is given. Metric definitions: :mod:`geomogeo.engine.metrics`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from geomogeo.data.cvogl import read_cvogl
from geomogeo.data.dataset import pack_manifest, pack_records
from geomogeo.engine.checkpoint import load_checkpoint
from geomogeo.engine.metrics import metrics_markdown
from geomogeo.engine.train import evaluate_model, load_packed, resolve_device
from geomogeo.errors import OutputError
from geomogeo.geo.export import atomic_write
from geomogeo.predictor import DEFAULT_TTA, TTASpec, parse_tta

__all__ = ["evaluate"]


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
        data = pack_records(records, *size, quiet=quiet)  # type: ignore[arg-type]
    elif Path(manifest).suffix == ".npz":
        data, split = load_packed(manifest, cfg), None
    else:
        data = pack_manifest(manifest, split, *size, quiet=quiet)  # type: ignore[arg-type]
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
