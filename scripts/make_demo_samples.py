"""Render the demo's sample photos from the Las Vegas tile (``sample_tiles/demo/``).

Each photo is a synthetic drone view of ``las_vegas_pan_0p3m_wgs84.tif`` (EPSG:4326), the test
tile of the held-out-city split (``--holdout las_vegas``: a model trained on that split never
sees it in training or model selection; a model trained on the default split, as
``mogeo-light-v2`` was, has seen its imagery in flat renders with blob targets), rendered by the
data engine with its parallax configuration (``SynthConfig.parallax``: building prisms with
walls, roofs displaced by their height, occlusion). The world is built exactly as ``geomogeo
synth --parallax --holdout las_vegas --split test`` builds it
(:func:`~geomogeo.data.synth.engine.load_default_scenes` and
:func:`~geomogeo.data.synth.engine.build_worlds`): the scene is the tile resampled to 0.5 m in
its local UTM zone (EPSG:32611) and its buildings are the hand-digitized footprints of
``geomogeo/data/footprints/`` (of >= 150 m^2). Only those buildings are targets (kind weights
``building`` 1, every other kind 0), 2 to 4 per photo, each clicked where the engine clicks it:
on its visible roof (the roof centroid, or the pole of inaccessibility of an L-shaped one,
projected into the photo, plus a 1 px click jitter), and only when that roof is visible.

EXIF: GPS as a drone records it, the engine's *measured* position (the true camera position
plus a GPS error of 3 m per axis), and GPSAltitude (the camera's height above the ground: the
scene is flat, with no terrain elevation); **no heading** (no GPSImgDirection). The JPEG bytes
are the engine's own, with the EXIF segment inserted (not re-encoded).

``sample_tiles/demo.json`` lists per photo its clicks, per target the answer (the footprint's
envelope, see below), the footprint polygon and its id, and the camera facts (altitude, pitch,
field of view, true yaw, GPS error). The answer is what the user gets back: the network boxes
a target axis-aligned in the reference window's pixel grid, which for this EPSG:4326 raster is
north-up in the local UTM zone (:func:`geomogeo.geo.raster.read_window`), and ``Localizer``
returns that box's corners reprojected (edges densified) to the raster CRS. So the answer is
the footprint's envelope in EPSG:32611 (the data engine's target box, in the same frame) with
its four corners reprojected to EPSG:4326 (over a few tens of metres the lon/lat image of a
UTM edge is straight to far below a millimetre): a box slightly rotated in lon/lat (the grid
convergence, about 1 degree here), whose IoU with a prediction equals, to ~1e-6, the IoU of the
two boxes in the window's metric frame.

Choice of photos, made a priori (before any model was run on them): seed 2026, and the photos
``i = 0, 1, 2, ...`` of random stream ``(seed, i)`` in order, skipping an index only when no
camera placement in the engine's tries shows >= 2 footprint targets; the first 4 are kept.
The photos were never chosen or re-rolled by looking at the model's results.

Deterministic: ``python scripts/make_demo_samples.py`` rewrites the same files.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import rasterio
from shapely.geometry import box

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geomogeo.data.synth.engine import (  # noqa: E402
    Sample,
    SynthConfig,
    World,
    _with_exif,  # the engine's own EXIF insertion (no re-encoding)
    build_worlds,
    gps_exif,
    load_default_scenes,
    render_sample,
)
from geomogeo.data.synth.footprints import footprints_path, load_footprints  # noqa: E402
from geomogeo.geo import georef  # noqa: E402

HOLDOUT = "las_vegas"
SEED = 2026
N_PHOTOS = 4


def _closed(coords: np.ndarray) -> list[list[float]]:
    """A ring's vertices (k, 2) as a closed list (last vertex = first)."""
    ring = [[float(x), float(y)] for x, y in coords]
    return ring if ring[0] == ring[-1] else [*ring, ring[0]]


