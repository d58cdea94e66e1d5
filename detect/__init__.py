"""detect: SPP-net object detection with a per-crop R-CNN baseline.

``from detect import Detector`` gives the Python API (:mod:`detect.detector`); it is imported on
first use, so ``detect --help`` does not load torch.
"""

__version__ = "0.1.0"

__all__ = ["DetectionResult", "Detector", "__version__"]


def __getattr__(name: str):
    if name in ("Detector", "DetectionResult"):
        from detect import detector

        return getattr(detector, name)
    raise AttributeError(f"module 'detect' has no attribute {name!r}")
