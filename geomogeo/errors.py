"""Errors raised by geomogeo.

One base class, :class:`GeomogeoError`; each subclass also inherits the matching builtin so
callers can catch ``ValueError``/``OSError`` as usual. Messages name the file or argument at
fault, the bad value, and what was expected.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ClickError",
    "ConfigError",
    "GeomogeoError",
    "GeoreferenceError",
    "LocationError",
    "OutputError",
    "PhotoError",
    "RasterError",
]


class GeomogeoError(Exception):
    """Base class of every error geomogeo raises on purpose."""


class RasterError(GeomogeoError, OSError):
    """A raster cannot be opened or read (missing, truncated, not a raster)."""


class GeoreferenceError(GeomogeoError, ValueError):
    """A raster or box is not georeferenced (no CRS, identity transform) or a CRS is invalid."""


class LocationError(GeomogeoError, ValueError):
    """A location (window centre, extent, camera heading) lies outside the raster or is
    malformed (not a finite number)."""


class PhotoError(GeomogeoError, OSError):
    """A query photo cannot be read as an image."""


class ClickError(GeomogeoError, ValueError):
    """Click points are missing, outside the photo, duplicated or malformed."""


class OutputError(GeomogeoError, OSError):
    """An output file cannot be written (e.g. an existing file that is not a GeoPackage)."""


class CheckpointError(GeomogeoError, ValueError):
    """A checkpoint is missing, corrupt, of an unknown version, or fails its sha256 check."""


class ConfigError(GeomogeoError, ValueError):
    """A configuration or data-set description (training config, manifest, checkpoint index)
    is malformed: unknown key, wrong type, value out of range; the message names the file."""
