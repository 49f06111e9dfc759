"""Batch localization on Dask: throughput with 1 and 2 workers, peak memory per worker for a
small and a large batch, and the time to resume a finished batch.

Data: synthetic surveys made of copies of the demo photos (``sample_tiles/demo/``, each copy a
new file name) with their clicks from ``sample_tiles/demo.json`` (2 to 4 clicks per photo),
localized on the demo raster with the shipped model.

Figures, all measured in this process:

1. Throughput: ``--photos`` photos (default 200, default test-time augmentation) with 1, then
   2 local workers; photos/s over the whole :func:`geomogeo.batch.run_batch` call (installing
   the model on the workers included), the cluster already started and its workers' imports
   done (the start is printed apart), and the ratio 2 / 1 workers.
2. Memory: peak resident memory (``ru_maxrss``) of each worker process after ``--photos`` and
   after ``--big`` photos (default 2,000), each on a fresh 2-worker cluster with ``--tta none``;
   ratio big / small of the largest worker.
3. Resume: the first 2-worker run's batch run again (every photo skipped), median of
   ``--repeats`` calls, as a fraction of the first run; and once through the CLI in a new
   process (imports included).

Usage::

    python benchmarks/bench_batch.py                 # about 10 minutes on 2 idle cores
    python benchmarks/bench_batch.py --photos 40 --big 200 --tta none   # a quick look
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from geomogeo.batch import local_cluster, run_batch
from geomogeo.localize import Localizer

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_tiles"


def make_survey(folder: Path, n_photos: int) -> Path:
    """``n_photos`` copies of the demo photos in ``folder/photos`` and ``folder/clicks.csv``."""
    demo = json.loads((SAMPLES / "demo.json").read_text())
    (folder / "photos").mkdir(parents=True)
    data = {item["photo"]: (SAMPLES / item["photo"]).read_bytes() for item in demo["photos"]}
    rows = []
    for i in range(n_photos):
        item = demo["photos"][i % len(demo["photos"])]
        name = f"photos/{i:05d}_{Path(item['photo']).name}"
        (folder / name).write_bytes(data[item["photo"]])
        rows += [[name, x, y] for x, y in item["clicks"]]
    table = folder / "clicks.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["photo", "x", "y"])
        w.writerows(rows)
    return table


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _warm_up() -> None:
    """Import what a task needs, so a timed run starts with warm worker processes."""
    import geomogeo.batch
    import geomogeo.nn.predictor  # noqa: F401  (torch and the network)


def run_on_cluster(table: Path, raster: Path, out: Path, loc: Localizer,
                   workers: int) -> dict[str, Any]:
    """One batch on a fresh local cluster: start time, run time, photos/s, peak RSS per
    worker."""
    from distributed import Client

    t0 = time.perf_counter()
    with local_cluster(workers) as cluster, Client(cluster) as client:
        client.run(_warm_up)
        start_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        summary = run_batch(table, raster, out, localizer=loc,
                            scheduler=cluster.scheduler_address, quiet=True)
        run_s = time.perf_counter() - t1
        rss = sorted(client.run(_peak_rss_mb).values())
    assert summary.failed == 0 and summary.succeeded == summary.photos, summary
    return {"start_s": start_s, "run_s": run_s, "photos": summary.succeeded,
            "rate": summary.succeeded / run_s, "rss_mb": rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--big", type=int, default=2000)
    ap.add_argument("--tta", default=None, help="TTA of the throughput runs (default: the "
                    "model's default); the memory runs use 'none'")
    ap.add_argument("--repeats", type=int, default=5, help="resume runs (median)")
    args = ap.parse_args()
    spec = json.loads((SAMPLES / "demo.json").read_text())
    raster = SAMPLES / spec["raster"]
    clicks = sum(len(p["clicks"]) for p in spec["photos"]) / len(spec["photos"])
    loc = Localizer.load(tta=args.tta) if args.tta else Localizer.load()
    fast = Localizer.load(tta="none")
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        root = Path(tmp)
        small = make_survey(root / "small", args.photos)
        big = make_survey(root / "big", args.big)

        thr = {w: run_on_cluster(small, raster, root / f"thr{w}.gpkg", loc, w) for w in (1, 2)}
        first = thr[2]["run_s"]
        resume = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            s = run_batch(small, raster, root / "thr2.gpkg", localizer=loc, workers=2,
                          quiet=True)
            resume.append(time.perf_counter() - t)
            assert s.skipped == args.photos and s.targets == 0, s
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "geomogeo.cli", "-q", "batch", str(small),
                        str(raster), "-o", str(root / "thr2.gpkg")], check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
        resume_cli = time.perf_counter() - t

        mem_small = run_on_cluster(small, raster, root / "mem_small.gpkg", fast, 2)
        mem_big = run_on_cluster(big, raster, root / "mem_big.gpkg", fast, 2)

    cores = len(os.sched_getaffinity(0))
    tta = str(loc.predictor.tta) if hasattr(loc.predictor, "tta") else "?"
    print(f"Batch localization, demo raster, copies of the 4 demo photos ({clicks:.2f} "
          f"clicks/photo), {cores} CPU cores, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"1. throughput, {args.photos} photos, tta {tta} (cluster start and worker imports "
          "apart):")
    for w, r in thr.items():
        print(f"   {w} worker(s): {r['rate']:.2f} photos/s ({r['run_s']:.1f} s; cluster start "
              f"{r['start_s']:.1f} s)")
    print(f"   ratio 2 / 1 workers: {thr[2]['rate'] / thr[1]['rate']:.2f}x (goal >= 1.7x)")
    print("2. peak RSS per worker, tta none, 2 workers:")
    print(f"   {args.photos} photos: {', '.join(f'{v:.0f}' for v in mem_small['rss_mb'])} MB "
          f"({mem_small['rate']:.2f} photos/s)")
    print(f"   {args.big} photos: {', '.join(f'{v:.0f}' for v in mem_big['rss_mb'])} MB "
          f"({mem_big['rate']:.2f} photos/s)")
    print(f"   ratio largest worker {args.big} / {args.photos}: "
          f"{max(mem_big['rss_mb']) / max(mem_small['rss_mb']):.3f} (goal within 10%)")
    med = statistics.median(resume)
    print(f"3. resume the finished {args.photos}-photo batch: median {med:.3f} s of "
          f"{args.repeats} = {100 * med / first:.2f}% of the first 2-worker run ({first:.1f} s; "
          f"goal < 5%); through the CLI in a new process: {resume_cli:.2f} s = "
          f"{100 * resume_cli / first:.1f}%")


if __name__ == "__main__":
    main()
