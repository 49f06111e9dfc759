"""The small interface between the GIS layer and the network.

The GIS layer never imports torch: it hands a :class:`Predictor` plain numpy arrays already
sized to :class:`InputSpec` and receives a :class:`Prediction`. Coordinates here are continuous
pixel coordinates of the model inputs, origin at the top-left corner of the top-left pixel,
x to the right, y down; boxes are ``(x1, y1, x2, y2)`` pixel EDGES.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from geomogeo.geo.orient import QueryFit

__all__ = [
    "DEFAULT_JOINT_TTA",
    "DEFAULT_TTA",
    "TTA_GROUPS",
    "TTA_STEPS",
    "InputSpec",
    "MeanRefiner",
    "Prediction",
    "Predictor",
    "Refiner",
    "TTASpec",
    "check_inputs",
    "parse_tta",
    "refine_boxes",
    "select",
]

#: The orientations of each test-time augmentation group, identity first. ``(mirror, k)``:
#: mirror both views left-right first (when True), then turn them ``k`` quarter turns
#: counter-clockwise.
TTA_GROUPS: dict[str, tuple[tuple[bool, int], ...]] = {
    "none": ((False, 0),),
    "rot4": tuple((False, k) for k in range(4)),
    "d4": tuple((m, k) for m in (False, True) for k in range(4)),
}
TTA_STEPS: tuple[int, ...] = (1, 2, 4, 8)


@dataclass(frozen=True)
class TTASpec:
    """A test-time augmentation mode of a network predictor (:mod:`geomogeo.nn.tta`).

    Written ``"<group>"`` or ``"<group>+s<steps>"`` (:func:`parse_tta`).

    Attributes:
        group: ``"none"`` (one orientation), ``"rot4"`` (the 4 quarter turns of both views) or
            ``"d4"`` (the 8 turns and mirrors).
        steps: sub-cell positions of the reference per axis, 1, 2, 4 or 8 (``steps ** 2``
            shifts by multiples of ``stride / steps`` pixels).
    """

    group: str
    steps: int = 1

    def __post_init__(self) -> None:
        if self.group not in TTA_GROUPS:
            raise ValueError(f"test-time augmentation group {self.group!r} is not one of "
                             f"{sorted(TTA_GROUPS)}")
        if self.steps not in TTA_STEPS:
            raise ValueError(f"test-time augmentation steps {self.steps} is not one of "
                             f"{TTA_STEPS}")

    @property
    def transforms(self) -> tuple[tuple[bool, int], ...]:
        """The orientations of the group, ``(mirror, k)``, identity first."""
        return TTA_GROUPS[self.group]

    @property
    def passes(self) -> int:
        """Forward passes per prediction."""
        return len(self.transforms) * self.steps**2

    def shifts(self, stride: int) -> tuple[tuple[int, int], ...]:
        """The reference shifts (dx, dy) in pixels: the multiples of ``stride // steps``."""
        if stride % self.steps:
            raise ValueError(f"{self.steps} sub-cell steps do not divide the stride {stride}")
        step = stride // self.steps
        return tuple((i * step, j * step) for j in range(self.steps) for i in range(self.steps))

    def __str__(self) -> str:
        return self.group if self.steps == 1 else f"{self.group}+s{self.steps}"


def parse_tta(mode: str | TTASpec) -> TTASpec:
    """``"rot4+s2"`` -> ``TTASpec("rot4", 2)``; a ValueError names a bad mode."""
    if isinstance(mode, TTASpec):
        return mode
    m = re.fullmatch(r"([a-z0-9]+?)(?:\+s(\d+))?", str(mode).strip())
    try:
        if m is None:
            raise ValueError("expected '<group>' or '<group>+s<steps>', e.g. 'rot4+s2'")
        return TTASpec(m.group(1), int(m.group(2) or 1))
    except ValueError as e:
        raise ValueError(f"unknown test-time augmentation {mode!r}: {e}") from None


#: What inference uses unless told otherwise: chosen on the validation tile (model card).
DEFAULT_TTA = "rot4+s2"

#: What the network pass of a registered photo uses unless told otherwise, when the box refiner
#: draws its boxes: there the network only scores the cell under each registered click, so the
#: 16 passes of :data:`DEFAULT_TTA` change no box. Chosen on the validation tile (see
#: :meth:`geomogeo.localize.Localizer.load`).
DEFAULT_JOINT_TTA = "none"


