"""The small interface between the GIS layer and the network.

The GIS layer never imports torch: it hands a :class:`Predictor` plain numpy arrays already
sized to :class:`InputSpec` and receives a :class:`Prediction`. Coordinates here are continuous
pixel coordinates of the model inputs, origin at the top-left corner of the top-left pixel,
x to the right, y down; boxes are ``(x1, y1, x2, y2)`` pixel EDGES.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["InputSpec", "Prediction", "Predictor"]


@dataclass(frozen=True)
class InputSpec:
    """What a predictor expects.

    Attributes:
        reference_size: side of the square reference input, pixels.
        query_size: (height, width) of the query input, pixels.
        gsd: ground sample distance of the reference input, metres per pixel.
        band_names: meaning of the three input channels, in order.
    """

    reference_size: int
    query_size: tuple[int, int]
    gsd: float
    band_names: tuple[str, str, str] = ("red", "green", "blue")

    @property
    def ground_extent(self) -> float:
        """Side of the reference window on the ground, metres."""
        return self.reference_size * self.gsd


@dataclass(frozen=True)
class Prediction:
    """One box per click.

    Attributes:
        boxes: (m, 4) float64, (x1, y1, x2, y2) in reference-input pixels (edges).
        scores: (m,) float64 in [0, 1], the decoded box's confidence (softmax over all
            anchors x cells of that target).
        heatmaps: (m, h, w) float32 in [0, 1]; each covers the whole reference input, so pixel
            (i, j) of a heatmap spans reference pixels scaled by reference_size / w.
    """

    boxes: np.ndarray
    scores: np.ndarray
    heatmaps: np.ndarray


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
