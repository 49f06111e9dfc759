"""Export a checkpoint to ONNX for :class:`~geomogeo.onnx_predictor.OnnxPredictor`.

The graph is :class:`~geomogeo.nn.tta.VoteMaps`: the network run once per pass of one
test-time augmentation mode and the passes' fine-grid vote maps, traced by the TorchScript-based
exporter (``torch.onnx.export(dynamo=False)``) with the number of photos and of clicks as
dynamic axes. By default the passes run as one batch (``VoteMaps(batch_passes=True)``): the
network appears once in the graph instead of once per pass (for rot4+s2 4,305 nodes instead of
12,955), which exports several times faster, for ``passes`` times the activation memory at
run time. The layout of the file and its
metadata are described in :mod:`geomogeo.onnx_predictor`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch

from geomogeo.engine.checkpoint import load_checkpoint
from geomogeo.errors import OutputError
from geomogeo.nn.predictor import TorchPredictor
from geomogeo.nn.tta import VoteMaps
from geomogeo.onnx_predictor import FORMAT, FORMAT_VERSION, INPUT_NAMES
from geomogeo.predictor import DEFAULT_TTA, TTASpec

__all__ = ["DEFAULT_OPSET", "export_onnx"]

log = logging.getLogger(__name__)

#: The ONNX opset written unless told otherwise.
DEFAULT_OPSET = 17


def export_onnx(
    checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *,
    tta: str | TTASpec = DEFAULT_TTA, opset: int = DEFAULT_OPSET, batch_passes: bool = True,
) -> dict[str, str]:
    """Write ``checkpoint`` (a geomogeo checkpoint) as an ONNX model at ``out``.

    The file is written atomically (a temporary file, checked with ``onnx.checker``, then
    renamed). Returns the metadata written into it. ``batch_passes=False`` traces one
    network call per pass (less memory at run time, a larger graph).

    Raises:
        CheckpointError: the checkpoint cannot be loaded.
        ValueError: an unknown ``tta`` or one the configuration cannot run (turns need a
            square query).
        OutputError: ``out`` cannot be written.
    """
    import onnx

    from geomogeo import __version__

    loaded = load_checkpoint(checkpoint)
    cfg = loaded.model_config
    # the PyTorch predictor's own checks of the mode (known, square query when turning)
    pred = TorchPredictor(loaded.model, name=cfg.name, sha256=loaded.sha256, tta=tta)
    graph = VoteMaps(pred.model, pred.tta, batch_passes=batch_passes).eval()
    r, (qh, qw) = cfg.reference_size, cfg.query_size
    example = (torch.zeros(1, 3, r, r), torch.zeros(1, 3, qh, qw),
               torch.tensor([[qw / 4, qh / 4], [qw / 2, qh / 2], [qw * 0.75, qh * 0.6]]),
               torch.zeros(3, dtype=torch.long))
    outputs = list(graph.output_names)
    dynamic = {"reference": {0: "photos"}, "query": {0: "photos"},
               "clicks": {0: "targets"}, "batch_index": {0: "targets"},
               **{name: {0: "targets"} for name in outputs}}
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model_name": cfg.name,
        "model_config": cfg.to_json(),
        "checkpoint_sha256": loaded.sha256,
        "tta": str(pred.tta),
        "opset": str(opset),
        "outputs": json.dumps(outputs),
        "fine_grid": str(cfg.grid_size * pred.tta.steps),
        "geomogeo_version": __version__,
    }
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".onnx", dir=out.parent)
        os.close(fd)
    except OSError as e:
        raise OutputError(f"{out}: cannot write the ONNX model: {e}") from e
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the tracer warns that R, Q and the pass count become constants (they are), the
            # exporter about its shape inference of the indexing ops: nothing to act on
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, example, tmp, dynamo=False, opset_version=opset,
                              input_names=list(INPUT_NAMES), output_names=outputs,
                              dynamic_axes=dynamic)
        model = onnx.load(tmp)
        for key, value in meta.items():
            model.metadata_props.add(key=key, value=value)
        model.doc_string = (f"geomogeo {cfg.name} ({loaded.sha256[:12]}), test-time "
                            f"augmentation {pred.tta}")
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, tmp)
        os.replace(tmp, out)
    except OSError as e:
        raise OutputError(f"{out}: cannot write the ONNX model: {e}") from e
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.info("exported %s (%s, tta %s, opset %d) to %s", checkpoint, cfg.name, pred.tta, opset,
             out)
    return meta
