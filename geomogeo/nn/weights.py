"""Loaders for the standard weight files the papers start from.

* :func:`load_torchvision_resnet18`: a torchvision ResNet-18 state dict (``resnet18-*.pth``)
  into the query backbone (width 1 only). Files are read with ``torch.load(...,
  weights_only=True)``: tensors only, never arbitrary pickled objects.
* :func:`load_darknet_weights`: a Darknet binary (``darknet53.conv.74`` or ``yolov3.weights``)
  into the reference encoder.

Darknet binary layout: int32 ``major, minor, revision``; ``seen`` as int64 when
``major * 10 + minor >= 2 and major < 1000``, else int32; then float32 parameters layer after
layer in cfg order. A convolution with batch norm stores ``bn.bias, bn.weight, running_mean,
running_var`` (``c_out`` each) then the conv weight ``(c_out, c_in, k, k)``; one without batch
norm stores ``bias`` then weight.

The convolutions of ``yolov3.cfg`` in file order, and what this loader does with them
(channel counts at width 1; ``N = 3 * (classes + 5)`` = 255 for COCO):

====  ==============================================  =======================================
 #    yolov3.cfg layer                                here
====  ==============================================  =======================================
0-51  Darknet-53 trunk (``darknet53.conv.74`` ends)   ``trunk`` (stem, 5 stages in order)
52-56 first-scale head 1x1-512 / 3x3-1024 / ... x5    ``neck.head32[0..4]``
57    3x3-1024 (BN)                                   skipped (stride-32 YOLO branch)
58    1x1-N, bias, no BN (YOLO output 1)              skipped
59    1x1-256 route conv (before the upsample)        ``neck.route``
60-63 second-scale 1x1-256 / 3x3-512 / 1x1-256 / 3x3  ``neck.head16[0..3]``
64-   the rest (third conv pair, outputs, stride 8)   not read
====  ==============================================  =======================================

The ``fc`` layer (to the embedding) has no Darknet counterpart and keeps its initialisation.
The file carries no shapes: it must have been written for the same width (a file for another
width is misread; a wrong size is only detected when the file ends early).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from geomogeo.nn.backbones import ConvBNAct, Darknet53, QueryEncoder, ReferenceEncoder, ResNet18
from geomogeo.nn.model import MOGeoNet

__all__ = ["DARKNET53_TRUNK_CONVS", "load_darknet_weights", "load_torchvision_resnet18"]

#: Number of convolutions in the Darknet-53 trunk (the layers of ``darknet53.conv.74``).
DARKNET53_TRUNK_CONVS = 52


def _resnet(target: nn.Module) -> ResNet18:
    if isinstance(target, MOGeoNet):
        target = target.query_encoder
    if isinstance(target, QueryEncoder):
        target = target.backbone
    if not isinstance(target, ResNet18):
        raise TypeError(f"expected a MOGeoNet, QueryEncoder or ResNet18, got {type(target)}")
    return target


def load_torchvision_resnet18(
    model_or_backbone: nn.Module, state_dict_or_path: Mapping[str, Tensor] | str | Path
) -> list[str]:
    """Copy a torchvision ResNet-18 state dict into the query backbone; ``fc.*`` is ignored.

    Returns the names of the loaded tensors. Raises ``ValueError`` for a backbone whose width
    is not 1.0, a missing or unexpected key, or a shape mismatch (the file is named).
    """
    net = _resnet(model_or_backbone)
    if net.conv1.out_channels != 64 or net.conv1.in_channels != 3:
        raise ValueError(
            "torchvision ResNet-18 weights need the width-1.0 query backbone "
            f"(conv1 3 -> 64), this one is {net.conv1.in_channels} -> {net.conv1.out_channels}"
        )
    source = str(state_dict_or_path) if isinstance(state_dict_or_path, str | Path) else "state dict"
    if isinstance(state_dict_or_path, str | Path):
        sd = torch.load(state_dict_or_path, map_location="cpu", weights_only=True)
    else:
        sd = state_dict_or_path
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    own = net.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{source}: not a torchvision ResNet-18 state dict "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for k, v in sd.items():
        if v.shape != own[k].shape:
            raise ValueError(f"{source}: {k} has shape {tuple(v.shape)}, "
                             f"expected {tuple(own[k].shape)}")
    net.load_state_dict(sd, strict=True)
    return sorted(sd)


def _conv_floats(conv: nn.Conv2d, batch_norm: bool) -> int:
    c_out = conv.out_channels
    return (4 * c_out if batch_norm else c_out) + conv.weight.numel()


def _darknet_layout(
    target: nn.Module, num_classes: int
) -> list[tuple[str, ConvBNAct | None, int]]:
    """(name, module or None when skipped, float count) per cfg convolution, in file order."""
    if isinstance(target, MOGeoNet):
        target = target.reference_encoder
    if isinstance(target, Darknet53):
        trunk, neck = target, None
    elif isinstance(target, ReferenceEncoder):
        trunk, neck = target.trunk, target.neck
    else:
        raise TypeError(f"expected a MOGeoNet, ReferenceEncoder or Darknet53, got {type(target)}")
    names = {m: n for n, m in target.named_modules()}
    layout = [(names[m], m, _conv_floats(m.conv, True)) for m in trunk.darknet_convs()]
    if neck is None:
        return layout
    c512 = neck.route.conv.in_channels
    c1024 = neck.head32[0].conv.in_channels
    n_out = 3 * (num_classes + 5)
    layout += [(names[m], m, _conv_floats(m.conv, True)) for m in neck.head32]
    layout.append(("yolo1.conv3x3 (skipped)", None, 4 * c1024 + c1024 * c512 * 9))
    layout.append(("yolo1.output (skipped)", None, n_out + n_out * c1024))
    layout.append((names[neck.route], neck.route, _conv_floats(neck.route.conv, True)))
    layout += [(names[m], m, _conv_floats(m.conv, True)) for m in neck.head16]
    return layout


def _read_darknet(path: Path) -> tuple[tuple[int, int, int], np.ndarray]:
    data = path.read_bytes()
    if len(data) < 12:
        raise ValueError(f"{path}: not a Darknet weights file ({len(data)} bytes, no header)")
    major, minor, revision = (int(v) for v in np.frombuffer(data[:12], dtype="<i4"))
    offset = 20 if (major * 10 + minor) >= 2 and major < 1000 else 16
    if len(data) < offset:
        raise ValueError(f"{path}: truncated Darknet header")
    body = data[offset:]
    if len(body) % 4:
        raise ValueError(f"{path}: truncated Darknet weights (body of {len(body)} bytes "
                         "is not a whole number of float32)")
    return (major, minor, revision), np.frombuffer(body, dtype="<f4")


def load_darknet_weights(
    backbone: nn.Module, path: str | Path, cutoff: int | None = None, num_classes: int = 80
) -> int:
    """Fill the reference encoder from a Darknet binary; returns the convolutions loaded.

    Args:
        backbone: a :class:`MOGeoNet`, its ``reference_encoder``, or a bare :class:`Darknet53`
            (trunk only).
        path: ``darknet53.conv.74`` (trunk: 52 convolutions) or ``yolov3.weights``.
        cutoff: read at most this many cfg convolutions (skipped ones count), e.g. 52 to take
            only the trunk of a ``yolov3.weights``. ``None``: everything this network maps;
            a file that ends right after the trunk loads the trunk only.
        num_classes: classes of the YOLO output layer to skip (80 for COCO).

    Raises:
        ValueError: naming the file, when it ends inside a layer or between the trunk and the
            end of the mapped layers, or when its header is damaged.
    """
    path = Path(path)
    layout = _darknet_layout(backbone, num_classes)
    if cutoff is not None:
        layout = layout[:cutoff]
    _, floats = _read_darknet(path)
    pos = 0
    loaded = 0
    with torch.no_grad():
        for i, (name, module, n) in enumerate(layout):
            if pos == len(floats) and i == DARKNET53_TRUNK_CONVS and cutoff is None:
                break  # darknet53.conv.74: the trunk only
            if pos + n > len(floats):
                raise ValueError(
                    f"{path}: truncated Darknet weights: convolution {i} ({name}) needs {n} "
                    f"floats at offset {pos}, only {len(floats) - pos} left"
                )
            if module is not None:
                _fill(module, floats[pos:pos + n])
                loaded += 1
            pos += n
    return loaded


def _fill(module: ConvBNAct, chunk: np.ndarray) -> None:
    """Copy bn bias, bn weight, running mean, running var, conv weight from ``chunk``."""
    bn, conv = module.bn, module.conv
    pos = 0
    for t in (bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight):
        n = t.numel()
        t.copy_(torch.from_numpy(chunk[pos:pos + n].copy()).view_as(t))
        pos += n
