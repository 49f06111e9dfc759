"""Cost of a safe GeoPackage append (:func:`geomogeo.geo.export.write_geopackage`).

Appends a small result (5 polygons in layer ``targets``, 1 point in layer ``photo``) to a
GeoPackage that already holds ``--existing`` polygons, and prints medians of ``--runs`` appends:

* ``write_geopackage``: GDAL encodes in memory, then one SQLite transaction copies the rows
  in place under the write lock;
* baseline, in the same process: GDAL (pyogrio) appending in place directly, two layers, no
  lock and no all-layers transaction (what a careless writer would do);
* throughput of 4 threads appending 10 results each to one file (appends per second).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_gpkg_append.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import pyogrio
from shapely.geometry import Point, box

from geomogeo.geo.export import write_geopackage

X0, Y0, UTM = 431_000.0, 4_582_000.0, "EPSG:32631"


def result(seq: int, n: int = 5) -> dict[str, gpd.GeoDataFrame]:
    polys = [box(X0 + 3 * i, Y0 + 3 * seq, X0 + 3 * i + 2, Y0 + 3 * seq + 2) for i in range(n)]
    return {
        "targets": gpd.GeoDataFrame({"seq": [seq] * n, "score": [0.5] * n}, geometry=polys,
                                    crs=UTM),
        "photo": gpd.GeoDataFrame({"seq": [seq]}, geometry=[Point(X0, Y0 - seq)], crs=UTM),
    }


def median_ms(fn: Callable[[int], object], runs: int) -> float:
    times = []
    for i in range(runs):
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--existing", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        safe, plain = Path(d) / "safe.gpkg", Path(d) / "plain.gpkg"
        for p in (safe, plain):
            write_geopackage(p, result(-1, args.existing))

        def gdal_append(i: int) -> None:
            for name, gdf in result(i).items():
                pyogrio.write_dataframe(gdf, plain, layer=name, driver="GPKG", append=True)

        base = median_ms(gdal_append, args.runs)
        ours = median_ms(lambda i: write_geopackage(safe, result(i)), args.runs)
        print(f"append 5+1 features to a {args.existing:,}-feature GeoPackage, median of "
              f"{args.runs}:")
        print(f"  write_geopackage (in place, one transaction, locked): {ours:7.1f} ms")
        print(f"  baseline: GDAL append in place, no lock:               {base:7.1f} ms")
        print(f"  ratio: {ours / base:.2f}x")

        shared = Path(d) / "shared.gpkg"
        threads = [threading.Thread(target=lambda w=w: [write_geopackage(shared, result(
            100 * w + s)) for s in range(10)]) for w in range(4)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t
        n = len(pyogrio.read_dataframe(shared, layer="photo"))
        print(f"4 threads x 10 appends into one new file: {n} of 40 kept, "
              f"{40 / wall:.1f} appends/s")


if __name__ == "__main__":
    main()
