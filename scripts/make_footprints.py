"""Write a sample tile's hand-digitized building footprints as GeoJSON (RFC 7946, lon/lat).

The outlines were digitized by eye by the geomogeo project (no footprint data set is available
offline): contrast-stretched crops of the tile at full resolution, enlarged 3-6x with a
labelled pixel grid, were read one building at a time, and the outlines drawn back over the
image and corrected where they missed the roof (see ``geomogeo/data/footprints/README.md``).

The vertices live in ``scripts/footprints/<tile stem>.tsv``: ``#`` comment lines, one line
``# heights: LOW HIGH SEED``, then one building per line, ``label<TAB>col,row col,row ...``:
raster pixel EDGES ((0, 0) is the top-left corner of the top-left pixel), a simple polygon
(the roof outline as seen from above). They are converted with the raster's affine transform
to its map CRS and from there to WGS84 lon/lat (EPSG:4326).

The tiles give no heights: each building gets a roof height drawn uniformly in LOW-HIGH m
(rounded to 0.1 m) from SEED, stated in every feature's ``height_source``.

    python scripts/make_footprints.py RASTER [--out GEOJSON] [--overlay PNG]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient

from geomogeo.geo import georef

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "scripts" / "footprints"
OUT_DIR = ROOT / "geomogeo" / "data" / "footprints"


def read_source(path: Path) -> tuple[list[tuple[str, np.ndarray]], tuple[float, float, int]]:
    """The outlines of a ``.tsv`` source as (label, (k, 2) float64 pixel-edge (col, row)
    vertices), and its height rule (low m, high m, seed)."""
    outlines, heights = [], None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("# heights:"):
            lo, hi, seed = line.split(":", 1)[1].split()
            heights = (float(lo), float(hi), int(seed))
        elif line.strip() and not line.startswith("#"):
            label, pts = line.split("\t")
            px = np.array([[float(v) for v in p.split(",")] for p in pts.split()])
            if px.ndim != 2 or px.shape[1] != 2 or len(px) < 3:
                raise SystemExit(f"{path}:{n}: footprint {label}: expected >= 3 col,row pairs")
            outlines.append((label, px))
    if heights is None:
        raise SystemExit(f"{path}: no '# heights: LOW HIGH SEED' line")
    return outlines, heights


def feature_collection(raster: Path, source: Path) -> dict:
    """The GeoJSON FeatureCollection (RFC 7946: lon/lat, counter-clockwise exterior rings)."""
    outlines, (lo, hi, seed) = read_source(source)
    with rasterio.open(raster) as src:
        if src.crs is None:
            raise SystemExit(f"{raster}: the raster has no CRS")
        t, crs, bounds = src.transform, src.crs.to_wkt(), (src.width, src.height)
    heights = np.round(np.random.default_rng(seed).uniform(lo, hi, len(outlines)), 1)
    feats = []
    for i, ((label, px), h) in enumerate(zip(outlines, heights, strict=True), start=1):
        if (px < 0).any() or (px > np.array(bounds)).any():
            raise SystemExit(f"{source}: footprint {label} leaves the {bounds} px raster")
        x, y = georef.pixel_to_map(t, px[:, 0], px[:, 1])  # pixel edges -> map CRS
        lon, lat = georef.to_crs(x, y, crs, "EPSG:4326")
        poly = orient(Polygon(np.column_stack([lon, lat])), 1.0)
        if not poly.is_valid:
            raise SystemExit(f"{source}: footprint {label}: invalid polygon")
        ring = [[round(x, 7), round(y, 7)] for x, y in poly.exterior.coords]
        feats.append({
            "type": "Feature",
            "properties": {"id": i, "kind": "building", "height_m": float(h),
                           "height_source": f"random uniform {lo}-{hi} m, seed {seed}",
                           "label": label},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        })
    return {"type": "FeatureCollection", "name": raster.stem, "features": feats}


def overlay(raster: Path, source: Path, out: Path) -> None:
    """The outlines drawn over the contrast-stretched tile (first band, 2x), for checking by
    eye."""
    with rasterio.open(raster) as src:
        a = src.read(1).astype(np.float32)
    lo, hi = np.percentile(a[a > 0], [1, 99.5])
    img = Image.fromarray((np.clip((a - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8))
    img = img.convert("RGB").resize((a.shape[1] * 2, a.shape[0] * 2), Image.BICUBIC)
    d = ImageDraw.Draw(img)
    for label, px in read_source(source)[0]:
        q = [(2 * c, 2 * r) for c, r in px]
        d.line([*q, q[0]], fill=(0, 255, 0), width=1)
        d.text(tuple(np.mean(q, axis=0) - 5), label, fill=(255, 0, 255))
    img.save(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raster", type=Path)
    ap.add_argument("--source", type=Path, help="vertex table (default: "
                    "scripts/footprints/<raster stem>.tsv)")
    ap.add_argument("--out", type=Path, help="GeoJSON to write (default: "
                    "geomogeo/data/footprints/<raster stem>.geojson)")
    ap.add_argument("--overlay", type=Path, default=None)
    args = ap.parse_args()
    source = args.source or SOURCES / f"{args.raster.stem}.tsv"
    out = args.out or OUT_DIR / f"{args.raster.stem}.geojson"
    fc = feature_collection(args.raster, source)
    feats = ",\n".join(json.dumps(f) for f in fc["features"])
    head = json.dumps({k: v for k, v in fc.items() if k != "features"})[:-1]
    out.write_text(f'{head}, "features": [\n{feats}\n]}}\n', encoding="utf-8")
    print(f"wrote {out}: {len(fc['features'])} footprints")
    if args.overlay:
        overlay(args.raster, source, args.overlay)


if __name__ == "__main__":
    main()
