"""A separate writer process for the GeoPackage concurrency tests (run as a script).

``python gpkg_writer.py GPKG WORKER APPENDS BATCH GO_FILE [pause]`` waits until ``GO_FILE``
exists (so all workers start together), then calls ``write_geopackage`` ``APPENDS`` times (0:
forever), each time with ``BATCH`` polygons in layer ``targets`` and one point in layer
``photo``, and prints ``appended <k>`` after each write returns. Every feature carries its
``worker`` and ``seq`` so the test can tell exactly which rows survived.

With ``pause``, the worker stops INSIDE its first write, after the rows are inserted and before
the commit, prints ``inside`` and sleeps (the test then kills it with SIGKILL).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import geopandas as gpd
from shapely.geometry import Point, box

from geomogeo.geo import export, gpkg

X0, Y0 = 431_000.0, 4_582_000.0
UTM = "EPSG:32631"


def frames(worker: int, seq: int, batch: int) -> dict[str, gpd.GeoDataFrame]:
    """``batch`` 2 m squares and one point, at positions unique to (worker, seq, i)."""
    polys = [box(X0 + 10 * seq, Y0 + 10 * worker + 2.5 * i, X0 + 10 * seq + 2,
                 Y0 + 10 * worker + 2.5 * i + 2) for i in range(batch)]
    targets = gpd.GeoDataFrame(
        {"worker": [worker] * batch, "seq": [seq] * batch, "i": list(range(batch)),
         "photo": [f"w{worker}_s{seq}.jpg"] * batch}, geometry=polys, crs=UTM)
    photo = gpd.GeoDataFrame({"worker": [worker], "seq": [seq]},
                             geometry=[Point(X0 + 10 * seq, Y0 - 10 * worker)], crs=UTM)
    return {"targets": targets, "photo": photo}


def main(argv: list[str]) -> None:
    path, worker, appends, batch, go = (Path(argv[0]), int(argv[1]), int(argv[2]),
                                        int(argv[3]), Path(argv[4]))
    if len(argv) > 5 and argv[5] == "pause":
        real_copy = gpkg.GeoPackageTransaction._copy_rows

        def copy_then_pause(self, *args, **kwargs):
            n = real_copy(self, *args, **kwargs)
            print("inside", flush=True)
            time.sleep(600)
            return n

        gpkg.GeoPackageTransaction._copy_rows = copy_then_pause
    while not go.exists():
        time.sleep(0.005)
    seq = 0
    while appends == 0 or seq < appends:
        export.write_geopackage(path, frames(worker, seq, batch))
        print(f"appended {seq + 1}", flush=True)
        seq += 1


if __name__ == "__main__":
    main(sys.argv[1:])
