"""Localize the clicked objects of a photo on a georeferenced raster.

This is the one place where the GIS layer (:mod:`geomogeo.geo`) meets the network: it hands a
:class:`~geomogeo.predictor.Predictor` plain arrays and turns its pixel boxes into polygons.
When the photo's location is known it is first registered to the raster
(:mod:`geomogeo.joint`): the registration re-centres the window, gives the heading and a prior
around each click; without it the network alone decides (and, without a heading, the query's
rotation is searched).

Conventions:
    * Click points are continuous photo pixel coordinates (x right, y down), origin at the
      top-left corner of the top-left pixel, in the photo as displayed (EXIF orientation
      applied).
    * Boxes are (x1, y1, x2, y2) pixel EDGES of the model's reference input (the window).
    * Polygons are in the raster's CRS (the GeoPackage keeps it); GeoJSON is EPSG:4326.
"""

from __future__ import annotations

import html
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from geomogeo.errors import CheckpointError, LocationError
from geomogeo.geo import export, georef, maps, orient, photo, raster
from geomogeo.geo.heading import heading_mod90
from geomogeo.joint import (
    ConsistencySearch,
    JointConfig,
    RegisteredScene,
    register_scene,
    search_rotation,
)
from geomogeo.predictor import (
    DEFAULT_JOINT_TTA,
    DEFAULT_TTA,
    Predictor,
    Refiner,
    TTASpec,
    parse_tta,
    refine_boxes,
    select,
)

if TYPE_CHECKING:
    import geopandas as gpd
    from pyproj import CRS

    from geomogeo.batch import BatchSummary

__all__ = [
    "LocalizationResult",
    "Localizer",
    "RefinerPaths",
    "Target",
    "default_checkpoint",
    "default_refiners",
    "open_refiner",
]

log = logging.getLogger(__name__)

#: A target whose box covers more than this fraction of nodata/off-raster pixels is flagged.
NODATA_FLAG_FRACTION = 0.5

_MODEL_DIR = Path(__file__).resolve().parent.parent / "model"


def _index_entries(role: str) -> list[tuple[Path, str]]:
    """The checkpoints ``model/checkpoints.json`` names under ``role`` (a name or a list of
    names), with their recorded sha256."""
    import json

    index = _MODEL_DIR / "checkpoints.json"
    if not index.is_file():
        raise CheckpointError(
            f"no default checkpoint: {index} is missing; pass a checkpoint path or set "
            "GEOMOGEO_MODEL"
        )
    try:
        meta = json.loads(index.read_text(encoding="utf-8"))
        names = meta[role]
        names = [names] if isinstance(names, str) else names
        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            raise TypeError(f"'{role}' must be a name or a non-empty list of names")
        digests = [meta["files"][n]["sha256"] for n in names]
        if not all(isinstance(d, str) for d in digests):
            raise TypeError("'sha256' must be a string")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, KeyError,
            TypeError) as e:
        raise CheckpointError(
            f"{index}: malformed checkpoint index, expected {{\"default\": name, \"refiner\": "
            f"name or [names], \"files\": {{name: {{\"sha256\": hex}}}}}} "
            f"({type(e).__name__}: {e})"
        ) from e
    return [(_MODEL_DIR / n, d) for n, d in zip(names, digests, strict=True)]


def default_checkpoint() -> tuple[Path, str]:
    """Path and recorded sha256 of the default network shipped in ``model/``, as named by
    ``model/checkpoints.json`` (``"default"``).

    ``GEOMOGEO_MODEL`` (a path) overrides it and the returned hash is ``""``: that file is
    still verified when loaded, against a ``checkpoints.json`` next to it or the content sha256
    recorded inside it (:func:`~geomogeo.engine.checkpoint.load_checkpoint`).

    Raises:
        CheckpointError: ``model/checkpoints.json`` is missing or malformed.
    """
    env = os.environ.get("GEOMOGEO_MODEL")
    if env:
        return Path(env), ""
    entries = _index_entries("default")
    if len(entries) != 1:
        raise CheckpointError(f"{_MODEL_DIR / 'checkpoints.json'}: 'default' must name one "
                              "checkpoint")
    return entries[0]


def default_refiners() -> list[tuple[Path, str]]:
    """Paths and recorded sha256 of the default box refiners shipped in ``model/``, as named
    by ``model/checkpoints.json`` (``"refiner"``: one name, or several whose boxes are
    averaged, :class:`~geomogeo.predictor.MeanRefiner`).

    ``GEOMOGEO_REFINER`` (paths separated by ``os.pathsep``) overrides them, with hashes
    ``""`` (verified when loaded, as :func:`default_checkpoint`'s).

    Raises:
        CheckpointError: ``model/checkpoints.json`` is missing or malformed.
    """
    env = os.environ.get("GEOMOGEO_REFINER")
    if env:
        return [(Path(p), "") for p in env.split(os.pathsep) if p]
    return _index_entries("refiner")


RefinerPaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def open_refiner(paths: RefinerPaths | None = None, *, device: str = "cpu") -> Refiner:
    """The box refiner of a checkpoint, or the mean of several
    (:class:`~geomogeo.predictor.MeanRefiner`), hash-checked; None: the shipped default
    (:func:`default_refiners`).

    A checkpoint holds a box regression (:class:`~geomogeo.nn.refine.BoxRefiner`) or a mask
    refiner (:class:`~geomogeo.nn.mask_refine.MaskRefiner`); each runs with its 8 turned and
    mirrored views.

    Raises:
        CheckpointError: as :func:`~geomogeo.engine.checkpoint.load_refiner`, or refiners
            of different GSDs.
    """
    from geomogeo.engine.checkpoint import load_refiner
    from geomogeo.nn.mask_refine import MaskRefiner, TorchMaskRefiner
    from geomogeo.nn.refine import TorchRefiner
    from geomogeo.predictor import MeanRefiner

    if paths is None:
        entries = default_refiners()
    elif isinstance(paths, (str, os.PathLike)):
        entries = [(Path(paths), "")]
    else:
        entries = [(Path(p), "") for p in paths]
    members: list[Refiner] = []
    for path, digest in entries:
        r = load_refiner(path, expected_sha256=digest or None)
        runner = TorchMaskRefiner if isinstance(r.model, MaskRefiner) else TorchRefiner
        members.append(runner(r.model, name=r.model_config.name, sha256=r.sha256,  # type: ignore[arg-type]
                              device=device))
    if not members:
        raise CheckpointError("no refiner checkpoint given")
    if len(members) == 1:
        return members[0]
    try:
        return MeanRefiner(members)
    except ValueError as e:
        raise CheckpointError(f"{', '.join(str(p) for p, _ in entries)}: {e}") from e


@dataclass(frozen=True)
class Target:
    """One localized target.

    Attributes:
        index: position of the click in the input list (0-based).
        click: (x, y) continuous photo pixels (EXIF orientation applied).
        score: the model's confidence in [0, 1].
        box: (x1, y1, x2, y2) pixel edges in the window's model input.
        polygon: the box as a polygon in the raster's CRS.
        window: index into :attr:`LocalizationResult.windows` of the window it was found in.
        on_nodata: True when most of the box covers nodata or lies off the raster.
        heatmap: (h, w) float32 in [0, 1] over the window, or None.
        method: ``"joint"`` (the network's confidence weighed by the registered click's
            prior) or ``"network"`` (the network alone).
        n_inliers: the photo's registration inliers (0 when it was not registered).
        reproj_error_px: the registration's reprojection error, registration-window pixels
            (NaN when it was not registered).
        heading_used: the heading the query was turned north-up with, degrees clockwise from
            north (NaN when none).
        heading_source: ``"registration"``, ``"exif"``, ``"given"``, ``"search"`` (no-compass
            rotation search) or ``"none"``.
        registered_xy: the click's ground point from the registration, raster CRS, or None.
        parallax_m: how far the object was found from ``registered_xy`` towards the camera,
            metres (:func:`~geomogeo.geo.parallax.correct_parallax`; 0: on the ground plane;
            NaN when not registered or not searched). The joint box is centred there.
        box_source: what drew the box: ``"refiner"`` (the box refiner,
            :mod:`geomogeo.nn.refine`, around the registered click or the network's box
            centre) or ``"network"`` (the MOGeo head's box).
    """

    index: int
    click: tuple[float, float]
    score: float
    box: tuple[float, float, float, float]
    polygon: Any
    window: int
    on_nodata: bool
    heatmap: np.ndarray | None = field(default=None, repr=False)
    method: str = "network"
    n_inliers: int = 0
    reproj_error_px: float = math.nan
    heading_used: float = math.nan
    heading_source: str = "none"
    registered_xy: tuple[float, float] | None = None
    parallax_m: float = math.nan
    box_source: str = "network"


