"""detect: SPP-net object detection with a per-crop R-CNN baseline."""

__version__ = "0.1.0"
