"""Hostile inputs through the command line, in-process: every expected failure exits with the
documented code (2 usage, 3 bad input, 4 output not writable) and one line naming the file,
never a traceback. Each case builds its own small fixture in ``tmp_path``."""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geomogeo.cli import EXIT_INPUT, EXIT_OUTPUT, EXIT_USAGE, main
from geomogeo.engine.checkpoint import save_checkpoint
from geomogeo.errors import LocationError
from geomogeo.nn.config import ModelConfig
from geomogeo.nn.model import build_model

REPO = Path(__file__).resolve().parents[2]
RASTER = REPO / "sample_tiles" / "rotterdam_pan_0p5m_c.tif"
PHOTO = REPO / "sample_tiles" / "demo" / "photo_1.jpg"
SHIPPED = REPO / "model" / "mogeo-light-v2.pt"
CENTRE = "4.354,51.8956"  # lon, lat inside the Rotterdam tile

#: A case: (tmp_path, monkeypatch) -> (CLI arguments, expected exit code, text the message
#: must contain: the file at fault).
Case = Callable[[Path, pytest.MonkeyPatch], tuple[list[str], int, str]]


def _localize(photo: Path, out: Path, *extra: str) -> list[str]:
    return ["localize", str(photo), str(RASTER), "-p", "100,50", "--center", CENTRE,
            "--tta", "none", "--no-map", "-o", str(out), *extra]


def _config(tmp: Path, text: str) -> tuple[list[str], int, str]:
    p = tmp / "train_cfg.json"
    p.write_text(text, encoding="utf-8")
    return ["train", str(p)], EXIT_INPUT, p.name


def _cfg(**top: object) -> str:
    return json.dumps({"data": {"manifest": "m.jsonl"}, **top})


def _manifest(tmp: Path, line2: dict | None = None, raw: bytes | None = None) -> Path:
    """A two-line manifest with real 64 x 48 queries and 64 x 64 references; ``line2``
    overrides keys of the second record."""
    for name, size in (("q.png", (64, 48)), ("r.png", (64, 64))):
        Image.new("RGB", size, (90, 90, 90)).save(tmp / name)
    good = {"id": "a", "query": "q.png", "reference": "r.png", "clicks": [[10, 10]],
            "boxes": [[5, 5, 20, 20]], "split": "test"}
    path = tmp / "manifest.jsonl"
    second = raw if raw is not None else json.dumps({**good, "id": "b", **(line2 or {})}).encode()
    path.write_bytes(json.dumps(good).encode() + b"\n" + second + b"\n")
    return path