def _targets(world: World, s: Sample) -> list[int]:
    """Indexes into ``world.structures`` of the sample's targets (their click points are the
    structures' points, exactly)."""
    pts = world.structures.points
    idx = [int(np.flatnonzero((pts == g).all(axis=1))[0]) for g in s.ground]
    assert all(world.structures.kinds[i] == 1 for i in idx), "a target is not a building"
    return idx


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "sample_tiles")
    args = p.parse_args()
    cfg = SynthConfig.parallax(kinds=(("building", 1.0),), targets=(2, 4),
                               no_heading_fraction=1.0, exif_gps=False)
    (scene,) = load_default_scenes(args.out, cfg, HOLDOUT)["test"]
    (world,) = build_worlds([scene], cfg, augment=False)
    tile = f"{scene.name}.tif"
    with rasterio.open(args.out / tile) as ds:
        raster_crs = ds.crs
    # Footprints by id, in the scene's metric CRS (to find a target's id) and in the raster's.
    fp_path = footprints_path(scene.name)
    assert fp_path is not None, f"no footprints file for {scene.name}"
    fp_metric = load_footprints(fp_path, scene.crs)
    fp_raster = load_footprints(fp_path, raster_crs.to_string())

    (args.out / "demo").mkdir(parents=True, exist_ok=True)
    photos: list[dict] = []
    for i in itertools.count():
        if len(photos) == N_PHOTOS:
            break
        try:
            s = render_sample(world, np.random.default_rng([SEED, i]), cfg, f"demo-{i}")
        except RuntimeError:  # no placement with >= 2 footprint targets: the next index
            continue
        cam = s.camera
        lon, lat = georef.to_lonlat(s.measured_xy[0], s.measured_xy[1], scene.crs)
        # The localizer reads this raster's windows in the local metric CRS of the position.
        assert georef.local_metric_crs(lon, lat).equals(georef.as_crs(scene.crs))
        rel = f"demo/photo_{len(photos) + 1}.jpg"
        exif = gps_exif(float(lon), float(lat), None, altitude=cam.altitude)
        (args.out / rel).write_bytes(_with_exif(s.jpeg, exif))
        ids, answers, footprints, heights = [], [], [], []
        for j in _targets(world, s):
            poly = world.structures.footprints[j]
            (k,) = [k for k, q in enumerate(fp_metric.polygons)
                    if q.shape == poly.shape and (q == poly).all()]
            env = box(*world.structures.boxes[j])  # the engine's target box, metres
            (ans,) = georef.reproject_geometries([env], scene.crs, raster_crs, densify_pts=0)
            ids.append(int(fp_metric.ids[k]))
            heights.append(float(fp_metric.heights[k]))
            answers.append(_closed(np.asarray(ans.exterior.coords)))
            footprints.append(_closed(fp_raster.polygons[k]))
        photos.append({
            "photo": rel,
            "clicks": [[round(float(x), 3), round(float(y), 3)] for x, y in s.clicks],
            "answers": answers,
            "footprints": footprints,
            "footprint_ids": ids,
            "heights_m": heights,
            "camera": {"altitude_m": round(cam.altitude, 2),
                       "pitch_deg": round(cam.pitch, 2),
                       "hfov_deg": round(cam.hfov, 2),
                       "true_yaw_deg": round(cam.yaw, 2),
                       "gps_error_m": round(math.hypot(s.measured_xy[0] - cam.x,
                                                       s.measured_xy[1] - cam.y), 2)},
            "stream": [SEED, i],
        })
    spec = {
        "raster": tile,
        "note": "synthetic drone views of the Las Vegas tile (the test tile of the "
                "held-out-city split, --holdout las_vegas; the default split trains on it), "
                "made by scripts/make_demo_samples.py with the data engine's parallax "
                "rendering (building prisms with walls, roof displacement, occlusion); EXIF "
                "has GPS (measured position, 3 m error per axis) and altitude (above the "
                "ground), no heading. Targets are the hand-digitized building footprints of "
                "geomogeo/data/footprints/ (CC BY-SA 4.0, derived from SpaceNet imagery), "
                "clicked on their visible roofs. 'footprints' are those polygons and 'answers' "
                "their envelopes, both in the raster CRS (EPSG:4326, lon/lat degrees): an "
                "answer is the footprint's axis-aligned envelope in the local UTM zone "
                "(EPSG:32611, where the model's windows are read and its boxes are "
                "axis-aligned), its corners reprojected to lon/lat, so it is slightly rotated "
                "in degrees",
        "photos": photos,
    }
    (args.out / "demo.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    print(f"wrote {len(photos)} photos (stream indexes {[p['stream'][1] for p in photos]}), "
          f"{sum(len(p['clicks']) for p in photos)} targets")


if __name__ == "__main__":
    main()