@dataclass(frozen=True)
class LocalizationResult:
    """What :meth:`Localizer.localize` found.

    Attributes:
        photo: path of the photo.
        raster: path of the raster.
        crs: the raster's CRS (polygons are in it).
        targets: one :class:`Target` per click, in click order.
        windows: the reference windows whose boxes were kept (each a
            :class:`geomogeo.geo.raster.ReferenceWindow`).
        windows_searched: how many windows were run through the model.
        photo_location: (lon, lat) of the photo in EPSG:4326 when known (EXIF or given centre).
        model_name, model_sha256: the model that produced the boxes.
        time: when the localization ran (UTC).
        registration: the photo's registration to the raster
            (:class:`~geomogeo.joint.RegisteredScene`), or None when none was tried (no
            location known, or ``joint=False``).
        refiner_sha256: the file sha256 of the box refiner that drew some boxes (several
            joined by "+" when their boxes were averaged), or "".
    """

    photo: Path
    raster: Path
    crs: CRS
    targets: tuple[Target, ...]
    windows: tuple[raster.ReferenceWindow, ...]
    windows_searched: int
    photo_location: tuple[float, float] | None
    model_name: str
    model_sha256: str
    time: datetime
    registration: RegisteredScene | None = None
    refiner_sha256: str = ""

    # ---- tables -------------------------------------------------------------------------
    def to_geodataframe(self, crs: Any = None) -> gpd.GeoDataFrame:
        """Targets as polygons with their attributes, in the raster CRS or ``crs``."""
        import geopandas as gpd

        rows = [
            {
                "photo": str(self.photo),
                "target": t.index,
                "click_x": t.click[0],
                "click_y": t.click[1],
                "score": t.score,
                "box_x1": t.box[0],
                "box_y1": t.box[1],
                "box_x2": t.box[2],
                "box_y2": t.box[3],
                "on_nodata": t.on_nodata,
                "method": t.method,
                "n_inliers": t.n_inliers,
                "reproj_error_px": t.reproj_error_px,
                "heading_used": t.heading_used,
                "heading_source": t.heading_source,
                "parallax_m": t.parallax_m,
                "box_source": t.box_source,
                "window": t.window,
                "windows_searched": self.windows_searched,
                "raster": str(self.raster),
                "model": self.model_name,
                "model_sha256": self.model_sha256,
                "refiner_sha256": self.refiner_sha256,
                "time": self.time.isoformat(timespec="seconds"),
            }
            for t in self.targets
        ]
        gdf = gpd.GeoDataFrame(rows, geometry=[t.polygon for t in self.targets], crs=self.crs)
        if crs is not None:
            out_crs = georef.as_crs(crs)
            gdf = gpd.GeoDataFrame(
                gdf.drop(columns="geometry"),
                geometry=georef.reproject_geometries(list(gdf.geometry), self.crs, out_crs),
                crs=out_crs,
            )
        return gdf

    def photo_geodataframe(self) -> gpd.GeoDataFrame:
        """The photo's location as a one-point layer in the raster CRS (empty when unknown)."""
        import geopandas as gpd
        from shapely.geometry import Point

        rows, geoms = [], []
        if self.photo_location is not None:
            x, y = georef.lonlat_to_crs(*self.photo_location, self.crs)
            rows.append({"photo": str(self.photo), "lon": self.photo_location[0],
                         "lat": self.photo_location[1]})
            geoms.append(Point(float(x), float(y)))
        return gpd.GeoDataFrame(rows, geometry=geoms, crs=self.crs)

    def footprint_geodataframe(self) -> gpd.GeoDataFrame:
        """The photo's registered ground footprint as a one-polygon layer in the raster CRS,
        with the registration's quality figures (empty when the photo was not registered)."""
        import geopandas as gpd

        scene = self.registration
        rows, geoms = [], []
        if scene is not None and scene.footprint is not None:
            reg = scene.registration
            rows.append({"photo": str(self.photo), "n_matches": int(reg.n_matches),
                         "n_inliers": int(reg.n_inliers),
                         "inlier_ratio": float(reg.inlier_ratio),
                         "reproj_error_px": float(reg.reproj_error_px),
                         "reproj_error_m": float(scene.error_m),
                         "heading": float(scene.heading if scene.heading is not None
                                          else math.nan)})
            geoms += georef.reproject_geometries([scene.footprint], scene.window.crs, self.crs)
        return gpd.GeoDataFrame(rows, geometry=geoms, crs=self.crs)

    def registration_summary(self) -> str:
        """One line on the photo's registration: its quality figures, or why it failed."""
        scene = self.registration
        if scene is None:
            return "registration: not tried (no photo location)"
        reg = scene.registration
        if not reg.ok:
            return f"registration: failed ({reg.reason}); network alone"
        return (f"registration: ok, {reg.n_inliers} inliers of {reg.n_matches} matches "
                f"(ratio {reg.inlier_ratio:.2f}), reprojection error "
                f"{reg.reproj_error_px:.2f} px ({scene.error_m:.2f} m), heading "
                f"{scene.heading:.1f} deg")

    # ---- files --------------------------------------------------------------------------
    def to_file(self, path: str | os.PathLike[str], *, append: bool = True) -> Path:
        """Write the targets: ``.gpkg`` (layers ``targets``, ``photo`` and, when the photo was
        registered, ``photo_footprint``; native CRS; appended to an existing GeoPackage) or
        ``.geojson``/``.json`` (RFC 7946, the targets)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".gpkg":
            layers = {"targets": self.to_geodataframe()}
            if self.photo_location is not None:
                layers["photo"] = self.photo_geodataframe()
            footprint = self.footprint_geodataframe()
            if len(footprint):
                layers["photo_footprint"] = footprint
            export.write_geopackage(path, layers, append=append)
        elif suffix in (".geojson", ".json"):
            export.write_geojson(path, self.to_geodataframe())
        else:
            raise ValueError(f"{path}: unknown output format {suffix!r}; use .gpkg or .geojson")
        return path

    def write_heatmaps(self, folder: str | os.PathLike[str], stem: str | None = None) -> list[Path]:
        """One float32 GeoTIFF per target with its heatmap, georeferenced like its window."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        stem = stem or self.photo.stem
        out = []
        for t in self.targets:
            if t.heatmap is None:
                continue
            win = self.windows[t.window]
            transform = georef.scale_transform(win.transform, win.size / t.heatmap.shape[1])
            p = folder / f"{stem}_target{t.index}_heatmap.tif"
            export.write_heatmap(p, t.heatmap, transform, win.crs)
            out.append(p)
        return out

    def heatmaps_dataset(self, window: int | None = None) -> Any:
        """The targets' heatmaps of one window as an ``xarray.Dataset`` (rioxarray-ready).

        One variable ``heatmap`` with dims ``(target, y, x)``, coordinates ``target`` (click
        index), ``score``, ``x``/``y`` (heatmap pixel CENTRES in the window's CRS) and
        ``spatial_ref`` (CRS and GeoTransform), so ``ds.heatmap.plot(col="target")`` shows them
        and ``ds.heatmap.sel(target=k).rio.to_raster(path)`` writes the GeoTIFF that
        :meth:`write_heatmaps` writes for target k (see :func:`geomogeo.geo.xrio.heatmaps_dataset`).

        Args:
            window: index into :attr:`windows`; None: the one window every heatmap comes from.

        Raises:
            ValueError: no heatmaps were kept, or they come from several windows (a search)
                and ``window`` is None, or ``window`` is out of range.
        """
        from geomogeo.geo import xrio

        kept = [t for t in self.targets if t.heatmap is not None]
        if not kept:
            raise ValueError("no heatmaps were kept (localize(..., heatmaps=True) keeps them)")
        if window is None:
            found = sorted({t.window for t in kept})
            if len(found) > 1:
                raise ValueError(f"the heatmaps come from windows {found}; pass window=...")
            window = found[0]
        if not 0 <= window < len(self.windows):
            raise ValueError(f"window must be in 0..{len(self.windows) - 1}, got {window}")
        kept = [t for t in kept if t.window == window]
        win = self.windows[window]
        h, w = kept[0].heatmap.shape  # type: ignore[union-attr]
        transform = georef.scale_transform(win.transform, (win.size / w, win.size / h))
        return xrio.heatmaps_dataset(np.stack([t.heatmap for t in kept]), transform,
                                     georef.as_crs(win.crs), [t.index for t in kept],
                                     [t.score for t in kept])

    @property
    def heatmaps(self) -> Any:
        """:meth:`heatmaps_dataset` of the one window the heatmaps come from."""
        return self.heatmaps_dataset()

    def to_map(self, path: str | os.PathLike[str], *, offline: bool | None = None) -> Path:
        """An HTML map: window image, target polygons with popups, photo location, heatmaps."""
        targets = self.to_geodataframe(crs="EPSG:4326")
        win = self.windows[0] if self.windows else None
        image = bounds = None
        heatmaps = []
        if win is not None:
            image = (np.clip(win.image, 0, 1) * 255).astype(np.uint8)
            bounds = georef.window_bounds_lonlat(win.transform, win.crs, win.size)
            for t in self.targets:
                if t.heatmap is not None and t.window == 0:
                    heatmaps.append((f"heatmap target {t.index}", maps.heatmap_rgba(t.heatmap),
                                     bounds))
        return maps.make_map(
            path, window_image=image, window_bounds_lonlat=bounds, targets=targets,
            photo_location=self.photo_location, heatmaps=heatmaps, offline=offline,
            footprint=self.footprint_geodataframe(),
        )

    # ---- display ------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        head = (
            f"<b>geomogeo localization</b>: {len(self.targets)} target(s) of "
            f"<code>{html.escape(self.photo.name)}</code> on "
            f"<code>{html.escape(self.raster.name)}</code> ({html.escape(self.crs.name)}); "
            f"{self.windows_searched} window(s) searched; model "
            f"<code>{html.escape(self.model_name)}</code> ({self.model_sha256[:12]})"
        )
        rows = "".join(
            f"<tr><td>{t.index}</td><td>{t.click[0]:.1f}, {t.click[1]:.1f}</td>"
            f"<td>{t.score:.3f}</td><td>{t.polygon.centroid.x:.3f}, {t.polygon.centroid.y:.3f}"
            f"</td><td>{t.polygon.area:.1f}</td><td>{'yes' if t.on_nodata else ''}</td></tr>"
            for t in self.targets
        )
        return (
            f"<div>{head}<table><tr><th>target</th><th>click x, y (px)</th><th>score</th>"
            f"<th>centroid (raster CRS)</th><th>area (CRS units²)</th><th>on nodata</th></tr>"
            f"{rows}</table></div>"
        )


