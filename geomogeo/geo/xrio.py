"""xarray in and out: an in-memory ``xarray.DataArray`` as a raster, heatmaps as a ``Dataset``.

rioxarray conventions throughout: the CRS is ``da.rio.crs``, the pixel EDGES -> map affine is
``da.rio.transform()``, dimensions are ``(band, y, x)`` or ``(y, x)`` (whatever names
``da.rio.x_dim``/``da.rio.y_dim`` report), ``x``/``y`` coordinates are pixel CENTRES, and nodata
is ``da.rio.nodata`` (``_FillValue``/``nodata`` attribute; NaN for ``masked=True`` arrays).

:class:`ArrayDataset` lets :mod:`geomogeo.geo.raster` read a DataArray exactly as it reads a file:
every read copies only the source pixels it needs (a window, or the rows and columns a nearest
decimation picks) into an in-memory GeoTIFF and lets GDAL resample them, so a DataArray gives
the same windows as the file it came from (a file's overviews and mask bands excepted: a
DataArray has neither).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio.errors
import rasterio.windows
from affine import Affine
from pyproj import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.io import MemoryFile

from geomogeo.errors import GeoreferenceError, RasterError
from geomogeo.geo import georef

__all__ = ["ArrayDataset", "heatmaps_dataset", "is_dataarray"]

log = logging.getLogger(__name__)


def is_dataarray(obj: Any) -> bool:
    """Whether ``obj`` is an ``xarray.DataArray`` (without importing xarray when it is not
    loaded: nothing can be a DataArray then)."""
    import sys

    xr = sys.modules.get("xarray")
    return xr is not None and isinstance(obj, xr.DataArray)


class ArrayDataset:
    """A read-only view of a DataArray with the parts of a rasterio dataset that
    :mod:`geomogeo.geo.raster` uses (``read``, ``read_masks``, ``crs``, ``transform``, ...).

    Attributes:
        name: the DataArray's source file (``encoding["source"]``, set by
            ``rioxarray.open_rasterio``) or ``<xarray.DataArray NAME>``; used in messages.
        crs: ``rasterio.crs.CRS`` or None.
        transform: pixel EDGES -> map affine (``da.rio.transform()``).
        width, height, count, dtypes, nodata: as in rasterio.

    Raises:
        RasterError: the DataArray has no x/y dimensions, more than one other dimension, or
            rioxarray is not installed.
    """

    def __init__(self, da: Any) -> None:
        try:
            import rioxarray  # noqa: F401  (registers the .rio accessor)
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise RasterError("an xarray.DataArray raster needs rioxarray installed") from exc
        self.name = str(da.encoding.get("source") or f"<xarray.DataArray {da.name!r}>")
        try:
            x_dim, y_dim = da.rio.x_dim, da.rio.y_dim
        except Exception as exc:  # rioxarray's MissingSpatialDimensionError
            raise RasterError(
                f"{self.name}: the DataArray needs x/y dimensions (rioxarray conventions), "
                f"got dims {da.dims} ({exc})"
            ) from exc
        others = [d for d in da.dims if d not in (x_dim, y_dim)]
        if len(others) > 1:
            raise RasterError(
                f"{self.name}: the DataArray must be (band, y, x) or (y, x), got dims {da.dims}; "
                "select one time step / layer first (e.g. da.isel(time=0))"
            )
        if not others:
            da = da.expand_dims("band")
            others = ["band"]
        self._da = da.transpose(others[0], y_dim, x_dim)
        self._band_dim = others[0]
        self.count, self.height, self.width = (int(v) for v in self._da.shape)
        self.dtypes = (self._da.dtype.name,) * self.count
        self.crs = da.rio.crs
        try:
            self.transform: Affine = da.rio.transform(recalc=False)
        except Exception as exc:
            raise GeoreferenceError(f"{self.name}: no transform ({exc})") from exc
        nd = da.rio.nodata
        self.nodata = None if nd is None else float(nd)
        self.gcps: tuple[list[Any], Any] = ([], None)
        self.rpcs = None
        flag = MaskFlags.nodata if self.nodata is not None else MaskFlags.all_valid
        self.mask_flag_enums = tuple([flag] for _ in range(self.count))
        self.colorinterp = (ColorInterp.undefined,) * self.count

    # ---- context manager, like a rasterio dataset ----------------------------------------------
    def __enter__(self) -> ArrayDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def close(self) -> None:
        return None

    # ---- reads ---------------------------------------------------------------------------------
    def _pixels(self, indexes: Sequence[int], window: Any, out_shape: Any,
                resampling: Resampling) -> tuple[np.ndarray, tuple[int, int] | None]:
        """The source pixels a read needs, (bands, rows, cols), and the shape GDAL should
        resample them to (None: they are the result already)."""
        if window is None:
            r0, c0, h, w = 0, 0, self.height, self.width
        else:
            win = rasterio.windows.Window(*window) if not hasattr(window, "col_off") else window
            r0, c0 = int(win.row_off), int(win.col_off)
            h, w = int(win.height), int(win.width)
        oh, ow = (h, w) if out_shape is None else (int(out_shape[-2]), int(out_shape[-1]))
        band_idx = [int(i) - 1 for i in indexes]
        if resampling == Resampling.nearest and (oh, ow) != (h, w):
            # GDAL's nearest decimation picks source pixel floor((i + 0.5) * h / oh): take only
            # those rows and columns, so a decimated read never loads the whole array
            rows = r0 + np.minimum(np.floor((np.arange(oh) + 0.5) * h / oh).astype(int), h - 1)
            cols = c0 + np.minimum(np.floor((np.arange(ow) + 0.5) * w / ow).astype(int), w - 1)
            sel = self._da.isel({self._band_dim: band_idx}).isel(
                {self._da.dims[1]: rows, self._da.dims[2]: cols})
            return np.asarray(sel.values), None
        sel = self._da.isel({self._band_dim: band_idx, self._da.dims[1]: slice(r0, r0 + h),
                             self._da.dims[2]: slice(c0, c0 + w)})
        return np.asarray(sel.values), None if (oh, ow) == (h, w) else (oh, ow)

    def _gdal_read(self, arr: np.ndarray, shape: tuple[int, int], resampling: Resampling,
                   masks: bool, masked: bool) -> np.ndarray:
        with MemoryFile() as mf, warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with mf.open(driver="GTiff", width=arr.shape[2], height=arr.shape[1],
                         count=arr.shape[0], dtype=arr.dtype.name, nodata=self.nodata) as ds:
                ds.write(arr)
            with mf.open() as ds:
                if masks:
                    return ds.read_masks(1, out_shape=shape, resampling=resampling)
                return ds.read(out_shape=(arr.shape[0], *shape), resampling=resampling,
                               masked=masked)

    def read(self, indexes: Sequence[int] | int, window: Any = None, out_shape: Any = None,
             resampling: Resampling = Resampling.nearest, masked: bool = False) -> np.ndarray:
        """As ``rasterio.DatasetReader.read`` (windows inside the array only)."""
        one = np.isscalar(indexes)
        idx = [int(indexes)] if one else [int(i) for i in indexes]  # type: ignore[union-attr]
        arr, shape = self._pixels(idx, window, out_shape, resampling)
        if shape is None:
            if masked and self.nodata is not None:
                out: np.ndarray = np.ma.masked_equal(arr, self.nodata) if np.isfinite(
                    self.nodata) else np.ma.masked_invalid(arr)
            else:
                out = np.ma.masked_array(arr) if masked else arr
        else:
            out = self._gdal_read(arr, shape, resampling, masks=False, masked=masked)
        return out[0] if one else out

    def read_masks(self, index: int = 1, window: Any = None, out_shape: Any = None,
                   resampling: Resampling = Resampling.nearest) -> np.ndarray:
        """As ``rasterio.DatasetReader.read_masks``: 255 valid, 0 nodata (from ``nodata``)."""
        arr, shape = self._pixels([index], window, out_shape, resampling)
        if shape is None:
            band = arr[0]
            bad = np.zeros(band.shape, bool) if self.nodata is None else (
                ~np.isfinite(band) if not np.isfinite(self.nodata) else band == self.nodata)
            return np.where(bad, 0, 255).astype(np.uint8)
        return self._gdal_read(arr, shape, resampling, masks=True, masked=False)


def heatmaps_dataset(
    heatmaps: np.ndarray,
    transform: Affine,
    crs: CRS,
    targets: Sequence[int],
    scores: Sequence[float],
) -> Any:
    """Heatmaps of one window as an ``xarray.Dataset`` rioxarray can write.

    Args:
        heatmaps: (n, h, w) float32 values in [0, 1], row 0 at the window's north edge.
        transform: heatmap pixel EDGES -> map (the window's transform scaled to the heatmap).
        crs: the window's CRS.
        targets: the n target indexes (click order).
        scores: the n scores.

    Returns:
        A Dataset with one variable ``heatmap`` of dims ``(target, y, x)``; coordinates
        ``target``, ``score`` (along ``target``), ``x``/``y`` = heatmap pixel CENTRES in ``crs``,
        and ``spatial_ref`` carrying the CRS and the GeoTransform (``rio.write_crs``,
        ``rio.write_transform``), so ``ds.heatmap.sel(target=k).rio.to_raster(path)`` writes
        the same GeoTIFF grid as :meth:`geomogeo.localize.LocalizationResult.write_heatmaps`.
    """
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr

    arr = np.asarray(heatmaps, dtype=np.float32)
    _, h, w = arr.shape
    if transform.b != 0 or transform.d != 0:
        raise ValueError(f"heatmap transform must be north-up for x/y coordinates: {transform!r}")
    xs, _ = georef.pixel_to_map(transform, np.arange(w) + 0.5, np.full(w, 0.5))
    _, ys = georef.pixel_to_map(transform, np.full(h, 0.5), np.arange(h) + 0.5)
    ds = xr.Dataset(
        {"heatmap": (("target", "y", "x"), arr)},
        coords={"target": np.asarray(targets, dtype=np.int64),
                "score": ("target", np.asarray(scores, dtype=np.float64)),
                "y": ys, "x": xs},
    )
    ds.heatmap.attrs.update(long_name="target heatmap", units="1")
    return ds.rio.write_crs(crs.to_wkt()).rio.write_transform(transform)
