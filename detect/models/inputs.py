"""Images to network inputs: the resize to a scale factor and the uint8 -> float conversion, one
definition for the detector, the region proposal network, the image classifier and the bench's
torchvision peers. Images are ``(H, W, 3)`` uint8 RGB arrays."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor


def resize_by(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` resized by ``scale`` (each side ``round(side * scale)``, at least 1 px; bilinear);
    the same array when the size does not change."""
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def image_tensor(image: np.ndarray) -> Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0


def normalised_tensor(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 ``(x / 255 - mean) / std`` (the backbone's
    per-channel statistics)."""
    mean_t = torch.tensor(mean, dtype=torch.float32).reshape(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).reshape(3, 1, 1)
    return (image_tensor(image) - mean_t) / std_t