class Localizer:
    """Photo + clicks + raster -> georeferenced target polygons, with one model.

    Build it with :meth:`load` (a checkpoint) or directly around any
    :class:`~geomogeo.predictor.Predictor`.
    """

    def __init__(self, predictor: Predictor, refiner: Refiner | None = None,
                 joint_predictor: Predictor | None = None,
                 search_predictor: Predictor | None = None) -> None:
        """``joint_predictor``: the network pass of a photo whose registration succeeded and
        whose boxes the refiner draws (``config.refine``), where the network only scores the
        cell under each registered click (None: ``predictor``). ``search_predictor``: the
        looks of the no-compass rotation search, whose kept rotation ``predictor`` then looks
        at once more (None: ``predictor`` throughout). Both must take ``predictor``'s
        inputs: the same network with a lighter test-time augmentation (:meth:`load`'s
        ``joint_tta`` and ``search_tta``)."""
        if refiner is not None and not math.isclose(refiner.gsd, predictor.spec.gsd):
            raise ValueError(f"box refiner {refiner.name!r} works at {refiner.gsd} m/px, the "
                             f"network {predictor.name!r} at {predictor.spec.gsd} m/px")
        for role, other in (("joint", joint_predictor), ("search", search_predictor)):
            if other is not None and other.spec != predictor.spec:
                raise ValueError(f"the {role} predictor {other.name!r} takes {other.spec}, "
                                 f"the network {predictor.name!r} {predictor.spec}")
        self.predictor = predictor
        self.refiner = refiner
        self.joint_predictor = joint_predictor or predictor
        self.search_predictor = search_predictor or predictor

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, *, device: str = "cpu",
        tta: str | TTASpec = DEFAULT_TTA, refiner: bool | RefinerPaths = True,
        joint_tta: str | TTASpec = DEFAULT_JOINT_TTA,
        search_tta: str | TTASpec | None = None,
    ) -> Localizer:
        """Load a checkpoint (``None``: the default one in ``model/``, hash-checked).

        Checkpoints are read with ``torch.load(weights_only=True)``; nothing is unpickled.
        ``tta`` is the test-time augmentation of :class:`~geomogeo.nn.predictor.TorchPredictor`
        (:mod:`geomogeo.nn.tta`): ``"rot4+s2"`` by default (16 turned and shifted passes,
        voted), ``"none"`` for one pass. ``joint_tta`` is the same network's test-time
        augmentation for a registered photo whose boxes the refiner draws around the registered
        clicks: there the network only scores, so ``"none"`` (one pass) by default. On the
        validation tile (Rotterdam b, 280 photos) the joint figures are the same as with
        ``"rot4+s2"`` (the boxes are the refiner's) at 0.28 instead of 0.60 s per photo; the
        targets' scores and heatmaps are one pass's (the heatmaps on the network's own grid,
        half as fine). Without the refiner (``JointConfig(refine=False)``) the network's boxes
        are the answer and ``tta`` applies: one pass there lowered the joint acc@0.5 from 0.810
        to 0.578. ``search_tta`` is the same network's test-time augmentation for each
        rotation of the no-compass search (:class:`~geomogeo.joint.JointConfig`'s
        ``rotations``): ``tta``'s by default (None). A lighter one is a speed setting: the kept
        rotation then gets one more look with ``tta``'s passes. ``"rot4"`` with 12 rotations
        (64 passes against the 128 of 8 rotations, the default then) was chosen on the
        validation tile (acc@0.5 0.247 against 0.227, 78 photos), but lost on both test sets
        (Rotterdam c 0.437 -> 0.389, Las Vegas 0.361 -> 0.316) while taking a fifth of the
        time, so it is not the default.

        ``refiner``: the box refiner (:func:`open_refiner`) that boxes each joint target
        around its registered click: True, the one shipped in ``model/`` (hash-checked;
        ``GEOMOGEO_REFINER`` overrides it); a path, that checkpoint; several paths, the mean
        of their boxes; False, none (the network's boxes).

        A ``.onnx`` file (``geomogeo export-onnx``) runs on ONNX Runtime without PyTorch
        (:class:`~geomogeo.onnx_predictor.OnnxPredictor`, CPU only); its test-time augmentation
        is built in and ``tta`` must match it; ``joint_tta`` and ``search_tta`` do not apply
        (every look gets the graph's passes). It runs without a refiner unless ``refiner`` is a path
        (or paths; they need PyTorch).
        """
        onnx = path is not None and Path(path).suffix.lower() == ".onnx"
        joint: Predictor | None = None
        search: Predictor | None = None
        if onnx:
            from geomogeo.onnx_predictor import OnnxPredictor

            if device != "cpu":
                raise ValueError(f"{path}: ONNX models run on the CPU here, not {device!r}")
            predictor: Predictor = OnnxPredictor(path, tta=tta)
        else:
            from geomogeo.engine.checkpoint import load_checkpoint
            from geomogeo.nn.predictor import TorchPredictor

            ckpt_path, expected = default_checkpoint() if path is None else (Path(path), "")
            loaded = load_checkpoint(ckpt_path, expected_sha256=expected or None)
            predictor = TorchPredictor(loaded.model, name=loaded.model_config.name,
                                       sha256=loaded.sha256, device=device, tta=tta)

            def light(mode: str | TTASpec) -> Predictor | None:
                if parse_tta(mode) == parse_tta(tta):
                    return None
                return TorchPredictor(loaded.model, name=loaded.model_config.name,
                                      sha256=loaded.sha256, device=device, tta=mode)

            joint = light(joint_tta)
            search = None if search_tta is None else light(search_tta)
        ref = None
        if refiner is not False and not (onnx and refiner is True):
            ref = open_refiner(None if refiner is True else refiner, device=device)
        return cls(predictor, ref, joint, search)

    @property
    def spec(self) -> Any:
        return self.predictor.spec

    def localize(
        self,
        photo_path: str | os.PathLike[str],
        raster_path: str | os.PathLike[str] | Any,
        points: Sequence[Sequence[float]] | np.ndarray,
        center: tuple[float, float] | None = None,
        *,
        center_crs: Any = "EPSG:4326",
        bands: Sequence[int] | None = None,
        extent: tuple[float, float, float, float] | None = None,
        heading: float | None = None,
        overlap: float = 0.5,
        heatmaps: bool = True,
        quiet: bool = False,
        joint: bool = True,
        config: JointConfig | None = None,
    ) -> LocalizationResult:
        """Find each clicked object of ``photo_path`` on ``raster_path``.

        Args:
            photo_path: JPEG/PNG/TIFF photo; EXIF orientation is applied before clicks are read.
            raster_path: any GeoTIFF/COG rasterio opens (a geotransform or GCPs), or an
                in-memory ``xarray.DataArray`` with rioxarray's CRS and transform (e.g. from
                ``rioxarray.open_rasterio``); see :func:`geomogeo.geo.raster.open_raster`.
            points: (x, y) click positions in photo pixels, continuous, origin at the top-left
                corner of the top-left pixel.
            center: where the photo was taken, and so where the reference window is
                centred: (lon, lat) in EPSG:4326, or (x, y) in ``center_crs``. None: the
                photo's EXIF GPS position; if it has none, the raster (or ``extent``) is
                searched with overlapping windows. The no-compass search takes it as the
                camera's position (``config.camera_sigma_m``; None there if it is not).
            center_crs: CRS of ``center`` (default EPSG:4326, x = lon).
            bands: 1-based raster bands mapped to the model's RGB input (default: first three;
                a single band is replicated).
            extent: (xmin, ymin, xmax, ymax) in the raster CRS limiting the search.
            heading: the camera's heading, degrees clockwise from north; the photo and its
                clicks are rotated north-up before the model sees them (as in training).
                None: the EXIF ``GPSImgDirection`` when present. A registered photo uses the
                registration's heading instead; with none of these, ``config.rotations``
                query rotations are searched per window (:func:`~geomogeo.joint.search_rotation`,
                scored by ``config.rotation_search``), starting at the heading modulo 90
                degrees that the photo's edges give against the window's
                (``config.edge_heading``, :func:`~geomogeo.geo.heading.heading_mod90`).
            overlap: fraction of overlap between search windows.
            heatmaps: keep each target's attention map.
            quiet: no progress bar.
            joint: when the location is known (``center`` or EXIF GPS), register the photo to
                the raster around it (:func:`~geomogeo.joint.register_scene`); if that
                succeeds, centre the model window on the registered clicks and weigh the
                network's per-cell confidence by a prior around each registered click
                (targets get ``method="joint"``). Otherwise, or with ``joint=False``, the
                network alone decides (``method="network"``; a failed registration is logged
                and reported by :meth:`LocalizationResult.registration_summary`).
            config: the joint localization's settings (:class:`~geomogeo.joint.JointConfig`;
                None: the defaults).
        """
        center, heading = _check_pose(center, heading)
        config = config or JointConfig()
        ph = photo.load_photo(photo_path)
        pts = photo.validate_points(points, ph.width, ph.height, ph.path)
        src = raster.open_raster(raster_path, bands=bands)
        spec = self.predictor.spec

        location: tuple[float, float] | None = None
        if center is not None:
            centres = [georef.to_crs(center[0], center[1], georef.as_crs(center_crs), src.crs)]
            location = georef.to_lonlat(centres[0][0], centres[0][1], src.crs)
        elif ph.gps is not None:
            location = (ph.gps.lon, ph.gps.lat)
            centres = [georef.lonlat_to_crs(ph.gps.lon, ph.gps.lat, src.crs)]
        else:
            centres = raster.search_centers(
                src, spec.reference_size, spec.gsd, overlap=overlap, extent=extent
            )
            log.info("no location given and no EXIF GPS: searching %d windows", len(centres))

        heading_source = "given" if heading is not None else "none"
        if heading is None and ph.gps is not None and ph.gps.heading is not None:
            heading, heading_source = ph.gps.heading, "exif"
        scene = None
        if joint and len(centres) == 1:
            scene = register_scene(ph, pts, src, centres[0], config)
            if scene.ok:
                assert scene.heading is not None
                cx, cy = scene.centre()
                centre = georef.to_crs(cx, cy, scene.window.crs, src.crs)
                if not src.contains(*centre):
                    # Clicks on things beyond the raster's edge: the window goes as near them
                    # as the raster allows (those off it get no answer there, see on_nodata).
                    log.warning("%s: the registered clicks' centre lies off %s: the window is "
                                "placed at the raster's nearest point", ph.path.name,
                                src.path.name)
                    centre = src.nearest_point(*centre)
                centres = [centre]
                heading, heading_source = scene.heading, "registration"
            else:
                log.warning("%s: registration failed (%s): the network alone localizes",
                            ph.path.name, scene.registration.reason)
        search = heading is None and config.rotations > 1
        # a heading (EXIF or given) but no registration: the clicks' geometry is voted on
        # around it, and each target's cell chosen under the consistent positions' prior (one
        # click is placed against the camera where it is known)
        voted = len(pts) > 1 or (config.single_click_vote and location is not None)
        vote = (heading is not None and not (scene is not None and scene.ok) and voted
                and config.heading_vote_deg is not None
                and config.rotation_search == "consistency")
        consistency = None
        if (search and config.rotation_search == "consistency") or vote:
            consistency = ConsistencySearch.from_config(
                config, ph.width, spec.gsd, photo.scale_hint_from_exif(ph, spec.gsd),
                photo.focal_px_from_exif(ph)
                or photo.focal_px_from_fov(ph.width, config.search_hfov_deg))
        # a window read at the photo's location is centred on its camera
        camera = (spec.reference_size / 2.0,) * 2 if location is not None else None
        if search:
            heading_source = "search"
        else:
            query, qpts = orient.prepare_query(ph.image, pts, heading, spec.query_size,
                                                spec.query_fit)

        best: list[tuple[float, int, int]] = [(-1.0, -1, -1)] * len(pts)  # (score, window, run)
        kept_windows: list[raster.ReferenceWindow] = []
        kept_preds: list[_WindowResult] = []
        searched = 0
        for c in tqdm(centres, desc="windows", disable=quiet or len(centres) < 2, unit="win"):
            try:
                win = raster.read_window(src, c, spec.reference_size, spec.gsd)
            except LocationError:
                if len(centres) == 1:
                    raise
                continue
            if len(centres) > 1 and win.fraction_valid < 0.25:
                continue
            searched += 1
            used_heading = heading
            if search:
                lighter = self.search_predictor is not self.predictor
                start = heading_mod90(ph.image, win.image, win.valid) \
                    if config.edge_heading else 0.0
                found = search_rotation(self.search_predictor, win.image, ph.image, pts,
                                        config.rotations, consistency=consistency,
                                        final=self.predictor if lighter else None,
                                        start=start, camera=camera)
                pred, used_heading = found.prediction, found.heading
            elif vote:
                assert heading is not None
                pred = search_rotation(self.predictor, win.image, ph.image, pts, 1,
                                       consistency=consistency, start=heading, camera=camera,
                                       spread=config.heading_vote_deg).prediction
            elif scene is not None and scene.ok and self.refiner is not None and config.refine:
                # the refiner draws these boxes: the network only scores the chosen cells
                pred = self.joint_predictor.predict(win.image, query, qpts)
            else:
                pred = self.predictor.predict(win.image, query, qpts)
            res = _WindowResult(pred.boxes, pred.scores, pred.heatmaps, used_heading, "network")
            if scene is not None and scene.ok and pred.mass is not None:
                prior = scene.prior(win, pred.mass.shape[-1], config)
                boxes, scores, _ = select(pred.mass, pred.cell_boxes, prior)
                res = _WindowResult(scene.place(boxes, win, config), scores, pred.heatmaps,
                                    used_heading, "joint")
            improved = False
            for k in range(len(pts)):
                if res.scores[k] > best[k][0]:
                    best[k] = (float(res.scores[k]), len(kept_windows), k)
                    improved = True
            if improved:
                kept_windows.append(win)
                kept_preds.append(res)
        if searched == 0:
            raise LocationError(f"{src.path}: no search window overlaps valid raster data")

        registered: list[tuple[float, float] | None] = [None] * len(pts)
        parallax = [math.nan] * len(pts)
        if scene is not None and scene.ok and scene.shifts_m is not None:
            parallax = [float(v) for v in scene.shifts_m]
        if scene is not None and scene.ok:
            assert scene.clicks_xy is not None
            rx, ry = georef.to_crs(scene.clicks_xy[:, 0], scene.clicks_xy[:, 1],
                                   scene.window.crs, src.crs)
            registered = [(float(x), float(y)) for x, y in zip(rx, ry, strict=True)]
        reg_ok = scene is not None and scene.ok
        # Keep only the windows some target was finally taken from, renumbered in order.
        used = sorted({w for _, w, _ in best})
        renumber = {w: i for i, w in enumerate(used)}
        final, refined = self._final_boxes(best, kept_windows, kept_preds, scene, config)
        targets = []
        for k, (score, w, _) in enumerate(best):
            win, pred = kept_windows[w], kept_preds[w]
            box = tuple(float(v) for v in final[k])
            poly = georef.boxes_to_polygons(np.array([box]), win.transform)[0]
            if not georef.as_crs(win.crs).equals(src.crs):
                poly = georef.reproject_geometries([poly], win.crs, src.crs)[0]
            targets.append(
                Target(
                    index=k,
                    click=(float(pts[k, 0]), float(pts[k, 1])),
                    score=score,
                    box=box,  # type: ignore[arg-type]
                    polygon=poly,
                    window=renumber[w],
                    on_nodata=_invalid_fraction(win.valid, box) > NODATA_FLAG_FRACTION,
                    heatmap=pred.heatmaps[k].astype(np.float32) if heatmaps else None,
                    method=pred.method,
                    n_inliers=int(scene.registration.n_inliers) if reg_ok else 0,
                    reproj_error_px=(float(scene.registration.reproj_error_px) if reg_ok
                                     else math.nan),
                    heading_used=math.nan if pred.heading is None else float(pred.heading),
                    heading_source=heading_source,
                    registered_xy=registered[k],
                    parallax_m=parallax[k],
                    box_source="refiner" if refined[k] else "network",
                )
            )
        return LocalizationResult(
            photo=ph.path,
            raster=src.path,
            crs=src.crs,
            targets=tuple(targets),
            windows=tuple(kept_windows[w] for w in used),
            windows_searched=searched,
            photo_location=location,
            model_name=self.predictor.name,
            model_sha256=self.predictor.sha256,
            time=datetime.now(timezone.utc),
            registration=scene,
            refiner_sha256=self.refiner.sha256 if refined.any() else "",
        )

    def _final_boxes(self, best: list[tuple[float, int, int]],
                     windows: list[raster.ReferenceWindow], preds: list[_WindowResult],
                     scene: RegisteredScene | None, config: JointConfig
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Each target's box, (m, 4) pixels of its window, and (m,) whether the refiner drew
        it: around the registered click for a joint target (``config.refine``), around the
        network's box centre for the others (``config.refine_network``)."""
        boxes = np.array([preds[w].boxes[k] for _, w, k in best], dtype=np.float64)
        refined = np.zeros(len(best), dtype=bool)
        if self.refiner is None:
            return boxes, refined
        for w in sorted({w for _, w, _ in best}):
            ks = [k for k, (_, wk, _) in enumerate(best) if wk == w]
            joint = preds[w].method == "joint"
            if not (config.refine if joint else config.refine_network):
                continue
            if joint:
                assert scene is not None
                pts = scene.targets_px(windows[w])[ks]
            else:
                pts = (boxes[ks, :2] + boxes[ks, 2:]) / 2.0
            boxes[ks] = refine_boxes(self.refiner, windows[w].image, pts, config.refine_passes)
            refined[ks] = True
        return boxes, refined

    def localize_many(
        self,
        clicks: str | os.PathLike[str],
        reference: str | os.PathLike[str],
        out: str | os.PathLike[str],
        *,
        workers: int | None = None,
        scheduler: str | None = None,
        bands: Sequence[int] | None = None,
        quiet: bool = False,
    ) -> BatchSummary:
        """Localize every photo of a clicks table on a raster, VRT or folder of tiles into one
        resumable GeoPackage, on Dask or in this process (``workers=0``); see
        :func:`geomogeo.batch.run_batch`. Returns its :class:`~geomogeo.batch.BatchSummary`."""
        from geomogeo.batch import run_batch

        return run_batch(clicks, reference, out, localizer=self, workers=workers,
                         scheduler=scheduler, bands=bands, quiet=quiet)


def _check_pose(
    center: Any, heading: Any
) -> tuple[tuple[float, float] | None, float | None]:
    """``center`` as two finite floats and ``heading`` as a finite float (None stays None).

    Raises:
        LocationError: not numbers, not two of them, or NaN/infinite.
    """
    if center is not None:
        try:
            cx, cy = (float(v) for v in center)
        except (TypeError, ValueError) as e:
            raise LocationError(
                f"center must be two numbers (x, y), e.g. (lon, lat), got {center!r}"
            ) from e
        if not (math.isfinite(cx) and math.isfinite(cy)):
            raise LocationError(f"center must be finite, got {center!r}")
        center = (cx, cy)
    if heading is not None:
        try:
            heading = float(heading)
        except (TypeError, ValueError) as e:
            raise LocationError(
                f"heading must be a number of degrees clockwise from north, got {heading!r}"
            ) from e
        if not math.isfinite(heading):
            raise LocationError(f"heading must be finite, got {heading!r}")
    return center, heading


@dataclass(frozen=True)
class _WindowResult:
    """The boxes kept from one window: (m, 4) reference-input pixels, (m,) scores, heatmaps,
    the heading the query was turned with (None: not turned) and how the boxes were chosen."""

    boxes: np.ndarray
    scores: np.ndarray
    heatmaps: np.ndarray
    heading: float | None
    method: str


def _invalid_fraction(valid: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Fraction of the box's window pixels that are invalid (nodata or off-raster); a box
    entirely off the window counts as invalid."""
    h, w = valid.shape
    x1, y1, x2, y2 = (int(np.floor(box[0])), int(np.floor(box[1])),
                      int(np.ceil(box[2])), int(np.ceil(box[3])))
    area = max(x2 - x1, 1) * max(y2 - y1, 1)
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    inside = valid[cy1:cy2, cx1:cx2].sum() if cx2 > cx1 and cy2 > cy1 else 0
    return 1.0 - float(inside) / area
