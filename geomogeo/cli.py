"""The ``geomogeo`` command line: a thin layer over the Python API.

Exit codes: 0 success; 1 unexpected failure (a bug: please report it); 2 bad usage (unknown
option, missing argument); 3 bad input (a file or value geomogeo refuses, with a message
naming it); 4 an output could not be written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from geomogeo.errors import GeomogeoError, OutputError
from geomogeo.predictor import DEFAULT_JOINT_TTA, DEFAULT_TTA, TTASpec, parse_tta

log = logging.getLogger("geomogeo")

EXIT_FAILURE, EXIT_USAGE, EXIT_INPUT, EXIT_OUTPUT = 1, 2, 3, 4


def _tta(ctx: click.Context, param: click.Parameter, value: str | None) -> TTASpec | None:
    if value is None:  # an option without a default of its own
        return None
    try:
        return parse_tta(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


tta_option = click.option(
    "--tta", default=DEFAULT_TTA, show_default=True, callback=_tta, metavar="MODE",
    help="Test-time augmentation: GROUP or GROUP+sSTEPS. GROUP votes over 1 (none), 4 turned "
    "(rot4) or 8 turned and mirrored (d4) views; sSTEPS adds STEPS x STEPS sub-cell shifts "
    "of the reference (s2, s4). 'none' is one network pass.",
)

joint_tta_option = click.option(
    "--joint-tta", default=DEFAULT_JOINT_TTA, show_default=True, callback=_tta,
    metavar="MODE", help="Test-time augmentation of the network for a photo whose registration "
    "succeeded and whose boxes the refiner draws (the network only scores them there): modes "
    "as --tta.")

search_tta_option = click.option(
    "--search-tta", default=None, callback=_tta, metavar="MODE",
    help="Test-time augmentation of each rotation of the no-compass rotation search "
    "(default: --tta's); a lighter mode is faster, and the kept rotation then gets one more "
    "look with --tta's: modes as --tta.")

camera_sigma_option = click.option(
    "--camera-sigma", type=click.FloatRange(min=0), default=None, metavar="METRES",
    help="The no-compass search's prior that the photo's centre lies ahead of the camera "
    "(EXIF GPS or --center) along the heading tried: its spread, metres; 0 turns it off, "
    "e.g. when --center is not where the photo was taken (default: JointConfig's "
    "camera_sigma_m).")


def _tilts(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``DEG,DEG,...`` -> a tuple of floats; ``none`` -> () (the similarity); unset: None."""
    if value is None:
        return None
    if value == "none":
        return ()
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: DEG,DEG,... or 'none'") from None


def _search_overrides(camera_sigma: float | None,
                      search_tilts: tuple[float, ...] | None) -> dict[str, Any]:
    """``JointConfig`` overrides of the search options ``localize`` and ``evaluate`` share
    (unset: the default; 0 or 'none': off)."""
    over: dict[str, Any] = {}
    if camera_sigma is not None:
        over["camera_sigma_m"] = camera_sigma or None
    if search_tilts is not None:
        over["search_tilts_deg"] = search_tilts or None
    return over


search_tilts_option = click.option(
    "--search-tilts", callback=_tilts, default=None, metavar="DEG,...|none",
    help="The no-compass search's vote models the photo as a camera tilted forward by each "
    "of these angles from nadir, with the EXIF focal length (else a 75 degree field of view); "
    "'none': the photo's own offsets, e.g. for a photo taken from the ground (default: "
    "JointConfig's search_tilts_deg).")


def _refiner(ctx: click.Context, param: click.Parameter, value: str) -> bool | list[Path]:
    if value in ("default", "none"):
        return value == "default"
    return [Path(v) for v in value.split(os.pathsep) if v]


refiner_option = click.option(
    "--refiner", default="default", show_default=True, callback=_refiner, metavar="PATH",
    help="Box refiner checkpoint that boxes each registered target around its click "
    "('default': the shipped one; 'none': the network's own boxes; several paths joined by "
    f"{os.pathsep!r}: the mean of their boxes).")


def _point(text: str) -> tuple[float, float]:
    from geomogeo.geo.photo import parse_point

    return parse_point(text)


