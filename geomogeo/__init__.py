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

_LAZY = {"Localizer", "LocalizationResult", "Target"}


def __getattr__(name: str) -> object:
    # The localizer pulls in the GIS stack; import it on first use only, so that
    # ``import geomogeo.nn`` stays light.
    if name in _LAZY:
        from geomogeo import localize

        return getattr(localize, name)
    raise AttributeError(f"module 'geomogeo' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "ClickError",
    "GeomogeoError",
    "GeoreferenceError",
    "LocalizationResult",
    "Localizer",
    "LocationError",
    "OutputError",
    "PhotoError",
    "RasterError",
    "Target",
    "__version__",
]
