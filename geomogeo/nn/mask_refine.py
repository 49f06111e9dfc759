"""Mask refinement: the footprint box of the object under a point, from a predicted mask.

A second answer to :mod:`geomogeo.nn.refine`'s question (*what is the outline of the object
under this point?*): instead of regressing four numbers, :class:`MaskRefiner` paints the
object's footprint on a ``crop_size`` x ``crop_size`` crop of the reference centred on the
point, and the box is the envelope of the painted region that lies under the point
(:func:`mask_box`). A mask follows a roof's edges pixel by pixel, where a regression only
sees them through a fully-connected layer; on its own it loses more buildings at IoU 0.5
(it can merge a house with its driveway or stop at a roof ridge), and averaged with the
box regression it is the shipped default (:class:`~geomogeo.predictor.MeanRefiner`; the
figures are in the model card).

Conventions are :mod:`geomogeo.nn.refine`'s: continuous pixel coordinates, origin at the
top-left corner of the top-left pixel, boxes ``(x1, y1, x2, y2)`` in pixel EDGES, crops from
:func:`~geomogeo.nn.refine.crop_around` (the point is the crop's centre ``crop_size / 2``,
up to the rounding to a pixel corner), normalised by
:func:`~geomogeo.nn.refine.crops_to_input`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geomogeo.nn.refine import (
    CropConfig,
    crop_around,
    crops_to_input,
    dihedral_tensor,
    dihedral_views,
)

__all__ = ["MaskRefiner", "MaskRefinerConfig", "TorchMaskRefiner", "mask_box"]


@dataclass(frozen=True)
class MaskRefinerConfig(CropConfig):
    """Architecture and input contract of a :class:`MaskRefiner`; saved in its checkpoint.

    Attributes:
        name: a short name written into outputs.
        crop_size: side of the square crop, pixels (a multiple of 8, >= 32).
        gsd: metres per pixel of the reference it was trained on; it must be used on a
            reference of the same GSD.
        width: channels of the first stage (then 2x, 4x, 8x).
        click_sigma: standard deviation, pixels, of the Gaussian "click" channel centred on
            the crop's centre that tells the network which object is meant.
        threshold: probability above which a pixel belongs to the object.
        normalisation: ``"per-crop"`` (:meth:`geomogeo.nn.refine.BoxRefiner.normalise`).
        version: configuration format version.
    """

    name: str = "mask-refiner"
    crop_size: int = 64
    gsd: float = 1.0
    width: int = 16
    click_sigma: float = 2.0
    threshold: float = 0.5
    normalisation: str = "per-crop"
    version: int = 1

    def __post_init__(self) -> None:
        self.check_crop(8)
        if not (self.click_sigma > 0 and 0 < self.threshold < 1):
            raise ValueError("MaskRefinerConfig: click_sigma must be > 0, threshold in (0, 1)")


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True))


class MaskRefiner(nn.Module):
    """A small U-Net: (B, 3, C, C) normalised crops -> (B, C, C) footprint logits.

    A fourth input channel is the click: a Gaussian of ``click_sigma`` pixels at the crop's
    centre. Encoder stages at strides 1, 2, 4, 8 (``width`` x 1, 2, 4, 8 channels, two 3x3
    convolutions each), max-pooling between them; the decoder upsamples bilinearly and joins
    each encoder stage by concatenation; a 1x1 convolution gives one logit per pixel.
    """

    def __init__(self, config: MaskRefinerConfig) -> None:
        super().__init__()
        self.config = config
        w, c = config.width, config.crop_size
        self.e1, self.e2 = _double_conv(4, w), _double_conv(w, 2 * w)
        self.e3, self.e4 = _double_conv(2 * w, 4 * w), _double_conv(4 * w, 8 * w)
        self.d3, self.d2 = _double_conv(12 * w, 4 * w), _double_conv(6 * w, 2 * w)
        self.d1 = _double_conv(3 * w, w)
        self.out = nn.Conv2d(w, 1, 1)
        centres = torch.arange(c) + 0.5 - c / 2  # pixel centres relative to the crop centre
        yy, xx = torch.meshgrid(centres, centres, indexing="ij")
        click = torch.exp(-(xx**2 + yy**2) / (2 * config.click_sigma**2))
        self.register_buffer("click", click[None, None], persistent=False)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """crops: (B, 3, C, C) normalised -> (B, C, C) logits."""
        x = torch.cat([crops, self.click.expand(len(crops), -1, -1, -1)], 1)
        e1 = self.e1(x)
        e2 = self.e2(F.max_pool2d(e1, 2))
        e3 = self.e3(F.max_pool2d(e2, 2))
        e4 = self.e4(F.max_pool2d(e3, 2))

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

        d3 = self.d3(torch.cat([up(e4), e3], 1))
        d2 = self.d2(torch.cat([up(d3), e2], 1))
        d1 = self.d1(torch.cat([up(d2), e1], 1))
        return self.out(d1)[:, 0]


def mask_box(prob: np.ndarray, threshold: float = 0.5, window: int = 6) -> np.ndarray:
    """The box of the object under the centre of each probability map.

    The pixels above ``threshold`` are split into 4-connected components; the component
    covering most of the ``window`` x ``window`` pixels around the map's centre is the
    object, and its box is its envelope. Where no pixel of the window is above the
    threshold, the box is the 8 x 8 pixel square around the centre.

    Args:
        prob: (m, C, C) probabilities.
        threshold: in (0, 1).
        window: side, pixels, of the central window (even).

    Returns:
        (m, 4) float64 boxes (x1, y1, x2, y2), crop pixels (edges).
    """
    import cv2

    prob = np.asarray(prob).reshape(-1, *np.shape(prob)[-2:])
    c = prob.shape[-1] // 2
    lo, hi = c - window // 2, c + window // 2
    out = np.tile(np.array([c - 4.0, c - 4.0, c + 4.0, c + 4.0]), (len(prob), 1))
    for k, p in enumerate(prob):
        _, labels = cv2.connectedComponents((p > threshold).astype(np.uint8), connectivity=4)
        centre = labels[lo:hi, lo:hi]
        if centre.max() == 0:
            continue
        ids, counts = np.unique(centre[centre > 0], return_counts=True)
        ys, xs = np.nonzero(labels == ids[np.argmax(counts)])
        out[k] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    return out


class TorchMaskRefiner:
    """Runs a :class:`MaskRefiner` on numpy references (:class:`~geomogeo.predictor.Refiner`).

    ``tta``: average the probability maps of the 8 turned and mirrored crops (each mapped
    back) before :func:`mask_box`, or one pass.
    """

    def __init__(self, model: MaskRefiner, *, name: str, sha256: str,
                 device: str | torch.device = "cpu", tta: bool = True,
                 batch_size: int = 256) -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.name = name
        self.sha256 = sha256
        self.tta = tta
        self.batch_size = batch_size
        self.gsd = model.config.gsd

    @torch.no_grad()
    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """(m, C, C, 3) crops (uint8, or float in [0, 1]) -> (m, C, C) float32 probabilities."""
        views = dihedral_views(self.tta)
        out = []
        for s in range(0, len(crops), self.batch_size):
            x = crops_to_input(crops[s:s + self.batch_size]).to(self.device)
            acc = torch.zeros(x.shape[0], x.shape[2], x.shape[3], device=self.device)
            for mirror, k in views:
                p = torch.sigmoid(self.model(dihedral_tensor(x, k, mirror)))
                p = torch.rot90(p, -k, dims=(1, 2))  # back: undo the turn, then the mirror
                acc += torch.flip(p, dims=(2,)) if mirror else p
            out.append((acc / len(views)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, *crops.shape[1:3]), np.float32)

    def refine(self, reference: np.ndarray, points: np.ndarray) -> np.ndarray:
        """The box of the object under each point, as
        :meth:`geomogeo.nn.refine.TorchRefiner.refine`: ``reference`` (H, W, 3) float32 in
        [0, 1] or uint8 at :attr:`gsd` m/px, ``points`` (m, 2) reference pixels -> (m, 4)
        float64 boxes, reference pixels (edges), not clipped."""
        crops, origins = crop_around(reference, points, self.model.config.crop_size)
        if len(crops) == 0:
            return np.zeros((0, 4))
        boxes = mask_box(self.probabilities(crops), self.model.config.threshold)
        return boxes + np.hstack([origins, origins]).astype(np.float64)