def _pair(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        a, b = (float(v) for v in value.split(","))
    except ValueError as e:
        raise click.BadParameter(f"expected two numbers 'a,b', got {value!r}") from e
    return a, b


def _ints(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError as e:
        raise click.BadParameter(f"expected comma-separated band numbers, got {value!r}") from e


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bars.")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.version_option(package_name="geomogeo")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, verbose: int) -> None:
    """Find the clicked objects of a field photo on a georeferenced orthophoto."""
    levels = (logging.WARNING, logging.INFO, logging.DEBUG)
    # -q alone: errors only; -q -v: no progress bars but INFO logs (for log files).
    level = logging.ERROR if quiet and not verbose else levels[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    ctx.obj = {"quiet": quiet}


@cli.command()
@click.argument("photo", type=click.Path(path_type=Path))
@click.argument("raster", type=click.Path(path_type=Path))
@click.option("-p", "--point", "points", multiple=True, metavar="X,Y",
              help="A click in photo pixels (repeatable).")
@click.option("--points-file", type=click.Path(path_type=Path),
              help="CSV (x,y) or JSON file of clicks.")
@click.option("--center", callback=_pair, metavar="A,B",
              help="Where the photo was taken (the window's centre): lon,lat (or x,y in "
              "--center-crs). Default: EXIF GPS, else search.")
@click.option("--center-crs", default="EPSG:4326", show_default=True)
@click.option("--heading", type=float, default=None, metavar="DEG",
              help="Camera heading, degrees clockwise from north. Default: EXIF GPSImgDirection.")
@click.option("--bands", callback=_ints, metavar="B1,B2,B3", help="Raster bands for R,G,B.")
@click.option("--extent", metavar="XMIN,YMIN,XMAX,YMAX", help="Limit the search (raster CRS).")
@click.option("--model", "model_path", type=click.Path(path_type=Path),
              help="Checkpoint or .onnx export (default: the shipped model).")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path),
              default=Path("geomogeo_out"), show_default=True, help="Output folder.")
@click.option("--heatmaps/--no-heatmaps", default=True, show_default=True)
@click.option("--map/--no-map", "make_map", default=True, show_default=True)
@click.option("--joint/--no-joint", default=True, show_default=True,
              help="Register the photo to the raster and steer the network with it (the "
              "registered heading then replaces --heading/EXIF); --no-joint: network alone.")
@click.option("--click-inner", type=click.FloatRange(0.0, 1.0), default=None, metavar="F",
              help="Joint: the box is moved (not resized) so that its registered click lies "
              "within F of its half-size from its centre: 0 centres it (the default, for "
              "clicks in the middle of objects), 1 only keeps the click inside (clicks "
              "anywhere on an object).")
@camera_sigma_option
@search_tilts_option
@refiner_option
@tta_option
@joint_tta_option
@search_tta_option
@click.pass_context
def localize(ctx: click.Context, photo: Path, raster: Path, points: Sequence[str],
             points_file: Path | None, center: tuple[float, float] | None, center_crs: str,
             bands: tuple[int, ...] | None, extent: str | None, model_path: Path | None,
             out_dir: Path, heatmaps: bool, make_map: bool, tta: TTASpec, joint_tta: TTASpec,
             search_tta: TTASpec | None, heading: float | None, joint: bool,
             click_inner: float | None, camera_sigma: float | None,
             search_tilts: tuple[float, ...] | None, refiner: bool | list[Path]) -> None:
    """Localize the clicked objects of PHOTO on RASTER."""
    from geomogeo.geo.photo import read_points_file
    from geomogeo.localize import Localizer

    pts = [_point(p) for p in points]
    if points_file is not None:
        pts += [tuple(p) for p in read_points_file(points_file)]
    ext = None
    if extent:
        try:
            ext = tuple(float(v) for v in extent.split(","))
            assert len(ext) == 4
        except (ValueError, AssertionError) as e:
            raise click.BadParameter(f"--extent needs four numbers, got {extent!r}") from e
    from geomogeo.joint import JointConfig

    over = _search_overrides(camera_sigma, search_tilts)
    if click_inner is not None:
        over["click_inner"] = click_inner
    config = JointConfig(**over)
    loc = Localizer.load(model_path, tta=tta, refiner=refiner, joint_tta=joint_tta,
                         search_tta=search_tta)
    res = loc.localize(photo, raster, pts, center, center_crs=center_crs, bands=bands,
                       extent=ext, heatmaps=heatmaps, quiet=ctx.obj["quiet"], heading=heading,
                       joint=joint, config=config)
    written = write_outputs(res, out_dir, heatmaps=heatmaps, make_map=make_map)
    click.echo(f"{res.photo.name}: {res.registration_summary()}")
    for t in res.targets:
        c = t.polygon.centroid
        click.echo(f"target {t.index}: score {t.score:.3f}  centre {c.x:.3f} {c.y:.3f}  "
                   f"{t.method}{' (refiner box)' if t.box_source == 'refiner' else ''}, "
                   f"heading {t.heading_used:.1f} ({t.heading_source})"
                   f"{'' if math.isnan(t.parallax_m) else f', parallax {t.parallax_m:.1f} m'}"
                   f"{'  (on nodata)' if t.on_nodata else ''}")
    click.echo(f"{res.windows_searched} window(s) searched; wrote {', '.join(map(str, written))}")


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn an operating-system failure while writing outputs under ``path`` (read-only or
    missing folder, a file where a folder should be, disk full) into an :class:`OutputError`
    naming the file (exit code 4)."""
    try:
        yield
    except GeomogeoError:
        raise
    except OSError as e:
        where = e.filename if e.filename is not None else path
        reason = e.strerror or str(e)
        if isinstance(e, (FileExistsError, NotADirectoryError)):
            reason += " (a file stands where a folder is needed)"
        raise OutputError(f"cannot write {where}: {reason}") from e


def write_outputs(res: Any, out_dir: Path, *, heatmaps: bool, make_map: bool,
                  append: bool = True) -> list[Path]:
    """Write a result's GeoPackage, GeoJSON, heatmaps and map into ``out_dir``.

    ``append=False`` starts ``targets.gpkg`` over instead of appending to it.

    Raises:
        OutputError: something could not be written (the message names the file).
    """
    with _writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [res.to_file(out_dir / "targets.gpkg", append=append),
                   res.to_file(out_dir / f"{res.photo.stem}.geojson")]
        if heatmaps:
            written += res.write_heatmaps(out_dir / "heatmaps")
        if make_map:
            written.append(res.to_map(out_dir / f"{res.photo.stem}_map.html"))
    return written


@cli.command()
@click.argument("boxes_file", type=click.Path(path_type=Path))
@click.argument("raster", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_path", type=click.Path(path_type=Path), required=True,
              help="Output .gpkg (appended to) or .geojson.")
@click.option("--layer", default="boxes", show_default=True, help="GeoPackage layer name.")
def georeference(boxes_file: Path, raster: Path, out_path: Path, layer: str) -> None:
    """Turn pixel boxes (CSV/JSON, raster pixel edges) detected elsewhere into polygons."""
    from geomogeo.boxes import georeference_boxes_file
    from geomogeo.geo import export

    gdf = georeference_boxes_file(boxes_file, raster)
    suffix = out_path.suffix.lower()
    if suffix not in (".gpkg", ".geojson", ".json"):
        raise click.BadParameter(f"unknown output format {suffix!r}; use .gpkg or .geojson")
    with _writing(out_path):
        if suffix == ".gpkg":
            export.write_geopackage(out_path, {layer: gdf}, append=True)
        else:
            export.write_geojson(out_path, gdf)
    click.echo(f"wrote {len(gdf)} polygon(s) to {out_path}")


@cli.command()
@click.argument("raster", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(raster: Path, as_json: bool) -> None:
    """CRS, size, bands, GSD in metres, bounds in lon/lat and nodata of RASTER."""
    from geomogeo.geo.raster import raster_info

    meta = raster_info(raster)
    if as_json:
        click.echo(json.dumps(meta, indent=2, default=str))
        return
    for key, value in meta.items():
        click.echo(f"{key:>14}: {value}")


@cli.command()
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path),
              default=Path("out/demo"), show_default=True)
@click.option("--samples", type=click.Path(path_type=Path), default=None,
              help="Sample folder with demo.json (default: the shipped sample_tiles/).")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None)
@tta_option
@joint_tta_option
@click.pass_context
def demo(ctx: click.Context, out_dir: Path, samples: Path | None, model_path: Path | None,
         tta: TTASpec, joint_tta: TTASpec) -> None:
    """Localize the shipped sample photos and compare with the known answers."""
    from geomogeo.demo import run_demo

    run_demo(out_dir, samples=samples, model_path=model_path, quiet=ctx.obj["quiet"],
             echo=click.echo, tta=tta, joint_tta=joint_tta)


@cli.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--resume", type=click.Path(path_type=Path), default=None)
@click.pass_context
def train(ctx: click.Context, config: Path, resume: Path | None) -> None:
    """Train a model from a TOML/JSON CONFIG file."""
    from geomogeo.engine.train import train_from_file

    result = train_from_file(config, resume=resume, quiet=ctx.obj["quiet"])
    click.echo(f"best checkpoint: {result.best_checkpoint}")


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True)
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None)
@click.option("--cvogl", "cvogl_subset", type=click.Choice(["DroneAerial", "SVI"]),
              default=None, help="MANIFEST is a CVOGL root folder; evaluate this subset.")
@click.option("--localize", "whole", is_flag=True,
              help="Run the whole localization on each photo's raster (records rendered by "
              "`geomogeo synth`): registration + fixed box, network alone and joint, with and "
              "without heading.")
@click.option("--limit", type=int, default=None, help="With --localize: the first N photos.")
@click.option("--run", "runs", multiple=True, metavar="NAME",
              help="With --localize: only this run (repeatable), e.g. 'network, no heading, "
              "rotation search'. Default: all.")
@click.option("--rotation-search", type=click.Choice(["consistency", "score"]), default=None,
              help="With --localize: how the no-compass rotation search scores a rotation "
              "(default: JointConfig's).")
@click.option("--edge-heading/--no-edge-heading", default=None,
              help="With --localize: start the no-compass search's rotations at the heading "
              "modulo 90 degrees from the photo's edges (default: JointConfig's).")
@camera_sigma_option
@click.option("--consistency-prior", type=click.FloatRange(min=0), default=None,
              metavar="METRES",
              help="With --localize: the no-compass search chooses each target's cell under a "
              "prior of this spread around its consistent position; 0 turns it off "
              "(default: JointConfig's consistency_prior_m).")
@click.option("--heading-vote", default=None, metavar="DEG|none",
              help="With --localize: with a heading but no registration, vote on the clicks' "
              "geometry within DEG degrees of it and choose each target's cell under the "
              "consistent positions' prior; 'none': the network's own choice (default: "
              "JointConfig's heading_vote_deg).")
@click.option("--single-click-vote/--no-single-click-vote", default=None,
              help="With --localize: a one-click photo at its camera's position is placed "
              "by the vote with the camera prior too, without a heading (the search) and with "
              "one but no registration (default: JointConfig's).")
@search_tilts_option
@refiner_option
@click.option("--refine-network/--no-refine-network", default=None,
              help="With --localize: the refiner also boxes the network-alone targets "
              "(default: JointConfig's).")
@click.option("--refine-passes", type=click.IntRange(min=1), default=None,
              help="With --localize: refiner passes, each around the previous box's centre "
              "(default: JointConfig's).")
@click.option("--refine/--no-refine", default=None,
              help="With --localize: the refiner boxes the joint targets (default: "
              "JointConfig's).")
@tta_option
@joint_tta_option
@search_tta_option
@click.option("--rotations", type=click.IntRange(min=0), default=None,
              help="With --localize: rotations of the no-compass search (default: "
              "JointConfig's).")
def evaluate(checkpoint: Path, manifest: Path, split: str, out_dir: Path | None,
             cvogl_subset: str | None, whole: bool, limit: int | None,
             runs: tuple[str, ...], rotation_search: str | None,
             edge_heading: bool | None, camera_sigma: float | None,
             consistency_prior: float | None, heading_vote: str | None,
             single_click_vote: bool | None, search_tilts: tuple[float, ...] | None,
             tta: TTASpec,
             joint_tta: TTASpec, search_tta: TTASpec | None, rotations: int | None,
             refiner: bool | list[Path], refine_network: bool | None,
             refine: bool | None, refine_passes: int | None) -> None:
    """Evaluate CHECKPOINT on a MANIFEST split: acc@t, accI@t by targets per image.

    MANIFEST may also be a packed .npz file (all its photos) or, with --cvogl, a CVOGL folder.
    """
    from geomogeo.engine.evaluate import evaluate as run_eval
    from geomogeo.engine.evaluate import evaluate_localize, localize_markdown

    if whole:
        from geomogeo.engine.evaluate import LOCALIZE_RUNS
        from geomogeo.joint import JointConfig

        unknown = [r for r in runs if r not in LOCALIZE_RUNS]
        if unknown:
            raise click.BadParameter(f"unknown run(s) {unknown}; expected some of "
                                     f"{list(LOCALIZE_RUNS)}", param_hint="--run")
        over = _search_overrides(camera_sigma, search_tilts)
        if rotation_search is not None:
            over["rotation_search"] = rotation_search
        if edge_heading is not None:
            over["edge_heading"] = edge_heading
        if consistency_prior is not None:
            over["consistency_prior_m"] = consistency_prior or None
        if single_click_vote is not None:
            over["single_click_vote"] = single_click_vote
        if heading_vote is not None:
            try:
                over["heading_vote_deg"] = None if heading_vote == "none" else float(heading_vote)
            except ValueError as e:
                raise click.BadParameter(f"a number of degrees or 'none', got {heading_vote!r}",
                                         param_hint="--heading-vote") from e
        if refine_network is not None:
            over["refine_network"] = refine_network
        if refine is not None:
            over["refine"] = refine
        if refine_passes is not None:
            over["refine_passes"] = refine_passes
        if rotations is not None:
            over["rotations"] = rotations
        result = evaluate_localize(checkpoint, manifest, split=split, out_dir=out_dir, tta=tta,
                                   joint_tta=joint_tta, search_tta=search_tta, limit=limit,
                                   runs=runs or tuple(LOCALIZE_RUNS),
                                   config=JointConfig(**over), refiner=refiner)
        click.echo(localize_markdown(result))
        return
    metrics = run_eval(checkpoint, manifest, split=split, out_dir=out_dir,
                       cvogl_subset=cvogl_subset, tta=tta)
    click.echo(json.dumps(metrics, indent=2, default=str))


@cli.command("export-onnx")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@tta_option
@click.option("--opset", type=click.IntRange(14, 20), default=17, show_default=True,
              help="ONNX opset to write.")
@click.option("--batch-passes/--no-batch-passes", default=True, show_default=True,
              help="Run the TTA passes as one batch (faster; passes x the memory).")
def export_onnx(checkpoint: Path, out: Path, tta: TTASpec, opset: int,
                batch_passes: bool) -> None:
    """Export CHECKPOINT as an ONNX model OUT (.onnx) that runs without PyTorch.

    The passes of --tta and their vote maps are inside the graph; the number of clicks is
    dynamic. Load it with Localizer.load("OUT.onnx") or --model OUT.onnx.
    """
    from geomogeo.engine.onnx_export import export_onnx as run_export

    if out.suffix.lower() != ".onnx":
        raise click.BadParameter(f"{out}: the output must end in .onnx", param_hint="OUT")
    try:
        meta = run_export(checkpoint, out, tta=tta, opset=opset, batch_passes=batch_passes)
    except ValueError as e:
        if isinstance(e, GeomogeoError):
            raise
        raise click.UsageError(str(e)) from None
    click.echo(f"wrote {out}: {meta['model_name']} ({meta['checkpoint_sha256'][:12]}), "
               f"test-time augmentation {meta['tta']}, opset {meta['opset']}")


@cli.command()
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--n", "n_per_tile", type=click.IntRange(min=1), default=200, show_default=True,
              help="Photos per tile.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Folder with the source orthophotos (default: $GEOMOGEO_DATA, else the "
              "project's sample_tiles/).")
@click.option("--split", "splits", multiple=True, default=("train", "val", "test"),
              type=click.Choice(["train", "val", "test"]),
              show_default=True, help="Splits to render (repeatable).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Rendering processes.")
@click.option("--min-object", "min_object_m2", type=float, default=150.0, show_default=True,
              help="Smallest target area, square metres.")
@click.option("--targets", callback=_ints, default="1,8", show_default=True, metavar="MIN,MAX",
              help="Targets per photo, drawn uniformly in MIN..MAX.")
@click.option("--holdout", type=click.Choice(["las_vegas"]), default=None,
              help="Held-out-city split: train on Rotterdam a and c, select on b, test on "
              "this city.")
@click.option("--parallax", is_flag=True,
              help="Building prisms with parallax, road pieces and blobs as targets; EXIF GPS; "
              "half of the photos without a heading.")
@click.pass_context
def synth(ctx: click.Context, out_dir: Path, n_per_tile: int, seed: int,
          data_dir: Path | None, splits: tuple[str, ...], workers: int,
          min_object_m2: float, targets: tuple[int, ...], holdout: str | None,
          parallax: bool) -> None:
    """Render a cross-view data set (JSON Lines manifest + images) from real orthophotos,
    split by tile: train (Rotterdam a, Las Vegas), val (Rotterdam b), test (Rotterdam c)."""
    from geomogeo.data.synth.engine import SynthConfig, synthesize_default

    cfg = (SynthConfig.parallax if parallax else SynthConfig)(
        min_object_m2=min_object_m2, targets=_min_max(targets))
    manifest = synthesize_default(out_dir, n_per_tile=n_per_tile, seed=seed, data_dir=data_dir,
                                  quiet=ctx.obj["quiet"], splits=splits, workers=workers,
                                  cfg=cfg, holdout=holdout)
    click.echo(f"wrote {manifest}")


@cli.command()
@click.argument("clicks", type=click.Path(path_type=Path))
@click.argument("reference", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_path", type=click.Path(path_type=Path), required=True,
              help="Output GeoPackage; an existing one is resumed (photos in it are skipped).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Local Dask worker processes, 1 thread each; 0 runs in this process "
              "without Dask. Default: one per CPU core (bounded by memory and photos).")
@click.option("--scheduler", metavar="tcp://HOST:PORT", default=None,
              help="Run on an existing Dask cluster instead of a local one.")
@click.option("--model", "model_path", type=click.Path(path_type=Path),
              help="Checkpoint (default: the shipped model).")
@click.option("--bands", callback=_ints, metavar="B1,B2,B3", help="Raster bands for R,G,B.")
@click.option("--quiet", "quiet_here", is_flag=True, help="No progress bar.")
@refiner_option
@tta_option
@joint_tta_option
@search_tta_option
@click.pass_context
def batch(ctx: click.Context, clicks: Path, reference: Path, out_path: Path,
          workers: int | None, scheduler: str | None, model_path: Path | None,
          bands: tuple[int, ...] | None, quiet_here: bool, tta: TTASpec, joint_tta: TTASpec,
          search_tta: TTASpec | None, refiner: bool | list[Path]) -> None:
    """Localize every photo of CLICKS (a CSV / JSON Lines clicks table, or a folder of photos
    with PHOTO.clicks.csv sidecars) on REFERENCE (a raster, a VRT or a folder of tiles) into
    one GeoPackage. Exit code 3 when some photo of CLICKS failed, in this run or an earlier
    one (see the layer 'errors')."""
    from geomogeo.batch import run_batch
    from geomogeo.localize import Localizer

    if scheduler is not None and workers is not None:
        raise click.BadParameter("give --workers or --scheduler, not both")
    summary = run_batch(clicks, reference, out_path,
                        localizer=lambda: Localizer.load(model_path, tta=tta, refiner=refiner,
                                                         joint_tta=joint_tta,
                                                         search_tta=search_tta),
                        workers=workers,
                        scheduler=scheduler, bands=bands, quiet=quiet_here or ctx.obj["quiet"])
    click.echo(f"{summary.photos} photo(s): {summary.succeeded} localized, {summary.failed} "
               f"failed, {summary.skipped} already done; {summary.targets} target(s) written "
               f"to {summary.out} in {summary.seconds:.1f} s")
    if not summary.ok:  # exit code 3 (bad input), through main()
        raise GeomogeoError(f"{summary.failed + summary.failed_before} photo(s) failed "
                            f"({summary.failed_before} in an earlier run); see the layer "
                            f"'errors' of {summary.out}")
def _min_max(values: tuple[int, ...]) -> tuple[int, int]:
    if len(values) != 2:
        raise click.BadParameter(f"expected MIN,MAX, got {values!r}")
    return values[0], values[1]


def main(args: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (tests call it in-process)."""
    try:
        cli.main(args=list(args) if args is not None else None, standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.ClickException as e:
        e.show()
        return EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return EXIT_FAILURE
    except OutputError as e:
        click.echo(f"error: {_one_line(e)}", err=True)
        return EXIT_OUTPUT
    except (GeomogeoError, FileNotFoundError) as e:
        click.echo(f"error: {_one_line(e)}", err=True)
        return EXIT_INPUT
    except Exception:
        # Not an expected failure: a bug. Keep the traceback for the report.
        log.critical("internal error (a bug in geomogeo: please report it with this traceback)",
                     exc_info=True)
        return EXIT_FAILURE
    return 0


def _one_line(e: BaseException) -> str:
    """The error's message on one line (a builtin OSError without a message: its class and
    file name)."""
    text = " ".join(str(e).split())
    return text or f"{type(e).__name__} {getattr(e, 'filename', '') or ''}".strip()


if __name__ == "__main__":
    sys.exit(main())
