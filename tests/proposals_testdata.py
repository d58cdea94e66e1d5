"""Small synthetic images for the proposals tests (tests/proposals/, tests/test_startup_imports.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from detect.data.images import write_image
from detect.structures import Annotation, DetectionDataset

HEIGHT, WIDTH = 120, 160
# Solid rectangles, xyxy 0-based continuous, and their colours.
RECTANGLES = [
    ((10, 12, 60, 52), (220, 40, 40)),
    ((80, 30, 150, 70), (40, 200, 60)),
    ((30, 75, 110, 112), (40, 60, 230)),
]


def synthetic_image(seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    """``(HEIGHT, WIDTH, 3)`` uint8 RGB: a few solid rectangles on a noisy grey background, and
    their ``(3, 4)`` xyxy boxes."""
    rng = np.random.default_rng(seed)
    image = rng.integers(90, 140, size=(HEIGHT, WIDTH, 3)).astype(np.uint8)
    for (x1, y1, x2, y2), colour in RECTANGLES:
        image[y1:y2, x1:x2] = colour
    boxes = torch.tensor([box for box, _ in RECTANGLES], dtype=torch.float32)
    return image, boxes


def write_images(folder: Path, count: int) -> list[Path]:
    """``count`` synthetic PNGs ``img0.png, ...`` in ``folder``."""
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        write_image(path, synthetic_image(i)[0])
        paths.append(path)
    return paths


def synthetic_dataset(folder: Path, count: int) -> DetectionDataset:
    """An in-memory data set over ``count`` synthetic images written to ``folder``."""
    annotations = []
    for path in write_images(folder, count):
        boxes = synthetic_image(int(path.stem[3:]))[1]
        annotations.append(
            Annotation(
                path.stem, path, WIDTH, HEIGHT, boxes, torch.zeros(len(boxes), dtype=torch.int64)
            )
        )
    return DetectionDataset("synthetic", folder, "test", ("box",), annotations)
