"""Checkpoints: exact fp32 round trip, fp16 rounding, sha256, refusal of pickled objects,
atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from geomogeo.engine.checkpoint import (
    content_sha256,
    load_checkpoint,
    save_checkpoint,
    sha256_file,
)
from geomogeo.errors import CheckpointError
from geomogeo.nn.config import ModelConfig
from geomogeo.nn.model import MOGeoNet, build_model

#: Anchors, statistics and sizes with digits that a lossy round trip would change.
ANCHORS = tuple((3.1 + 1.7 * i + 1e-7, 2.9 + 2.3 * i + 1.0 / 3.0) for i in range(9))


def _config(**kw: object) -> ModelConfig:
    base: dict[str, object] = dict(
        name="tiny-ck", reference_size=64, query_size=(64, 96), width=0.125, embed_dim=32,
        gaussian_sigma=8.0, gsd=0.3, anchors=ANCHORS, band_names=("nir", "red", "green"),
        mean=(0.1234567, 0.4, 0.7), std=(0.21, 0.2222222, 0.3),
    )
    base.update(kw)
    return ModelConfig.light(**base)


def _inputs(cfg: ModelConfig) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(5)
    r = cfg.reference_size
    qh, qw = cfg.query_size
    ref = torch.randn(2, 3, r, r, generator=g)
    qry = torch.randn(2, 3, qh, qw, generator=g)
    clicks = torch.tensor([[10.0, 20.0], [40.5, 33.0], [80.0, 60.0]])
    bidx = torch.tensor([0, 0, 1])
    return ref, qry, clicks, bidx


@pytest.fixture(scope="module")
def model() -> MOGeoNet:
    """A tiny network whose weights and BatchNorm statistics are not the initial ones."""
    torch.manual_seed(0)
    cfg = _config()
    m = build_model(cfg)
    m.train()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01 * torch.randn_like(p))
        m(*_inputs(cfg))  # updates the running statistics
    return m.eval()


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_fp32_round_trip_is_exact(model: MOGeoNet, tmp_path: Path) -> None:
    path = tmp_path / "ck" / "model.pt"  # the folder is created
    digest = save_checkpoint(path, model, train_config={"seed": 3, "lr": 1e-4},
                             metrics={"acc": 0.5, "epoch": 2})
    ck = load_checkpoint(path)
    assert not ck.model.training
    orig, back = model.state_dict(), ck.model.state_dict()
    assert list(back) == list(orig)
    for k, v in orig.items():
        assert back[k].dtype == v.dtype, k
        assert torch.equal(back[k], v), k
    with torch.no_grad():
        a = model(*_inputs(model.config))
        b = ck.model(*_inputs(model.config))
    assert torch.equal(a.raw, b.raw)
    assert torch.equal(a.similarity, b.similarity)
    assert ck.train_config == {"seed": 3, "lr": 1e-4}
    assert ck.metrics == {"acc": 0.5, "epoch": 2}
    assert ck.sha256 == digest
    assert ck.path == path
    assert ck.raw["format"] == "geomogeo-checkpoint" and ck.raw["format_version"] == 1


def test_fp16_weights_are_the_rounded_originals(model: MOGeoNet, tmp_path: Path) -> None:
    path = tmp_path / "half.pt"
    save_checkpoint(path, model, dtype=torch.float16)
    raw = torch.load(path, weights_only=True)
    ck = load_checkpoint(path)
    for k, v in model.state_dict().items():
        stored, back = raw["state_dict"][k], ck.model.state_dict()[k]
        if k == "anchors":  # config data, kept exact (see test_model_config_round_trips)
            assert stored.dtype == torch.float32 and torch.equal(back, v)
        elif v.is_floating_point():
            assert stored.dtype == torch.float16, k
            assert back.dtype == torch.float32, k
            assert torch.equal(back, v.half().float()), k
        else:
            assert stored.dtype == v.dtype and torch.equal(back, v), k
    # fp16 really rounds: some weight differs from its fp32 value.
    w = model.state_dict()["head.out.weight"]
    assert not torch.equal(ck.model.state_dict()["head.out.weight"], w)
    assert (tmp_path / "half.pt").stat().st_size < 0.6 * _fp32_size(model, tmp_path)


def _fp32_size(model: MOGeoNet, folder: Path) -> int:
    p = folder / "full.pt"
    save_checkpoint(p, model)
    return p.stat().st_size


def test_sha256_matches_hashlib(model: MOGeoNet, tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    digest = save_checkpoint(path, model)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == expected == sha256_file(path)
    assert load_checkpoint(path, expected_sha256=expected).sha256 == expected
    assert load_checkpoint(path, expected_sha256=expected.upper()).sha256 == expected


def test_sha256_mismatch_is_refused(model: MOGeoNet, tmp_path: Path) -> None:
    path = tmp_path / "named_model.pt"
    digest = save_checkpoint(path, model)
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path, expected_sha256=wrong)
    assert str(path) in str(ei.value)
    assert wrong in str(ei.value)


def _make_marker(path: str) -> None:
    Path(path).write_text("pwned")


class _Evil:
    """Unpickling this runs os.mkdir(marker)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.marker,))


