"""The MOGeo network family (torch only; nothing GIS here)."""

from geomogeo.nn.config import ModelConfig
from geomogeo.nn.head import build_targets, decode
from geomogeo.nn.losses import mogeo_loss
from geomogeo.nn.model import MOGeoNet, MOGeoOutput, build_model

__all__ = [
    "MOGeoNet",
    "MOGeoOutput",
    "ModelConfig",
    "build_model",
    "build_targets",
    "decode",
    "mogeo_loss",
]
