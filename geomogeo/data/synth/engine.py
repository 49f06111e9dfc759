"""The cross-view data engine: drone photos, reference windows and targets from real tiles.

One sample: a camera is placed above a random point of a scene (pose drawn from
:class:`~.camera.CameraRanges`), the photo is rendered through the exact ground homography
and degraded (:class:`~.render.PhotoEffects`); the reference window is read north-up at the
model's GSD around the camera's *measured* position (true position plus a GPS error of
``gps_sigma_m`` metres per axis); 1 to 8 objects of the scene (:func:`~.scene.find_objects`)
that lie inside the reference window and wholly inside the photo become the targets: their
box in reference pixels and their centroid projected into the photo (plus a click jitter).
The camera heading is recorded with a compass error, as a drone's EXIF would have it.

Every sample is a pure function of (world, seed, index): generation in parallel gives the
same bytes as generation in series.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from geomogeo.data.dataset import PackItem
from geomogeo.data.manifest import Georef, Record, write_manifest
from geomogeo.data.synth.camera import Camera, CameraRanges, sample_camera
from geomogeo.data.synth.procedural import procedural_scene, rotate_zoom
from geomogeo.data.synth.render import PhotoEffects, degrade, render_photo, render_reference
from geomogeo.data.synth.scene import (
    Objects,
    Scene,
    dihedral,
    downsample,
    find_objects,
    load_scene,
    scene_from_raster,
)
from geomogeo.errors import OutputError

__all__ = [
    "DEFAULT_TILES",
    "Sample",
    "SynthConfig",
    "World",
    "build_worlds",
    "generate",
    "render_sample",
    "synthesize_default",
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

    def __post_init__(self) -> None:
        lo, hi = self.targets
        if not 1 <= lo <= hi:
            raise ValueError(f"SynthConfig.targets={self.targets}: need 1 <= min <= max")
        ratio = self.gsd / self.render_gsd
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ValueError("SynthConfig.gsd must be a whole multiple of render_gsd")


@dataclass(frozen=True)
class World:
    """A scene ready to render: the photo scene, the same at the reference GSD, its objects."""

    scene: Scene
    reference: Scene
    objects: Objects

    @classmethod
    def build(cls, scene: Scene, cfg: SynthConfig) -> World:
        ref = downsample(scene, round(cfg.gsd / cfg.render_gsd))
        objects = find_objects(ref, object_gsd=cfg.gsd, min_area_m2=cfg.min_object_m2)
        return cls(scene, ref, objects)


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
        heading: recorded heading (true yaw + compass error), degrees clockwise from north.
        camera: the true camera.
        measured_xy: the GPS position the window is centred on, map metres.
        ground: (m, 2) the targets' clicked ground points, map metres.
        scene: name of the scene.
    """

    id: str
    jpeg: bytes
    clicks: np.ndarray
    boxes: np.ndarray
    reference: np.ndarray
    valid: np.ndarray
    transform: tuple[float, float, float, float, float, float]
    crs: str | None
    heading: float
    camera: Camera
    measured_xy: tuple[float, float]
    ground: np.ndarray
    scene: str

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


def _boxes_to_ref(transform: tuple[float, ...], boxes: np.ndarray) -> np.ndarray:
    """Map boxes (n, 4) (xmin, ymin, xmax, ymax) in metres -> (n, 4) (x1, y1, x2, y2) pixel
    edges of the north-up window with ``transform``."""
    a, _, c, _, e, f = transform
    return np.column_stack([(boxes[:, 0] - c) / a, (boxes[:, 3] - f) / e,
                            (boxes[:, 2] - c) / a, (boxes[:, 1] - f) / e])


def _pick_targets(world: World, cam: Camera, transform: tuple[float, ...], valid: np.ndarray,
                  m: int, rng: np.random.Generator, cfg: SynthConfig
                  ) -> list[int]:
    """Indexes of up to ``m`` objects inside the window and wholly visible in the photo."""
    obj = world.objects
    if len(obj) == 0:
        return []
    r = cfg.reference_size
    b = obj.boxes
    c1, r1, c2, r2 = _boxes_to_ref(transform, b).T
    inside = (c1 >= 1) & (r1 >= 1) & (c2 <= r - 1) & (r2 <= r - 1)
    order = rng.permutation(np.nonzero(inside)[0])
    chosen: list[int] = []
    clicks: list[np.ndarray] = []
    for i in order:
        ci1, ri1, ci2, ri2 = (int(np.floor(c1[i])), int(np.floor(r1[i])),
                              int(np.ceil(c2[i])), int(np.ceil(r2[i])))
        if not valid[ri1:ri2, ci1:ci2].all():
            continue
        x1, y1, x2, y2 = b[i]
        corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
        uv, front = cam.ground_to_photo(corners)
        if not front.all():
            continue
        if (uv.min(axis=0) < 2).any() or uv[:, 0].max() > cam.width - 2 or \
                uv[:, 1].max() > cam.height - 2:
            continue
        span = uv.max(axis=0) - uv.min(axis=0)
        if span.min() < cfg.min_target_px:
            continue
        click, _ = cam.ground_to_photo(obj.centroids[i])
        if any(np.hypot(*(click[0] - c)) < 4.0 for c in clicks):
            continue
        # Targets do not overlap on the ground (nested bright/dark blobs are one object).
        if any(_overlaps(b[i], b[j]) for j in chosen):
            continue
        chosen.append(int(i))
        clicks.append(click[0])
        if len(chosen) == m:
            break
    return chosen


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    return bool(iw > 0 and ih > 0)


