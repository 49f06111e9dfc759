"""The cross-view data engine: drone photos, reference windows and targets from real tiles.

One sample: a camera is placed above a random point of a scene (pose drawn from
:class:`~.camera.CameraRanges`), the photo is rendered through the exact ground homography
and degraded (:class:`~.render.PhotoEffects`); the reference window is read north-up at the
model's GSD around the camera's *measured* position (true position plus a GPS error of
``gps_sigma_m`` metres per axis); 1 to 8 objects of the scene (:func:`~.scene.find_objects`)
that lie inside the reference window and wholly inside the photo become the targets: their
box in reference pixels and their centroid projected into the photo (plus a click jitter).
The camera heading is recorded with a compass error, as a drone's EXIF would have it.

With ``SynthConfig.prisms`` (on in :meth:`SynthConfig.parallax`) the targets are
:class:`~.structures.Structures` of several kinds: buildings extruded as prisms (procedural
footprints with heights, a real tile's known footprints where it has a footprints file, else
its compact bright blobs), flat road pieces of the procedural towns, bridge decks (slabs over a
river or a lower road, in procedural towns when the ``bridge`` kind has a weight, see
:func:`~.procedural.bridged_town`), and flat blobs. The photo shows walls, occlusion and roof
displacement (:func:`~.render.render_view`); a target's box is its footprint's envelope in the
reference; its click is the projection of its roof (deck) centroid (for an L-shaped known
footprint, its pole of inaccessibility), and it is a target only where that roof (or flat
footprint) is visible: the click pixel shows it and at least ``min_visible`` of its outline
does. Photos may carry EXIF GPS (the measured position) and, for a fraction of them, no
heading.

Every sample is a pure function of (world, seed, index): generation in parallel gives the
same bytes as generation in series.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from geomogeo.data.dataset import PackItem
from geomogeo.data.manifest import Georef, Record, write_manifest
from geomogeo.data.synth.camera import Camera, CameraRanges, sample_camera
from geomogeo.data.synth.footprints import footprint_structures
from geomogeo.data.synth.procedural import (
    bridged_town,
    procedural_town,
    rotate_zoom,
    suburb_town,
)
from geomogeo.data.synth.render import (
    PhotoEffects,
    View,
    degrade,
    is_visible,
    render_photo,
    render_reference,
    render_view,
)
from geomogeo.data.synth.scene import (
    Objects,
    Scene,
    dihedral,
    downsample,
    find_objects,
    load_scene,
    scene_from_raster,
)
from geomogeo.data.synth.structures import KINDS, Structures
from geomogeo.errors import OutputError

__all__ = [
    "DEFAULT_TILES",
    "HOLDOUT_TILES",
    "Sample",
    "SynthConfig",
    "World",
    "boxes_to_ref",
    "build_worlds",
    "generate",
    "gps_exif",
    "render_sample",
    "synthesize_default",
    "tile_splits",
    "write_samples",
]

log = logging.getLogger(__name__)

#: Tiles of the default data set, split by geography: Rotterdam area c (both sensors) is never
#: seen in training or model selection.
DEFAULT_TILES: dict[str, tuple[tuple[str, tuple[int, ...] | None], ...]] = {
    "train": (("rotterdam_pan_0p5m_a.tif", None), ("rotterdam_rgbn_1m_a.tif", (1, 2, 3)),
              ("las_vegas_pan_0p3m_wgs84.tif", None)),
    "val": (("rotterdam_pan_0p5m_b.tif", None), ("rotterdam_rgbn_1m_b.tif", (1, 2, 3))),
    "test": (("rotterdam_pan_0p5m_c.tif", None), ("rotterdam_rgbn_1m_c.tif", (1, 2, 3))),
}

#: Held-out-city splits (an explicit option; the default split above is unchanged). With
#: ``las_vegas`` the network is trained on Rotterdam a and c and selected on Rotterdam b (both
#: sensors), and tested on Las Vegas, a city never seen: a 0.3 m panchromatic tile in
#: EPSG:4326, which :func:`~.scene.scene_from_raster` resamples to ``render_gsd`` in its
#: local UTM zone (EPSG:32611), so its samples carry that CRS.
HOLDOUT_TILES: dict[str, dict[str, tuple[tuple[str, tuple[int, ...] | None], ...]]] = {
    "las_vegas": {
        "train": (("rotterdam_pan_0p5m_a.tif", None), ("rotterdam_rgbn_1m_a.tif", (1, 2, 3)),
                  ("rotterdam_pan_0p5m_c.tif", None), ("rotterdam_rgbn_1m_c.tif", (1, 2, 3))),
        "val": DEFAULT_TILES["val"],
        "test": (("las_vegas_pan_0p3m_wgs84.tif", None),),
    },
}


def tile_splits(holdout: str | None = None
                ) -> dict[str, tuple[tuple[str, tuple[int, ...] | None], ...]]:
    """The tiles of each split: :data:`DEFAULT_TILES`, or the held-out-city split
    ``holdout`` of :data:`HOLDOUT_TILES`."""
    if holdout is None:
        return DEFAULT_TILES
    if holdout not in HOLDOUT_TILES:
        raise ValueError(f"unknown holdout {holdout!r}; expected one of {sorted(HOLDOUT_TILES)}")
    return HOLDOUT_TILES[holdout]


@dataclass(frozen=True)
class SynthConfig:
    """What the data engine samples.

    Attributes:
        reference_size: reference window side, pixels (the model's input).
        gsd: reference ground sample distance, metres per pixel.
        render_gsd: scene resolution photos are rendered from, metres per pixel.
        gps_sigma_m: GPS error per axis, metres (standard deviation).
        compass_sigma_deg: error of the recorded heading, degrees (standard deviation).
        targets: (min, max) targets per photo, drawn uniformly (fewer when the view holds
            fewer visible objects, never fewer than min).
        click_sigma_px: user click jitter, photo pixels.
        min_target_px: smallest side of a target's projected box in the photo, pixels.
        camera: camera pose and lens ranges.
        effects: photometric ranges.
        max_tries: camera placements tried per sample before giving up.
        min_object_m2: smallest target area, square metres (objects much smaller than the
            network's 16-pixel cell are too small to box reliably).
        prisms: targets as structures with parallax (see the module docstring); off: flat
            luminance blobs only, as before.
        kinds: relative weights of the target kinds (``blob``, ``building``, ``road``,
            ``bridge``; a kind not listed weighs 0; ``pier`` only 0): candidates are taken in
            a random order drawn by weighted sampling without replacement, so a kind of
            weight 3 tends to come before one of weight 1; weight 0 never makes targets.
            With ``prisms`` and a ``bridge`` weight, procedural towns are
            :func:`~.procedural.bridged_town`'s (half of them with bridges); without, they
            are unchanged.
        blob_height_m: (min, max) roof height of real-tile blobs extruded as buildings,
            metres, drawn log-uniformly per world (the tiles give no heights; kept low-rise).
        blob_building_solidity: a real-tile blob is extruded (on its convex hull) only when
            it is brighter than its surroundings and fills at least this fraction of its
            convex hull (compact, as roofs seen from above are, rotated or not; dark blobs,
            mostly trees, pools and shadows, and ragged or L-shaped ones stay flat).
        min_visible: smallest visible fraction of a target's roof (or flat outline).
        no_heading_fraction: fraction of photos recorded without a heading.
        exif_gps: embed EXIF GPS (the measured position, WGS84; the heading when recorded)
            in the photos of georeferenced scenes.
    """

    reference_size: int = 256
    gsd: float = 1.0
    render_gsd: float = 0.5
    gps_sigma_m: float = 3.0
    compass_sigma_deg: float = 5.0
    targets: tuple[int, int] = (1, 8)
    click_sigma_px: float = 1.0
    min_target_px: float = 12.0
    camera: CameraRanges = field(default_factory=CameraRanges)
    effects: PhotoEffects = field(default_factory=PhotoEffects)
    max_tries: int = 50
    min_object_m2: float = 150.0
    prisms: bool = False
    kinds: tuple[tuple[str, float], ...] = (("blob", 1.0), ("building", 1.0), ("road", 1.0))
    blob_height_m: tuple[float, float] = (3.0, 10.0)
    blob_building_solidity: float = 0.8
    min_visible: float = 0.5
    no_heading_fraction: float = 0.0
    exif_gps: bool = False

    @classmethod
    def parallax(cls, **overrides: Any) -> SynthConfig:
        """Issue 10's data: prisms with parallax, buildings first (weights building 3, road 1,
        bridge 1, blob 1), EXIF GPS, half of the photos without a heading."""
        base: dict[str, Any] = dict(
            prisms=True,
            kinds=(("blob", 1.0), ("building", 3.0), ("road", 1.0), ("bridge", 1.0)),
            no_heading_fraction=0.5, exif_gps=True)
        return cls(**{**base, **overrides})

    def kind_weights(self) -> np.ndarray:
        """(len(KINDS),) weight of each kind, indexed like :data:`~.structures.KINDS`."""
        w = dict(self.kinds)
        return np.array([float(w.get(k, 0.0)) for k in KINDS])

    def bridges(self) -> bool:
        """Whether procedural towns get bridges (``prisms`` and a ``bridge`` weight > 0)."""
        return self.prisms and bool(self.kind_weights()[KINDS.index("bridge")] > 0)

    def __post_init__(self) -> None:
        lo, hi = self.targets
        if not 1 <= lo <= hi:
            raise ValueError(f"SynthConfig.targets={self.targets}: need 1 <= min <= max")
        unknown = {k for k, _ in self.kinds} - set(KINDS)
        if unknown or any(w < 0 for _, w in self.kinds) or not self.kind_weights().any():
            raise ValueError(f"SynthConfig.kinds={self.kinds}: kinds must be among {KINDS} "
                             "with weights >= 0, not all 0")
        if dict(self.kinds).get("pier", 0.0) > 0:
            raise ValueError(f"SynthConfig.kinds={self.kinds}: piers are never targets")
        if not 0.0 <= self.no_heading_fraction <= 1.0:
            raise ValueError("SynthConfig.no_heading_fraction must be in [0, 1]")
        ratio = self.gsd / self.render_gsd
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ValueError("SynthConfig.gsd must be a whole multiple of render_gsd")


@dataclass(frozen=True)
class World:
    """A scene ready to render: the photo scene, the same at the reference GSD, its objects
    (luminance blobs), its target structures, the sun's azimuth (degrees clockwise from
    north, for wall shading) and the ground under its slabs (None: the scene itself; see
    :func:`~.render.render_view`)."""

    scene: Scene
    reference: Scene
    objects: Objects
    structures: Structures
    sun_azimuth: float
    ground: Scene | None = None

    @classmethod
    def build(cls, scene: Scene, cfg: SynthConfig, extra: Structures | None = None,
              ground: Scene | None = None, *, blob_buildings: bool = True) -> World:
        """The world of ``scene``; ``extra``: structures known exactly (a procedural town's,
        or a real tile's known footprints), used with ``cfg.prisms``, when blobs overlapping
        their raised footprints (the roofs found again as blobs) are dropped; ``ground``: the
        scene under its slabs (a bridged town's); without ``blob_buildings`` no blob is
        extruded (all stay flat; used with known footprints). Random choices (sun, blob
        heights) follow the scene's name."""
        ref = downsample(scene, round(cfg.gsd / cfg.render_gsd))
        objects = find_objects(ref, object_gsd=cfg.gsd, min_area_m2=cfg.min_object_m2)
        rng = np.random.default_rng(zlib.crc32(scene.name.encode()))
        sun = float(rng.uniform(0.0, 360.0))
        if not cfg.prisms:
            return cls(scene, ref, objects, Structures.from_objects(objects), sun)
        compact = objects.bright & (objects.solidity >= cfg.blob_building_solidity)
        compact &= blob_buildings
        lo, hi = np.log(cfg.blob_height_m)
        heights = np.where(compact, np.exp(rng.uniform(lo, hi, len(objects))), 0.0)
        blobs = Structures.from_objects(objects, heights,
                                        np.where(compact, KINDS.index("building"), 0))
        if extra is None:
            return cls(scene, ref, objects, blobs, sun)
        raised = extra.boxes[extra.heights > 0]
        keep = np.array([not any(_overlaps(b, r) for r in raised) for b in blobs.boxes], bool)
        return cls(scene, ref, objects, Structures.concat([blobs.subset(keep), extra]), sun,
                   ground)


@dataclass(frozen=True)
class Sample:
    """One rendered query photo and its reference window.

    Attributes:
        id: unique name.
        jpeg: the photo as JPEG file bytes.
        clicks: (m, 2) photo pixels (corner origin).
        boxes: (m, 4) reference pixels (edges), k-th box <-> k-th click.
        reference: (R, R, 3) uint8; valid: (R, R) bool.
        transform: reference pixel EDGES -> map metres of ``crs``.
        crs: the map CRS (None for virtual, rotated training scenes).
        heading: recorded heading (true yaw + compass error), degrees clockwise from north,
            or None when the photo records none.
        camera: the true camera.
        measured_xy: the GPS position the window is centred on, map metres.
        ground: (m, 2) map coordinates of the clicked points (roof centroids), metres.
        scene: name of the scene.
        heights: (m,) heights of the clicked points above the ground, metres (0 = flat).
        kinds: the targets' kinds (see :data:`~.structures.KINDS`).
    """

    id: str
    jpeg: bytes
    clicks: np.ndarray
    boxes: np.ndarray
    reference: np.ndarray
    valid: np.ndarray
    transform: tuple[float, float, float, float, float, float]
    crs: str | None
    heading: float | None
    camera: Camera
    measured_xy: tuple[float, float]
    ground: np.ndarray
    scene: str
    heights: np.ndarray
    kinds: tuple[str, ...]

    def photo(self) -> np.ndarray:
        """The decoded photo, (H, W, 3) uint8."""
        return np.asarray(Image.open(io.BytesIO(self.jpeg)).convert("RGB"))

    def pack_item(self) -> PackItem:
        """This sample as training/evaluation input (see :mod:`geomogeo.data.dataset`)."""
        return PackItem(
            id=self.id, reference=self.reference, photo=self.photo(), clicks=self.clicks,
            boxes=self.boxes, heading=self.heading,
            metres_per_pixel=self.transform[0] if self.crs else None,
        )

    @property
    def num_targets(self) -> int:
        return len(self.boxes)


def boxes_to_ref(transform: tuple[float, ...], boxes: np.ndarray) -> np.ndarray:
    """Map boxes (n, 4) (xmin, ymin, xmax, ymax) in metres -> (n, 4) (x1, y1, x2, y2) pixel
    edges of the north-up window with ``transform``."""
    a, _, c, _, e, f = transform
    return np.column_stack([(boxes[:, 0] - c) / a, (boxes[:, 3] - f) / e,
                            (boxes[:, 2] - c) / a, (boxes[:, 1] - f) / e])


def _candidates(world: World, cam: Camera, transform: tuple[float, ...], valid: np.ndarray,
                rng: np.random.Generator, cfg: SynthConfig
                ) -> tuple[list[int], dict[int, np.ndarray]]:
    """Structures whose box lies inside the window on valid data and which project wholly
    inside the photo (base and roof), large enough; in random, kind-weighted order, with
    their clicks (photo pixels, the projected roof centroid)."""
    st = world.structures
    if len(st) == 0:
        return [], {}
    r = cfg.reference_size
    c1, r1, c2, r2 = boxes_to_ref(transform, st.boxes).T
    idx = np.nonzero((c1 >= 1) & (r1 >= 1) & (c2 <= r - 1) & (r2 <= r - 1))[0]
    w = cfg.kind_weights()[st.kinds[idx]]
    idx, w = idx[w > 0], w[w > 0]
    if w.size and np.ptp(w) > 0:  # weighted sampling without replacement (Efraimidis-Spirakis)
        order = idx[np.argsort(-(rng.random(len(idx)) ** (1.0 / w)), kind="stable")]
    else:
        order = rng.permutation(idx)
    out: list[int] = []
    clicks: dict[int, np.ndarray] = {}
    for i in order:
        ci1, ri1, ci2, ri2 = (int(np.floor(c1[i])), int(np.floor(r1[i])),
                              int(np.ceil(c2[i])), int(np.ceil(r2[i])))
        if not valid[ri1:ri2, ci1:ci2].all():
            continue
        fp, z = st.footprints[i], float(st.heights[i])
        top, front = cam.project(np.column_stack([fp, np.full(len(fp), z)]))
        uv = top
        if z > 0:
            base, fb = cam.project(np.column_stack([fp, np.full(len(fp), st.bases[i])]))
            uv, front = np.vstack([base, top]), np.concatenate([fb, front])
        if not front.all():
            continue
        if (uv.min(axis=0) < 2).any() or uv[:, 0].max() > cam.width - 2 or \
                uv[:, 1].max() > cam.height - 2:
            continue
        span = top.max(axis=0) - top.min(axis=0)
        if span.min() < cfg.min_target_px:
            continue
        out.append(int(i))
        clicks[int(i)] = cam.project(np.array([[*st.points[i], z]]))[0][0]
    return out, clicks


def _select(world: World, cam: Camera, cands: list[int], clicks: dict[int, np.ndarray],
            view: View | None, m: int, cfg: SynthConfig) -> list[int]:
    """Up to ``m`` candidates, in order, that are visible in ``view`` (when given; see
    :func:`~.render.is_visible`), whose clicks are 4 px apart and whose boxes do
    not overlap on the ground (nested bright/dark blobs are one object)."""
    st = world.structures
    boxes = st.boxes
    chosen: list[int] = []
    for i in cands:
        click = clicks[i]
        if view is not None and not is_visible(view, cam, st, i, cfg.min_visible):
            continue
        if any(np.hypot(*(click - clicks[j])) < 4.0 for j in chosen):
            continue
        if any(_overlaps(boxes[i], boxes[j]) for j in chosen):
            continue
        chosen.append(i)
        if len(chosen) == m:
            break
    return chosen


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    return bool(iw > 0 and ih > 0)


def gps_exif(lon: float, lat: float, heading: float | None, altitude: float | None = None
             ) -> Image.Exif:
    """EXIF with a GPS IFD, as :func:`geomogeo.geo.photo.load_photo` reads it: WGS84
    (``lon``, ``lat``) degrees as degrees/minutes/seconds rationals (seconds to 1e-6) with
    N/S, E/W references; ``altitude`` metres (GPSAltitude, reference 0 = above) when given;
    GPSImgDirection ``heading`` (true, degrees clockwise from north) when given."""
    from PIL.TiffImagePlugin import IFDRational

    def dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
        v = abs(value)
        d = int(v)
        m = int((v - d) * 60)
        sec = Fraction(round((v - d - m / 60) * 3600 * 1_000_000), 1_000_000)
        return IFDRational(d), IFDRational(m), IFDRational(sec.numerator, sec.denominator)

    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = ("N" if lat >= 0 else "S"), dms(lat)
    gps[3], gps[4] = ("E" if lon >= 0 else "W"), dms(lon)
    if altitude is not None:
        gps[5], gps[6] = bytes([0]), IFDRational(round(altitude * 100), 100)
    if heading is not None:
        gps[16], gps[17] = "T", IFDRational(round(heading * 100), 100)
    return exif


def _with_exif(jpeg: bytes, exif: Image.Exif) -> bytes:
    """The JPEG file with an APP1 EXIF segment inserted after its SOI (and JFIF APP0, when
    present) marker; the compressed image data is left as it is."""
    payload = exif.tobytes()
    seg = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    at = 2
    if jpeg[2:4] == b"\xff\xe0":
        at = 4 + int.from_bytes(jpeg[4:6], "big")
    return jpeg[:at] + seg + jpeg[at:]


def render_sample(world: World, rng: np.random.Generator, cfg: SynthConfig, sample_id: str
                  ) -> Sample:
    """Render one sample from ``world`` with ``rng`` (see the module docstring).

    Raises:
        RuntimeError: no camera placement in ``cfg.max_tries`` gave ``cfg.targets[0]`` targets.
    """
    scene = world.scene
    st = world.structures
    raised = bool((st.heights > 0).any())
    vr, vc = np.nonzero(scene.valid)
    r, g = cfg.reference_size, cfg.gsd
    for _ in range(cfg.max_tries):
        k = int(rng.integers(len(vr)))
        x, y = scene.pixel_to_map(vc[k] + rng.uniform(), vr[k] + rng.uniform())
        cam = sample_camera(rng, float(x), float(y), cfg.camera)
        measured = (cam.x + rng.normal(0, cfg.gps_sigma_m), cam.y + rng.normal(0, cfg.gps_sigma_m))
        ref, valid, transform = render_reference(world.reference, measured, r, g)
        lo, hi = cfg.targets
        m = int(rng.integers(lo, hi + 1))
        cands, cand_clicks = _candidates(world, cam, transform, valid, rng, cfg)
        if len(cands) < lo:
            continue
        # Visibility needs the rendered view only when something stands above the ground.
        view = render_view(scene, cam, st, world.sun_azimuth, world.ground) if raised else None
        idx = _select(world, cam, cands, cand_clicks, view, m, cfg)
        if len(idx) < lo:
            continue
        ground = st.points[idx]
        clicks, _ = cam.project(np.column_stack([ground, st.heights[idx]]))
        clicks = clicks + rng.normal(0, cfg.click_sigma_px, clicks.shape)
        clicks = np.clip(clicks, 0.5, np.array([cam.width, cam.height]) - 0.5)
        photo = view.image if view is not None else render_photo(scene, cam)
        jpeg = degrade(photo, rng, cfg.effects)
        heading: float | None = float((cam.yaw + rng.normal(0, cfg.compass_sigma_deg)) % 360.0)
        if cfg.no_heading_fraction > 0 and rng.random() < cfg.no_heading_fraction:
            heading = None
        if cfg.exif_gps and scene.crs:
            from geomogeo.geo.georef import to_lonlat  # the GIS layer is needed only here

            lon, lat = to_lonlat(measured[0], measured[1], scene.crs)
            jpeg = _with_exif(jpeg, gps_exif(float(lon), float(lat), heading))
        return Sample(
            id=sample_id, jpeg=jpeg, clicks=clicks, boxes=boxes_to_ref(transform, st.boxes[idx]),
            reference=ref, valid=valid, transform=transform, crs=scene.crs, heading=heading,
            camera=cam, measured_xy=(float(measured[0]), float(measured[1])), ground=ground,
            scene=scene.name, heights=st.heights[idx],
            kinds=tuple(KINDS[int(st.kinds[i])] for i in idx),
        )
    raise RuntimeError(
        f"scene {scene.name!r}: no camera placement in {cfg.max_tries} tries showed "
        f">= {cfg.targets[0]} targets"
    )


def build_worlds(scenes: Sequence[Scene], cfg: SynthConfig, *, augment: bool,
                 rotations: int = 0, procedural: int = 0, suburbs: int = 0, seed: int = 0
                 ) -> list[World]:
    """Worlds for rendering.

    With ``augment``, each scene in its 8 rotated/mirrored copies, plus ``rotations`` copies
    at random angles and scales (0.8-1.25); plus ``procedural`` random town scenes (with
    ``cfg.prisms``, their buildings and street pieces as structures, and with
    ``cfg.bridges()`` half of them crossed by bridges); plus ``suburbs`` towns of detached
    houses (:func:`~.procedural.suburb_town`). With ``cfg.prisms``, a scene that
    keeps its tile's georeference (not augmented) and has a footprints file
    (:func:`~.footprints.footprint_structures`: footprints of >= ``cfg.min_object_m2``) gets
    those buildings, and its blobs stay flat. All random choices follow ``seed``.
    """
    rng = np.random.default_rng([seed, 7])
    out = []
    for s in scenes:
        variants = [dihedral(s, k, f) for f in (False, True) for k in range(4)] if augment \
            else [s]
        if augment:
            variants += [rotate_zoom(s, float(rng.uniform(0, 360)), float(rng.uniform(0.8, 1.25)))
                         for _ in range(rotations)]
        for v in variants:
            # A scene with its tile's georeference uses the tile's known footprints, if any.
            known = footprint_structures(v, cfg.min_object_m2) if cfg.prisms else None
            out.append(World.build(v, cfg, known, blob_buildings=known is None))
    for i in range(procedural):
        town_rng, name = np.random.default_rng([seed, 11, i]), f"procedural-{i}"
        if cfg.bridges():
            sc, under, town = bridged_town(town_rng, gsd=cfg.render_gsd, name=name)
            out.append(World.build(sc, cfg, town, under))
        else:
            sc, town = procedural_town(town_rng, gsd=cfg.render_gsd, name=name)
            out.append(World.build(sc, cfg, town))
    for i in range(suburbs):
        sc, town = suburb_town(np.random.default_rng([seed, 13, i]), gsd=cfg.render_gsd,
                               name=f"suburb-{i}")
        out.append(World.build(sc, cfg, town))
    return out


_WORKER: dict[str, Any] = {}


def _init_worker(worlds: Sequence[World], cfg: SynthConfig, seed: int, prefix: str,
                 post: Callable[[Sample], Any] | None) -> None:
    _WORKER.update(worlds=worlds, cfg=cfg, seed=seed, prefix=prefix, post=post)


def _one(i: int) -> Any:
    w = _WORKER["worlds"]
    rng = np.random.default_rng([_WORKER["seed"], i])
    s = render_sample(w[i % len(w)], rng, _WORKER["cfg"], f"{_WORKER['prefix']}{i:06d}")
    return s if _WORKER["post"] is None else _WORKER["post"](s)


def generate(
    worlds: Sequence[World], n: int, *, seed: int, cfg: SynthConfig, prefix: str = "",
    workers: int = 1, quiet: bool = False, post: Callable[[Sample], Any] | None = None,
) -> list[Any]:
    """Render ``n`` samples, sample i from ``worlds[i % len(worlds)]`` with the random stream
    ``(seed, i)``; ``workers`` > 1 renders in forked processes (same bytes as in series).

    ``post`` is applied to each sample inside the worker (e.g. ``Sample.pack_item``, so that
    decoding and query preparation run in parallel too); the list holds its results.
    Forked workers render with one BLAS thread each (``workers`` pools of as many threads as
    cores oversubscribe the machine: 2 workers on 2 cores took twice as long).
    """
    _init_worker(worlds, cfg, seed, prefix, post)
    out: list[Any] = []
    bar = tqdm(total=n, desc="rendering", unit="photo", disable=quiet)
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("fork")
        # the limit is set before the fork, so the workers inherit it; lifted afterwards
        with threadpool_limits(limits=1), ProcessPoolExecutor(workers, mp_context=ctx) as ex:
            it = ex.map(_one, range(n), chunksize=max(1, min(64, n // (4 * workers) or 1)))
            for s in it:
                out.append(s)
                bar.update()
    else:
        for i in range(n):
            out.append(_one(i))
            bar.update()
    bar.close()
    return out


def _record(s: Sample, root: Path, split: str, source: dict[str, Any] | None) -> Record:
    q = root / "queries" / f"{s.id}.jpg"
    ref = root / "references" / f"{s.id}.png"
    q.write_bytes(s.jpeg)
    rgba = np.dstack([s.reference, np.where(s.valid, 255, 0).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(ref, optimize=False, compress_level=6)
    cam = s.camera
    return Record(
        id=s.id, query=q, reference=ref,
        clicks=tuple((float(x), float(y)) for x, y in s.clicks),
        boxes=tuple(tuple(float(v) for v in b) for b in s.boxes),  # type: ignore[misc]
        georef=Georef(s.crs, s.transform) if s.crs else None,
        split=split,
        meta={
            "heading": s.heading, "scene": s.scene,
            "gps": list(s.measured_xy),
            "camera": {"x": cam.x, "y": cam.y, "altitude": cam.altitude, "yaw": cam.yaw,
                       "pitch": cam.pitch, "hfov": cam.hfov, "k1": cam.k1},
            "ground": s.ground.tolist(),
            "heights": s.heights.tolist(), "kinds": list(s.kinds),
            **(source or {}),
        },
    )


def write_samples(samples: Iterable[Sample], root: str | os.PathLike[str], split: str,
                  sources: Mapping[str, dict[str, Any]] | None = None) -> list[Record]:
    """Write samples under ``root`` (``queries/*.jpg``, ``references/*.png`` with the valid
    mask as alpha) and return their manifest records.

    ``sources`` maps a scene name to extra ``meta`` entries for its samples, e.g. the source
    raster (``{"raster": path, "bands": [1, 2, 3] or None}``) of a scene with its real
    georeference, so that evaluation can run the whole localization (registration included)
    on the raster itself.
    """
    root = Path(root)
    (root / "queries").mkdir(parents=True, exist_ok=True)
    (root / "references").mkdir(parents=True, exist_ok=True)
    sources = sources or {}
    return [_record(s, root, split, sources.get(s.scene)) for s in samples]


def load_default_scenes(data_dir: str | os.PathLike[str], cfg: SynthConfig,
                        holdout: str | None = None) -> dict[str, list[Scene]]:
    """The default tiles of each split (or those of the held-out-city split ``holdout``, see
    :func:`tile_splits`) as scenes at ``cfg.render_gsd`` (``.npz`` files of the same stem
    are used instead of the GeoTIFFs when present)."""
    data_dir = Path(data_dir)
    out: dict[str, list[Scene]] = {}
    for split, tiles in tile_splits(holdout).items():
        scenes = []
        for name, bands in tiles:
            npz = data_dir / (Path(name).stem + ".npz")
            if npz.is_file():
                scenes.append(load_scene(npz))
            else:
                scenes.append(scene_from_raster(data_dir / name, gsd=cfg.render_gsd, bands=bands))
        out[split] = scenes
    return out


def synthesize_default(
    out_dir: str | os.PathLike[str], *, n_per_tile: int = 200, seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None, quiet: bool = False, workers: int = 1,
    splits: Sequence[str] = ("train", "val", "test"), cfg: SynthConfig | None = None,
    holdout: str | None = None,
) -> Path:
    """Render the default data set (or the held-out-city split ``holdout``, see
    :func:`tile_splits`) into ``out_dir`` and write ``out_dir/manifest.jsonl``.

    Training tiles are augmented with their rotated/mirrored copies; validation and test
    tiles keep their real georeference. ``n_per_tile`` photos are rendered per tile and split.
    """
    cfg = cfg or SynthConfig()
    if n_per_tile < 1:
        raise ValueError(f"n_per_tile={n_per_tile}: at least one photo per tile is needed")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise OutputError(f"cannot write the data set into {out_dir}: it is a file, not a folder")
    tiles = tile_splits(holdout)
    unknown = set(splits) - set(tiles)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; expected {sorted(tiles)}")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    scenes = load_default_scenes(data_dir, cfg, holdout)
    # Validation and test scenes keep their tile's georeference: record the source raster.
    sources = {Path(name).stem: {"raster": str((data_dir / name).resolve()),
                                 "bands": list(bands) if bands else None}
               for split in ("val", "test") for name, bands in tiles[split]}
    out = Path(out_dir)
    records: list[Record] = []
    for k, split in enumerate(splits):
        worlds = build_worlds(scenes[split], cfg, augment=split == "train")
        n = n_per_tile * len(scenes[split])
        log.info("%s: %d photos from %d worlds", split, n, len(worlds))
        samples = generate(worlds, n, seed=seed * 1000 + k, cfg=cfg, prefix=f"{split}-",
                           workers=workers, quiet=quiet)
        records += write_samples(samples, out, split, sources)
    manifest = out / "manifest.jsonl"
    write_manifest(manifest, records)
    return manifest


def default_data_dir() -> Path:
    """``$GEOMOGEO_DATA`` or the project's ``sample_tiles/``."""
    env = os.environ.get("GEOMOGEO_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "sample_tiles"
