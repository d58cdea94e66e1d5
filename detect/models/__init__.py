"""Models: backbones, projection + spatial pyramid pooling, region poolers, heads, scorers, and the
detection model that runs SPP-net or the R-CNN baseline."""

from detect.models.backbones import Backbone, build_backbone
from detect.models.detection_model import DetectionModel, build_detector
from detect.models.heads import Head, HeadOutput
from detect.models.poolers import CropPooler, SPPPooler, build_pooler
from detect.models.spp import SpatialPyramidPool, project_boxes

__all__ = [
    "Backbone",
    "CropPooler",
    "DetectionModel",
    "Head",
    "HeadOutput",
    "SPPPooler",
    "SpatialPyramidPool",
    "build_backbone",
    "build_detector",
    "build_pooler",
    "project_boxes",
]
