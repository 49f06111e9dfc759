"""Checkpoints that load without unpickling objects.

A checkpoint is a ``torch.save``'d dict holding only tensors, strings and numbers:

- ``"format"``: ``"geomogeo-checkpoint"``, ``"format_version"``: 1
- ``"model_config"``: :class:`~geomogeo.nn.config.ModelConfig` as a JSON string (input sizes,
  GSD, band order, normalisation, anchors, version: everything inference needs)
- ``"state_dict"``: the network's tensors (fp16 or fp32)
- ``"train_config"``, ``"metrics"``: JSON strings (may be ``"null"``)
- ``"geomogeo_version"``: the package version that wrote it
- optionally ``"optimizer"``, ``"scheduler"``, ``"progress"`` (for resuming)

It is read with ``torch.load(..., weights_only=True)``, which refuses any other object. The
file's sha256 identifies the checkpoint in outputs and is checked against the one recorded for
shipped checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from geomogeo.errors import CheckpointError
from geomogeo.nn.config import ModelConfig
from geomogeo.nn.model import MOGeoNet, build_model

__all__ = ["LoadedCheckpoint", "load_checkpoint", "save_checkpoint", "sha256_file"]

FORMAT = "geomogeo-checkpoint"
FORMAT_VERSION = 1


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str],
    model: MOGeoNet,
    *,
    train_config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
    extra: dict[str, Any] | None = None,
) -> str:
    """Write ``model`` atomically (temporary file + rename) and return the file's sha256.

    ``dtype`` applies to floating-point tensors (``torch.float16`` halves the file; BatchNorm
    statistics survive fp16 well at these magnitudes) except the ``anchors`` buffer, which stays
    fp32 so that the loaded network decodes with the anchors of its ``model_config``. ``extra``
    entries (optimizer state, progress) must be tensors, numbers, strings or containers of them.
    """
    from geomogeo import __version__

    state = {
        k: (v.detach().to("cpu", dtype if k != "anchors" else torch.float32)
            if v.is_floating_point() else v.detach().cpu())
        for k, v in model.state_dict().items()
    }
    obj: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "geomogeo_version": __version__,
        "model_config": model.config.to_json(),
        "state_dict": state,
        "train_config": json.dumps(train_config, sort_keys=True),
        "metrics": json.dumps(metrics, sort_keys=True),
    }
    if extra:
        obj.update(extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256_file(path)


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A network rebuilt from a checkpoint (in eval mode, fp32) and what came with it."""

    model: MOGeoNet
    model_config: ModelConfig
    train_config: dict[str, Any] | None
    metrics: dict[str, Any] | None
    sha256: str
    path: Path
    raw: dict[str, Any]


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    expected_sha256: str | None = None,
    map_location: str | torch.device = "cpu",
) -> LoadedCheckpoint:
    """Load a checkpoint written by :func:`save_checkpoint` without unpickling objects.

    Raises:
        CheckpointError: missing file, sha256 mismatch, not a geomogeo checkpoint, a file that
            needs pickled objects, or weights that do not fit the stored configuration.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise CheckpointError(
            f"{path}: sha256 {digest} does not match the recorded {expected_sha256}; "
            "the file is corrupt or was replaced"
        )
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise CheckpointError(
            f"{path}: not a loadable geomogeo checkpoint (only tensors and plain data are "
            f"accepted): {str(e).splitlines()[0]}"
        ) from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a geomogeo checkpoint (no format marker)")
    if obj.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {obj.get('format_version')}, this geomogeo reads "
            f"{FORMAT_VERSION}"
        )
    try:
        cfg = ModelConfig.from_dict(json.loads(obj["model_config"]))
        model = build_model(cfg)
        state = {k: v.float() if v.is_floating_point() else v
                 for k, v in obj["state_dict"].items()}
        model.load_state_dict(state, strict=True)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{path}: weights or configuration invalid: {e}") from e
    model.eval()
    return LoadedCheckpoint(
        model=model,
        model_config=cfg,
        train_config=json.loads(obj.get("train_config", "null")),
        metrics=json.loads(obj.get("metrics", "null")),
        sha256=digest,
        path=path,
        raw=obj,
    )
