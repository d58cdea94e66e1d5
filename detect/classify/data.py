"""Classification data: ImageFolder samples, object-centred crops of a detection set, and the
views the classifier sees (training regions, centre crop, warp, full image).

A :class:`Sample` is an image file, its class and an optional box: the classifier sees the box's
pixels (an object-centred crop) or, without one, the whole image. Images are ``(H, W, 3)`` uint8
RGB arrays; tensors ``(3, H, W)`` float32, normalised with the backbone's mean / std.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from detect.data.images import IMAGE_SUFFIXES, read_image
from detect.errors import DetectError


@dataclass(frozen=True)
class Sample:
    """One classification example.

    Attributes:
        path: the image file.
        label: index into the set's class names.
        box: ``(x1, y1, x2, y2)`` integer pixel box (xyxy, 0-based, ``x2`` / ``y2`` exclusive)
            to crop, or None for the whole image.
    """

    path: Path
    label: int
    box: tuple[int, int, int, int] | None = None

    def load(self, max_pixels: int) -> np.ndarray:
        """The sample's ``(H, W, 3)`` uint8 RGB pixels (the box's crop when it has one)."""
        image = read_image(self.path, max_pixels)
        if self.box is None:
            return image
        x1, y1, x2, y2 = self.box
        return image[y1:y2, x1:x2]


def read_image_folder(
    root: str | Path, split: str, class_names: Sequence[str] = ()
) -> tuple[list[str], list[Sample]]:
    """``(class names, samples)`` of ``<root>/<split>/<class>/<image>`` (ImageFolder layout).

    Class names are the sub-folder names, sorted, unless ``class_names`` (a trained model's) is
    given; a sub-folder not among them is an error. Image files are those with a suffix
    :func:`detect.data.images.read_image` reads, sorted by name within each class.
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise DetectError(
            f"classify.root: {folder} is not a folder (expected <root>/<split>/<class>/<images>)"
        )
    found = sorted(path.name for path in folder.iterdir() if path.is_dir())
    names = list(class_names) or found
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise DetectError(f"classify data {folder}: class folders {unknown} not in {names}")
    samples = [
        Sample(path, label)
        for label, name in enumerate(names)
        if (folder / name).is_dir()
        for path in sorted((folder / name).iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if len(names) < 2 or not samples:
        raise DetectError(
            f"classify data {folder}: needs at least 2 class folders holding images, found "
            f"{len(found)} folder(s) and {len(samples)} image(s)"
        )
    return names, samples


def object_crops(annotations, context: float) -> list[Sample]:
    """Object-centred samples of a detection data set: each object that is not ``difficult``,
    its box scaled by ``context`` about its centre and clipped to the image.

    Args:
        annotations: :class:`detect.structures.Annotation` records (boxes ``(G, 4)`` xyxy,
            0-based continuous pixels).
        context: box scale (1 = the tight box; SPP-net's detection windows include context).
    """
    samples = []
    for ann in annotations:
        difficult = (
            ann.difficult.tolist() if ann.difficult is not None else [False] * len(ann.labels)
        )
        for (x1, y1, x2, y2), label, hard in zip(
            ann.boxes.tolist(), ann.labels.tolist(), difficult, strict=True
        ):
            if hard:
                continue
            cx, cy, half_w, half_h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
            crop = (
                math.floor(max(cx - context * half_w, 0)),
                math.floor(max(cy - context * half_h, 0)),
                math.ceil(min(cx + context * half_w, ann.width)),
                math.ceil(min(cy + context * half_h, ann.height)),
            )
            samples.append(Sample(Path(ann.path), int(label), crop))
    return samples


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` resized to ``height x width`` (area averaging when shrinking, else bilinear)."""
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )


def square_region(
    image: np.ndarray, fraction: float, rng: np.random.Generator | None
) -> np.ndarray:
    """A square of side ``fraction`` x the shorter side: at a random place (``rng``) or centred
    (``rng`` None)."""
    height, width = image.shape[:2]
    side = max(1, round(fraction * min(height, width)))
    if rng is None:
        top, left = (height - side) // 2, (width - side) // 2
    else:
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    return image[top : top + side, left : left + side]


def training_view(
    image: np.ndarray, size: int, fraction: float, flip: bool, rng: np.random.Generator
) -> np.ndarray:
    """A random square region (:func:`square_region`) resized to ``size x size``, flipped
    left-right with probability 1/2 when ``flip``."""
    view = resize(square_region(image, fraction, rng), size, size)
    return view[:, ::-1] if flip and rng.random() < 0.5 else view


TEST_VIEWS = ("crop", "warp", "full")


def eval_view(image: np.ndarray, view: str, size: int, fraction: float) -> np.ndarray:
    """What a test view shows: ``crop``, the centre square (:func:`square_region`, as training
    regions) resized to ``size``; ``warp``, the whole image resized to ``size x size``; ``full``,
    the whole image at its own size."""
    if view == "crop":
        return resize(square_region(image, fraction, None), size, size)
    if view == "warp":
        return resize(image, size, size)
    if view == "full":
        return image
    raise DetectError(f"classify view: unknown view {view!r}; known: {list(TEST_VIEWS)}")
