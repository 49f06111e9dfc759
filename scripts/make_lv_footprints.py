"""Write the hand-digitized building footprints of the Las Vegas sample tile as GeoJSON.

The outlines below were digitized by eye by the geomogeo project on the panchromatic tile
``las_vegas_pan_0p3m_wgs84.tif`` (SpaceNet imagery, CC BY-SA 4.0): contrast-stretched crops at
full resolution (3-6x enlarged, with a pixel grid every 5/10/25/50 px) were read one building
at a time, and the outlines drawn back over the image and corrected where they missed the roof
(see ``geomogeo/data/footprints/README.md``). Vertices are raster pixel EDGES (column, row;
(0, 0) is the top-left corner of the top-left pixel), each outline a simple polygon (roof
outline as seen from above: eaves included, shadows and patios excluded); they are converted
with the raster's affine transform to WGS84 lon/lat (the raster's own CRS, EPSG:4326).

The tiles give no heights: each building gets a roof height drawn uniformly in 3.5-8 m
(rounded to 0.1 m) from a fixed seed, stated in every feature's ``height_source``.

    python scripts/make_lv_footprints.py RASTER [--out GEOJSON] [--overlay PNG]
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

#: (label used while digitizing, "col,row col,row ..." pixel-edge vertices); labels with a
#: letter are a second structure on the same lot.
PIXEL_POLYGONS: tuple[tuple[str, str], ...] = (
    ("1", "56,110 135,110 135,180 125,180 125,210 58,210"),
    ("2", "253,100 325,100 325,198 270,198 270,170 253,170"),
    ("3", "94,242 127,267 146,271 181,294 129,318 109,343 40,300"),
    ("4", "211,294 229,271 250,274 266,261 284,249 344,289 290,344 262,318 236,318"),
    ("5", "453,100 514,100 514,135 453,135"),
    ("6", "467,203 530,203 530,272 510,272 510,295 467,295"),
    ("7", "610,92 700,92 700,140 610,140"),
    ("8", "622,143 647,143 647,160 622,160"),
    ("9", "607,193 693,193 693,228 667,228 667,318 607,318"),
    ("12", "1175,121 1206,121 1206,145 1175,145"),
    ("14", "1242,202 1267,202 1267,220 1242,220"),
    ("15", "865,391 970,391 970,492 865,492"),
    ("15b", "972,399 1021,399 1021,447 972,447"),
    ("16", "72,417 170,417 170,447 145,447 145,486 72,486"),
    ("17", "215,460 231,438 221,422 240,403 270,432 302,472 264,510"),
    ("18", "48,583 155,583 155,607 122,607 122,650 48,650"),
    ("20", "200,600 229,600 229,650 200,650"),
    ("22", "246,579 277,568 296,600 300,638 288,641 250,600"),
    ("24", "73,763 175,763 175,797 120,797 120,834 168,834 168,885 70,885"),
    ("24b", "148,803 177,803 177,833 148,833"),
    ("25", "197,761 232,761 232,803 197,803"),
    ("26", "202,808 228,808 228,827 202,827"),
    ("27", "275,818 308,818 308,805 339,805 339,856 345,856 345,905 296,905 296,866 275,866"),
    ("28", "173,405 190,405 190,435 173,435"),
    ("29", "462,506 502,506 502,566 462,566"),
    ("30", "540,800 564,800 564,792 684,792 684,830 700,830 700,882 662,882 662,857 571,857 "
           "571,870 540,870"),
    ("31", "864,768 1030,768 1030,797 972,797 972,820 900,820 900,840 864,840"),
    ("32", "1091,462 1112,462 1112,490 1091,490"),
    ("33", "1060,795 1150,795 1150,876 1060,876"),
    ("34", "74,924 129,924 129,975 103,975 103,999 70,999 70,970 74,970"),
    ("34b", "116,983 142,983 142,999 116,999"),
    ("35", "265,915 302,915 302,982 265,982"),
    ("36", "69,1026 141,1026 141,1087 130,1087 130,1105 100,1105 100,1120 67,1120 67,1093 "
           "52,1093 52,1054 69,1054"),
    ("37", "161,1037 198,1037 198,1066 161,1066"),
    ("38", "201,1050 221,1050 221,1117 201,1117"),
    ("39", "90,1155 135,1155 135,1207 174,1207 174,1242 67,1242 67,1207 90,1207"),
    ("40", "214,1151 229,1151 229,1196 214,1196"),
    ("43", "386,850 469,850 469,946 386,946"),
    ("43b", "409,978 469,978 469,996 409,996"),
    ("45", "570,957 658,957 658,1048 595,1048 595,982 570,982"),
    ("46", "560,1052 623,1052 623,1088 560,1088"),
    ("47", "603,1100 668,1100 668,1208 575,1208 575,1153 603,1153"),
    ("48", "475,1130 518,1130 518,1170 525,1170 525,1227 451,1227 451,1199 460,1199 460,1170 "
           "475,1170"),
    ("52", "862,860 926,860 926,920 896,920 896,937 862,937"),
    ("53", "862,951 946,951 946,1047 885,1047 885,1000 862,1000"),
    ("55", "1067,932 1109,932 1109,990 1067,990"),
    ("56", "1232,953 1280,953 1280,1025 1232,1025"),
    ("57", "991,1092 1040,1096 1090,1092 1127,1130 1068,1174 1049,1150 1050,1128 991,1128"),
    ("58", "872,1157 922,1112 960,1146 915,1185"),
    ("59", "1173,1107 1195,1107 1195,1145 1173,1145"),
    ("60", "1257,1107 1280,1107 1280,1130 1270,1130 1270,1148 1235,1148 1235,1125 1257,1125"),
    ("61", "1231,1201 1277,1201 1277,1230 1254,1230 1254,1221 1231,1221"),
    ("65", "1151,817 1170,817 1170,845 1151,845"),
)

#: Seed and range of the roof heights (the image gives none; see the module docstring).
HEIGHT_SEED = 2026
HEIGHT_RANGE_M = (3.5, 8.0)
OUT = (Path(__file__).resolve().parents[1]
       / "geomogeo/data/footprints/las_vegas_pan_0p3m_wgs84.geojson")


def pixel_polygons() -> list[tuple[str, np.ndarray]]:
    """The outlines as (label, (k, 2) float64 pixel-edge (col, row) vertices)."""
    return [(label, np.array([[float(v) for v in p.split(",")] for p in pts.split()]))
            for label, pts in PIXEL_POLYGONS]


def feature_collection(raster: Path) -> dict:
    """The GeoJSON FeatureCollection (RFC 7946: lon/lat, counter-clockwise exterior rings)."""
    with rasterio.open(raster) as src:
        if src.crs is None or src.crs.to_epsg() != 4326:
            raise SystemExit(f"{raster}: expected the EPSG:4326 Las Vegas tile, got {src.crs}")
        t = src.transform
    heights = np.round(np.random.default_rng(HEIGHT_SEED).uniform(
        *HEIGHT_RANGE_M, len(PIXEL_POLYGONS)), 1)
    feats = []
    for i, ((label, px), h) in enumerate(zip(pixel_polygons(), heights, strict=True), start=1):
        lon, lat = georef.pixel_to_map(t, px[:, 0], px[:, 1])  # pixel edges -> lon/lat
        poly = orient(Polygon(np.column_stack([lon, lat])), 1.0)
        if not poly.is_valid:
            raise SystemExit(f"footprint {label}: invalid polygon")
        ring = [[round(x, 7), round(y, 7)] for x, y in poly.exterior.coords]
        feats.append({
            "type": "Feature",
            "properties": {"id": i, "kind": "building", "height_m": float(h),
                           "height_source": f"random uniform {HEIGHT_RANGE_M[0]}-"
                                            f"{HEIGHT_RANGE_M[1]} m, seed {HEIGHT_SEED}",
                           "label": label},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        })
    return {"type": "FeatureCollection", "name": raster.stem, "features": feats}


def overlay(raster: Path, out: Path) -> None:
    """The outlines drawn over the contrast-stretched tile (2x), for checking by eye."""
    with rasterio.open(raster) as src:
        a = src.read(1).astype(np.float32)
    lo, hi = np.percentile(a[a > 0], [1, 99.5])
    img = Image.fromarray((np.clip((a - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8))
    img = img.convert("RGB").resize((a.shape[1] * 2, a.shape[0] * 2), Image.BICUBIC)
    d = ImageDraw.Draw(img)
    for label, px in pixel_polygons():
        q = [(2 * c, 2 * r) for c, r in px]
        d.line([*q, q[0]], fill=(0, 255, 0), width=1)
        d.text(tuple(np.mean(q, axis=0) - 5), label, fill=(255, 0, 255))
    img.save(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raster", type=Path)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--overlay", type=Path, default=None)
    args = ap.parse_args()
    fc = feature_collection(args.raster)
    feats = ",\n".join(json.dumps(f) for f in fc["features"])
    head = json.dumps({k: v for k, v in fc.items() if k != "features"})[:-1]
    args.out.write_text(f'{head}, "features": [\n{feats}\n]}}\n', encoding="utf-8")
    print(f"wrote {args.out}: {len(fc['features'])} footprints")
    if args.overlay:
        overlay(args.raster, args.overlay)


if __name__ == "__main__":
    main()