@dataclass
class _Plain:
    value: int = 3


def test_pickled_code_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"format": "geomogeo-checkpoint", "format_version": 1, "payload": _Evil(marker)},
               path)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path)
    assert str(path) in str(ei.value)
    assert not marker.exists()
    # The payload is live: an unrestricted unpickler would have run it.
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_arbitrary_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.pt"
    torch.save({"format": "geomogeo-checkpoint", "format_version": 1, "obj": _Plain()}, path)
    with pytest.raises(CheckpointError, match=r"obj\.pt"):
        load_checkpoint(path)


def test_missing_and_foreign_files(model: MOGeoNet, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path)  # a folder
    junk = tmp_path / "junk.pt"
    junk.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1),
                                   dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        load_checkpoint(junk)
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": model.state_dict()}, plain)
    with pytest.raises(CheckpointError, match="no format marker"):
        load_checkpoint(plain)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(CheckpointError, match="no format marker"):
        load_checkpoint(tensor)
    future = tmp_path / "future.pt"
    save_checkpoint(future, model, extra={"format_version": 2})
    with pytest.raises(CheckpointError, match="format 2"):
        load_checkpoint(future)


def test_weights_that_do_not_fit_the_config(model: MOGeoNet, tmp_path: Path) -> None:
    path = tmp_path / "mismatch.pt"
    save_checkpoint(path, model)
    obj = torch.load(path, weights_only=True)
    obj["model_config"] = _config(embed_dim=64).to_json()
    # consistently edited: the recorded content hash matches, the weights do not fit
    obj["content_sha256"] = content_sha256(obj["model_config"], obj["state_dict"])
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="weights or configuration invalid"):
        load_checkpoint(path)


def test_model_config_round_trips_exactly(model: MOGeoNet, tmp_path: Path) -> None:
    path = tmp_path / "cfg.pt"
    save_checkpoint(path, model, dtype=torch.float16)
    ck = load_checkpoint(path)
    cfg = ck.model_config
    assert cfg == model.config
    assert cfg.anchors == ANCHORS
    assert cfg.mean == (0.1234567, 0.4, 0.7) and cfg.std == (0.21, 0.2222222, 0.3)
    assert cfg.query_size == (64, 96) and cfg.reference_size == 64
    assert cfg.band_names == ("nir", "red", "green") and cfg.gsd == 0.3
    assert cfg.name == "tiny-ck"
    # The anchors buffer is rebuilt from the config, so it is fp32 of the exact values.
    assert torch.equal(ck.model.anchors, torch.tensor(ANCHORS, dtype=torch.float32))


def test_writes_are_atomic(model: MOGeoNet, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "best.pt"
    first = save_checkpoint(path, model, metrics={"n": 1})
    assert _listing(tmp_path) == ["best.pt"]
    second = save_checkpoint(path, model, metrics={"n": 2})  # overwrite
    assert _listing(tmp_path) == ["best.pt"]
    assert first != second
    assert load_checkpoint(path).metrics == {"n": 2}

    def boom(*a: object, **k: object) -> None:
        with open(a[1], "wb") as f:  # a partial file, then a failure
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, metrics={"n": 3})
    assert _listing(tmp_path) == ["best.pt"]
    assert sha256_file(path) == second


# Verification: the content sha256 recorded inside, and a checkpoints.json next to the file


def _flip_weight_bit(path: Path, name: str) -> None:
    """Flip one bit of tensor ``name`` inside the zip (torch stores tensors uncompressed), so
    that torch.load still reads the file."""
    obj = torch.load(path, weights_only=True)
    needle = obj["state_dict"][name].reshape(-1)[:16].contiguous().view(torch.uint8)
    data = bytearray(path.read_bytes())
    at = bytes(data).find(needle.numpy().tobytes())
    assert at > 0
    data[at + 2] ^= 0x04
    path.write_bytes(bytes(data))


