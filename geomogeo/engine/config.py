"""Typed, validated training configuration.

A training run is described by one JSON file (``geomogeo train CONFIG``)::

    {"model": {"preset": "light", "click_encoding": "impulse", ...},
     "data": {"manifest": "data/manifest.jsonl"},
     "optim": {"lr": 1e-4, "batch_size": 8, "epochs": 24, "lr_steps": [10, 20]},
     "out_dir": "runs/light", "seed": 0}

Every field has a default; the defaults reproduce the paper's recipe (Adam, lr 1e-4, batch 8,
24 epochs, step decay x0.1 at epochs 10 and 20, L = L_cn + L_reg + L_s). The whole
configuration is saved as JSON inside each checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from geomogeo.data.augment import AugmentConfig
from geomogeo.errors import ConfigError
from geomogeo.nn.config import ModelConfig

__all__ = [
    "MAX_EMBED_DIM",
    "MAX_INPUT_SIZE",
    "QUERY_GRID_FIELDS",
    "DataConfig",
    "ModelSpec",
    "OptimConfig",
    "TrainConfig",
    "load_train_config",
]

#: Largest reference or query side (pixels) a training config may ask for: four times the
#: paper's 1024 px reference. A 200,000 px reference would need ~480 GB per image.
MAX_INPUT_SIZE = 4096
#: Largest embedding width a training config may ask for: eight times the paper's 512.
MAX_EMBED_DIM = 4096
#: The :class:`ModelConfig` fields that make the query grid and carry no weights:
#: ``init_query_grid="model"`` takes them from the run's model, the rest from the checkpoint.
QUERY_GRID_FIELDS = ("query_size", "query_stride", "query_fit", "gaussian_sigma")


@dataclass(frozen=True)
class ModelSpec:
    """The network: a preset (``"light"``, ``"light16"``: the light one with the paper's
    stride-16 query grid, or ``"paper"``) plus any :class:`ModelConfig` field as an override.
    ``anchors="kmeans"`` recomputes the nine anchors from the training boxes (k-means with
    1 - IoU); ``"preset"`` keeps the preset's."""

    preset: Literal["light", "light16", "paper"] = "light"
    anchors: Literal["kmeans", "preset"] = "kmeans"
    overrides: dict[str, Any] = field(default_factory=dict)

    def build(self) -> ModelConfig:
        """The :class:`ModelConfig` (anchors from the preset; see ``anchors``)."""
        base = {"light": ModelConfig.light, "light16": ModelConfig.light16,
                "paper": ModelConfig}[self.preset]()
        # Through from_dict: JSON lists (query_size, anchors, mean...) become tuples.
        return ModelConfig.from_dict({**base.to_dict(), **self.overrides})


