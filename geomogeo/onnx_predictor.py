"""A :class:`~geomogeo.predictor.Predictor` that runs an ONNX file on ONNX Runtime: no PyTorch.

The file is written by ``geomogeo export-onnx`` (:func:`geomogeo.engine.onnx_export.export_onnx`):
the network with the passes of one test-time augmentation mode and their fine-grid vote maps
(:class:`geomogeo.nn.tta.VoteMaps`) inside the graph. The vote itself is the shared
:func:`~geomogeo.predictor.select`, so the boxes are those of
:class:`~geomogeo.nn.predictor.TorchPredictor` with the same mode.

Graph inputs: ``reference`` (B, 3, R, R) and ``query`` (B, 3, Qh, Qw) float32, the [0, 1] images
normalised with the configuration's ``mean``/``std``, channels in ``band_names`` order;
``clicks`` (T, 2) float32 (x, y) query-input pixels; ``batch_index`` (T,) int64. B and T are
dynamic. Outputs: those of :class:`~geomogeo.nn.tta.VoteMaps`, named in the metadata.

Metadata (``metadata_props``, strings): ``format`` (``"geomogeo-onnx"``), ``format_version``,
``model_name``, ``model_config`` (the checkpoint's ModelConfig as JSON: input sizes, GSD, band
order, normalisation, anchors, version), ``checkpoint_sha256``, ``tta``, ``opset``,
``outputs`` (JSON list), ``fine_grid`` (Gf, cells per side of the vote maps),
``geomogeo_version``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from geomogeo.errors import CheckpointError
from geomogeo.predictor import InputSpec, Prediction, TTASpec, check_inputs, parse_tta, select

__all__ = ["FORMAT", "FORMAT_VERSION", "INPUT_NAMES", "OnnxPredictor"]

log = logging.getLogger(__name__)

FORMAT = "geomogeo-onnx"
FORMAT_VERSION = 1
INPUT_NAMES = ("reference", "query", "clicks", "batch_index")
_REQUIRED = ("format", "format_version", "model_name", "model_config", "checkpoint_sha256",
             "tta", "opset", "outputs", "fine_grid")


class OnnxPredictor:
    """Runs an exported network on numpy inputs with ONNX Runtime (CPU).

    Same contract as :class:`~geomogeo.nn.predictor.TorchPredictor`: inputs (H, W, 3) float32
    in [0, 1] sized to :attr:`spec`, points (m, 2) (x, y) query-input pixels; boxes in
    reference-input pixels (edges, not clipped), scores in [0, 1], heatmaps and the vote maps
    ``mass``/``cell_boxes`` on the fine voting grid.

    Args:
        path: a ``.onnx`` file written by ``geomogeo export-onnx``.
        tta: the test-time augmentation expected; the file has one built in, and another mode
            is refused (re-export with ``--tta``). None: the file's.
        threads: ONNX Runtime intra-op threads (None: its default, all cores).

    Attributes:
        name, sha256: the model name and the sha256 of the checkpoint it was exported from.
        spec: the :class:`~geomogeo.predictor.InputSpec` of its configuration.
        tta: its test-time augmentation mode.
        metadata: the file's metadata, as strings.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, tta: str | TTASpec | None = None,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"ONNX model not found: {path}")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(path), options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise CheckpointError(f"{path}: not a loadable ONNX model: "
                                  f"{str(e).splitlines()[0]}") from e
        meta = dict(self._session.get_modelmeta().custom_metadata_map)
        missing = [k for k in _REQUIRED if k not in meta]
        if meta.get("format") != FORMAT or missing:
            raise CheckpointError(f"{path}: not a geomogeo ONNX export (missing metadata "
                                  f"{missing or ['format']}); write one with "
                                  "'geomogeo export-onnx'")
        if meta["format_version"] != str(FORMAT_VERSION):
            raise CheckpointError(f"{path}: ONNX export format {meta['format_version']}, this "
                                  f"geomogeo reads {FORMAT_VERSION}")
        self.path = path
        self.metadata = meta
        self.tta = parse_tta(meta["tta"])
        if tta is not None and parse_tta(tta) != self.tta:
            raise ValueError(f"{path} was exported with test-time augmentation "
                             f"{str(self.tta)!r}, not {str(parse_tta(tta))!r}; re-export it "
                             f"with 'geomogeo export-onnx --tta {parse_tta(tta)}'")
        cfg: dict[str, Any] = json.loads(meta["model_config"])
        self.name: str = meta["model_name"]
        self.sha256: str = meta["checkpoint_sha256"]
        self.spec = InputSpec(int(cfg["reference_size"]), tuple(cfg["query_size"]),
                              float(cfg["gsd"]), tuple(cfg["band_names"]),
                              cfg.get("query_fit", "stretch"))
        self._mean = np.asarray(cfg["mean"], np.float32)
        self._std = np.asarray(cfg["std"], np.float32)
        self._outputs = json.loads(meta["outputs"])
        self._fine = int(meta["fine_grid"])
        log.info("loaded %s: %s, tta %s, opset %s", path, self.name, self.tta, meta["opset"])

    def predict(self, reference: np.ndarray, query: np.ndarray, points: np.ndarray) -> Prediction:
        """Localize the m clicks of one query photo in one reference window."""
        pts = check_inputs(self.spec, reference, query, points)
        m, g = len(pts), self._fine
        if not m:
            return Prediction(np.zeros((0, 4)), np.zeros(0), np.zeros((0, g, g), np.float32),
                              np.zeros((0, g, g), np.float32),
                              np.zeros((0, g, g, 4), np.float32))
        feeds = {"reference": self._normalise(reference), "query": self._normalise(query),
                 "clicks": pts, "batch_index": np.zeros(m, np.int64)}
        maps = dict(zip(self._outputs, self._session.run(self._outputs, feeds), strict=True))
        if "boxes" in maps:  # mode "none": the network's own decoding
            boxes, scores = maps["boxes"].astype(np.float64), maps["scores"].astype(np.float64)
        else:
            boxes, scores, _ = select(maps["mass"], maps["cell_boxes"])
        return Prediction(boxes, scores, maps["attention"], maps["mass"], maps["cell_boxes"])

    def _normalise(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) in [0, 1] -> (1, 3, H, W) float32, normalised as in training."""
        x = (image.astype(np.float32, copy=False) - self._mean) / self._std
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
