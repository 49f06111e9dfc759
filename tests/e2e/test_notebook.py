"""The notebook in ``notebooks/`` runs top to bottom with the shipped model (nbclient)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "localize_step_by_step.ipynb"


@pytest.mark.slow
def test_notebook_runs_and_reports_every_target(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(
        o.get("text", "") if o.get("output_type") == "stream"
        else "\n".join(str(v) for v in o.get("data", {}).values())
        for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    spec = json.loads((ROOT / "sample_tiles" / "demo.json").read_text())
    n = len(spec["photos"][0]["clicks"])
    assert text.count("target ") >= n and f"{n} heatmaps" in text
    assert "'crs_epsg': 4326" in text  # the raster CRS reported by info
    # the shipped refiners are loaded, and the registered targets are boxed by them
    index = json.loads((ROOT / "model" / "checkpoints.json").read_text())
    names = index["refiner"] if isinstance(index["refiner"], list) else [index["refiner"]]
    assert all(index["files"][n]["sha256"][:16] in text for n in names)
    assert "box_source" in text and "refiner" in text
    # no heading in EXIF: every target's heading was registered or searched
    assert text.count(" from registration)") + text.count(" from search)") == n
    for name in ("targets.gpkg", "targets.geojson", "map.html"):
        assert (tmp_path / "notebook_out" / name).is_file()
    assert "<iframe" in text  # the map is shown inline
    # the heatmaps Dataset: plotted (an image) and written as a GeoTIFF in the window's CRS
    assert any("image/png" in o.get("data", {}) for o in nb.cells[-1].get("outputs", []))
    assert "'target': " + str(n) in text
    import rasterio

    with rasterio.open(tmp_path / "notebook_out" / "heatmap_target0.tif") as ds:
        assert ds.crs.to_epsg() == 32611 and ds.count == 1  # the local UTM zone
