"""The MOGeo network family (torch only; nothing GIS here)."""

from geomogeo.nn.config import ModelConfig
from geomogeo.nn.head import build_targets, decode
from geomogeo.nn.losses import mogeo_loss
from geomogeo.nn.model import MOGeoNet, MOGeoOutput, build_model
from geomogeo.nn.predictor import TorchPredictor
from geomogeo.nn.weights import load_darknet_weights, load_torchvision_resnet18

__all__ = [
    "MOGeoNet",
    "MOGeoOutput",
    "ModelConfig",
    "TorchPredictor",
    "build_model",
    "build_targets",
    "decode",
    "load_darknet_weights",
    "load_torchvision_resnet18",
    "mogeo_loss",
]
