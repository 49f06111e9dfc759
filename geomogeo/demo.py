"""The out-of-the-box demo: localize the shipped sample photos and score them.

``sample_tiles/demo.json`` lists synthetic drone views rendered with parallax from a real tile
(the held-out city of ``--holdout las_vegas``; see ``sample_tiles/README.md``), their clicks,
and the known answer of each target as a polygon in the raster's CRS: the envelope of the
target building's footprint. The demo
localizes every photo with the default checkpoint (EXIF GPS gives the window; the photos carry
no heading), writes a GeoPackage, GeoJSON, heatmap GeoTIFFs and an offline HTML map per photo,
and reports per target the score, the IoU (in the raster CRS) with the answer, how the box was
chosen (``joint`` or ``network``, see :class:`~geomogeo.localize.Target`) and the heading the
photo was turned north-up with and where it came from.
Each run starts ``targets.gpkg`` over (in place, see :func:`geomogeo.geo.export.write_geopackage`),
so running the demo twice gives the same file; appending is for the user's own runs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shapely.geometry import Polygon
from tqdm.auto import tqdm

from geomogeo.localize import Localizer
from geomogeo.predictor import DEFAULT_JOINT_TTA, DEFAULT_TTA, TTASpec, parse_tta

__all__ = ["DemoRow", "default_samples", "polygon_iou", "run_demo"]

_SAMPLES = Path(__file__).resolve().parent.parent / "sample_tiles"


def default_samples() -> Path:
    """The shipped ``sample_tiles/`` folder."""
    return _SAMPLES


@dataclass(frozen=True)
class DemoRow:
    """One localized target of the demo.

    Attributes:
        photo: the photo's file name.
        target: the click's index in its photo.
        score: the model's confidence.
        iou: intersection over union of the returned polygon and the answer, both in the
            raster CRS.
        method: ``"joint"`` or ``"network"`` (:attr:`geomogeo.localize.Target.method`).
        heading: the heading used, degrees clockwise from north (NaN: none).
        heading_source: where it came from (:attr:`geomogeo.localize.Target.heading_source`).
    """

    photo: str
    target: int
    score: float
    iou: float
    method: str = "network"
    heading: float = math.nan
    heading_source: str = "none"


def polygon_iou(a: Polygon, b: Polygon) -> float:
    """Intersection over union of two polygons (same CRS), 0 when they do not overlap."""
    union = a.union(b).area
    return float(a.intersection(b).area / union) if union > 0 else 0.0


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    samples: str | os.PathLike[str] | None = None,
    model_path: str | os.PathLike[str] | None = None,
    quiet: bool = False,
    echo: Callable[[str], None] = print,
    tta: str | TTASpec = DEFAULT_TTA,
    joint_tta: str | TTASpec = DEFAULT_JOINT_TTA,
) -> list[DemoRow]:
    """Run the demo; returns one row per target (also echoed as a table).

    ``tta`` and ``joint_tta`` are the test-time augmentations of the predictor for photos
    localized by the network alone and for registered photos (see :meth:`Localizer.load`).
    """
    from geomogeo.cli import write_outputs

    samples = Path(samples) if samples is not None else default_samples()
    spec = json.loads((samples / "demo.json").read_text(encoding="utf-8"))
    out = Path(out_dir)
    loc = Localizer.load(model_path, tta=tta, joint_tta=joint_tta)
    raster = samples / spec["raster"]
    rows: list[DemoRow] = []
    photos = tqdm(spec["photos"], desc="photos", disable=quiet, unit="photo", leave=False)
    for i, item in enumerate(photos):
        res = loc.localize(samples / item["photo"], raster, item["clicks"], quiet=True)
        # The first photo starts targets.gpkg over: a second demo run must not double it.
        write_outputs(res, out, heatmaps=True, make_map=True, append=i > 0)
        for t, answer in zip(res.targets, item["answers"], strict=True):
            rows.append(DemoRow(Path(item["photo"]).name, t.index, t.score,
                                polygon_iou(t.polygon, Polygon(answer)), t.method,
                                t.heading_used, t.heading_source))
    # The table is printed after the progress bar is gone, so the two never interleave.
    echo(f"model {loc.predictor.name} ({loc.predictor.sha256[:12]}), raster {raster.name}, "
         f"test-time augmentation {parse_tta(tta)}, registered photos {parse_tta(joint_tta)}")
    echo(f"{'photo':<24}{'target':>7}{'score':>8}{'IoU':>8}  {'method':<9}{'heading':>8}  source")
    for row in rows:
        echo(f"{row.photo:<24}{row.target:>7}{row.score:>8.3f}{row.iou:>8.3f}  "
             f"{row.method:<9}{row.heading:>8.1f}  {row.heading_source}")
    n = len(rows)
    hits = sum(r.iou > 0.5 for r in rows)
    echo(f"{hits}/{n} targets with IoU > 0.5; outputs in {out}")
    return rows