@dataclass(frozen=True)
class InputSpec:
    """What a predictor expects.

    Attributes:
        reference_size: side of the square reference input, pixels.
        query_size: (height, width) of the query input, pixels.
        gsd: ground sample distance of the reference input, metres per pixel.
        band_names: meaning of the three input channels, in order.
        query_fit: how a photo is fitted into the query input, ``"stretch"`` or
            ``"letterbox"`` (:func:`geomogeo.geo.orient.prepare_query`).
    """

    reference_size: int
    query_size: tuple[int, int]
    gsd: float
    band_names: tuple[str, str, str] = ("red", "green", "blue")
    query_fit: QueryFit = "stretch"

    @property
    def ground_extent(self) -> float:
        """Side of the reference window on the ground, metres."""
        return self.reference_size * self.gsd


@dataclass(frozen=True)
class Prediction:
    """One box per click, and optionally the dense maps it was chosen from.

    Attributes:
        boxes: (m, 4) float64, (x1, y1, x2, y2) in reference-input pixels (edges).
        scores: (m,) float64 in [0, 1], the decoded box's confidence: the softmax probability
            of its anchor and cell among all anchors x cells of that target (with test-time
            augmentation: the chosen cell's probability mass, averaged over the passes).
        heatmaps: (m, h, w) float32 in [0, 1]; each covers the whole reference input, so pixel
            (i, j) of a heatmap spans reference pixels scaled by reference_size / w.
        mass: None, or (m, Gf, Gf) float32 >= 0: per target, the network's confidence mass on
            each fine voting cell (:mod:`geomogeo.nn.tta`: a pass's coarse-cell probability
            summed over its anchors, summed over the passes covering the cell, divided by the
            number of passes; one pass: the probability summed over the anchors of the cell).
            Fine cell ``(i, j)`` (row, column) covers reference pixels ``x in [j * c,
            (j + 1) * c)``, ``y in [i * c, (i + 1) * c)`` with ``c = reference_size / Gf``.
        cell_boxes: None, or (m, Gf, Gf, 4) float32 (x1, y1, x2, y2) reference-input pixels
            (edges): the box the vote returns if that fine cell wins (the confidence-weighted
            mean of the anchors voting there; any finite value where ``mass`` is 0).

    With test-time augmentation, ``boxes, scores`` are :func:`select` of ``mass, cell_boxes``;
    in one pass (mode ``"none"``) they are the network's own decoding (the best anchor of the
    best cell), which :func:`select` need not reproduce.
    """

    boxes: np.ndarray
    scores: np.ndarray
    heatmaps: np.ndarray
    mass: np.ndarray | None = None
    cell_boxes: np.ndarray | None = None