def render_sample(world: World, rng: np.random.Generator, cfg: SynthConfig, sample_id: str
                  ) -> Sample:
    """Render one sample from ``world`` with ``rng`` (see the module docstring).

    Raises:
        RuntimeError: no camera placement in ``cfg.max_tries`` gave ``cfg.targets[0]`` targets.
    """
    scene = world.scene
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
        idx = _pick_targets(world, cam, transform, valid, m, rng, cfg)
        if len(idx) < lo:
            continue
        obj = world.objects
        ground = obj.centroids[idx]
        clicks, _ = cam.ground_to_photo(ground)
        clicks = clicks + rng.normal(0, cfg.click_sigma_px, clicks.shape)
        clicks = np.clip(clicks, 0.5, np.array([cam.width, cam.height]) - 0.5)
        photo = render_photo(scene, cam)
        jpeg = degrade(photo, rng, cfg.effects)
        heading = float((cam.yaw + rng.normal(0, cfg.compass_sigma_deg)) % 360.0)
        return Sample(
            id=sample_id, jpeg=jpeg, clicks=clicks, boxes=_boxes_to_ref(transform, obj.boxes[idx]),
            reference=ref, valid=valid, transform=transform, crs=scene.crs, heading=heading,
            camera=cam, measured_xy=(float(measured[0]), float(measured[1])), ground=ground,
            scene=scene.name,
        )
    raise RuntimeError(
        f"scene {scene.name!r}: no camera placement in {cfg.max_tries} tries showed "
        f">= {cfg.targets[0]} targets"
    )


def build_worlds(scenes: Sequence[Scene], cfg: SynthConfig, *, augment: bool,
                 rotations: int = 0, procedural: int = 0, seed: int = 0) -> list[World]:
    """Worlds for rendering.

    With ``augment``, each scene in its 8 rotated/mirrored copies, plus ``rotations`` copies
    at random angles and scales (0.8-1.25); plus ``procedural`` random town scenes. All
    random choices follow ``seed``.
    """
    rng = np.random.default_rng([seed, 7])
    out = []
    for s in scenes:
        variants = [dihedral(s, k, f) for f in (False, True) for k in range(4)] if augment \
            else [s]
        if augment:
            variants += [rotate_zoom(s, float(rng.uniform(0, 360)), float(rng.uniform(0.8, 1.25)))
                         for _ in range(rotations)]
        out.extend(World.build(v, cfg) for v in variants)
    for i in range(procedural):
        sc = procedural_scene(np.random.default_rng([seed, 11, i]), gsd=cfg.render_gsd,
                              name=f"procedural-{i}")
        out.append(World.build(sc, cfg))
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
    """
    _init_worker(worlds, cfg, seed, prefix, post)
    out: list[Any] = []
    bar = tqdm(total=n, desc="rendering", unit="photo", disable=quiet)
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=ctx) as ex:
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


def load_default_scenes(data_dir: str | os.PathLike[str], cfg: SynthConfig
                        ) -> dict[str, list[Scene]]:
    """The default tiles of each split as scenes at ``cfg.render_gsd`` (``.npz`` files of
    the same stem are used instead of the GeoTIFFs when present)."""
    data_dir = Path(data_dir)
    out: dict[str, list[Scene]] = {}
    for split, tiles in DEFAULT_TILES.items():
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
) -> Path:
    """Render the default data set into ``out_dir`` and write ``out_dir/manifest.jsonl``.

    Training tiles are augmented with their rotated/mirrored copies; validation and test
    tiles keep their real georeference. ``n_per_tile`` photos are rendered per tile and split.
    """
    cfg = cfg or SynthConfig()
    if n_per_tile < 1:
        raise ValueError(f"n_per_tile={n_per_tile}: at least one photo per tile is needed")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise OutputError(f"cannot write the data set into {out_dir}: it is a file, not a folder")
    unknown = set(splits) - set(DEFAULT_TILES)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; expected {sorted(DEFAULT_TILES)}")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    scenes = load_default_scenes(data_dir, cfg)
    # Validation and test scenes keep their tile's georeference: record the source raster.
    sources = {Path(name).stem: {"raster": str((data_dir / name).resolve()),
                                 "bands": list(bands) if bands else None}
               for split in ("val", "test") for name, bands in DEFAULT_TILES[split]}
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
