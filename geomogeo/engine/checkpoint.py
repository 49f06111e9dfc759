"""Checkpoints that load without unpickling objects.

A checkpoint is a ``torch.save``'d dict holding only tensors, strings and numbers:

- ``"format"``: ``"geomogeo-checkpoint"``, ``"format_version"``: 1
- ``"kind"``: ``"network"`` (a MOGeo network; checkpoints written before the key existed are
  networks), ``"box-refiner"`` (a :class:`~geomogeo.nn.refine.BoxRefiner`) or
  ``"mask-refiner"`` (a :class:`~geomogeo.nn.mask_refine.MaskRefiner`)
- ``"model_config"``: :class:`~geomogeo.nn.config.ModelConfig` (a refiner's:
  :class:`~geomogeo.nn.refine.RefinerConfig` or
  :class:`~geomogeo.nn.mask_refine.MaskRefinerConfig`) as a JSON string (input sizes, GSD,
  band order, normalisation, anchors, version: everything inference needs)
- ``"state_dict"``: the network's tensors (fp16 or fp32)
- ``"train_config"``, ``"metrics"``: JSON strings (may be ``"null"``)
- ``"geomogeo_version"``: the package version that wrote it
- ``"content_sha256"``: sha256 of the model configuration and every weight tensor (name,
  dtype, shape, bytes; see :func:`content_sha256`), so that the checkpoint can be verified
  wherever it is copied (torch's zip container has no checksum of its own that it checks)
- optionally ``"optimizer"``, ``"scheduler"``, ``"progress"`` (for resuming)

It is read with ``torch.load(..., weights_only=True)``, which refuses any other object. The
file's sha256 identifies the checkpoint in outputs. Every load verifies what it can: the
file's sha256 against the caller's ``expected_sha256`` or against a ``checkpoints.json``
index in the checkpoint's folder that lists it (as ``model/`` does), and the recorded
``content_sha256``. A checkpoint that has neither (written before content hashes existed,
copied away from its index) loads with a warning that it could not be verified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from geomogeo.errors import CheckpointError
from geomogeo.nn.config import ModelConfig
from geomogeo.nn.mask_refine import MaskRefiner, MaskRefinerConfig
from geomogeo.nn.model import MOGeoNet, build_model
from geomogeo.nn.refine import BoxRefiner, RefinerConfig

__all__ = [
    "INDEX_NAME",
    "REFINER_KINDS",
    "LoadedCheckpoint",
    "content_sha256",
    "load_checkpoint",
    "load_refiner",
    "recorded_sha256",
    "save_checkpoint",
    "sha256_file",
]

log = logging.getLogger(__name__)

#: Each checkpoint kind: its configuration's class and how a model is built from it.
_KINDS: dict[str, tuple[Any, Callable[[Any], MOGeoNet | BoxRefiner | MaskRefiner]]] = {
    "network": (ModelConfig, build_model),
    "box-refiner": (RefinerConfig, BoxRefiner),
    "mask-refiner": (MaskRefinerConfig, MaskRefiner),
}
#: The checkpoint kinds of box refiners (:func:`load_refiner`).
REFINER_KINDS = ("box-refiner", "mask-refiner")

#: The index of released checkpoints in a folder: ``{"default": name, "files": {name:
#: {"sha256": hex, ...}}}``.
INDEX_NAME = "checkpoints.json"

FORMAT = "geomogeo-checkpoint"
FORMAT_VERSION = 1


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_sha256(model_config: str, state_dict: Mapping[str, torch.Tensor]) -> str:
    """Hex sha256 of a model configuration (its JSON string) and weights: for each tensor in
    name order, its name, dtype, shape and raw bytes."""
    h = hashlib.sha256(model_config.encode("utf-8"))
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"\n{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def recorded_sha256(path: str | os.PathLike[str]) -> tuple[str, Path] | None:
    """The file sha256 that the ``checkpoints.json`` index next to ``path`` records for it,
    with the index's path; None when there is no index or it does not list the file.

    Raises:
        CheckpointError: the index exists but is not valid (not JSON, wrong layout).
    """
    p = Path(path)
    index = p.parent / INDEX_NAME
    if not index.is_file():
        return None
    try:
        meta = json.loads(index.read_text(encoding="utf-8"))
        entry = meta["files"].get(p.name)
        digest = None if entry is None else entry["sha256"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, KeyError,
            TypeError, AttributeError) as e:
        raise CheckpointError(
            f"{index}: malformed checkpoint index, expected {{\"files\": {{name: "
            f"{{\"sha256\": hex}}}}}} ({type(e).__name__}: {e})"
        ) from e
    if entry is None:
        return None
    if not isinstance(digest, str):
        raise CheckpointError(f"{index}: the sha256 of {p.name} is not a string")
    return digest, index


def save_checkpoint(
    path: str | os.PathLike[str],
    model: MOGeoNet | BoxRefiner | MaskRefiner,
    *,
    train_config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
    extra: dict[str, Any] | None = None,
) -> str:
    """Write ``model`` (a network, a box refiner or a mask refiner) atomically (temporary file
    + rename) and return the file's sha256.

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
    config_json = model.config.to_json()
    obj: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": next(k for k, (c, _) in _KINDS.items() if isinstance(model.config, c)),
        "geomogeo_version": __version__,
        "model_config": config_json,
        "state_dict": state,
        "content_sha256": content_sha256(config_json, state),
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
    """A network (or, from :func:`load_refiner`, a box refiner) rebuilt from a checkpoint (in
    eval mode, fp32) and what came with it.

    ``verified`` says which hashes were checked ("" when none could be)."""

    model: MOGeoNet | BoxRefiner | MaskRefiner
    model_config: ModelConfig | RefinerConfig | MaskRefinerConfig
    train_config: dict[str, Any] | None
    metrics: dict[str, Any] | None
    sha256: str
    path: Path
    raw: dict[str, Any]
    verified: str = ""