def select(
    mass: np.ndarray, cell_boxes: np.ndarray, prior: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The vote: per target, the fine cell with the largest ``mass * prior`` and its box.

    Args:
        mass: (m, Gf, Gf) >= 0, :attr:`Prediction.mass`.
        cell_boxes: (m, Gf, Gf, 4) (x1, y1, x2, y2) reference-input pixels (edges),
            :attr:`Prediction.cell_boxes`.
        prior: None (1 everywhere), or (m, Gf, Gf) >= 0 weights on the same cells, e.g. where
            a registration says the target is.

    Returns:
        boxes (m, 4) float64: the winning cell's box; scores (m,) float64: its mass, not
        weighted by the prior; cells (m,) int64: its flat index ``i * Gf + j`` (row i, column
        j). Ties go to the first cell in that order.

    Raises:
        ValueError: shapes that do not match, a negative or non-finite prior, or a target
            whose prior is 0 at every cell that has mass (nothing to choose from).
    """
    mass = np.asarray(mass)
    cell_boxes = np.asarray(cell_boxes)
    square = mass.ndim == 3 and mass.shape[1] == mass.shape[2]
    if not square or cell_boxes.shape != (*mass.shape, 4):
        raise ValueError(f"select needs mass (m, Gf, Gf) and cell_boxes (m, Gf, Gf, 4), got "
                         f"{mass.shape} and {cell_boxes.shape}")
    m, gf = mass.shape[:2]
    flat = mass.reshape(m, gf * gf)
    weighted = flat
    if prior is not None:
        prior = np.asarray(prior)
        if prior.shape != mass.shape:
            raise ValueError(f"select: prior has shape {prior.shape}, mass {mass.shape}")
        if not (np.isfinite(prior).all() and (prior >= 0).all()):
            raise ValueError("select: the prior must be finite and >= 0")
        weighted = flat * prior.reshape(m, gf * gf)
        empty = np.flatnonzero(~(weighted > 0).any(1) & (flat > 0).any(1))
        if len(empty):
            raise ValueError(f"select: the prior of target(s) {empty.tolist()} is 0 wherever "
                             "the network puts mass")
    cells = weighted.argmax(1) if m else np.zeros(0, np.int64)
    rows = np.arange(m)
    boxes = cell_boxes.reshape(m, gf * gf, 4)[rows, cells].astype(np.float64)
    return boxes, flat[rows, cells].astype(np.float64), cells.astype(np.int64)


def check_inputs(
    spec: InputSpec, reference: np.ndarray, query: np.ndarray, points: np.ndarray
) -> np.ndarray:
    """Check one (reference, query, points) triple against ``spec``; the points as (m, 2)
    float32 (m may be 0). ValueError names the input that does not fit."""
    r = spec.reference_size
    for what, im, size in (("reference", reference, (r, r)), ("query", query, spec.query_size)):
        if im.shape != (*size, 3):
            raise ValueError(f"{what} must be {(*size, 3)} (H, W, 3), got {im.shape}")
    p = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    if not np.isfinite(p).all():
        raise ValueError("click points must be finite")
    return p


@runtime_checkable
class Predictor(Protocol):
    """Anything that localizes m clicks of a query in a reference image."""

    name: str
    sha256: str
    spec: InputSpec

    def predict(
        self, reference: np.ndarray, query: np.ndarray, points: np.ndarray
    ) -> Prediction:
        """Localize.

        Args:
            reference: (reference_size, reference_size, 3) float32 in [0, 1], channels in
                ``spec.band_names`` order; nodata pixels already filled with 0.
            query: (qh, qw, 3) float32 in [0, 1], RGB.
            points: (m, 2) float64 click positions (x, y) in query-input pixels, continuous.
        """
        ...


@runtime_checkable
class Refiner(Protocol):
    """Anything that boxes the object under given points of a reference image
    (:class:`geomogeo.nn.refine.TorchRefiner`)."""

    name: str
    sha256: str
    gsd: float

    def refine(self, reference: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Box the object under each point.

        Args:
            reference: (H, W, 3) float32 in [0, 1] (as :meth:`Predictor.predict` gets it), at
                ``gsd`` metres per pixel.
            points: (m, 2) float64 (x, y) reference pixels, continuous.

        Returns:
            (m, 4) float64 boxes (x1, y1, x2, y2), reference pixels (edges).
        """
        ...


def refine_boxes(refiner: Refiner, reference: np.ndarray, points: np.ndarray, passes: int = 1
                 ) -> np.ndarray:
    """:meth:`Refiner.refine`, ``passes`` times: each pass after the first boxes around the
    previous box's centre, so that a point far from its object's centre (a click near a
    roof's edge, a registration error) ends where a refiner looks best, at the centre.

    Args:
        refiner: the box refiner.
        reference: (H, W, 3) float32 in [0, 1], at ``refiner.gsd`` metres per pixel.
        points: (m, 2) (x, y) reference pixels, one per object.
        passes: >= 1.

    Returns:
        (m, 4) float64 boxes (x1, y1, x2, y2), reference pixels (edges).
    """
    if passes < 1:
        raise ValueError(f"refine_boxes: passes={passes}, must be >= 1")
    boxes = refiner.refine(reference, points)
    for _ in range(passes - 1):
        boxes = refiner.refine(reference, (boxes[:, :2] + boxes[:, 2:]) / 2.0)
    return boxes


class MeanRefiner:
    """Several refiners' boxes of the same points, averaged: the mean of their centres and
    the geometric mean of their widths and heights (a :class:`Refiner`).

    ``name`` and ``sha256`` are the members' joined by ``"+"``.

    Raises:
        ValueError: no member, or members of different GSDs.
    """

    def __init__(self, members: list[Refiner]) -> None:
        if not members:
            raise ValueError("MeanRefiner needs at least one refiner")
        gsds = sorted({float(m.gsd) for m in members})
        if gsds[-1] - gsds[0] > 1e-9 * gsds[-1]:
            raise ValueError(f"refiners of different GSDs cannot be averaged: {gsds} m/px")
        self.members = list(members)
        self.name = "+".join(m.name for m in members)
        self.sha256 = "+".join(m.sha256 for m in members)
        self.gsd = members[0].gsd

    def refine(self, reference: np.ndarray, points: np.ndarray) -> np.ndarray:
        """:meth:`Refiner.refine` of every member, averaged; (m, 4) float64 boxes (x1, y1, x2,
        y2), reference pixels (edges)."""
        boxes = np.stack([np.asarray(m.refine(reference, points), dtype=np.float64)
                          for m in self.members])
        centre = ((boxes[..., :2] + boxes[..., 2:]) / 2.0).mean(0)
        size = np.exp(np.log(np.clip(boxes[..., 2:] - boxes[..., :2], 1e-6, None)).mean(0))
        return np.hstack([centre - size / 2.0, centre + size / 2.0])
