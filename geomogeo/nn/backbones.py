"""The two feature extractors: ResNet-18 for the query photo, Darknet-53 + the YOLOv3 stride-16
path for the reference (satellite) image.

Both are written here (no torchvision). Module names follow the standard weight files so that
:mod:`geomogeo.nn.weights` can load them: the ResNet-18 uses torchvision's names (``conv1``,
``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``...); every Darknet convolution is a
:class:`ConvBNAct` and :meth:`ReferenceEncoder.darknet_convs` lists them in ``yolov3.cfg`` order.
All channel counts are the paper's multiplied by ``width`` (see :func:`scaled`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BasicBlock",
    "ConvBNAct",
    "Darknet53",
    "DarknetResidual",
    "QueryEncoder",
    "ReferenceEncoder",
    "ResNet18",
    "YoloStride16Neck",
    "scaled",
]


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1."""
    return max(1, round(channels * width))


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> LeakyReLU(0.1): Darknet's ``batch_normalize=1`` layer.

    (N, c_in, H, W) -> (N, c_out, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.LeakyReLU(0.1, inplace=True)


# --------------------------------------------------------------------------- ResNet-18 (query)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3x3 conv-BN, identity or 1x1 projection shortcut.

    (N, c_in, H, W) -> (N, c_out, H / stride, W / stride). ``dilation`` (padding equal to it,
    so the size is kept) applies to the second 3x3 conv, and to the first one unless
    ``first_dilation`` is given; the parameters do not depend on either.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, dilation: int = 1,
                 first_dilation: int | None = None) -> None:
        super().__init__()
        d1 = dilation if first_dilation is None else first_dilation
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, d1, dilation=d1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 without avgpool/fc, output stride 32 or 16.

    (N, c_in, H, W) -> (N, 512 * width, H / s, W / s) with s = ``output_stride``. For s = 16,
    layer4 keeps layer3's resolution: its first block has stride 1 and its 3x3 convs after the
    first are dilated by 2 (torchvision's ``replace_stride_with_dilation`` scheme, DeepLab's),
    so the receptive field and every weight shape stay those of the stride-32 network. With
    ``width == 1`` and ``c_in == 3`` its state dict has exactly torchvision's keys minus ``fc.*``
    whichever the stride.
    """

    def __init__(self, width: float = 1.0, c_in: int = 3, output_stride: int = 32) -> None:
        super().__init__()
        if output_stride not in (16, 32):
            raise ValueError(f"ResNet18 output_stride must be 16 or 32, got {output_stride}")
        c = [scaled(v, width) for v in (64, 128, 256, 512)]
        self.out_channels = c[3]
        self.conv1 = nn.Conv2d(c_in, c[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(c[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(c[0], c[0]), BasicBlock(c[0], c[0]))
        self.layer2 = nn.Sequential(BasicBlock(c[0], c[1], 2), BasicBlock(c[1], c[1]))
        self.layer3 = nn.Sequential(BasicBlock(c[1], c[2], 2), BasicBlock(c[2], c[2]))
        if output_stride == 32:
            self.layer4 = nn.Sequential(BasicBlock(c[2], c[3], 2), BasicBlock(c[3], c[3]))
        else:
            self.layer4 = nn.Sequential(BasicBlock(c[2], c[3], 1, dilation=2, first_dilation=1),
                                        BasicBlock(c[3], c[3], dilation=2))

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class QueryEncoder(nn.Module):
    """ResNet-18 then 1x1 conv-BN-LeakyReLU to the embedding: F_q.

    (N, c_in, Hq, Wq) -> (N, embed_dim, Hq / stride, Wq / stride), ``stride`` 32 or 16 (see
    :class:`ResNet18`). ``c_in = 4`` is DetGeo's input-level click channel: a 1x1
    conv-BN-LeakyReLU 4 -> 3 (``click_stem``) runs before the backbone, so the backbone itself
    keeps torchvision's 3-channel layout.
    """

    def __init__(self, width: float, embed_dim: int, c_in: int = 3, stride: int = 32) -> None:
        super().__init__()
        if c_in not in (3, 4):
            raise ValueError(f"QueryEncoder takes 3 or 4 input channels, got {c_in}")
        self.stride = stride
        self.click_stem = ConvBNAct(4, 3) if c_in == 4 else None
        self.backbone = ResNet18(width, output_stride=stride)
        self.proj = ConvBNAct(self.backbone.out_channels, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.click_stem is not None:
            x = self.click_stem(x)
        return self.proj(self.backbone(x))


# ------------------------------------------------------------------ Darknet-53 (reference)


class DarknetResidual(nn.Module):
    """Darknet residual: 1x1 to c/2, 3x3 back to c, add. (N, c, H, W) -> (N, c, H, W)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(c, max(1, c // 2), 1)
        self.conv2 = ConvBNAct(self.conv1.conv.out_channels, c, 3)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.conv1(x))


class Darknet53(nn.Module):
    """The Darknet-53 trunk (52 convolutions), returning the stride-16 and stride-32 maps.

    (N, 3, H, W) -> ((N, 512 * width, H / 16, W / 16), (N, 1024 * width, H / 32, W / 32)).
    ``stem`` is the first 3x3 conv (32 ch); stage ``s`` is a 3x3/2 downsampling conv followed by
    ``(1, 2, 8, 8, 4)[s]`` residual blocks.
    """

    depths = (1, 2, 8, 8, 4)

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c = [scaled(v, width) for v in (32, 64, 128, 256, 512, 1024)]
        self.stem = ConvBNAct(3, c[0], 3)
        self.stages = nn.ModuleList(
            nn.Sequential(
                ConvBNAct(c[i], c[i + 1], 3, 2), *(DarknetResidual(c[i + 1]) for _ in range(n))
            )
            for i, n in enumerate(self.depths)
        )
        self.c16, self.c32 = c[4], c[5]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.stem(x)
        for stage in self.stages[:4]:
            x = stage(x)
        return x, self.stages[4](x)

    def darknet_convs(self) -> list[ConvBNAct]:
        """The 52 convolutions in Darknet file order."""
        return [m for m in self.modules() if isinstance(m, ConvBNAct)]


class YoloStride16Neck(nn.Module):
    """The YOLOv3 path from the stride-32 trunk output to the stride-16 feature (second scale).

    (c16: (N, 512w, H/16, W/16), c32: (N, 1024w, H/32, W/32)) -> (N, 512w, H/16, W/16):
    five head convs at stride 32 (1x1-512/3x3-1024/1x1-512/3x3-1024/1x1-512), 1x1 to 256,
    nearest upsample x2, concat with the stride-16 trunk map (256 + 512 = 768), then
    1x1-256/3x3-512/1x1-256/3x3-512 (all times ``width``).
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c256, c512, c1024 = (scaled(v, width) for v in (256, 512, 1024))
        self.head32 = nn.Sequential(
            ConvBNAct(c1024, c512, 1), ConvBNAct(c512, c1024, 3), ConvBNAct(c1024, c512, 1),
            ConvBNAct(c512, c1024, 3), ConvBNAct(c1024, c512, 1),
        )
        self.route = ConvBNAct(c512, c256, 1)
        self.head16 = nn.Sequential(
            ConvBNAct(c256 + c512, c256, 1), ConvBNAct(c256, c512, 3),
            ConvBNAct(c512, c256, 1), ConvBNAct(c256, c512, 3),
        )
        self.out_channels = c512

    def forward(self, c16: Tensor, c32: Tensor) -> Tensor:
        up = F.interpolate(self.route(self.head32(c32)), scale_factor=2.0, mode="nearest")
        return self.head16(torch.cat([up, c16], dim=1))


class ReferenceEncoder(nn.Module):
    """Darknet-53 + YOLOv3 stride-16 neck + 1x1 conv-BN-LeakyReLU ("FC") to the embedding: V_r.

    (N, 3, R, R) -> (N, embed_dim, R / 16, R / 16).
    """

    stride = 16

    def __init__(self, width: float, embed_dim: int) -> None:
        super().__init__()
        self.trunk = Darknet53(width)
        self.neck = YoloStride16Neck(width)
        self.fc = ConvBNAct(self.neck.out_channels, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.neck(*self.trunk(x)))