def _read_verified(path: Path, expected_sha256: str | None, map_location: str | torch.device,
                   kinds: tuple[str, ...]) -> tuple[dict[str, Any], str, list[str]]:
    """The verified contents of a checkpoint of one of ``kinds``, its file sha256 and the
    checks made."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")
    digest = sha256_file(path)
    checks = []
    source = "the caller"
    if expected_sha256 is None and (found := recorded_sha256(path)) is not None:
        expected_sha256, source = found[0], str(found[1])
    if expected_sha256 is not None:
        if digest != expected_sha256.lower():
            raise CheckpointError(
                f"{path}: sha256 {digest} does not match {expected_sha256} recorded by "
                f"{source}; the file is corrupt or was replaced"
            )
        checks.append(f"file sha256 matches {source}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError...
        first = (str(e).splitlines() or [""])[0] or type(e).__name__
        raise CheckpointError(
            f"{path}: not a loadable geomogeo checkpoint (only tensors and plain data are "
            f"accepted): {first}"
        ) from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a geomogeo checkpoint (no format marker)")
    if obj.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {obj.get('format_version')}, this geomogeo reads "
            f"{FORMAT_VERSION}"
        )
    found_kind = obj.get("kind", "network")
    if found_kind not in kinds:
        raise CheckpointError(f"{path}: a {found_kind!r} checkpoint, not a "
                              f"{' or '.join(map(repr, kinds))} one")
    if "content_sha256" in obj:
        try:
            content = content_sha256(obj["model_config"], obj["state_dict"])
        except (KeyError, TypeError, AttributeError, RuntimeError) as e:
            raise CheckpointError(f"{path}: weights or configuration invalid: {e}") from e
        if content != obj["content_sha256"]:
            raise CheckpointError(
                f"{path}: the weights do not match the content sha256 recorded inside the "
                f"checkpoint ({content} != {obj['content_sha256']}); the file is corrupt"
            )
        checks.append("content sha256 matches the one recorded inside")
    if checks:
        log.info("checkpoint %s verified: %s", path, "; ".join(checks))
    else:
        log.warning("checkpoint %s could not be verified: it records no content sha256 and "
                    "no %s next to it lists its file sha256", path, INDEX_NAME)
    return obj, digest, checks


def _loaded(path: Path, kinds: tuple[str, ...], expected_sha256: str | None,
            map_location: str | torch.device) -> LoadedCheckpoint:
    obj, digest, checks = _read_verified(path, expected_sha256, map_location, kinds)
    try:
        config_class, build = _KINDS[obj.get("kind", "network")]
        cfg: ModelConfig | RefinerConfig | MaskRefinerConfig = config_class.from_dict(
            json.loads(obj["model_config"]))
        model = build(cfg)
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
        verified="; ".join(checks),
    )


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    expected_sha256: str | None = None,
    map_location: str | torch.device = "cpu",
) -> LoadedCheckpoint:
    """Load a network checkpoint written by :func:`save_checkpoint` without unpickling
    objects, and verify it (see the module doc; :attr:`LoadedCheckpoint.verified` says how).

    Args:
        expected_sha256: the file's sha256 as recorded by the caller; None: the one in a
            ``checkpoints.json`` next to the file, if that lists it.

    Raises:
        CheckpointError: missing or empty file, a sha256 mismatch (file or content), not a
            geomogeo network checkpoint, a file that needs pickled objects, a malformed index,
            or weights that do not fit the stored configuration.
    """
    return _loaded(Path(path), ("network",), expected_sha256, map_location)


def load_refiner(
    path: str | os.PathLike[str],
    *,
    expected_sha256: str | None = None,
    map_location: str | torch.device = "cpu",
) -> LoadedCheckpoint:
    """Load and verify a refiner checkpoint (a :class:`~geomogeo.nn.refine.BoxRefiner` or a
    :class:`~geomogeo.nn.mask_refine.MaskRefiner`), like :func:`load_checkpoint`: ``model``
    is the refiner, ``model_config`` its configuration.

    Raises:
        CheckpointError: as :func:`load_checkpoint`, and for a network checkpoint.
    """
    return _loaded(Path(path), REFINER_KINDS, expected_sha256, map_location)
