"""Running the demo twice into the same folder gives the same GeoPackage, not twice the rows.

The model runs once per photo: the second run reuses the first run's results (the write path,
not the model, is under test). Counts are read back with Debian's ogrinfo.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from oracles import ogrinfo_summary

from geomogeo import demo
from geomogeo.demo import default_samples, run_demo
from geomogeo.localize import Localizer


def test_second_demo_run_starts_the_geopackage_over(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    spec = json.loads((default_samples() / "demo.json").read_text())
    spec["photos"] = spec["photos"][:2]
    spec["raster"] = str(default_samples() / spec["raster"])
    for p in spec["photos"]:
        p["photo"] = str(default_samples() / p["photo"])
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "demo.json").write_text(json.dumps(spec))
    n_targets = sum(len(p["clicks"]) for p in spec["photos"])

    real = Localizer.localize
    cache: dict[str, object] = {}
    model_runs = []

    def localize_once(self, photo, *args, **kwargs):
        if str(photo) not in cache:
            model_runs.append(photo)
            cache[str(photo)] = real(self, photo, *args, **kwargs)
        return cache[str(photo)]

    monkeypatch.setattr(demo.Localizer, "localize", localize_once)
    out = tmp_path / "demo"
    counts = []
    for _ in range(2):
        rows = run_demo(out, samples=samples, quiet=True, echo=lambda s: None, tta="none")
        assert len(rows) == n_targets
        s = ogrinfo_summary(out / "targets.gpkg", "targets")
        assert s.stderr == ""
        counts.append((s.feature_count, ogrinfo_summary(out / "targets.gpkg", "photo")
                       .feature_count))
    assert len(model_runs) == 2  # one per photo, over both runs
    assert counts == [(n_targets, 2), (n_targets, 2)]
