"""The training configuration: paper defaults, JSON round trip, validation naming the file,
relative paths, flat model keys."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from geomogeo.data.augment import AugmentConfig
from geomogeo.engine.config import (
    DataConfig,
    ModelSpec,
    OptimConfig,
    TrainConfig,
    load_train_config,
)
from geomogeo.errors import ConfigError
from geomogeo.nn.config import ModelConfig


def _write(path: Path, d: dict) -> Path:
    path.write_text(json.dumps(d), encoding="utf-8")
    return path


def test_defaults_are_the_paper_recipe() -> None:
    o = OptimConfig()
    assert o.lr == 1e-4
    assert o.batch_size == 8
    assert o.epochs == 24
    assert o.lr_steps == (10, 20)
    assert o.gamma == 0.1
    assert o.similarity_weight == 1.0
    assert o.warmup_steps == 0 and o.weight_decay == 0.0 and o.grad_clip == 0.0
    cfg = TrainConfig(data=DataConfig(manifest="m.jsonl"))
    assert cfg.optim == o
    assert cfg.model == ModelSpec(preset="light", anchors="kmeans", overrides={})
    assert cfg.model.build() == ModelConfig.light()
    assert cfg.augment == AugmentConfig()
    assert cfg.seed == 0 and cfg.device == "auto" and cfg.precision == "auto"
    assert cfg.data.train_split == "train" and cfg.data.val_split == "val"
    # The paper preset is the full-size ModelConfig.
    assert ModelSpec(preset="paper").build() == ModelConfig()


def test_json_file_round_trip(tmp_path: Path) -> None:
    cfg = TrainConfig(
        model=ModelSpec(preset="light", anchors="preset",
                        overrides={"width": 0.125, "embed_dim": 32, "fusion": "multiply",
                                   "reference_size": 64}),
        data=DataConfig(manifest=str(tmp_path / "data" / "manifest.jsonl"), val_split=None,
                        packed_train=str(tmp_path / "train.npz")),
        optim=OptimConfig(lr=3e-4, batch_size=4, epochs=7, lr_steps=(2, 5), gamma=0.5,
                          warmup_steps=10, similarity_weight=0.0, grad_clip=1.5),
        augment=AugmentConfig(flip_p=0.25, rot90=False, crop_p=0.5),
        out_dir=str(tmp_path / "run"), seed=7, device="cpu", precision="fp32",
        channels_last="off", max_minutes=2.5, max_steps=100, eval_every=2,
        eval_batch_size=3, compile=False,
    )
    path = tmp_path / "cfg.json"
    path.write_text(cfg.to_json(), encoding="utf-8")
    back = load_train_config(path)
    assert back == cfg
    assert back.optim.lr_steps == (2, 5)
    assert back.to_json() == cfg.to_json()


def test_json_round_trip_keeps_tuple_overrides(tmp_path: Path) -> None:
    """A sequence override (query_size) comes back from JSON as the same config, and the model
    built from the file has tuples, like ModelConfig.from_dict gives."""
    cfg = TrainConfig(
        model=ModelSpec(overrides={"query_size": (64, 96), "reference_size": 64}),
        data=DataConfig(manifest=str(tmp_path / "m.jsonl")),
    )
    path = _write(tmp_path / "cfg.json", json.loads(cfg.to_json()))
    back = load_train_config(path)
    built = back.model.build()
    assert built == cfg.model.build()
    assert built.query_size == (64, 96) and isinstance(built.query_size, tuple)
    assert built == ModelConfig.from_dict(json.loads(built.to_json()))
    # The overrides themselves hold what JSON gives (lists); everything else is equal.
    assert back.model.overrides == {"query_size": [64, 96], "reference_size": 64}
    assert dataclasses.replace(back, model=cfg.model) == cfg


@pytest.mark.parametrize(
    ("d", "needle"),
    [
        ({"data": {"manifest": "m.jsonl"}, "bogus": 1}, "unknown keys"),
        ({"data": {"manifest": "m.jsonl"}, "optim": {"learning_rate": 1e-3}}, "unknown keys"),
        ({"data": {"manifest": "m.jsonl", "extra": 1}}, "unknown keys"),
        ({"data": {"manifest": "m.jsonl"}, "optim": {"lr": 0}}, "optim.lr"),
        ({"data": {"manifest": "m.jsonl"}, "optim": {"lr": -1e-3}}, "optim.lr"),
        ({"data": {"manifest": "m.jsonl"}, "optim": {"lr_steps": [20, 10]}}, "lr_steps"),
        ({}, "data.manifest"),
        ({"data": {"train_split": "train"}}, "data.manifest"),
        ({"data": {"manifest": "m.jsonl"}, "model": {"width": 5}}, "width"),
        ({"data": {"manifest": "m.jsonl"}, "model": {"overrides": {"width": 5}}}, "width"),
        ({"data": {"manifest": "m.jsonl"}, "model": {"fusion": "add"}}, "fusion"),
        ({"data": {"manifest": "m.jsonl"}, "model": {"not_a_field": 1}}, "not_a_field"),
        ({"data": {"manifest": "m.jsonl"}, "optim": "fast"}, "optim must be an object"),
        # wrong JSON types and non-finite numbers, named with their value
        ({"data": {"manifest": "m.jsonl"}, "optim": {"lr": "fast"}}, "optim.lr='fast'"),
        ({"data": {"manifest": "m.jsonl"}, "optim": {"lr": float("nan")}}, "optim.lr=nan"),
        ({"data": {"manifest": "m.jsonl"}, "optim": {"gamma": float("inf")}}, "optim.gamma=inf"),
        ({"data": {"manifest": "m.jsonl"}, "optim": {"batch_size": 2.5}}, "batch_size=2.5"),
        ({"data": {"manifest": "m.jsonl"}, "optim": {"epochs": True}}, "optim.epochs=True"),
        ({"data": {"manifest": "m.jsonl"}, "optim": {"lr_steps": ["a"]}}, "lr_steps=['a']"),
        ({"data": {"manifest": 5}}, "data.manifest=5"),
        ({"data": {"manifest": "m.jsonl"}, "seed": "0"}, "seed='0'"),
        ({"data": {"manifest": "m.jsonl"}, "precision": "fp8"}, "precision='fp8'"),
        ({"data": {"manifest": "m.jsonl"}, "augment": {"rot90": "yes"}}, "augment.rot90"),
        # ranges
        ({"data": {"manifest": "m.jsonl"}, "max_steps": 0}, "max_steps"),
        ({"data": {"manifest": "m.jsonl"}, "optim": {"weight_decay": -1}}, "weight_decay"),
        # memory: inputs bounded before anything is allocated
        ({"data": {"manifest": "m.jsonl"}, "model": {"reference_size": 200_000}}, "4096"),
        ({"data": {"manifest": "m.jsonl"}, "model": {"query_size": [8192, 128]}}, "4096"),
        ({"data": {"manifest": "m.jsonl"}, "model": {"embed_dim": 10**6}}, "embed_dim"),
        ({"data": {"manifest": "m.jsonl"}, "model": {"reference_size": True}},
         "model.reference_size=True"),
        ({"data": {"manifest": "m.jsonl"}, "model": {"gsd": float("nan")}}, "model.gsd=nan"),
    ],
)
def test_invalid_configs_name_the_file(tmp_path: Path, d: dict, needle: str) -> None:
    path = _write(tmp_path / "my_config.json", d)
    with pytest.raises(ConfigError) as ei:  # a ValueError, and exit code 3 on the CLI
        load_train_config(path)
    msg = str(ei.value)
    assert str(path) in msg
    assert needle in msg


def test_not_json_or_not_object_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{"data": ', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json"):
        load_train_config(bad)
    arr = _write(tmp_path / "array.json", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"array\.json"):
        load_train_config(arr)
    with pytest.raises(FileNotFoundError, match=r"absent\.json"):
        load_train_config(tmp_path / "absent.json")


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    folder = tmp_path / "configs" / "exp1"
    folder.mkdir(parents=True)
    path = _write(folder / "cfg.json", {"data": {"manifest": "../data/manifest.jsonl",
                                                "packed_val": "val.npz"}})
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_train_config(path)
    assert cfg.data.manifest == str((tmp_path / "configs" / "data" / "manifest.jsonl").resolve())
    assert cfg.data.packed_val == str((folder / "val.npz").resolve())
    assert cfg.data.packed_train is None
    # Absolute paths are kept.
    absolute = str((tmp_path / "abs" / "m.jsonl").resolve())
    path2 = _write(folder / "cfg2.json", {"data": {"manifest": absolute}})
    assert load_train_config(path2).data.manifest == absolute
    # Without a base folder (from_dict) paths are left as given.
    assert TrainConfig.from_dict({"data": {"manifest": "a/b.jsonl"}}).data.manifest == \
        "a/b.jsonl"


def test_flat_model_keys_become_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path / "cfg.json", {"model": {"preset": "light", "fusion": "multiply",
                                                     "anchors": "preset", "width": 0.5},
                                           "data": {"manifest": "m.jsonl"}})
    cfg = load_train_config(path)
    assert cfg.model.preset == "light"
    assert cfg.model.anchors == "preset"
    assert cfg.model.overrides == {"fusion": "multiply", "width": 0.5}
    built = cfg.model.build()
    assert built.fusion == "multiply"
    assert built.width == 0.5
    assert built == ModelConfig.light(fusion="multiply", width=0.5)
    # Flat keys and an explicit overrides object merge (flat wins).
    cfg2 = TrainConfig.from_dict({"model": {"overrides": {"fusion": "cvmf", "embed_dim": 64},
                                            "fusion": "multiply"},
                                  "data": {"manifest": "m.jsonl"}})
    assert cfg2.model.overrides == {"fusion": "multiply", "embed_dim": 64}
