"""A :class:`~geomogeo.predictor.Predictor` backed by a :class:`~geomogeo.nn.model.MOGeoNet`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from geomogeo.nn.model import MOGeoNet
from geomogeo.nn.tta import predict
from geomogeo.predictor import (
    DEFAULT_TTA,
    InputSpec,
    Prediction,
    TTASpec,
    check_inputs,
    parse_tta,
)

__all__ = ["TorchPredictor"]


class TorchPredictor:
    """Runs a network on numpy inputs: normalise, forward, decode.

    Inputs are (H, W, 3) float32 in [0, 1] sized to :attr:`spec`; points are (m, 2) click
    positions (x, y) in query-input pixels. Boxes come back in reference-input pixels (not
    clipped), scores in [0, 1], heatmaps are the attention maps A_k: (m, G, G) in one pass,
    (m, G * steps, G * steps) on the voting grid of a ``+s<steps>`` mode, as are the vote maps
    ``mass`` and ``cell_boxes`` (:class:`~geomogeo.predictor.Prediction`).

    ``tta`` picks the decoding: ``"none"`` is one pass and the network's own decoding; other
    modes (:mod:`geomogeo.nn.tta`; the default ``"rot4+s2"`` is 16 passes) vote over turned,
    mirrored and shifted passes. Turning needs a square query.
    """

    def __init__(
        self, model: MOGeoNet, *, name: str, sha256: str, device: str | torch.device = "cpu",
        tta: str | TTASpec = DEFAULT_TTA,
    ) -> None:
        self.tta = parse_tta(tta)
        qh, qw = model.config.query_size
        if self.tta.group != "none" and qh != qw:
            raise ValueError(f"tta {str(self.tta)!r} turns the query, which must be square, "
                             f"not {qh}x{qw}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.name = name
        self.sha256 = sha256
        cfg = model.config
        self.spec = InputSpec(cfg.reference_size, tuple(cfg.query_size), cfg.gsd, cfg.band_names,
                              cfg.query_fit)
        self._mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1)

    def predict(self, reference: np.ndarray, query: np.ndarray, points: np.ndarray) -> Prediction:
        """Localize the m clicks of one query photo in one reference window."""
        return self.predict_batch([reference], [query], [points])[0]

    def predict_batch(
        self, references: Sequence[np.ndarray], queries: Sequence[np.ndarray],
        points: Sequence[np.ndarray],
    ) -> list[Prediction]:
        """Several (reference, query, points) triples in one forward pass."""
        if not len(references) == len(queries) == len(points):
            raise ValueError("predict_batch needs as many references, queries and point sets")
        pts = [check_inputs(self.spec, *trio)
               for trio in zip(references, queries, points, strict=True)]
        counts = [len(p) for p in pts]
        out = [self._empty() for _ in counts]
        keep = [i for i, c in enumerate(counts) if c]
        if not keep:
            return out
        ref = self._to_tensor([references[i] for i in keep])
        qry = self._to_tensor([queries[i] for i in keep])
        clicks = torch.from_numpy(np.concatenate([pts[i] for i in keep])).float()
        per_photo = torch.tensor([counts[i] for i in keep])
        bidx = torch.repeat_interleave(torch.arange(len(keep)), per_photo)  # (T,)
        res = predict(self.model, ref, qry, clicks.to(self.device), bidx.to(self.device),
                      self.tta)
        boxes_np = res.boxes.cpu().double().numpy()
        scores_np = res.scores.cpu().double().numpy()
        heat_np = res.attention.cpu().numpy()
        mass_np, cell_boxes_np = res.mass.cpu().numpy(), res.cell_boxes.cpu().numpy()
        start = 0
        for i in keep:
            sl = slice(start, start + counts[i])
            out[i] = Prediction(boxes_np[sl], scores_np[sl], heat_np[sl], mass_np[sl],
                                cell_boxes_np[sl])
            start = sl.stop
        return out

    def _empty(self) -> Prediction:
        g = self.model.config.grid_size * self.tta.steps
        return Prediction(np.zeros((0, 4)), np.zeros(0), np.zeros((0, g, g), np.float32),
                          np.zeros((0, g, g), np.float32), np.zeros((0, g, g, 4), np.float32))

    def _to_tensor(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(images).astype(np.float32, copy=False))
        x = x.permute(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)
        return ((x - self._mean) / self._std).to(self.device)
