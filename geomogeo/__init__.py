"""geomogeo: multi-object cross-view geo-localization (MOGeo) for GIS users."""

from __future__ import annotations

import logging

from geomogeo.errors import (
    CheckpointError,
    ClickError,
    GeomogeoError,
    GeoreferenceError,
    LocationError,
    OutputError,
    PhotoError,
    RasterError,
)

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "CheckpointError",
    "ClickError",
    "GeomogeoError",
    "GeoreferenceError",
    "LocationError",
    "OutputError",
    "PhotoError",
    "RasterError",
    "__version__",
]
