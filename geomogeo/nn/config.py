"""The typed, validated model configuration.

:class:`ModelConfig` holds everything needed to rebuild a network and to feed it correctly at
inference time (input sizes, ground sample distance, band order, normalisation, anchors); it is
saved as JSON inside every checkpoint. Sizes are in pixels of the model input; the GSD is in
metres per pixel of the reference input. Anchors are (width, height) in reference-input pixels.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["CONFIG_VERSION", "DETGEO_ANCHORS_1024", "ModelConfig"]

CONFIG_VERSION = 1

#: DetGeo's k-means anchors on CVOGL, (w, h) in pixels of a 1024 px reference input.
DETGEO_ANCHORS_1024: tuple[tuple[float, float], ...] = (
    (37, 41), (78, 84), (96, 215), (129, 129), (194, 82),
    (198, 179), (246, 280), (395, 342), (550, 573),
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Variant = Literal["mogeo", "detgeo"]
ClickEncoding = Literal["impulse", "gaussian", "square"]
Fusion = Literal["cvmf", "multiply"]
QueryStride = Literal[16, 32]
QueryFit = Literal["stretch", "letterbox"]


def _scaled_anchors(size: int) -> tuple[tuple[float, float], ...]:
    s = size / 1024.0
    return tuple((w * s, h * s) for w, h in DETGEO_ANCHORS_1024)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and input contract of a MOGeo-family network.

    Attributes:
        name: a short model name written into outputs (e.g. ``"mogeo-light"``).
        variant: ``"mogeo"`` (all clicks of a photo in one forward pass) or ``"detgeo"`` (the
            single-target baseline: an input-level click map as a 4th query channel, one
            forward pass per click).
        click_encoding: how a click enters the query branch. ``"impulse"`` is MOPE's one-hot
            mask on the query feature grid; ``"gaussian"`` (sigma ``gaussian_sigma`` query
            pixels) and ``"square"`` (DetGeo's ``(1 - d/diag)**2``) are smooth encodings, used
            by the ``detgeo`` variant and by the "MOGeo without MOPE" ablation.
        fusion: ``"cvmf"`` feeds the head ``[A_k * norm(V_r) ; A_k]`` (513 channels at width 1);
            ``"multiply"`` is the "without CVMF" ablation, DetGeo's ``A_k * V_r`` only.
        reference_size: side of the square reference input, pixels.
        query_size: (height, width) of the query input, pixels.
        query_stride: output stride of the query encoder, pixels: 32 (ResNet-18's own; a 4x4
            grid on a 128 px query) or 16 (the paper's: layer4 with stride 1 and dilation 2).
            MOPE's impulse is set on this grid. Checkpoints written before this field load
            as 32.
        query_fit: how the photo is fitted into the query input
            (:func:`geomogeo.geo.orient.prepare_query`): ``"stretch"`` (checkpoints written
            before this field) or ``"letterbox"`` (aspect ratio kept, margins 0).
        gsd: ground sample distance of the reference input, metres per pixel.
        width: channel multiplier applied to both backbones (1.0 = the paper's widths).
        embed_dim: dimension of query/reference embeddings (512 in the paper, scaled by width).
        gaussian_sigma: sigma of the Gaussian click encoding, query-input pixels.
        anchors: nine (w, h) anchor sizes in reference-input pixels.
        band_names: meaning of the three input channels, in order.
        mean, std: per-channel normalisation applied to [0, 1] inputs.
        version: config format version.
    """

    name: str = "mogeo"
    variant: Variant = "mogeo"
    click_encoding: ClickEncoding = "impulse"
    fusion: Fusion = "cvmf"
    reference_size: int = 1024
    query_size: tuple[int, int] = (256, 256)
    query_stride: QueryStride = 32
    query_fit: QueryFit = "stretch"
    gsd: float = 0.5
    width: float = 1.0
    embed_dim: int = 512
    gaussian_sigma: float = 25.0
    anchors: tuple[tuple[float, float], ...] = field(
        default_factory=lambda: _scaled_anchors(1024)
    )
    band_names: tuple[str, str, str] = ("red", "green", "blue")
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        def bad(msg: str) -> ValueError:
            return ValueError(f"invalid ModelConfig: {msg}")

        if self.variant not in ("mogeo", "detgeo"):
            raise bad(f"variant={self.variant!r}, expected 'mogeo' or 'detgeo'")
        if self.click_encoding not in ("impulse", "gaussian", "square"):
            raise bad(f"click_encoding={self.click_encoding!r}")
        if self.variant == "detgeo" and self.click_encoding == "impulse":
            raise bad("the detgeo variant needs a smooth click_encoding ('gaussian' or 'square')")
        if self.fusion not in ("cvmf", "multiply"):
            raise bad(f"fusion={self.fusion!r}, expected 'cvmf' or 'multiply'")
        if self.reference_size % 32 or self.reference_size < 64:
            raise bad(f"reference_size={self.reference_size} must be a multiple of 32, >= 64")
        qh, qw = self.query_size
        if qh % 32 or qw % 32 or qh < 32 or qw < 32:
            raise bad(f"query_size={self.query_size} must be multiples of 32")
        if type(self.query_stride) is not int or self.query_stride not in (16, 32):
            raise bad(f"query_stride={self.query_stride!r}: the query encoder has output "
                      "stride 16 (layer4 dilated) or 32 (ResNet-18's own), nothing else")
        if self.query_fit not in ("stretch", "letterbox"):
            raise bad(f"query_fit={self.query_fit!r}, expected 'stretch' or 'letterbox'")
        if not self.gsd > 0:
            raise bad(f"gsd={self.gsd} must be > 0 metres per pixel")
        if not 0 < self.width <= 2:
            raise bad(f"width={self.width} must be in (0, 2]")
        if len(self.anchors) != 9 or any(len(a) != 2 or min(a) <= 0 for a in self.anchors):
            raise bad("anchors must be nine positive (w, h) pairs")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise bad("mean/std must have three values, std > 0")
        if self.version != CONFIG_VERSION:
            raise bad(f"version={self.version}, this geomogeo reads version {CONFIG_VERSION}")

    @property
    def ground_extent(self) -> float:
        """Side of the reference window on the ground, metres."""
        return self.reference_size * self.gsd

    @property
    def stride(self) -> int:
        """Reference feature stride, pixels (16: the second YOLO scale)."""
        return 16

    @property
    def grid_size(self) -> int:
        """Cells per side of the reference feature grid."""
        return self.reference_size // self.stride

    @property
    def query_grid(self) -> tuple[int, int]:
        """(rows, columns) of the query feature grid MOPE works on."""
        qh, qw = self.query_size
        return qh // self.query_stride, qw // self.query_stride

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"invalid ModelConfig: unknown fields {sorted(unknown)}")
        kw = dict(d)
        for key in ("query_size", "band_names", "mean", "std"):
            if key in kw:
                kw[key] = tuple(kw[key])
        if "anchors" in kw:
            kw["anchors"] = tuple(tuple(float(v) for v in a) for a in kw["anchors"])
        return cls(**kw)

    @classmethod
    def light(cls, **overrides: Any) -> ModelConfig:
        """The CPU-friendly configuration: 256 px reference at 1 m (256 m of ground), 128 px
        drone query, backbones at width 0.25 (4.3 M parameters, 8.5 MB in fp16), 256-d
        embeddings."""
        base: dict[str, Any] = dict(
            name="mogeo-light", reference_size=256, query_size=(128, 128), gsd=1.0,
            width=0.25, embed_dim=256, gaussian_sigma=12.5, anchors=_scaled_anchors(256),
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def light16(cls, **overrides: Any) -> ModelConfig:
        """:meth:`light` with the paper's query grid: stride 16 on a 320 px letterboxed query
        (20x20 cells; the median target of the data engine, >= 150 m^2, spans about two
        cells), Gaussian sigma scaled with the query (31.25 px)."""
        base: dict[str, Any] = dict(query_size=(320, 320), query_stride=16,
                                    query_fit="letterbox", gaussian_sigma=12.5 * 320 / 128)
        base.update(overrides)
        return cls.light(**base)
