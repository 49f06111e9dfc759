"""Box refinement: the footprint box of the object under a point of the reference.

MOGeo's head decides which object a click means, on a 16 px cell grid of a 1 m/px reference:
good at finding the object, poor at its extent (its box sizes barely follow the objects'
sizes). Once a point on the object is known (the registered and parallax-corrected click of
a joint localization, or the network's own box centre), the box is a single-view question:
*what is the outline of the object under this point?* :class:`BoxRefiner` answers it from a
``crop_size`` x ``crop_size`` crop of the reference centred on the point.

Conventions: pixel coordinates are continuous, origin at the top-left corner of the top-left
pixel, x right, y down; boxes are ``(x1, y1, x2, y2)`` pixel EDGES. A crop around a point
``(x, y)`` starts at the integer pixel ``(floor(x + 0.5) - crop_size // 2, ...)``, so its centre
``crop_size / 2`` is the nearest pixel corner to the point; pixels outside the image are 0.
The network predicts ``(dx, dy, log w, log h)``: the box centre's offset from the crop centre
in units of :data:`OFFSET_SCALE` pixels and the log of its size in pixels.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

__all__ = [
    "OFFSET_SCALE",
    "BoxRefiner",
    "CropConfig",
    "RefinerConfig",
    "TorchRefiner",
    "crop_around",
    "crop_origins",
    "crops_to_input",
    "decode_boxes",
    "dihedral_array",
    "dihedral_boxes",
    "dihedral_tensor",
    "dihedral_views",
    "encode_boxes",
]

#: Pixels per unit of the predicted centre offset.
OFFSET_SCALE = 8.0


_C = TypeVar("_C", bound="CropConfig")


class CropConfig:
    """A frozen dataclass configuration of a refiner, saved as JSON in checkpoints:
    :meth:`to_json`, a :meth:`from_dict` that refuses unknown fields, and the checks of the
    crop contract (fields ``crop_size``, ``gsd``, ``width``, ``normalisation``)."""

    # declared by each subclass's dataclass fields (annotations only: no fields here)
    crop_size: int
    gsd: float
    width: int
    normalisation: str

    def check_crop(self, multiple: int) -> None:
        """Raise ValueError unless ``crop_size`` is a multiple of ``multiple`` >= 32, ``gsd``
        > 0, ``width`` >= 4 and ``normalisation`` is ``"per-crop"``."""
        name = type(self).__name__
        if self.crop_size < 32 or self.crop_size % multiple:
            raise ValueError(f"{name}.crop_size={self.crop_size}: a multiple of {multiple}, "
                             ">= 32")
        if not (self.gsd > 0 and self.width >= 4):
            raise ValueError(f"{name}: gsd must be > 0 and width >= 4")
        if self.normalisation != "per-crop":
            raise ValueError(f"{name}.normalisation={self.normalisation!r}: only 'per-crop' "
                             "exists")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[_C], d: dict[str, Any]) -> _C:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        if set(d) - known:
            raise ValueError(f"invalid {cls.__name__}: unknown fields {sorted(set(d) - known)}")
        return cls(**d)


@dataclass(frozen=True)
class RefinerConfig(CropConfig):
    """Architecture and input contract of a :class:`BoxRefiner`; saved in its checkpoint.

    Attributes:
        name: a short name written into outputs.
        crop_size: side of the square crop, pixels (of the reference input).
        gsd: metres per pixel of the reference it was trained on; it must be used on a
            reference of the same GSD (the MOGeo network's ``gsd``).
        width: channels of the first stage (then 2x and 4x).
        normalisation: ``"per-crop"``: each crop's [0, 1] values minus their mean, divided by
            their standard deviation (at least 0.02), over all three channels, so the sensor,
            band count and stretch matter little.
        version: configuration format version.
    """

    name: str = "box-refiner"
    crop_size: int = 64
    gsd: float = 1.0
    width: int = 32
    normalisation: str = "per-crop"
    version: int = 1

    def __post_init__(self) -> None:
        self.check_crop(16)


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class BoxRefiner(nn.Module):
    """A small CNN: (B, 3, C, C) normalised crops -> (B, 4) ``(dx, dy, log w, log h)``.

    Two coordinate channels (x and y in [-1, 1]) are appended to the input, so the
    fully-connected head knows where in the crop each feature lies. Eight 3x3 conv blocks
    (stride 1, 1, 2, 1, 2, 1, 2, 2) take C to C / 16; a 256-unit layer regresses the box.
    """

    def __init__(self, config: RefinerConfig) -> None:
        super().__init__()
        self.config = config
        w, c = config.width, config.crop_size
        self.features = nn.Sequential(
            _block(5, w, 1), _block(w, w, 1), _block(w, 2 * w, 2), _block(2 * w, 2 * w, 1),
            _block(2 * w, 4 * w, 2), _block(4 * w, 4 * w, 1), _block(4 * w, 4 * w, 2),
            _block(4 * w, 4 * w, 2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * (c // 16) ** 2, 256),
                                  nn.ReLU(inplace=True), nn.Linear(256, 4))
        ramp = torch.linspace(-1.0, 1.0, c)
        yy, xx = torch.meshgrid(ramp, ramp, indexing="ij")
        self.register_buffer("coords", torch.stack([xx, yy])[None], persistent=False)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """crops: (B, 3, C, C) normalised (:meth:`normalise`) -> (B, 4)."""
        x = torch.cat([crops, self.coords.expand(len(crops), -1, -1, -1)], 1)
        return self.head(self.features(x))

    @staticmethod
    def normalise(crops: torch.Tensor) -> torch.Tensor:
        """(B, 3, C, C) values in [0, 1] -> per-crop standardised values."""
        mean = crops.mean((1, 2, 3), keepdim=True)
        std = crops.std((1, 2, 3), keepdim=True).clamp_min(0.02)
        return (crops - mean) / std


def crop_around(image: np.ndarray, points: np.ndarray, size: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Square crops of ``image`` centred on ``points`` (see the module's conventions).

    Args:
        image: (H, W, 3) array (any dtype).
        points: (m, 2) (x, y) pixels.
        size: crop side, pixels.

    Returns:
        crops (m, size, size, 3) of ``image``'s dtype, zero outside the image, and origins
        (m, 2) int64: each crop's top-left pixel (x0, y0) in ``image``.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    h, w = image.shape[:2]
    origins = crop_origins(pts, size)
    out = np.zeros((len(pts), size, size, image.shape[2]), dtype=image.dtype)
    for k, (x0, y0) in enumerate(origins):
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + size, w), min(y0 + size, h)
        if xb > xa and yb > ya:
            out[k, ya - y0:yb - y0, xa - x0:xb - x0] = image[ya:yb, xa:xb]
    return out, origins


def crop_origins(points: np.ndarray, size: int) -> np.ndarray:
    """(m, 2) int64 top-left pixels (x0, y0) of the ``size`` px crops centred on ``points``
    (m, 2) (x, y) pixels: ``floor(point + 0.5) - size // 2`` (see the module's conventions)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return np.floor(pts + 0.5).astype(np.int64) - size // 2


def dihedral_views(tta: bool) -> list[tuple[bool, int]]:
    """The (mirror, quarter turns) of each view: the 8 of the dihedral group with ``tta``,
    else the crop as it is."""
    return [(m, k) for m in (False, True) for k in range(4)] if tta else [(False, 0)]


def dihedral_array(a: np.ndarray, k: int, mirror: bool) -> np.ndarray:
    """(B, H, W, ...) images mirrored left-right (when ``mirror``), then turned ``k`` quarter
    turns counter-clockwise (:func:`dihedral_boxes`' transform)."""
    return np.rot90(a[:, :, ::-1] if mirror else a, k, axes=(1, 2))


def dihedral_tensor(x: torch.Tensor, k: int, mirror: bool) -> torch.Tensor:
    """(B, C, H, W) network input under :func:`dihedral_array`'s transform."""
    return torch.rot90(torch.flip(x, dims=(3,)) if mirror else x, k, dims=(2, 3))


def crops_to_input(crops: np.ndarray) -> torch.Tensor:
    """(B, C, C, 3) crops, uint8 (0-255) or float in [0, 1] -> (B, 3, C, C) float32 network
    input (:meth:`BoxRefiner.normalise`)."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).float()
    if crops.dtype == np.uint8:
        x = x / 255.0
    return BoxRefiner.normalise(x.permute(0, 3, 1, 2))


def encode_boxes(boxes: np.ndarray, size: int) -> np.ndarray:
    """(m, 4) boxes in crop pixels -> (m, 4) float32 ``(dx, dy, log w, log h)`` targets
    (sizes below 1 px count as 1 px)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centre = ((b[:, :2] + b[:, 2:]) / 2 - size / 2) / OFFSET_SCALE
    wh = np.log(np.clip(b[:, 2:] - b[:, :2], 1.0, None))
    return np.hstack([centre, wh]).astype(np.float32)


def decode_boxes(out: np.ndarray, size: int) -> np.ndarray:
    """Inverse of :func:`encode_boxes`: (m, 4) outputs -> (m, 4) float64 boxes in crop px."""
    o = np.asarray(out, dtype=np.float64).reshape(-1, 4)
    centre = o[:, :2] * OFFSET_SCALE + size / 2
    half = np.exp(o[:, 2:]) / 2
    return np.hstack([centre - half, centre + half])


def dihedral_boxes(boxes: np.ndarray, size: int, k: int, mirror: bool) -> np.ndarray:
    """Boxes in crop pixels after the crop is mirrored left-right (when ``mirror``), then
    turned ``k`` quarter turns counter-clockwise (``np.rot90(crop, k)`` on (H, W) axes)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if mirror:
        b = np.stack([size - b[:, 2], b[:, 1], size - b[:, 0], b[:, 3]], 1)
    for _ in range(k % 4):  # counter-clockwise: (x, y) -> (y, size - x)
        b = np.stack([b[:, 1], size - b[:, 2], b[:, 3], size - b[:, 0]], 1)
    return b


class TorchRefiner:
    """Runs a :class:`BoxRefiner` on numpy references (:class:`~geomogeo.predictor.Refiner`).

    ``tta``: average the boxes of the 8 turned and mirrored crops (each mapped back), or one
    pass.
    """

    def __init__(self, model: BoxRefiner, *, name: str, sha256: str,
                 device: str | torch.device = "cpu", tta: bool = True) -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.name = name
        self.sha256 = sha256
        self.tta = tta
        self.gsd = model.config.gsd

    @torch.no_grad()
    def refine(self, reference: np.ndarray, points: np.ndarray) -> np.ndarray:
        """The box of the object under each point.

        Args:
            reference: (H, W, 3) float32 in [0, 1] or uint8, at :attr:`gsd` metres per pixel.
            points: (m, 2) (x, y) reference pixels, one per object.

        Returns:
            (m, 4) float64 boxes (x1, y1, x2, y2), reference pixels (edges), not clipped.
        """
        size = self.model.config.crop_size
        crops, origins = crop_around(reference, points, size)
        if len(crops) == 0:
            return np.zeros((0, 4))
        x = crops_to_input(crops).to(self.device)
        views = dihedral_views(self.tta)
        acc = np.zeros((len(crops), 4))
        for mirror, k in views:
            boxes = decode_boxes(self.model(dihedral_tensor(x, k, mirror)).cpu().numpy(), size)
            # back to the crop's own frame: undo the turn, then the mirror
            back = dihedral_boxes(boxes, size, -k, False)
            acc += dihedral_boxes(back, size, 0, mirror)
        boxes = acc / len(views)
        return boxes + np.hstack([origins, origins]).astype(np.float64)