@dataclass(frozen=True)
class DataConfig:
    """Where the photos come from.

    Attributes:
        manifest: a multi-object JSON Lines manifest (relative paths are relative to the
            config file).
        train_split, val_split: split names in the manifest (``val_split`` None: no
            validation, the last epoch is kept as best).
        packed_train, packed_val: ``.npz`` files written by ``PackedData.save`` to use
            instead of the manifest (faster start for large sets).
        cvogl_root, cvogl_subset: train on a CVOGL folder as it is distributed
            (``DroneAerial`` or ``SVI``; its ``train``/``val`` splits) instead of a manifest.
        settings: how the data was made (free-form JSON, e.g. the data engine's settings of
            each pack); not read by training, recorded with the run and in its checkpoints.
    """

    manifest: str | None = None
    train_split: str = "train"
    val_split: str | None = "val"
    packed_train: str | None = None
    packed_val: str | None = None
    cvogl_root: str | None = None
    cvogl_subset: str = "DroneAerial"
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation (defaults: the paper's recipe).

    Attributes:
        lr: Adam learning rate.
        batch_size: photos per step (each with all its targets).
        epochs: passes over the training photos.
        lr_steps: epochs after which the learning rate is multiplied by ``gamma``.
        gamma: step-decay factor.
        warmup_steps: linear warm-up from 0 (0 = none).
        weight_decay: Adam weight decay.
        similarity_weight: weight of L_s in the total loss (0 = the "without L_s" ablation).
        similarity_tau: temperature of L_s.
        grad_clip: clip the gradient norm (0 = off).
    """

    lr: float = 1e-4
    batch_size: int = 8
    epochs: int = 24
    lr_steps: tuple[int, ...] = (10, 20)
    gamma: float = 0.1
    warmup_steps: int = 0
    weight_decay: float = 0.0
    similarity_weight: float = 1.0
    similarity_tau: float = 0.1
    grad_clip: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run.

    Attributes:
        model, data, optim, augment: see their classes.
        out_dir: run folder (``best.pt``, ``last.pt``, ``metrics.csv``, ``config.json``).
        seed: seeds Python, numpy and torch; data order and augmentations follow it.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 on CPU), ``"bf16"`` or ``"fp32"``.
        channels_last: use the channels-last memory format (``"auto"``: on CUDA).
        max_minutes: stop after this wall time (None = no limit); the run still saves.
        max_steps: stop after this many optimiser steps (None = no limit).
        eval_every: validate every this many epochs.
        eval_batch_size: photos per validation forward pass.
        compile: wrap the model in ``torch.compile`` (CUDA only).
        init_checkpoint: start from these weights (fine-tuning; the model configuration,
            anchors included, comes from that checkpoint; optimiser state starts fresh).
        init_query_grid: with ``init_checkpoint``, where the query grid comes from:
            ``"checkpoint"`` (all of the checkpoint's configuration) or ``"model"``: the
            query fields of :data:`QUERY_GRID_FIELDS` (query size, stride, fit, Gaussian
            sigma) from ``model``, the rest from the checkpoint. The weights do not depend on
            the grid, so a stride-32 model can start a stride-16 one.
    """

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    out_dir: str = "runs/mogeo"
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    max_minutes: float | None = None
    max_steps: int | None = None
    eval_every: int = 1
    eval_batch_size: int = 32
    compile: bool = False
    init_checkpoint: str | None = None
    init_query_grid: Literal["checkpoint", "model"] = "checkpoint"

    def __post_init__(self) -> None:
        o = self.optim
        checks = [
            (o.lr > 0, f"optim.lr={o.lr} must be > 0"),
            (o.batch_size >= 1, f"optim.batch_size={o.batch_size} must be >= 1"),
            (o.epochs >= 1, f"optim.epochs={o.epochs} must be >= 1"),
            (0 < o.gamma <= 1, f"optim.gamma={o.gamma} must be in (0, 1]"),
            (o.similarity_weight >= 0, "optim.similarity_weight must be >= 0"),
            (list(o.lr_steps) == sorted(o.lr_steps), "optim.lr_steps must be increasing"),
            (self.precision in ("auto", "bf16", "fp32"), f"precision={self.precision!r}"),
            (self.channels_last in ("auto", "on", "off"), "channels_last: auto, on or off"),
            (self.eval_every >= 1, "eval_every must be >= 1"),
            (self.max_minutes is None or self.max_minutes > 0, "max_minutes must be > 0"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1"),
            (o.warmup_steps >= 0, "optim.warmup_steps must be >= 0"),
            (o.weight_decay >= 0, "optim.weight_decay must be >= 0"),
            (o.grad_clip >= 0, "optim.grad_clip must be >= 0"),
            (o.similarity_tau > 0, "optim.similarity_tau must be > 0"),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (self.model.preset in ("light", "light16", "paper"),
             f"model.preset={self.model.preset!r}"),
            (self.model.anchors in ("kmeans", "preset"), "model.anchors: kmeans or preset"),
            (self.init_query_grid in ("checkpoint", "model"),
             f"init_query_grid={self.init_query_grid!r}: checkpoint or model"),
            (any(v is not None for v in (self.data.manifest, self.data.packed_train,
                                          self.data.cvogl_root)),
             "data.manifest (or data.packed_train, data.cvogl_root) is required"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"invalid TrainConfig: {msg}")
        try:
            built = self.model.build()  # validates the model overrides
        except TypeError as e:
            raise ConfigError(f"invalid TrainConfig: model: {e}") from e
        sizes = (built.reference_size, *built.query_size)
        if max(sizes) > MAX_INPUT_SIZE:
            raise ConfigError(
                f"invalid TrainConfig: model input sizes {sizes} px exceed {MAX_INPUT_SIZE} px "
                "(reference_size, query_size)"
            )
        if not 1 <= built.embed_dim <= MAX_EMBED_DIM:
            raise ConfigError(f"invalid TrainConfig: model.embed_dim={built.embed_dim} must "
                              f"be in 1..{MAX_EMBED_DIM}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], base_dir: str | os.PathLike[str] | None = None
                  ) -> TrainConfig:
        """Build from a plain dict, rejecting unknown keys; relative data paths are resolved
        against ``base_dir`` when given."""
        def sub(klass: type, value: Any, where: str) -> Any:
            if value is None:
                return klass()
            if not isinstance(value, dict):
                raise ValueError(f"invalid TrainConfig: {where} must be an object")
            known = {f.name for f in dataclasses.fields(klass)}
            unknown = set(value) - known
            if klass is ModelSpec:
                # Model fields may be given flat: everything but preset/anchors is an override.
                flat = {k: v for k, v in value.items() if k not in ("preset", "anchors",
                                                                    "overrides")}
                kw = {k: value[k] for k in ("preset", "anchors") if k in value}
                kw["overrides"] = {**value.get("overrides", {}), **flat}
                _check_types(ModelConfig, kw["overrides"], f"{where}.")
                return ModelSpec(**kw)
            if unknown:
                raise ConfigError(
                    f"invalid TrainConfig: unknown keys in {where}: {sorted(unknown)}")
            _check_types(klass, value, f"{where}.")
            kw = dict(value)
            if klass is OptimConfig and "lr_steps" in kw:
                kw["lr_steps"] = tuple(kw["lr_steps"])
            return klass(**kw)

        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"invalid TrainConfig: unknown keys {sorted(unknown)}")
        _check_types(cls, {k: v for k, v in d.items()
                           if k not in ("model", "data", "optim", "augment")}, "")
        kw = dict(d)
        kw["model"] = sub(ModelSpec, d.get("model"), "model")
        data = sub(DataConfig, d.get("data"), "data")
        if base_dir is not None:
            def res(p: str | None) -> str | None:
                return None if p is None else str((Path(base_dir) / p).resolve())
            data = dataclasses.replace(data, manifest=res(data.manifest),
                                       packed_train=res(data.packed_train),
                                       packed_val=res(data.packed_val),
                                       cvogl_root=res(data.cvogl_root))
        kw["data"] = data
        kw["optim"] = sub(OptimConfig, d.get("optim"), "optim")
        kw["augment"] = sub(AugmentConfig, d.get("augment"), "augment")
        return cls(**kw)


def _accepts(hint: Any, value: Any) -> bool:
    """Whether a JSON value fits a field's type hint (an int is a float; a bool is neither;
    a float must be finite)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in args)
    if origin is Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        return isinstance(value, (list, tuple)) and all(_accepts(args[0], v) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    raise TypeError(f"unsupported config type {hint!r}")  # a new field type: extend here


def _check_types(klass: type, values: dict[str, Any], prefix: str) -> None:
    """Reject JSON values of the wrong type for ``klass``'s fields (``"lr": "fast"``, NaN)."""
    hints = typing.get_type_hints(klass)
    for name, value in values.items():
        if name in hints and not _accepts(hints[name], value):
            raise ConfigError(
                f"invalid TrainConfig: {prefix}{name}={value!r} is not a valid "
                f"{getattr(hints[name], '__name__', None) or hints[name]}"
            )


def load_train_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Read a JSON training configuration.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: not JSON, unknown keys, values of the wrong type, non-finite numbers or
            out of range; the message names the file.
    """
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"training config not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the training config ({e})") from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from e
    except RecursionError as e:
        raise ConfigError(f"{path}: not valid JSON (nested too deeply)") from e
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: the training config must be a JSON object")
    try:
        return TrainConfig.from_dict(d, base_dir=path.parent)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: {e}") from e
