"""Known building footprints of real tiles, as target structures of the data engine.

A footprints file is a GeoJSON FeatureCollection (RFC 7946: WGS84 lon/lat, EPSG:4326) of
``Polygon`` features (exterior ring only, a simple polygon, convex or not) with the properties
``id`` (integer) and ``height_m`` (roof height above the ground, metres, > 0). The file of a
tile is ``geomogeo/data/footprints/<tile file stem>.geojson`` (see the README there for how the
Las Vegas outlines were made). With ``SynthConfig.prisms`` a scene that keeps its tile's
georeference uses them as its buildings (:func:`footprint_structures`), instead of extruding
bright blobs.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geomogeo.data.synth.scene import Scene
from geomogeo.data.synth.structures import Structures, signed_area
from geomogeo.errors import ConfigError

__all__ = ["FOOTPRINTS_DIR", "SAME_GROUND", "Footprints", "footprint_structures",
           "footprints_path", "load_footprints"]

log = logging.getLogger(__name__)

#: Folder of the shipped footprints files, one per tile file stem.
FOOTPRINTS_DIR = Path(__file__).resolve().parents[1] / "footprints"

#: Tiles that show the same ground as a tile with a footprints file, by file stem: the
#: Rotterdam 1 m multispectral tiles and their 0.5 m panchromatic twins (same CRS, bounds
#: equal to 2 cm), which share one set of outlines.
SAME_GROUND: dict[str, str] = {f"rotterdam_rgbn_1m_{k}": f"rotterdam_pan_0p5m_{k}"
                               for k in "abc"}


@dataclass(frozen=True)
class Footprints:
    """Building footprints in one map CRS.

    Attributes:
        ids: (n,) int64 feature ids.
        polygons: n simple polygons (k_i, 2), map coordinates of ``crs`` (metres for a
            projected CRS), counter-clockwise, not closed (last vertex != first).
        heights: (n,) roof heights above the ground, metres.
        crs: the map CRS (WKT or ``EPSG:n``).
    """

    ids: np.ndarray
    polygons: tuple[np.ndarray, ...]
    heights: np.ndarray
    crs: str

    def __len__(self) -> int:
        return len(self.ids)

    def areas(self) -> np.ndarray:
        """(n,) polygon areas, square map units (m^2 in a metric CRS)."""
        return np.array([signed_area(p) for p in self.polygons]).reshape(-1)


def footprints_path(name: str, directory: str | os.PathLike[str] | None = None) -> Path | None:
    """The footprints file of the tile whose file stem is ``name`` (a :class:`Scene`'s name) in
    ``directory`` (default :data:`FOOTPRINTS_DIR`), or that of the tile it shares its ground
    with (:data:`SAME_GROUND`); None when there is none."""
    folder = Path(directory if directory is not None else FOOTPRINTS_DIR)
    for stem in (name, SAME_GROUND.get(name)):
        if stem is not None and (folder / f"{stem}.geojson").is_file():
            return folder / f"{stem}.geojson"
    return None


def load_footprints(path: str | os.PathLike[str], crs: str) -> Footprints:
    """Read a footprints GeoJSON (lon/lat degrees, EPSG:4326) into the map CRS ``crs``.

    Vertices are transformed one by one with pyproj (:func:`geomogeo.geo.georef.to_crs`);
    edges are not densified (over a building's few tens of metres the curvature of a
    lon/lat edge in a UTM zone is far below a millimetre). Rings are made counter-clockwise
    in ``crs``.

    Raises:
        ConfigError: the file is not a FeatureCollection of Polygons with an integer ``id`` and
            a finite ``height_m`` > 0, or a polygon has holes or fewer than 3 vertices; the
            message names the file and the feature.
    """
    from geomogeo.geo import georef  # the GIS layer is needed only here

    path = Path(path)
    try:
        fc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the footprints GeoJSON ({e})") from None
    if not isinstance(fc, dict) or fc.get("type") != "FeatureCollection" or \
            not isinstance(fc.get("features"), list):
        raise ConfigError(f"{path}: expected a GeoJSON FeatureCollection")
    ids, polys, heights = [], [], []
    for k, feat in enumerate(fc["features"]):
        props, geom = (feat or {}).get("properties") or {}, (feat or {}).get("geometry") or {}
        fid, h = props.get("id"), props.get("height_m")
        if not isinstance(fid, int) or isinstance(fid, bool):
            raise ConfigError(f"{path}: feature {k} has no integer 'id'")
        if not isinstance(h, (int, float)) or not math.isfinite(h) or h <= 0:
            raise ConfigError(f"{path}: feature id {fid}: 'height_m' must be a number > 0, "
                              f"got {h!r}")
        rings = geom.get("coordinates") if geom.get("type") == "Polygon" else None
        if not rings or len(rings) != 1:
            raise ConfigError(f"{path}: feature id {fid}: expected a Polygon without holes")
        ring = np.asarray(rings[0], dtype=np.float64)
        if ring.ndim != 2 or ring.shape[1] != 2 or not np.isfinite(ring).all():
            raise ConfigError(f"{path}: feature id {fid}: malformed coordinates")
        if len(ring) > 1 and (ring[0] == ring[-1]).all():
            ring = ring[:-1]
        if len(ring) < 3:
            raise ConfigError(f"{path}: feature id {fid}: fewer than 3 vertices")
        x, y = georef.to_crs(ring[:, 0], ring[:, 1], "EPSG:4326", crs)
        poly = np.column_stack([x, y])
        if signed_area(poly) < 0:
            poly = poly[::-1].copy()
        ids.append(fid)
        polys.append(poly)
        heights.append(float(h))
    log.debug("%s: %d footprints", path, len(ids))
    return Footprints(np.asarray(ids, np.int64), tuple(polys), np.asarray(heights), crs)


def footprint_structures(scene: Scene, min_area_m2: float = 0.0,
                         directory: str | os.PathLike[str] | None = None) -> Structures | None:
    """The buildings of a scene that keeps its tile's georeference, from the tile's footprints
    file (:func:`footprints_path` of ``scene.name``), in the scene's map CRS (metres): the
    footprints of at least ``min_area_m2`` square metres, as ``building`` structures clicked at
    a roof point (:meth:`~.structures.Structures.from_polygons`). None for a virtual scene
    (no CRS: a rotated or mirrored training copy) or a tile without a footprints file."""
    if scene.crs is None:
        return None
    path = footprints_path(scene.name, directory)
    if path is None:
        return None
    fp = load_footprints(path, scene.crs)
    keep = fp.areas() >= min_area_m2
    log.info("%s: %d of %d footprints of >= %g m^2 as buildings", scene.name, int(keep.sum()),
             len(fp), min_area_m2)
    return Structures.from_polygons([p for p, k in zip(fp.polygons, keep, strict=True) if k],
                                    fp.heights[keep], "building")

