"""Standard weight files, written here and read back bit-exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from nn_fixtures import tiny_config

from geomogeo.nn.backbones import ConvBNAct, QueryEncoder, ResNet18
from geomogeo.nn.model import build_model
from geomogeo.nn.weights import load_darknet_weights, load_torchvision_resnet18


def torchvision_resnet18_keys() -> dict[str, tuple[int, ...]]:
    """torchvision's ResNet-18 state-dict keys and shapes, written out by hand."""
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix: str, c: int) -> None:
        for k in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{k}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", 64)
    c_in = 64
    for layer, c in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{layer}.{block}"
            shapes[f"{p}.conv1.weight"] = (c, c_in if block == 0 else c, 3, 3)
            bn(f"{p}.bn1", c)
            shapes[f"{p}.conv2.weight"] = (c, c, 3, 3)
            bn(f"{p}.bn2", c)
            if block == 0 and layer > 1:
                shapes[f"{p}.downsample.0.weight"] = (c, c_in, 1, 1)
                bn(f"{p}.downsample.1", c)
        c_in = c
    shapes["fc.weight"] = (1000, 512)
    shapes["fc.bias"] = (1000,)
    return shapes


def test_torchvision_resnet18_round_trip(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    sd = {
        k: (torch.randint(0, 1000, s, generator=g) if k.endswith("num_batches_tracked")
            else torch.randn(s, generator=g))
        for k, s in torchvision_resnet18_keys().items()
    }
    path = tmp_path / "resnet18.pth"
    torch.save(sd, path)
    enc = QueryEncoder(1.0, 32)
    loaded = load_torchvision_resnet18(enc, path)
    assert len(loaded) == len(sd) - 2
    own = enc.backbone.state_dict()
    for k in loaded:
        assert torch.equal(own[k], sd[k]), k
    fresh = ResNet18()
    load_torchvision_resnet18(fresh, sd)  # an in-memory state dict, a bare backbone
    assert torch.equal(fresh.layer4[1].bn2.running_var, sd["layer4.1.bn2.running_var"])


def test_torchvision_resnet18_rejects_other_width_and_bad_keys() -> None:
    with pytest.raises(ValueError, match=r"width-1\.0"):
        load_torchvision_resnet18(build_model(tiny_config()), {})
    sd = {k: torch.zeros(s) for k, s in torchvision_resnet18_keys().items()}
    del sd["layer3.0.downsample.0.weight"]
    with pytest.raises(ValueError, match=r"missing \['layer3.0.downsample.0.weight'\]"):
        load_torchvision_resnet18(ResNet18(), sd)


def _convs(model: torch.nn.Module) -> list[ConvBNAct]:
    ref = model.reference_encoder
    return [*ref.trunk.darknet_convs(), *ref.neck.head32, ref.neck.route, *ref.neck.head16]


def _write_darknet(path: Path, model: torch.nn.Module, full: bool, rng: np.random.Generator,
                   version: tuple[int, int, int] = (0, 2, 5)) -> None:
    """A Darknet binary in the documented layout, from the model's parameters, with the
    YOLOv3 layers the model lacks filled with random numbers."""
    parts: list[np.ndarray] = [np.array(version, "<i4")]
    major, minor, _ = version
    parts.append(np.array([123456], "<i8" if major * 10 + minor >= 2 else "<i4"))
    convs = _convs(model)

    def put(m: ConvBNAct) -> None:
        for t in (m.bn.bias, m.bn.weight, m.bn.running_mean, m.bn.running_var, m.conv.weight):
            parts.append(t.detach().numpy().astype("<f4").ravel())

    for m in convs[:52]:
        put(m)
    if full:
        for m in convs[52:57]:
            put(m)
        c512, c1024 = convs[56].conv.out_channels, convs[53].conv.out_channels
        parts.append(rng.standard_normal(4 * c1024 + c1024 * c512 * 9).astype("<f4"))  # 3x3 BN
        parts.append(rng.standard_normal(255 + 255 * c1024).astype("<f4"))  # YOLO output
        for m in convs[57:]:
            put(m)
        parts.append(rng.standard_normal(1000).astype("<f4"))  # the rest of the file
    path.write_bytes(b"".join(p.tobytes() for p in parts))


def _randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in _convs(model):
            for t in (m.bn.bias, m.bn.weight, m.bn.running_mean, m.bn.running_var, m.conv.weight):
                t.copy_(torch.randn(t.shape, generator=g))
            m.bn.running_var.abs_()


@pytest.mark.parametrize("version", [(0, 2, 5), (0, 1, 0)])
def test_yolov3_layout_round_trip(tmp_path: Path, version: tuple[int, int, int]) -> None:
    src = build_model(tiny_config())
    _randomise(src, 1)
    path = tmp_path / "yolov3.weights"
    _write_darknet(path, src, True, np.random.default_rng(0), version)
    dst = build_model(tiny_config())
    assert load_darknet_weights(dst, path) == 52 + 5 + 1 + 4
    for a, b in zip(_convs(src), _convs(dst), strict=True):
        for ta, tb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
            if ta.dtype.is_floating_point:
                assert torch.equal(ta, tb)


def test_darknet53_conv74_loads_trunk_only(tmp_path: Path) -> None:
    src = build_model(tiny_config())
    _randomise(src, 2)
    path = tmp_path / "darknet53.conv.74"
    _write_darknet(path, src, False, np.random.default_rng(0))
    dst = build_model(tiny_config())
    neck_before = [t.clone() for t in dst.reference_encoder.neck.state_dict().values()]
    assert load_darknet_weights(dst, path) == 52
    for a, b in zip(_convs(src)[:52], _convs(dst)[:52], strict=True):
        assert torch.equal(a.conv.weight, b.conv.weight)
        assert torch.equal(a.bn.running_var, b.bn.running_var)
    neck_after = dst.reference_encoder.neck.state_dict().values()
    assert all(torch.equal(x, y) for x, y in zip(neck_before, neck_after, strict=True))
    # a bare trunk and an explicit cutoff on a full file
    assert load_darknet_weights(dst.reference_encoder.trunk, path) == 52
    full = tmp_path / "yolov3.weights"
    _write_darknet(full, src, True, np.random.default_rng(0))
    assert load_darknet_weights(dst, full, cutoff=52) == 52


def test_truncated_darknet_file_names_the_file(tmp_path: Path) -> None:
    src = build_model(tiny_config())
    path = tmp_path / "yolov3.weights"
    _write_darknet(path, src, True, np.random.default_rng(0))
    data = path.read_bytes()
    cut = tmp_path / "cut.weights"
    cut.write_bytes(data[: len(data) // 2 // 4 * 4])
    with pytest.raises(ValueError, match=r"cut\.weights: truncated Darknet weights"):
        load_darknet_weights(build_model(tiny_config()), cut)
    odd = tmp_path / "odd.weights"
    odd.write_bytes(data[:-3])
    with pytest.raises(ValueError, match=r"odd\.weights: truncated"):
        load_darknet_weights(build_model(tiny_config()), odd)
