"""The built-in synthetic classification set (ImageFolder layout on disk), deterministic by seed.

Each image holds one object of :data:`~detect.data.synthetic.SYNTHETIC_CLASSES`, drawn with the
detection generator's shapes, rim and textured background (:mod:`detect.data.synthetic`), but in
a random colour: the class is the shape alone. Images have varied sizes and aspect ratios (the
shorter side drawn in ``side_range``, the longer up to ``max_aspect`` times it, landscape or
portrait), and the object a varied scale (its nominal size drawn log-uniformly in
``object_size``, fractions of the shorter side), aspect ratio, rotation and position (wholly
inside the image, anywhere along the longer side).

Layout: ``<root>/<split>/<class name>/<index>.jpg`` (``train`` and ``test`` splits), the layout
``detect classify`` reads (:mod:`detect.classify.data`). Image ``i`` of a split is rendered from
its own random stream seeded by ``(seed, split number, i)``. ``classification.json`` records the
parameters; it is written last, so an interrupted generation is redone.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from detect.data.images import write_image
from detect.data.synthetic import (
    _RIM_KERNEL,
    CLASS_COLOURS,
    PIXEL_NOISE,
    RIM_SHADE,
    SYNTHETIC_CLASSES,
    _background,
    _fill,
    _unit_polygon,
)
from detect.errors import DetectError
from detect.files import atomic_write_text

CLASSIFICATION_INFO_FILE = "classification.json"
CLASSIFICATION_INFO_FORMAT = "detect-synthetic-classification-v2"
CLASSIFICATION_SPLITS = ("train", "test")
OBJECT_ASPECT = 1.6  # nominal width / height within [1 / OBJECT_ASPECT, OBJECT_ASPECT]


@dataclass(frozen=True)
class ClassificationParams:
    """What a generated classification set depends on (validated on construction).

    Attributes:
        num_train, num_test: images per split, spread evenly over the classes.
        side_range: ``(low, high)``: each image's shorter side is drawn in it.
        max_aspect: the longer side / the shorter, drawn log-uniformly in ``[1, max_aspect]``;
            the longer side is the width or the height with equal chance.
        object_size: ``(low, high)``: the object's nominal size, drawn log-uniformly in it, as
            fractions of the image's shorter side.
        background_contrast: the textured background's deviations from its mean colour are
            scaled by it (1: the detection generator's texture; lower: flatter, the shape
            stands out).
        class_colour: the fraction of objects drawn in their class's colour (0: the class is
            the shape alone; 1: the colour gives it away).
        seed: the same seed gives the same images.
    """

    num_train: int = 400
    num_test: int = 200
    side_range: tuple[int, int] = (160, 288)
    max_aspect: float = 2.0
    object_size: tuple[float, float] = (0.2, 0.55)
    background_contrast: float = 1.0
    class_colour: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        low, high = (int(v) for v in self.side_range)
        object.__setattr__(self, "side_range", (low, high))
        if not 48 <= low <= high:
            raise DetectError(
                f"synthetic classification: side_range must be 48 <= low <= high, got {low}, {high}"
            )
        if not self.max_aspect >= 1.0:
            raise DetectError(
                f"synthetic classification: max_aspect must be >= 1, got {self.max_aspect}"
            )
        small, large = (float(v) for v in self.object_size)
        object.__setattr__(self, "object_size", (small, large))
        if not 0.05 <= small <= large <= 0.8:
            raise DetectError(
                "synthetic classification: object_size must be 0.05 <= low <= high <= 0.8, got "
                f"{small}, {large}"
            )
        if not 0.0 <= self.background_contrast <= 1.0:
            raise DetectError(
                "synthetic classification: background_contrast must be in [0, 1], got "
                f"{self.background_contrast}"
            )
        if not 0.0 <= self.class_colour <= 1.0:
            raise DetectError(
                f"synthetic classification: class_colour must be in [0, 1], got {self.class_colour}"
            )
        if min(self.num_train, self.num_test) < len(SYNTHETIC_CLASSES):
            raise DetectError(
                "synthetic classification: at least one image per class in each split, got "
                f"train={self.num_train} test={self.num_test}"
            )


def render_object_image(
    rng: np.random.Generator,
    label: int,
    height: int,
    width: int,
    class_colour: float = 0.0,
    object_size: tuple[float, float] = (0.2, 0.55),
    background_contrast: float = 1.0,
) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB: one object of class ``label`` (nominal size drawn log-uniformly
    in ``object_size`` x the shorter side), wholly inside the image, on the detection generator's
    textured background with its deviations from the mean colour scaled by
    ``background_contrast``; in its class's colour with probability ``class_colour``, else in
    another colour."""
    image = _background(rng, height, width)
    mean = image.mean(axis=(0, 1), keepdims=True)
    image = mean + background_contrast * (image - mean)
    short = min(height, width)
    size = short * np.exp(rng.uniform(*np.log(object_size)))
    aspect = np.exp(rng.uniform(-np.log(OBJECT_ASPECT), np.log(OBJECT_ASPECT)))
    points = _unit_polygon(label, rng) * [size * np.sqrt(aspect) / 2, size / np.sqrt(aspect) / 2]
    angle = rng.uniform(-0.3, 0.3) if SYNTHETIC_CLASSES[label] == "square" else rng.uniform(0, 7)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = points @ rotation.T
    low, high = points.min(axis=0), points.max(axis=0)
    centre = rng.uniform(-low, np.maximum([width, height] - high, -low + 1e-3))
    mask = _fill(points + centre, height, width)
    if rng.random() < class_colour:  # the detection set's colour of the class
        colour = np.array(CLASS_COLOURS[label], np.float32)
    else:  # any other: a class colour with its channels shuffled, or a random one
        colour = (
            rng.permutation(CLASS_COLOURS[int(rng.integers(len(CLASS_COLOURS)))])
            if rng.random() < 0.5
            else rng.uniform(30, 240, 3)
        )
    image[mask] = colour
    inner = cv2.erode(mask.view(np.uint8), _RIM_KERNEL, iterations=2).astype(bool)
    image[mask & ~inner] = colour * RIM_SHADE
    image += PIXEL_NOISE * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def image_size(rng: np.random.Generator, spec: ClassificationParams) -> tuple[int, int]:
    """``(height, width)``: the shorter side drawn in ``spec.side_range``, the longer
    ``aspect`` x it (``aspect`` log-uniform in ``[1, spec.max_aspect]``), landscape or portrait
    with equal chance."""
    low, high = spec.side_range
    short = int(rng.integers(low, high + 1))
    long = int(round(short * np.exp(rng.uniform(0.0, np.log(spec.max_aspect)))))
    return (short, long) if rng.random() < 0.5 else (long, short)