def _largest(model: MOGeoNet) -> str:
    return max(model.state_dict().items(), key=lambda kv: kv[1].numel())[0]


def test_content_hash_is_recorded_and_verified(model: MOGeoNet, tmp_path: Path) -> None:
    path = tmp_path / "ok.pt"
    save_checkpoint(path, model, dtype=torch.float16)
    raw = torch.load(path, weights_only=True)
    # recomputed here by hand from the stored tensors: name, dtype, shape, bytes, in name order
    h = hashlib.sha256(raw["model_config"].encode())
    for k in sorted(raw["state_dict"]):
        t = raw["state_dict"][k].contiguous()
        h.update(f"\n{k}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    assert raw["content_sha256"] == h.hexdigest()
    assert load_checkpoint(path).verified == "content sha256 matches the one recorded inside"


def test_corrupted_weights_are_refused(model: MOGeoNet, tmp_path: Path) -> None:
    path = tmp_path / "flipped.pt"
    save_checkpoint(path, model)
    _flip_weight_bit(path, _largest(model))
    torch.load(path, weights_only=True)  # the container alone does not notice
    with pytest.raises(CheckpointError, match=r"flipped\.pt: the weights do not match"):
        load_checkpoint(path)


def test_index_next_to_the_file_is_checked(model: MOGeoNet, tmp_path: Path) -> None:
    path = tmp_path / "released.pt"
    digest = save_checkpoint(path, model)
    index = tmp_path / "checkpoints.json"
    index.write_text(json.dumps({"default": path.name,
                                 "files": {path.name: {"sha256": digest}}}))
    assert load_checkpoint(path).verified.startswith(f"file sha256 matches {index}")
    index.write_text(json.dumps({"files": {path.name: {"sha256": "0" * 64}}}))
    with pytest.raises(CheckpointError,
                       match=r"released\.pt: sha256 .*recorded by .*checkpoints\.json"):
        load_checkpoint(path)
    index.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"checkpoints\.json: malformed"):
        load_checkpoint(path)


def test_unverifiable_checkpoint_loads_with_a_warning(model: MOGeoNet, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "legacy.pt"
    save_checkpoint(path, model)
    raw = torch.load(path, weights_only=True)
    del raw["content_sha256"]  # as written before content hashes were recorded
    torch.save(raw, path)
    with caplog.at_level("WARNING", logger="geomogeo.engine.checkpoint"):
        ck = load_checkpoint(path)
    assert ck.verified == ""
    assert "legacy.pt could not be verified" in caplog.text


def test_empty_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "zero.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"zero\.pt: empty file"):
        load_checkpoint(tmp_path / "zero.pt")


def test_shipped_checkpoint_verifies_itself_away_from_its_index(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[2] / "model" / "mogeo-light-v2.pt"
    copy = tmp_path / "copy.pt"
    copy.write_bytes(shipped.read_bytes())
    assert load_checkpoint(copy).verified == "content sha256 matches the one recorded inside"


def test_the_held_out_city_checkpoint_never_saw_las_vegas() -> None:
    """``model/mogeo-light16-holdout-lv.pt`` verifies against ``checkpoints.json`` and its
    recorded data settings name no Las Vegas tile in training or validation."""
    path = Path(__file__).resolve().parents[2] / "model" / "mogeo-light16-holdout-lv.pt"
    ck = load_checkpoint(path)
    assert ck.verified.startswith("file sha256 matches") and "content sha256" in ck.verified
    c = ck.model_config
    assert (c.query_stride, c.query_fit, c.query_size, c.query_grid) == (
        16, "letterbox", (320, 320), (20, 20))
    assert ck.train_config is not None
    settings = ck.train_config["data"]["settings"]
    assert {s["holdout"] for s in settings.values()} == {"las_vegas"}
    assert settings["train"]["tiles"] == ["rotterdam_pan_0p5m_a.tif", "rotterdam_rgbn_1m_a.tif",
                                          "rotterdam_pan_0p5m_c.tif", "rotterdam_rgbn_1m_c.tif"]
    assert settings["val"]["tiles"] == ["rotterdam_pan_0p5m_b.tif", "rotterdam_rgbn_1m_b.tif"]
    assert settings["train"]["synth"]["prisms"] is True  # --parallax
    assert ck.train_config["init_checkpoint"].endswith("mogeo-light-v2.pt")
