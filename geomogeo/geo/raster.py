"""Open georeferenced rasters and read north-up reference windows at a ground sample distance.

Terms:

- *Raster*: a file GDAL reads, or an in-memory ``xarray.DataArray`` with rioxarray's CRS and
  transform (:mod:`geomogeo.geo.xrio`). A file with ground control points (GCPs) and no
  geotransform is read through a GDAL warped VRT in the GCP CRS (GDAL's GCP polynomial, as
  ``gdalwarp`` would): its pixel grid, ``transform`` and size are then those of the VRT.
- *Raster CRS*: the CRS stored in the file (the GCP CRS for GCP rasters), or passed explicitly.
  *Working CRS* of a window: the raster CRS when it is projected and one map unit is one unit
  of ground distance at the window centre (scale within :data:`SCALE_TOLERANCE` of 1, axes
  square on the ground, measured with :func:`georef.ground_scale`); otherwise (geographic
  rasters in degrees, Web Mercator, any projection far from its true-scale lines) a local
  metric CRS (UTM zone, or AEQD near the poles) around the window centre, so window pixels are
  ``gsd`` metres on the ground.
- A *reference window* is ``size x size`` pixels of ``gsd`` metres, north-up in the working CRS's
  map axes (even when the raster itself is rotated, sheared or south-up), resampled on read with
  bilinear interpolation. Its ``transform`` maps window pixel EDGES to the working CRS.
- *Band mapping*: three 1-based raster band indexes feeding the model's R, G, B channels.
- *Stretch*: per raster (not per window), per mapped band, the 2nd..98th percentile of valid
  pixels, estimated from overviews or a decimated read of at most ~1M pixels; a window's values
  map linearly to [0, 1] and are clipped.
- *Valid*: a window pixel is valid when it lies on the raster and is not nodata / masked (declared
  nodata value, mask band or alpha band). Invalid pixels are 0 in the image.

Memory of :func:`read_window` depends on the window only: it reads just the source window
covering the destination, decimated (using overviews) when the window down-samples a lot.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.crs
import rasterio.errors
import rasterio.windows
from affine import Affine
from pyproj import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import reproject

from geomogeo.errors import GeoreferenceError, LocationError, RasterError
from geomogeo.geo import georef, xrio

__all__ = [
    "RasterSource",
    "ReferenceWindow",
    "default_bands",
    "display_image",
    "open_raster",
    "pixel_boxes_to_polygons",
    "raster_info",
    "read_window",
    "search_centers",
]

log = logging.getLogger(__name__)

#: Percentiles of the per-raster stretch.
STRETCH_PERCENTILES = (2.0, 98.0)
#: Most pixels read (per band) to estimate the stretch.
STRETCH_SAMPLE_PIXELS = 1_000_000
#: Largest departure from a true-scale, square grid (relative scale error, or cosine of the
#: ground angle between the map axes) at which a projected raster is read in its own CRS. A
#: UTM zone's own scale error reaches about 1e-3 at its edges, so reading through a local UTM
#: zone instead would gain nothing below this.
SCALE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class RasterSource:
    """An opened raster's metadata, band mapping and stretch (no pixel data is kept, beyond the
    reference to an in-memory DataArray).

    Attributes:
        path: the raster file (for a DataArray: its source file or ``<xarray.DataArray NAME>``).
        crs: raster CRS (``pyproj.CRS``), from the file or passed explicitly.
        transform: pixel EDGES -> raster CRS affine (from the file or passed explicitly; for a
            GCP raster, of the warped VRT's grid).
        width, height: size in pixels.
        count: number of bands.
        dtypes: numpy dtype name of each band.
        nodata: declared nodata value, or None.
        has_mask: True when validity also comes from a mask or alpha band.
        bands: 1-based band indexes mapped to the model's (R, G, B).
        stretch_low, stretch_high: per mapped band, the values mapped to 0 and 1.
        gcps: True when the pixels are read through a warped VRT built from the file's GCPs
            (pixel coordinates are then the VRT's, not the file's).
        array: the :class:`~geomogeo.geo.xrio.ArrayDataset` of an in-memory DataArray, or None.
    """

    path: Path
    crs: CRS
    transform: Affine
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    nodata: float | None
    has_mask: bool
    bands: tuple[int, int, int]
    stretch_low: tuple[float, float, float]
    stretch_high: tuple[float, float, float]
    gcps: bool = False
    array: Any = field(default=None, repr=False, compare=False)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` of the raster's four corners in the raster CRS."""
        return _corner_bounds(self.transform, self.width, self.height)

    def contains(self, x: float, y: float) -> bool:
        """Whether map point ``(x, y)`` (raster CRS) lies on the raster (edges included)."""
        col, row = georef.map_to_pixel(self.transform, x, y)
        eps = 1e-9
        return bool(-eps <= col <= self.width + eps and -eps <= row <= self.height + eps)

    def nearest_point(self, x: float, y: float) -> tuple[float, float]:
        """The point of the raster (edges included) nearest to map point ``(x, y)`` in pixel
        space, raster CRS; ``(x, y)`` itself when :meth:`contains` it."""
        col, row = georef.map_to_pixel(self.transform, x, y)
        mx, my = georef.pixel_to_map(self.transform, float(np.clip(col, 0, self.width)),
                                     float(np.clip(row, 0, self.height)))
        return float(mx), float(my)


@dataclass(frozen=True)
class ReferenceWindow:
    """A north-up window resampled to a ground sample distance.

    Attributes:
        image: (size, size, 3) float32 in [0, 1] after the raster's stretch; invalid pixels 0.
        valid: (size, size) bool, True on raster data that is not nodata / masked.
        transform: window pixel EDGES -> working CRS; north-up, pixel side ``gsd`` metres.
        crs: working CRS (``pyproj.CRS``).
        gsd: metres per window pixel.
        center: window centre ``(x, y)`` in the working CRS.
        fraction_valid: mean of ``valid``.
        raster: path of the raster it was read from.
    """

    image: np.ndarray
    valid: np.ndarray
    transform: Affine
    crs: CRS
    gsd: float
    center: tuple[float, float]
    fraction_valid: float
    raster: Path

    @property
    def size(self) -> int:
        """Side of the window, pixels."""
        return int(self.image.shape[0])


def _corner_bounds(transform: Affine, width: int, height: int) -> tuple[float, float, float, float]:
    """``(xmin, ymin, xmax, ymax)`` of the four corners of pixels ``[0, width] x [0, height]``
    (so ``min < max`` for south-up, rotated and sheared transforms too)."""
    xs, ys = georef.pixel_to_map(transform, [0, width, width, 0], [0, 0, height, height])
    return float(np.min(xs)), float(np.min(ys)), float(np.max(xs)), float(np.max(ys))


def default_bands(count: int) -> tuple[int, int, int]:
    """Default band mapping: bands (1, 2, 3) when there are three or more; otherwise band 1
    replicated (1, 1, 1). Two-band rasters are usually gray + alpha or two polarisations, neither
    of which makes a colour image, so the second band is not used as a colour."""
    return (1, 2, 3) if count >= 3 else (1, 1, 1)


def _check_bands(bands: Any, count: int, path: Path) -> tuple[int, int, int]:
    if bands is None:
        return default_bands(count)
    try:
        b = tuple(int(v) for v in ([bands] if np.isscalar(bands) else bands))
    except (TypeError, ValueError) as exc:
        raise RasterError(f"{path}: bands must be 1 or 3 band indexes, got {bands!r}") from exc
    if len(b) == 1:
        b = b * 3
    if len(b) != 3 or any(v < 1 or v > count for v in b):
        raise RasterError(
            f"{path}: bands must be 1 or 3 indexes in 1..{count} (1-based), got {bands!r}"
        )
    return b  # type: ignore[return-value]


def _rio_crs(crs: CRS) -> rasterio.crs.CRS:
    return rasterio.crs.CRS.from_wkt(crs.to_wkt())


def _open(path: Path) -> Any:
    if not path.exists():
        raise RasterError(f"{path}: raster file not found")
    if path.is_dir():
        raise RasterError(f"{path}: is a directory, not a raster file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(path)
    except rasterio.errors.RasterioError as exc:
        raise RasterError(f"{path}: cannot open as a raster ({exc})") from exc


def _stretch(ds: Any, bands: tuple[int, int, int], path: Path) -> tuple[list[float], list[float]]:
    """Per-band 2/98 percentiles of valid pixels from a decimated read (overviews if any)."""
    step = max(1.0, math.sqrt(ds.width * ds.height / STRETCH_SAMPLE_PIXELS))
    out_h = max(1, round(ds.height / step))
    out_w = max(1, round(ds.width / step))
    uniq = sorted(set(bands))
    try:
        data = ds.read(uniq, out_shape=(len(uniq), out_h, out_w), resampling=Resampling.nearest,
                       masked=True)
    except rasterio.errors.RasterioError as exc:
        raise RasterError(f"{path}: cannot read pixel data, truncated or corrupt? ({exc})") \
            from exc
    lo: dict[int, float] = {}
    hi: dict[int, float] = {}
    for i, b in enumerate(uniq):
        band = data[i]
        vals = np.asarray(band.compressed(), dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            lo[b], hi[b] = 0.0, 1.0
            continue
        p_lo, p_hi = np.percentile(vals, STRETCH_PERCENTILES)
        if not p_hi > p_lo:
            p_lo, p_hi = float(vals.min()), float(vals.max())
            if not p_hi > p_lo:
                p_hi = p_lo + 1.0
        lo[b], hi[b] = float(p_lo), float(p_hi)
    return [lo[b] for b in bands], [hi[b] for b in bands]


@dataclass(frozen=True)
class _Grid:
    """How a dataset's pixels map to the ground: CRS, pixel EDGES -> map affine, size, and
    whether that is the grid of a warped VRT built from GCPs."""

    crs: CRS
    transform: Affine
    width: int
    height: int
    gcps: bool


def _gcp_vrt(ds: Any, crs: CRS) -> WarpedVRT:
    """A warped VRT of a GCP-georeferenced dataset in the GCP CRS (``crs``), on GDAL's
    suggested output grid (deterministic for a given file; rasterio ignores the GCPs when an
    output grid is imposed). Off-image areas are masked (alpha band)."""
    return WarpedVRT(ds, src_crs=_rio_crs(crs), crs=_rio_crs(crs), add_alpha=True,
                     resampling=Resampling.bilinear)


def _grid(ds: Any, path: Path, crs: Any, transform: Affine | None) -> _Grid:
    """The georeferencing of an open dataset: the explicit ``crs``/``transform`` when given,
    else the file's geotransform and CRS, else its GCPs (through a warped VRT).

    Raises:
        GeoreferenceError: not georeferenced (also: RPCs only, with what to do).
    """
    the_crs = georef.as_crs(crs) if crs is not None else (
        georef.as_crs(ds.crs) if ds.crs else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        file_transform = ds.transform
    if transform is None and file_transform.is_identity:
        gcps, gcp_crs = ds.gcps
        if gcps:
            if crs is None and not gcp_crs:
                raise GeoreferenceError(
                    f"{path}: the raster has {len(gcps)} GCPs but no GCP CRS; pass crs=... "
                    "(the CRS of the GCPs' map coordinates)"
                )
            gcrs = georef.as_crs(crs if crs is not None else gcp_crs)
            try:
                with _gcp_vrt(ds, gcrs) as vrt:
                    grid = _Grid(gcrs, vrt.transform, vrt.width, vrt.height, True)
            except rasterio.errors.RasterioError as exc:
                raise GeoreferenceError(
                    f"{path}: cannot warp the raster with its {len(gcps)} GCPs ({exc})"
                ) from exc
            log.info("%s: no geotransform; read through a warped VRT from %d GCPs (%s), "
                     "%dx%d pixels", path, len(gcps), gcrs.name, grid.width, grid.height)
            return grid
        if getattr(ds, "rpcs", None):
            raise GeoreferenceError(
                f"{path}: the raster is georeferenced by RPCs (rational polynomial "
                "coefficients) only, which need a terrain model to place pixels; orthorectify "
                "it first, e.g. `gdalwarp -rpc -to RPC_DEM=dem.tif -t_srs EPSG:32631 "
                f"{path} ortho.tif` (without a DEM: `gdalwarp -rpc -t_srs EPSG:4326 ...`, "
                "using the RPCs' mean height), and pass the orthorectified raster"
            )
    the_transform = transform if transform is not None else file_transform
    georef.require_georeferenced(the_crs, the_transform, path)
    assert the_crs is not None
    return _Grid(the_crs, the_transform, ds.width, ds.height, False)


@contextmanager
def _dataset(src: RasterSource) -> Iterator[Any]:
    """The pixel data of ``src`` as an open dataset: the file, the GCP warped VRT over it, or
    the in-memory DataArray."""
    if src.array is not None:
        yield src.array
        return
    with _open(src.path) as ds:
        if not src.gcps:
            yield ds
            return
        with _gcp_vrt(ds, src.crs) as vrt:
            if (vrt.transform, vrt.width, vrt.height) != (src.transform, src.width, src.height):
                raise RasterError(f"{src.path}: its GCPs changed since it was opened")
            yield vrt


def _check_dtypes(dtypes: tuple[str, ...], path: Path) -> None:
    bad = sorted({d for d in dtypes if np.dtype(d).kind == "c"})
    if bad:
        raise RasterError(
            f"{path}: complex pixel data ({', '.join(bad)}) is not supported (it would be cut "
            "to its real part); convert it to a real amplitude or intensity raster first (for "
            "SAR, |z| or |z|^2 per band)"
        )


def open_raster(
    path: str | os.PathLike[str] | RasterSource | Any,
    bands: Any = None,
    crs: Any = None,
    transform: Affine | None = None,
) -> RasterSource:
    """Open a raster, check its georeferencing, pick its bands and compute its stretch.

    Args:
        path: any raster GDAL reads (GeoTIFF, COG, VRT ...; with a geotransform or with GCPs),
            or an ``xarray.DataArray`` with rioxarray's ``rio.crs``/``rio.transform()`` and
            dims ``(band, y, x)`` or ``(y, x)``, e.g. from ``rioxarray.open_rasterio`` (only
            the pixels each read needs are loaded), or a :class:`RasterSource` opened before,
            returned as it is (its bands and stretch kept; ``bands``, ``crs`` and
            ``transform`` must then be None).
        bands: 1-based band indexes for the model's (R, G, B): three indexes, or one replicated.
            Default :func:`default_bands`.
        crs: CRS to use instead of the file's (anything :func:`georef.as_crs` accepts); for a
            GCP raster, the CRS of its GCPs.
        transform: pixel EDGES -> map affine to use instead of the file's.

    Raises:
        RasterError: missing file, not a raster, truncated/corrupt data, complex pixels, bad
            ``bands``.
        GeoreferenceError: no CRS or no geotransform/GCPs in the file and none passed; RPCs only.
    """
    if isinstance(path, RasterSource):
        if bands is not None or crs is not None or transform is not None:
            raise RasterError(f"{path.path}: already opened; its bands, CRS and transform "
                              "cannot be changed (open the file again)")
        return path
    array = xrio.ArrayDataset(path) if xrio.is_dataarray(path) else None
    p = Path(array.name) if array is not None else Path(path)
    with (array if array is not None else _open(p)) as ds:
        _check_dtypes(tuple(ds.dtypes), p)
        grid = _grid(ds, p, crs, transform)
        b = _check_bands(bands, ds.count, p)
        flags = [ds.mask_flag_enums[i - 1] for i in range(1, ds.count + 1)]
        has_mask = grid.gcps or any(
            any(f.name in ("per_dataset", "alpha") for f in fl) for fl in flags
        ) or any(ci == ColorInterp.alpha for ci in ds.colorinterp)
        if grid.gcps:
            with _gcp_vrt(ds, grid.crs) as vrt:
                low, high = _stretch(vrt, b, p)
        else:
            low, high = _stretch(ds, b, p)
        src = RasterSource(
            path=p,
            crs=grid.crs,
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            count=ds.count,
            dtypes=tuple(ds.dtypes),
            nodata=None if ds.nodata is None else float(ds.nodata),
            has_mask=has_mask,
            bands=b,
            stretch_low=(low[0], low[1], low[2]),
            stretch_high=(high[0], high[1], high[2]),
            gcps=grid.gcps,
            array=array,
        )
    log.debug("opened %s: %dx%d, %d bands, bands=%s, stretch %s..%s", p, src.width, src.height,
              src.count, src.bands, src.stretch_low, src.stretch_high)
    return src


def _is_metric(crs: CRS, x: float, y: float) -> bool:
    """Whether one unit of projected ``crs`` is one unit of ground distance at ``(x, y)``, both
    axes, square (within :data:`SCALE_TOLERANCE`)."""
    if crs.is_geographic:
        return False
    mx, my, angle = georef.ground_scale(crs, x, y)
    f = georef.linear_unit_factor(crs)
    worst = max(abs(mx / f - 1.0), abs(my / f - 1.0), abs(math.cos(math.radians(angle))))
    return worst <= SCALE_TOLERANCE


def _units_per_metre(src: RasterSource, x: float, y: float) -> tuple[float, float]:
    """Raster-CRS units per ground metre along x and y at ``(x, y)``, as windows use them: the
    nominal unit where the raster CRS is the working CRS, the true ground scale elsewhere."""
    if _is_metric(src.crs, x, y):
        f = georef.linear_unit_factor(src.crs)
        return 1.0 / f, 1.0 / f
    mx, my, _ = georef.ground_scale(src.crs, x, y)
    return 1.0 / mx, 1.0 / my


def _working_crs(src: RasterSource, cx: float, cy: float) -> CRS:
    if _is_metric(src.crs, cx, cy):
        return src.crs
    lon, lat = georef.to_lonlat(cx, cy, src.crs)
    wcrs = georef.local_metric_crs(lon, lat)
    if not src.crs.is_geographic:
        log.debug("%s: %s is not true to scale at the window centre; window read in %s",
                  src.path, src.crs.name, wcrs.name)
    return wcrs


def read_window(
    src: RasterSource,
    center: tuple[float, float],
    size: int,
    gsd: float,
    center_crs: Any = None,
) -> ReferenceWindow:
    """Read a north-up ``size x size`` window of ``gsd`` metres per pixel centred on ``center``.

    Args:
        src: from :func:`open_raster`.
        center: window centre ``(x, y)`` in the raster CRS, or in ``center_crs`` when given
            (e.g. ``"EPSG:4326"`` with ``(lon, lat)``).
        size: window side, pixels (the model's reference input size).
        gsd: ground sample distance, metres per window pixel.
        center_crs: CRS of ``center``; None = the raster CRS.

    Returns:
        A :class:`ReferenceWindow` in the working CRS (see module docstring); off-raster and
        nodata parts are 0 and False in ``valid``.

    Raises:
        LocationError: the centre lies outside the raster, or ``size``/``gsd`` are invalid.
        RasterError: the pixel data cannot be read.
    """
    if int(size) != size or size < 1:
        raise LocationError(f"{src.path}: window size must be a positive integer, got {size!r}")
    if not (math.isfinite(gsd) and gsd > 0):
        raise LocationError(f"{src.path}: gsd must be a positive number of metres, got {gsd!r}")
    size = int(size)
    cx, cy = (float(center[0]), float(center[1]))
    if center_crs is not None:
        cx, cy = georef.to_crs(cx, cy, center_crs, src.crs)
    if not (math.isfinite(cx) and math.isfinite(cy)) or not src.contains(cx, cy):
        raise LocationError(
            f"{src.path}: window centre {center!r}"
            + (f" ({center_crs})" if center_crs is not None else "")
            + f" -> ({cx:.6f}, {cy:.6f}) in the raster CRS is outside the raster, whose bounds "
            f"are {src.bounds} ({src.crs.name}), lon/lat "
            f"{georef.bounds_lonlat(src.transform, src.crs, src.width, src.height)}"
        )

    wcrs = _working_crs(src, cx, cy)
    wx, wy = georef.to_crs(cx, cy, src.crs, wcrs)
    step = gsd / georef.linear_unit_factor(wcrs)  # working-CRS units per window pixel
    half = size * step / 2.0
    dst_transform = Affine(step, 0.0, wx - half, 0.0, -step, wy + half)

    # Source pixels covering the destination: densified outline -> raster pixel coordinates.
    outline = georef.boxes_to_polygons([[0, 0, size, size]], dst_transform)
    outline = georef.reproject_geometries(outline, wcrs, src.crs, densify_pts=21)
    coords = np.asarray(outline[0].exterior.coords)
    cols, rows = georef.map_to_pixel(src.transform, coords[:, 0], coords[:, 1])
    # Integer decimation on read (GDAL averages, from overviews when there are some) when a
    # window pixel spans >= 2 source pixels; the warp below then resamples by <= ~2x.
    src_gsd = min(georef.ground_sample_distance(
        src.transform, src.crs, at=georef.map_to_pixel(src.transform, cx, cy)))
    dec = max(1, math.floor(gsd / src_gsd + 1e-9))
    pad = 2 * dec
    c0 = max(0, (math.floor(np.min(cols)) - pad) // dec * dec)
    r0 = max(0, (math.floor(np.min(rows)) - pad) // dec * dec)
    c1 = min(src.width, math.ceil(np.max(cols)) + pad)
    r1 = min(src.height, math.ceil(np.max(rows)) + pad)
    # whole blocks of dec x dec source pixels only (drops < dec pixels at the raster's far edge)
    c1 = c0 + (c1 - c0) // dec * dec
    r1 = r0 + (r1 - r0) // dec * dec

    dst = np.full((3, size, size), np.nan, dtype=np.float32)
    if c1 > c0 and r1 > r0:
        win = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
        out_w, out_h = (c1 - c0) // dec, (r1 - r0) // dec
        uniq = sorted(set(src.bands))
        with _dataset(src) as ds:
            try:
                data = ds.read(uniq, window=win, out_shape=(len(uniq), out_h, out_w),
                               resampling=Resampling.average if dec > 1 else Resampling.nearest)
                mask = ds.read_masks(1, window=win, out_shape=(out_h, out_w),
                                     resampling=Resampling.nearest)
            except rasterio.errors.RasterioError as exc:
                raise RasterError(f"{src.path}: cannot read window {win} ({exc})") from exc
        arr = data.astype(np.float32)
        bad = mask == 0
        if src.nodata is not None:
            bad |= np.any(data == src.nodata, axis=0)
        bad |= ~np.all(np.isfinite(arr), axis=0)
        arr[:, bad] = np.nan
        read_transform = (src.transform @ Affine.translation(c0, r0)
                          @ Affine.scale(dec, dec))
        srcarr = np.stack([arr[uniq.index(b)] for b in src.bands])
        reproject(
            source=srcarr,
            destination=dst,
            src_transform=read_transform,
            src_crs=_rio_crs(src.crs),
            src_nodata=np.nan,
            dst_transform=dst_transform,
            dst_crs=_rio_crs(wcrs),
            dst_nodata=np.nan,
            resampling=Resampling.bilinear,
            # plain 2x2 bilinear (GDAL otherwise widens the kernel when down-sampling, which
            # blurs and is no longer exact on linear ramps); anti-aliasing is the decimation's job
            XSCALE=1,
            YSCALE=1,
        )
    valid = np.all(np.isfinite(dst), axis=0)
    lo = np.asarray(src.stretch_low, dtype=np.float32)[:, None, None]
    hi = np.asarray(src.stretch_high, dtype=np.float32)[:, None, None]
    img = np.clip((dst - lo) / (hi - lo), 0.0, 1.0)
    img[:, ~valid] = 0.0
    image = np.ascontiguousarray(np.moveaxis(img, 0, -1), dtype=np.float32)
    return ReferenceWindow(
        image=image,
        valid=valid,
        transform=dst_transform,
        crs=wcrs,
        gsd=float(gsd),
        center=(float(wx), float(wy)),
        fraction_valid=float(valid.mean()),
        raster=src.path,
    )


def search_centers(
    src: RasterSource,
    size: int,
    gsd: float,
    overlap: float = 0.5,
    extent: tuple[float, float, float, float] | None = None,
) -> list[tuple[float, float]]:
    """Centres (raster CRS) of overlapping windows covering the raster or ``extent``.

    The grid is laid out in the raster CRS's axes: windows of ``size * gsd`` metres (converted to
    map units with the ground scale at the extent's centre where the raster CRS is not the
    windows' working CRS: geographic, Web Mercator ...) with steps of ``(1 - overlap)`` window
    sides, the first and last windows flush with the extent's edges (one centred window along an
    axis shorter than a window). The extent is clipped to the raster's bounds before the grid is
    built, so the grid never outgrows the raster. Rows go north to south, columns west to east;
    centres off the raster (corners of rotated rasters) are dropped.

    Args:
        src: from :func:`open_raster`.
        size, gsd: window side in pixels and metres per pixel, as for :func:`read_window`.
        overlap: fraction in [0, 1) of a window shared with its neighbour.
        extent: ``(xmin, ymin, xmax, ymax)`` in the raster CRS; default the raster's bounds.

    Raises:
        LocationError: bad ``overlap``; an extent that is not four finite numbers with
            ``xmin < xmax`` and ``ymin < ymax``, or that misses the raster (the message names
            the raster and its bounds).
    """
    if not 0.0 <= overlap < 1.0:
        raise LocationError(f"{src.path}: overlap must be in [0, 1), got {overlap!r}")
    bxmin, bymin, bxmax, bymax = src.bounds
    if extent is None:
        xmin, ymin, xmax, ymax = bxmin, bymin, bxmax, bymax
    else:
        try:
            vals = [float(v) for v in extent]
        except (TypeError, ValueError) as exc:
            raise LocationError(
                f"{src.path}: extent must be four numbers (xmin, ymin, xmax, ymax) in the raster "
                f"CRS, got {extent!r}"
            ) from exc
        if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
            raise LocationError(
                f"{src.path}: extent must be four finite numbers (xmin, ymin, xmax, ymax) in the "
                f"raster CRS, got {extent!r}"
            )
        if not (vals[2] > vals[0] and vals[3] > vals[1]):
            raise LocationError(
                f"{src.path}: extent must be (xmin, ymin, xmax, ymax) with xmin < xmax and "
                f"ymin < ymax, got {extent!r}"
            )
        xmin, ymin = max(vals[0], bxmin), max(vals[1], bymin)
        xmax, ymax = min(vals[2], bxmax), min(vals[3], bymax)
        if not (xmax > xmin and ymax > ymin):
            raise LocationError(
                f"{src.path}: search extent {extent!r} does not overlap the raster, whose bounds "
                f"are {src.bounds} ({src.crs.name})"
            )
    side_m = size * gsd
    ux, uy = _units_per_metre(src, (xmin + xmax) / 2, (ymin + ymax) / 2)
    side_x, side_y = side_m * ux, side_m * uy

    def axis(lo: float, hi: float, side: float) -> np.ndarray:
        length = hi - lo
        if length <= side:
            return np.array([(lo + hi) / 2])
        n = math.ceil((length - side) / (side * (1.0 - overlap)) - 1e-9) + 1
        return np.linspace(lo + side / 2, hi - side / 2, n)

    xs = axis(xmin, xmax, side_x)
    ys = axis(ymin, ymax, side_y)[::-1]
    out = [(float(x), float(y)) for y in ys for x in xs if src.contains(x, y)]
    if not out:
        raise LocationError(
            f"{src.path}: search extent {extent!r} does not overlap the raster bounds {src.bounds}"
        )
    return out


def pixel_boxes_to_polygons(src: RasterSource, boxes: Any) -> list[Any]:
    """Boxes in the raster FILE's pixel EDGES (``(x1, y1, x2, y2)``, x = column) -> polygons in
    the raster CRS: through the affine (:func:`georef.boxes_to_polygons`), or, for a GCP raster
    whose ``src.transform`` is the warped VRT's grid, through the file's GCPs
    (:func:`georef.gcp_boxes_to_polygons`)."""
    if not src.gcps:
        return georef.boxes_to_polygons(boxes, src.transform)
    with _open(src.path) as ds:
        gcps = ds.gcps[0]
    return georef.gcp_boxes_to_polygons(boxes, gcps)


def raster_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Metadata of a raster for display (``geomogeo info``).

    Returns a dict with: ``path``, ``crs_name``, ``crs_epsg`` (int or None), ``crs_wkt``,
    ``width``, ``height``, ``count``, ``dtypes``, ``nodata``, ``transform`` (6 GDAL-order
    coefficients a, b, c, d, e, f), ``gsd_m`` ((along a row, along a column) ground metres at
    the raster centre, true scale of the projection included), ``bounds`` ((xmin, ymin, xmax,
    ymax) of the four corners in the raster CRS, always min < max), ``bounds_lonlat`` ((west,
    south, east, north) degrees, densified edges; east > 180 when the raster crosses the
    antimeridian, see :func:`georef.bounds_lonlat`) and ``gcps`` (number of GCPs when the raster
    is georeferenced by GCPs: size and transform are then those of the warped grid, else 0).

    Raises:
        RasterError, GeoreferenceError: as :func:`open_raster`.
    """
    p = Path(path)
    with _open(p) as ds:
        g = _grid(ds, p, None, None)
        t = g.transform
        info: dict[str, Any] = {
            "path": str(p),
            "crs_name": g.crs.name,
            "crs_epsg": g.crs.to_epsg(),
            "crs_wkt": g.crs.to_wkt(),
            "width": g.width,
            "height": g.height,
            "count": ds.count,
            "dtypes": list(ds.dtypes),
            "nodata": ds.nodata,
            "transform": [t.a, t.b, t.c, t.d, t.e, t.f],
            "gsd_m": georef.ground_sample_distance(t, g.crs, at=(g.width / 2, g.height / 2)),
            "bounds": _corner_bounds(t, g.width, g.height),
            "bounds_lonlat": georef.bounds_lonlat(t, g.crs, g.width, g.height),
            "gcps": len(ds.gcps[0]) if g.gcps else 0,
        }
    return info


def display_image(src: RasterSource, max_size: int = 1024) -> np.ndarray:
    """The whole raster as a display image: (h, w, 3) uint8 RGB after the raster's stretch,
    decimated (overviews) so its longer side is at most ``max_size``; nodata is 0. Rows and
    columns are the raster's own (not north-up when the raster is rotated)."""
    scale = max(1.0, max(src.width, src.height) / max_size)
    h, w = max(1, round(src.height / scale)), max(1, round(src.width / scale))
    uniq = sorted(set(src.bands))
    with _dataset(src) as ds:
        try:
            data = ds.read(uniq, out_shape=(len(uniq), h, w), resampling=Resampling.average)
            mask = ds.read_masks(1, out_shape=(h, w))
        except rasterio.errors.RasterioError as exc:
            raise RasterError(f"{src.path}: cannot read pixel data ({exc})") from exc
    arr = np.stack([data[uniq.index(b)] for b in src.bands]).astype(np.float32)
    lo = np.asarray(src.stretch_low, dtype=np.float32)[:, None, None]
    hi = np.asarray(src.stretch_high, dtype=np.float32)[:, None, None]
    img = np.nan_to_num(np.clip((arr - lo) / (hi - lo), 0, 1))
    img[:, mask == 0] = 0
    return (np.moveaxis(img, 0, -1) * 255 + 0.5).astype(np.uint8)