def is_complete_classification_set(root: str | Path, **params) -> bool:
    """Whether ``root`` holds a finished set generated with these parameters."""
    path = Path(root) / CLASSIFICATION_INFO_FILE
    if not path.is_file():
        return False
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    expected = json.loads(json.dumps(asdict(ClassificationParams(**params))))
    return info.get("format") == CLASSIFICATION_INFO_FORMAT and info.get("params") == expected


def generate_classification_set(root: str | Path, progress: bool = True, **params) -> Path:
    """Write the set under ``root`` (see the module docstring) and return ``root``.

    ``params``: the fields of :class:`ClassificationParams`. A non-empty ``root`` that holds no
    ``classification.json`` is refused; an earlier generated set there is replaced.
    """
    root = Path(root)
    spec = ClassificationParams(**params)
    if root.is_dir() and any(root.iterdir()):
        if not (root / CLASSIFICATION_INFO_FILE).is_file():
            raise DetectError(
                f"synthetic classification {root}: folder is not empty and holds no {CLASSIFICATION_INFO_FILE}; "
                "refusing to overwrite it (choose an empty or new folder)"
            )
        (root / CLASSIFICATION_INFO_FILE).unlink()
        for split in CLASSIFICATION_SPLITS:
            shutil.rmtree(root / split, ignore_errors=True)
    counts = {"train": spec.num_train, "test": spec.num_test}
    with tqdm(
        total=sum(counts.values()), desc="classification images", disable=not progress
    ) as bar:
        for split_number, (split, count) in enumerate(counts.items()):
            for index in range(count):
                rng = np.random.default_rng([spec.seed, split_number, index])
                label = index % len(SYNTHETIC_CLASSES)
                height, width = image_size(rng, spec)
                image = render_object_image(
                    rng,
                    label,
                    height,
                    width,
                    spec.class_colour,
                    spec.object_size,
                    spec.background_contrast,
                )
                name = SYNTHETIC_CLASSES[label]
                write_image(root / split / name / f"{index:05d}.jpg", image)
                bar.update()
    info = {
        "format": CLASSIFICATION_INFO_FORMAT,
        "params": asdict(spec),
        "classes": list(SYNTHETIC_CLASSES),
    }
    atomic_write_text(root / CLASSIFICATION_INFO_FILE, json.dumps(info, indent=1) + "\n")
    return root
