"""Accuracy check: the demo photos on the demo tile and on copies of it in other CRSs.

Makes, in a temporary folder, copies of the demo raster (``demo.json``'s ``raster``: the Las
Vegas tile, EPSG:4326) reprojected (bilinear, GDAL's default grid) to EPSG:3857 (Web Mercator,
map unit ~1.24 ground metres at 36 N) and to EPSG:32613 (a UTM zone 10 degrees off, scale
~1.012), localizes the 4 demo photos on each with the shipped model, and prints, per raster,
how many targets reach IoU >= 0.5 with the known answers (answers and predictions compared in
the tile's UTM zone, EPSG:32611, where the windows are read) and the ground GSD ``info``
reports.

Usage: ``OMP_NUM_THREADS=2 .venv/bin/python scripts/eval_reprojected_demo.py [--tta none]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from shapely.geometry import Polygon

import geomogeo
from geomogeo.demo import polygon_iou
from geomogeo.geo import georef, raster

ROOT = Path(__file__).resolve().parents[1]
# The reprojected copies are made as the GIS tests make theirs (tests/tiles.py).
sys.path.insert(0, str(ROOT / "tests"))
from tiles import warp_copy  # noqa: E402

SPEC = json.loads((ROOT / "sample_tiles" / "demo.json").read_text())
TILE = ROOT / "sample_tiles" / SPEC["raster"]
METRIC = "EPSG:32611"  # the demo tile's local UTM zone
SPEC_CRS = "EPSG:4326"  # the CRS of demo.json's answers (the demo raster's)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tta", default=geomogeo.predictor.DEFAULT_TTA)
    args = ap.parse_args()
    loc = geomogeo.Localizer.load(tta=args.tta)
    with tempfile.TemporaryDirectory() as tmp:
        rasters = [TILE] + [warp_copy(TILE, Path(tmp) / f"copy_{c.replace(':', '_')}.tif", c)
                            for c in ("EPSG:3857", "EPSG:32613")]
        for r in rasters:
            info = raster.raster_info(r)
            ok = n = 0
            for item in SPEC["photos"]:
                res = loc.localize(ROOT / "sample_tiles" / item["photo"], r, item["clicks"],
                                   quiet=True)
                for t, answer in zip(res.targets, item["answers"], strict=True):
                    poly = georef.reproject_geometries([t.polygon], res.crs, METRIC)[0]
                    ans = georef.reproject_geometries([Polygon(answer)], SPEC_CRS, METRIC)[0]
                    ok += polygon_iou(poly, ans) >= 0.5
                    n += 1
            print(f"{info['crs_name']:<28} map pixel {info['transform'][0]:.4g} units, ground "
                  f"GSD {info['gsd_m'][0]:.3f} x {info['gsd_m'][1]:.3f} m: {ok} of {n} targets "
                  f"with IoU >= 0.5 (tta {args.tta})")


if __name__ == "__main__":
    main()
