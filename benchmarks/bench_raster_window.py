"""Benchmark: does reading a reference window cost the same on a huge raster as on a small one?

Generates, in a temporary folder removed afterwards:

- a 40,000 x 40,000 px uint8 GeoTIFF, 512 x 512 tiles, ZSTD (or DEFLATE) compressed, with
  internal overviews (2..64), written strip by strip so generation memory stays ~40 MB;
- a 1,000 x 1,000 px uint8 GeoTIFF with the same pixel size.

Then, for each case, a fresh subprocess opens the raster (``open_raster``: metadata + stretch
from overviews) and times ``read_window`` at several distinct centres (median of ``--runs``),
reporting the Python peak (tracemalloc) and the peak RSS growth (ru_maxrss after the reads,
warm-up read included, minus ru_maxrss after ``open_raster``). Cases: native-GSD windows on both
rasters, and an 8x down-sampled window on the large one (served from overviews).

Usage: ``python benchmarks/bench_raster_window.py [--size 512] [--runs 7] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PIXEL = 0.5  # metres
X0, Y0 = 500_000.0, 5_800_000.0  # UTM 31N
CRS = "EPSG:32631"

CHILD = r"""
import json, resource, statistics, sys, time, tracemalloc
import numpy as np
from geomogeo.geo import raster
path, size, gsd, runs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
src = raster.open_raster(path)
t_open = time.perf_counter() - t0
xmin, ymin, xmax, ymax = src.bounds
half = size * gsd / 2
rng = np.random.default_rng(0)
centres = [(rng.uniform(xmin + half, xmax - half) if xmax - xmin > 2 * half else (xmin + xmax) / 2,
            rng.uniform(ymin + half, ymax - half) if ymax - ymin > 2 * half else (ymin + ymax) / 2)
           for _ in range(runs + 1)]
rss_open = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
raster.read_window(src, centres[-1], size, gsd)  # warm-up (imports, first GDAL open)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
times = []
for c in centres[:runs]:
    t = time.perf_counter()
    w = raster.read_window(src, c, size, gsd)
    times.append(time.perf_counter() - t)
    assert w.image.shape == (size, size, 3)
peak = tracemalloc.get_traced_memory()[1]
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"open_s": t_open, "median_s": statistics.median(times), "min_s": min(times),
                  "py_peak_mb": peak / 2**20, "rss_delta_mb": (rss1 - rss_open) / 1024,
                  "rss_mb": rss1 / 1024}))
"""


def _profile(width: int, height: int) -> dict:
    from affine import Affine

    return dict(
        driver="GTiff", width=width, height=height, count=1, dtype="uint8", crs=CRS,
        transform=Affine(PIXEL, 0, X0, 0, -PIXEL, Y0), tiled=True, blockxsize=512,
        blockysize=512, compress="ZSTD", zstd_level=1, BIGTIFF="IF_SAFER",
    )


def _pattern(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """A compressible but non-constant uint8 texture."""
    return (((rows[:, None] // 7) * 3 + (cols[None, :] // 5) * 2) % 251).astype(np.uint8)


def make_raster(path: Path, n: int, overviews: bool) -> float:
    """Write an n x n raster strip by strip; returns seconds spent."""
    import rasterio
    import rasterio.errors
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    t = time.perf_counter()
    prof = _profile(n, n)
    try:
        ds = rasterio.open(path, "w", **prof)  # within rasterio.Env(GDAL_CACHEMAX=...) below
    except rasterio.errors.RasterioError:  # ZSTD not built in: fall back to DEFLATE
        prof.pop("zstd_level")
        prof.update(compress="DEFLATE", zlevel=1)
        ds = rasterio.open(path, "w", **prof)
    with ds:
        cols = np.arange(n)
        strip = 1024
        for r0 in range(0, n, strip):
            h = min(strip, n - r0)
            ds.write(_pattern(np.arange(r0, r0 + h), cols)[None], window=Window(0, r0, n, h))
        if overviews:
            ds.build_overviews([2, 4, 8, 16, 32, 64], Resampling.nearest)
    return time.perf_counter() - t


def generate_in_child(path: Path, n: int, overviews: bool) -> dict:
    """Run :func:`make_raster` in a fresh process (GDAL block cache capped at 64 MB) so neither
    its memory nor its cache leaks into the measurements; returns seconds and peak RSS."""
    code = (
        "import json, resource, sys, rasterio\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "from bench_raster_window import make_raster\n"
        "with rasterio.Env(GDAL_CACHEMAX=64 * 2**20):\n"
        f"    s = make_raster(__import__('pathlib').Path({str(path)!r}), {n}, {overviews})\n"
        "print(json.dumps({'s': s, 'rss_mb': resource.getrusage(resource.RUSAGE_SELF)"
        ".ru_maxrss / 1024}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def measure(path: Path, size: int, gsd: float, runs: int) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, str(path), str(size), str(gsd), str(runs)],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="window side, pixels")
    ap.add_argument("--runs", type=int, default=7, help="timed reads per case (median)")
    ap.add_argument("--large", type=int, default=40_000, help="side of the large raster, pixels")
    ap.add_argument("--keep", type=Path, default=None, help="keep the rasters in this folder")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench_raster_"))
    try:
        large, small = tmp / "large.tif", tmp / "small.tif"
        g_large = generate_in_child(large, args.large, overviews=True)
        g_small = generate_in_child(small, 1000, overviews=False)
        print(f"generated {args.large}x{args.large} (tiled, compressed, overviews) in "
              f"{g_large['s']:.1f} s, peak RSS {g_large['rss_mb']:.0f} MB, "
              f"{large.stat().st_size / 2**20:.0f} MB on disk; 1000x1000 in {g_small['s']:.2f} s")
        cases = [
            (f"{args.large}^2, native {PIXEL} m", large, PIXEL),
            ("1000^2, native", small, PIXEL),
            (f"{args.large}^2, 8x down ({8 * PIXEL} m)", large, 8 * PIXEL),
        ]
        rows = []
        for name, path, gsd in cases:
            r = measure(path, args.size, gsd, args.runs)
            rows.append((name, r))
        print(f"\nread_window({args.size}x{args.size}), median of {args.runs} reads at distinct "
              "centres, each case in a fresh process")
        print(f"{'case':<28} {'open_raster s':>13} {'median ms':>10} {'min ms':>8} "
              f"{'py peak MB':>10} {'RSS +MB':>8} {'RSS MB':>7}")
        for name, r in rows:
            print(f"{name:<28} {r['open_s']:>13.3f} {r['median_s'] * 1e3:>10.1f} "
                  f"{r['min_s'] * 1e3:>8.1f} {r['py_peak_mb']:>10.1f} {r['rss_delta_mb']:>8.1f} "
                  f"{r['rss_mb']:>7.0f}")
        a, b = rows[0][1], rows[1][1]
        print(f"\nlarge/small ratio (native): time {a['median_s'] / b['median_s']:.2f}x, "
              f"python peak {a['py_peak_mb'] / max(b['py_peak_mb'], 1e-9):.2f}x, raster pixels "
              f"{args.large**2 / 1e6:.0f}x")
        print(f"median of medians: {statistics.median([r['median_s'] for _, r in rows]) * 1e3:.1f}"
              " ms")
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for p in (large, small):
                shutil.copy2(p, args.keep / p.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
