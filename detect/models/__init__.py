"""Models: backbones, projection + spatial pyramid pooling, heads and the SPP-net / R-CNN detector."""

from detect.models.backbones import Backbone, build_backbone
from detect.models.detector import Detector, build_detector
from detect.models.heads import Head, HeadOutput
from detect.models.spp import SpatialPyramidPool, project_boxes

__all__ = [
    "Backbone",
    "Detector",
    "Head",
    "HeadOutput",
    "SpatialPyramidPool",
    "build_backbone",
    "build_detector",
    "project_boxes",
]