def _evaluate(tmp: Path, **kw: object) -> tuple[list[str], int, str]:
    return (["evaluate", str(SHIPPED), str(_manifest(tmp, **kw))], EXIT_INPUT,  # type: ignore[arg-type]
            "manifest.jsonl:2")


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` pixels (8-bit grey) and holds no pixel data:
    the shape of a decompression bomb, without allocating it here."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def _tiny_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig.light(reference_size=64, query_size=(64, 64), width=0.125, embed_dim=32)
    save_checkpoint(path, build_model(cfg))
    return path


def _flip_tensor_byte(path: Path) -> None:
    """Flip one bit inside the largest tensor's bytes in the checkpoint's zip (stored
    uncompressed by torch), leaving the container readable."""
    data = bytearray(path.read_bytes())
    obj = torch.load(path, weights_only=True)
    name, t = max(obj["state_dict"].items(), key=lambda kv: kv[1].numel())
    needle = t.reshape(-1)[:16].contiguous().view(torch.uint8).numpy().tobytes()
    at = bytes(data).find(needle)
    assert at > 0, f"tensor {name} not found verbatim in {path}"
    data[at + 3] ^= 0x01
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------
# the cases


def c_cfg_unknown_key(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    return _config(tmp, _cfg(bogus=1))


def c_cfg_lr_text(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    return _config(tmp, _cfg(optim={"lr": "fast"}))


def c_cfg_lr_negative(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    return _config(tmp, _cfg(optim={"lr": -1e-4}))


def c_cfg_lr_nan(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    return _config(tmp, '{"data": {"manifest": "m.jsonl"}, "optim": {"lr": NaN}}')


def c_cfg_lr_infinite(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    return _config(tmp, '{"data": {"manifest": "m.jsonl"}, "optim": {"lr": Infinity}}')


def c_cfg_batch_size_float(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    return _config(tmp, _cfg(optim={"batch_size": 2.5}))


def c_cfg_bad_json(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    return _config(tmp, '{"data": ')


def c_cfg_nested_deep(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    return _config(tmp, "[" * 100_000 + "]" * 100_000)


def c_cfg_binary(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    args, code, name = _config(tmp, "")
    Path(args[1]).write_bytes(bytes(range(256)) * 8)
    return args, code, name


def c_cfg_reference_size_huge(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    return _config(tmp, _cfg(model={"reference_size": 200_000}))


def c_cfg_manifest_malformed(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    (tmp / "m.jsonl").write_text('{"id": 1}\n', encoding="utf-8")
    args, code, _ = _config(tmp, _cfg(max_steps=1, device="cpu", out_dir=str(tmp / "run")))
    return args, code, "m.jsonl:1"


def c_manifest_click_outside(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    return _evaluate(tmp, line2={"clicks": [[64.5, 10]]})  # query is 64 px wide


def c_manifest_box_outside(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    return _evaluate(tmp, line2={"boxes": [[70, 5, 90, 20]]})  # reference is 64 px wide


def c_manifest_box_mostly_outside(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    return _evaluate(tmp, line2={"boxes": [[-1e9, -1e9, 10, 10]]})  # overlaps, but 1e-16 of it


def c_manifest_heading_text(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    return _evaluate(tmp, line2={"meta": {"heading": "north-east"}})


def c_packed_data_junk(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    np.savez(tmp / "junk.npz", ids=np.array([object()], dtype=object))  # pickled: refused
    return ["evaluate", str(SHIPPED), str(tmp / "junk.npz")], EXIT_INPUT, "junk.npz"


def c_manifest_image_missing(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    return _evaluate(tmp, line2={"reference": "nowhere.png"})


def c_manifest_key_missing(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    return _evaluate(tmp, raw=b'{"id": "b"}')


def c_manifest_binary(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    return _evaluate(tmp, raw=bytes(range(128, 256)))


def c_out_is_a_file(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    out = tmp / "out_file"
    out.write_text("keep", encoding="utf-8")
    return _localize(PHOTO, out), EXIT_OUTPUT, "out_file"


def c_heatmap_folder_is_a_file(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    (tmp / "out").mkdir()
    (tmp / "out" / "heatmaps").write_text("keep", encoding="utf-8")
    return _localize(PHOTO, tmp / "out"), EXIT_OUTPUT, "heatmaps"


def c_read_only_parent(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    ro = tmp / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root ignores the mode bits: refuse like the kernel would
        real_mkdir = os.mkdir

        def mkdir(path: object, *a: object, **k: object) -> None:
            if Path(os.fsdecode(path)).parent == ro:  # type: ignore[arg-type]
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
            real_mkdir(path, *a, **k)  # type: ignore[arg-type]

        mp.setattr(os, "mkdir", mkdir)
    return _localize(PHOTO, ro / "sub"), EXIT_OUTPUT, "readonly"


def c_disk_full(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    mp.setattr(os, "fsync", full)  # the data is flushed to a full disk
    return _localize(PHOTO, tmp / "full"), EXIT_OUTPUT, "full"


def c_evaluate_out_is_a_file(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    (tmp / "report").write_text("keep", encoding="utf-8")
    return (["evaluate", str(SHIPPED), str(_manifest(tmp)), "--tta", "none", "-o",
             str(tmp / "report")], EXIT_OUTPUT, "report")


def c_train_run_folder_is_a_file(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    _manifest(tmp)
    (tmp / "run").write_text("keep", encoding="utf-8")
    args, _, _ = _config(tmp, json.dumps({
        "data": {"manifest": "manifest.jsonl", "train_split": "test", "val_split": None},
        "model": {"reference_size": 64, "query_size": [64, 64]},
        "out_dir": str(tmp / "run"), "device": "cpu", "max_steps": 1}))
    return args, EXIT_OUTPUT, "run"


def c_train_too_few_boxes_for_kmeans(tmp: Path,
                                     mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    _manifest(tmp)  # two boxes of one size: nine k-means anchors cannot be fitted
    args, _, _ = _config(tmp, json.dumps({
        "data": {"manifest": "manifest.jsonl", "train_split": "test", "val_split": None},
        "model": {"reference_size": 64, "query_size": [64, 64]},
        "out_dir": str(tmp / "run"), "device": "cpu", "max_steps": 1}))
    return args, EXIT_INPUT, "manifest.jsonl"


def c_synth_into_a_file(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    f = tmp / "dataset"
    f.write_text("keep", encoding="utf-8")
    return ["synth", str(f), "--n", "1", "--split", "test"], EXIT_OUTPUT, "dataset"


def c_synth_negative_count(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    return ["synth", str(tmp / "ds"), "--n", "-5", "--split", "test"], EXIT_USAGE, "--n"


def c_photo_decompression_bomb(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    bomb = _png_header_only(tmp / "bomb.png", 20_000, 20_000)  # 4e8 px, > 2 x PIL's limit
    return _localize(bomb, tmp / "o"), EXIT_INPUT, "bomb.png"


def c_photo_float(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    p = tmp / "float.tif"
    Image.fromarray(np.full((48, 64), 0.5, np.float32), "F").save(p)
    return _localize(p, tmp / "o"), EXIT_INPUT, "float.tif"


def c_points_nested_deep(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    p = tmp / "deep.json"
    p.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    args = _localize(PHOTO, tmp / "o")
    return [a for a in args if a not in ("-p", "100,50")] + ["--points-file", str(p)], \
        EXIT_INPUT, "deep.json"


def c_points_binary_csv(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    p = tmp / "clicks.csv"
    p.write_bytes(bytes(range(256)) * 4)
    return _localize(PHOTO, tmp / "o", "--points-file", str(p)), EXIT_INPUT, "clicks.csv"


def c_boxes_binary_csv(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    p = tmp / "boxes.csv"
    p.write_bytes(bytes(range(256)) * 4)
    return ["georeference", str(p), str(RASTER), "-o", str(tmp / "b.gpkg")], EXIT_INPUT, \
        "boxes.csv"


def c_boxes_nested_deep(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    p = tmp / "boxes.json"
    p.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    return ["georeference", str(p), str(RASTER), "-o", str(tmp / "b.gpkg")], EXIT_INPUT, \
        "boxes.json"


def c_checkpoint_zero_bytes(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    (tmp / "zero.pt").write_bytes(b"")
    return _localize(PHOTO, tmp / "o", "--model", str(tmp / "zero.pt")), EXIT_INPUT, "zero.pt"


def c_checkpoint_corrupt_weights(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    ck = _tiny_checkpoint(tmp / "tiny.pt")
    _flip_tensor_byte(ck)
    return _localize(PHOTO, tmp / "o", "--model", str(ck)), EXIT_INPUT, "tiny.pt"


def c_env_model_corrupt_copy(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    # GEOMOGEO_MODEL pointing at a damaged copy of the shipped model, far from model/
    copy = tmp / "elsewhere" / "mogeo-copy.pt"
    copy.parent.mkdir()
    shutil.copyfile(SHIPPED, copy)
    _flip_tensor_byte(copy)
    mp.setenv("GEOMOGEO_MODEL", str(copy))
    return _localize(PHOTO, tmp / "o"), EXIT_INPUT, "mogeo-copy.pt"


def c_env_model_corrupt_indexed(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    # a copy of model/ (checkpoint + its checkpoints.json) with the checkpoint damaged
    folder = tmp / "model"
    folder.mkdir()
    shutil.copyfile(REPO / "model" / "checkpoints.json", folder / "checkpoints.json")
    shutil.copyfile(SHIPPED, folder / SHIPPED.name)
    _flip_tensor_byte(folder / SHIPPED.name)
    mp.setenv("GEOMOGEO_MODEL", str(folder / SHIPPED.name))
    return _localize(PHOTO, tmp / "o"), EXIT_INPUT, SHIPPED.name


def c_checkpoint_index_malformed(tmp: Path, mp: pytest.MonkeyPatch) -> tuple[list[str], int, str]:
    (tmp / "model").mkdir()
    (tmp / "model" / "checkpoints.json").write_text('{"default": "x.pt", "files": []}',
                                                    encoding="utf-8")
    mp.delenv("GEOMOGEO_MODEL", raising=False)
    mp.setattr("geomogeo.localize._MODEL_DIR", tmp / "model")
    return _localize(PHOTO, tmp / "o"), EXIT_INPUT, "checkpoints.json"


CASES: dict[str, Case] = {
    name[2:]: fn for name, fn in sorted(globals().items()) if name.startswith("c_")
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_cli_input(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    args, code, named = CASES[name](tmp_path, monkeypatch)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    rc = main(["-q", *args])
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err
    assert named in err, err
    if code != EXIT_USAGE:  # click prints its own usage block for exit 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    # nothing that existed before was changed or removed
    assert all(p.is_file() and p.read_bytes() == b for p, b in before.items())


def test_synth_negative_count_writes_nothing(tmp_path: Path) -> None:
    assert main(["-q", "synth", str(tmp_path / "ds"), "--n", "-5"]) == EXIT_USAGE
    assert not (tmp_path / "ds").exists()


@pytest.fixture(scope="module")
def localizer() -> object:
    from geomogeo.localize import Localizer

    return Localizer.load(tta="none")


@pytest.mark.parametrize(("kw", "match"), [
    ({"heading": float("nan")}, r"heading must be finite, got nan"),
    ({"heading": float("inf")}, r"heading must be finite, got inf"),
    ({"heading": "north"}, r"heading must be a number .* got 'north'"),
    ({"center": ("4.35", "north")}, r"center must be two numbers .* got \('4.35', 'north'\)"),
    ({"center": (4.354,)}, r"center must be two numbers"),
    ({"center": "4.354,51.8956"}, r"center must be two numbers"),
    ({"center": (float("nan"), 51.9)}, r"center must be finite"),
])
def test_api_rejects_non_numeric_pose(localizer: object, kw: dict, match: str) -> None:
    kw.setdefault("center", (4.354, 51.8956))
    with pytest.raises(LocationError, match=match) as exc:
        localizer.localize(PHOTO, RASTER, [(100, 50)], quiet=True, **kw)  # type: ignore[attr-defined]
    assert isinstance(exc.value, ValueError)
