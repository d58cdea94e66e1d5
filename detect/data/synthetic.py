"""The built-in synthetic detection data set (VOC layout on disk), deterministic by seed.

Each image holds 1-5 objects of :data:`SYNTHETIC_CLASSES` (a red circle, a green triangle, a blue
square and a yellow star: different in shape *and* colour) at varied sizes (about 24 px up to half
the shorter image side), aspect ratios, rotations and positions, drawn in order so later objects
occlude earlier ones, on a procedural texture (a smooth random colour field with soft blobs, stripes
and grain; nothing is downloaded). Each object is a flat colour with a darker 1-2 px rim. A few objects are marked ``difficult``: tiny ones (visible box
under 12 px) and heavily occluded ones (under 40% of their pixels visible). Objects that cross the
image border are marked ``truncated``. The ``small-dense`` preset (:data:`PRESETS`) packs 30-150
objects of 15-60 px into each 384x512 image instead, each at least half visible, camouflaged as in
real photographs of small objects (:class:`Camouflage`): a textured ground with lighting
gradients, objects of the ground's texture a little off its colour towards their class's hue, with
soft edges and shadows, unannotated clutter, sensor noise and JPEG artefacts.

Every box is the tight box of the object's *visible* pixels in the final rendering (its mask after
occlusion and clipping to the image), in 0-based continuous xyxy: pixel columns 3..9 give
``x1 = 3, x2 = 10``. Shapes are filled without antialiasing, so the masks are exact.

Image ``i`` (1-based, id ``f"{i:06d}"``) is rendered from its own random stream seeded by
``(seed, i)``: the same seed gives byte-identical annotations, and changing the number of test images
does not change the training images. Ids ``1..num_train`` are ``train``, the next ``num_val`` are
``val``, the rest ``test``; ``trainval`` is ``train`` followed by ``val``, as in the VOC devkit.

A ``synthetic.json`` in the folder records the parameters and a summary. It is written (atomically)
first with ``"complete": false`` and rewritten with ``"complete": true`` only after every file, so an
interrupted generation is detected by :func:`is_complete` and redone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from detect.data.images import write_image
from detect.data.voc import write_voc_dataset
from detect.errors import DetectError
from detect.files import atomic_write_text
from detect.structures import Annotation

log = logging.getLogger(__name__)

SYNTHETIC_CLASSES: tuple[str, ...] = ("circle", "triangle", "square", "star")
# Base RGB colour of each class; each object's colour is jittered around it by COLOUR_JITTER.
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (220, 35, 35),
    (35, 185, 55),
    (40, 75, 225),
    (245, 215, 30),
)
COLOUR_JITTER = 18
RIM_SHADE = 0.55  # each object has a 1-2 px rim of its colour times this
_RIM_KERNEL = np.ones((3, 3), np.uint8)
PIXEL_NOISE = 4.0  # std of the grain added to the whole image after drawing

INFO_FILE = "synthetic.json"
INFO_FORMAT = "detect-synthetic-v1"
GENERATOR_VERSION = 1  # a Layout's default version (bump a preset's when its rendering changes)

MIN_OBJECT_SIZE = 24  # nominal object size (geometric mean of width and height), pixels
TINY_PROBABILITY = 0.04  # chance that an object is tiny (nominal size 6-11 px)
MAX_ASPECT = 2.0  # nominal width / height within [1 / MAX_ASPECT, MAX_ASPECT]
MIN_VISIBLE = 0.25  # placements that leave an object less visible than this are retried
BORDER_PROBABILITY = (
    0.15  # chance that an object's centre may lie anywhere (it may cross the border)
)
DIFFICULT_VISIBLE = 0.4  # an object with less of its pixels visible is difficult
DIFFICULT_SIZE = 12  # an object whose visible box's longer side is below this is difficult
PLACEMENT_TRIES = 30
CLUTTER_SIZES = (15.0, 60.0)  # nominal size range of a Camouflage's unannotated blobs, pixels
_SHIFT = 4  # cv2.fillPoly fixed-point bits (1/16 px vertex precision)


@dataclass(frozen=True)
class Layout:
    """How many objects an image holds, how large and how hidden they may be (a preset).

    Attributes:
        min_objects: objects per image are drawn uniformly from ``min_objects..max_objects``.
        max_objects: the preset's default upper bound.
        sizes: nominal object sizes (geometric mean of width and height, pixels) are drawn
            log-uniformly from this range; empty = ``MIN_OBJECT_SIZE`` up to half the shorter
            image side.
        tiny_probability: chance that an object is tiny instead (nominal size 6-11 px).
        min_visible: placements leaving an earlier object less visible than this are retried.
        image_size: the preset's default ``(H, W)``.
        look: how objects are painted: None = flat class colours with a dark rim on a muted
            texture (the default preset's rendering); a :class:`Camouflage` = objects close to
            the ground's colour and texture, as in real photographs of small objects.
        version: the rendering's version, recorded in ``synthetic.json``: bump a preset's when its
            rendering changes, so its generated folders are redone (the others' stay valid).
    """

    min_objects: int
    max_objects: int
    sizes: tuple[float, ...]
    tiny_probability: float
    min_visible: float
    image_size: tuple[int, int]
    look: Camouflage | None = None
    version: int = GENERATOR_VERSION


@dataclass(frozen=True)
class Camouflage:
    """Objects painted to blend with the ground, as in aerial, microscope or shelf photographs:
    what bottom-up grouping (selective search) finds hard and a CNN can still learn. The
    ``small-dense`` preset's values are calibrated so selective search fast (the default
    ``proposals`` settings) finds about half of the objects at IoU 0.5 (README "Small, dense
    objects"). Colour values are in 0..255 levels.

    Attributes:
        ground_spread: range of the ground's base colour: each channel around mid-grey +/- this.
        ground_relief: amplitude of the ground's large-scale colour variation (a few cells).
        texture: amplitude of the fine texture (features of 3-15 px); objects carry another
            instance of the same texture, so texture does not set them apart.
        contrast: length of the class's colour offset from the local ground (RGB levels, in the
            direction of the class's hue, :data:`CLASS_COLOURS`): the cue a classifier learns.
        brightness: each object is brighter or darker than the ground by up to this.
        edge_blur: Gaussian sigma (pixels) of an object's soft edge.
        shadow: fraction of light an object's shadow takes from what lies under it.
        shadow_offset: the shadow's shift (pixels, down and right) from the object.
        clutter: unannotated blobs per image (a range): stones, debris, other things.
        lighting: the illumination varies over the image by a factor ``1 +/- lighting``.
        noise: standard deviation of the sensor noise.
        jpeg_quality: the image is JPEG-compressed at this quality before it is returned.
    """

    ground_spread: float
    ground_relief: float
    texture: float
    contrast: float
    brightness: float
    edge_blur: float
    shadow: float
    shadow_offset: float
    clutter: tuple[int, int]
    lighting: float
    noise: float
    jpeg_quality: int


PRESETS: dict[str, Layout] = {
    # 1-5 objects of 24 px up to half the image, a few tiny ones (the demo's data set).
    "default": Layout(1, 5, (), TINY_PROBABILITY, MIN_VISIBLE, (256, 320)),
    # 30-150 small objects (15-60 px) per image, each at least half visible, camouflaged in the
    # ground (issue 17).
    "small-dense": Layout(
        30,
        150,
        (15.0, 60.0),
        0.0,
        0.5,
        (384, 512),
        look=Camouflage(
            ground_spread=40.0,
            ground_relief=40.0,
            texture=35.0,
            contrast=30.0,
            brightness=15.0,
            edge_blur=1.8,
            shadow=0.45,
            shadow_offset=3.0,
            clutter=(20, 60),
            lighting=0.3,
            noise=6.0,
            jpeg_quality=60,
        ),
        version=2,
    ),
}


@dataclass
class SyntheticImage:
    """One rendered image and its objects, bottom (drawn first) to top.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        boxes: ``(G, 4)`` float32 xyxy, 0-based continuous pixels, tight around ``masks``.
        labels: ``(G,)`` int64 indices into :data:`SYNTHETIC_CLASSES`.
        difficult: ``(G,)`` bool.
        truncated: ``(G,)`` bool, the shape crosses the image border.
        masks: ``(G, H, W)`` bool, each object's visible pixels (after occlusion).
        visible: ``(G,)`` float, visible pixels / pixels of the unoccluded shape inside the image.
        colours: ``(G, 3)`` uint8, the RGB colour each object was filled with (its rim is that
            times :data:`RIM_SHADE`; with a :class:`Camouflage`, the mean of its textured fill).
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    truncated: np.ndarray
    masks: np.ndarray
    visible: np.ndarray
    colours: np.ndarray


def _unit_polygon(label: int, rng: np.random.Generator) -> np.ndarray:
    """The outline of a class's shape as ``(P, 2)`` points in ``[-1, 1]^2``."""
    name = SYNTHETIC_CLASSES[label]
    if name == "circle":
        angles = np.linspace(0.0, 2.0 * np.pi, 72, endpoint=False)
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if name == "triangle":
        apex = rng.uniform(-0.7, 0.7)
        return np.array([[apex, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    if name == "square":
        return np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    if name == "star":
        inner = rng.uniform(0.38, 0.5)
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    raise ValueError(name)


def _shape_polygon(
    label: int, rng: np.random.Generator, height: int, width: int, layout: Layout
) -> np.ndarray:
    """A random placement of a class's shape: ``(P, 2)`` float image points (x, y)."""
    low_size, high_size = layout.sizes or (
        MIN_OBJECT_SIZE,
        max(min(height, width) / 2, MIN_OBJECT_SIZE),
    )
    if rng.random() < layout.tiny_probability:
        size = rng.uniform(6.0, 11.0)
    else:
        size = np.exp(rng.uniform(np.log(low_size), np.log(high_size)))
    aspect = np.exp(rng.uniform(-np.log(MAX_ASPECT), np.log(MAX_ASPECT)))
    half_w, half_h = size * np.sqrt(aspect) / 2, size / np.sqrt(aspect) / 2
    points = _unit_polygon(label, rng) * [half_w, half_h]
    # Squares stay roughly axis-aligned (rotated they read as diamonds); the others turn freely.
    angle = (
        rng.uniform(-0.3, 0.3)
        if SYNTHETIC_CLASSES[label] == "square"
        else rng.uniform(0, 2 * np.pi)
    )
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = points @ rotation.T
    low, high = points.min(axis=0), points.max(axis=0)
    if (
        rng.random() < BORDER_PROBABILITY
    ):  # may cross the border: the centre anywhere inside the image
        centre = rng.uniform([0, 0], [width, height])
    else:  # wholly inside where it fits
        centre = rng.uniform(-low, np.maximum([width, height] - high, -low + 1e-3))
    return points + centre


def _fill(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(H, W)`` bool mask of a filled polygon (no antialiasing)."""
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * (1 << _SHIFT)).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)
    return mask.astype(bool)


def _visible_masks(masks: list[np.ndarray]) -> list[np.ndarray]:
    """Each mask minus the union of the masks drawn after it (on top of it)."""
    covered = np.zeros_like(masks[0]) if masks else None
    visible = []
    for mask in reversed(masks):
        visible.append(mask & ~covered)
        covered = covered | mask
    return visible[::-1]


def _smooth_field(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """``(H, W, 3)`` float32 smooth random colours: a coarse random grid upsampled bicubically."""
    grid = rng.uniform(0.0, 1.0, (cells, cells + 1, 3)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``(H, W, 3)`` float32 procedural texture in 0..255, muted so objects stand out."""
    image = 40.0 + 170.0 * _smooth_field(rng, height, width, int(rng.integers(2, 6)))
    image += 30.0 * (_smooth_field(rng, height, width, int(rng.integers(12, 24))) - 0.5)
    for _ in range(int(rng.integers(3, 9))):  # soft blobs, blended within their own window
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        ax, ay = int(rng.integers(8, width // 3)), int(rng.integers(8, height // 3))
        angle, sigma = float(rng.uniform(0, 180)), float(rng.uniform(3, 12))
        strength, colour = rng.uniform(0.4, 0.9), rng.uniform(30, 220, 3).astype(np.float32)
        reach = max(ax, ay) + int(3 * sigma) + 1
        x0, y0 = max(cx - reach, 0), max(cy - reach, 0)
        x1, y1 = min(cx + reach, width), min(cy + reach, height)
        alpha = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.ellipse(alpha, (cx - x0, cy - y0), (ax, ay), angle, 0, 360, 1.0, -1)
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)[..., None] * strength
        window = image[y0:y1, x0:x1]
        window += alpha * (colour - window)
    if rng.random() < 0.6:  # stripes at a random angle and period
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        phase = (xs * np.cos(angle) + ys * np.sin(angle)) * (2 * np.pi / period)
        image += (rng.uniform(10, 30) * np.sin(phase))[..., None]
    grey = image.mean(axis=2, keepdims=True)
    return grey + 0.5 * (image - grey)  # halve the saturation


def _paint_flat(
    rng: np.random.Generator,
    image: np.ndarray,
    labels: list[int],
    masks: list[np.ndarray],
    areas: list[int],
) -> np.ndarray:
    """Paint each object (bottom to top) onto ``image`` ``(H, W, 3)`` float32 in place, a flat
    jittered class colour with a darker rim, then add grain; returns the ``(G, 3)`` uint8 fill
    colours."""
    colours = np.array(
        [
            np.clip(
                np.array(CLASS_COLOURS[label]) + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3),
                0,
                255,
            )
            for label in labels
        ],
        dtype=np.uint8,
    ).reshape(-1, 3)
    for mask, colour, area in zip(masks, colours, areas, strict=True):
        image[mask] = colour
        # A darker rim, inside the mask, keeps touching objects of one class apart.
        inner = cv2.erode(mask.view(np.uint8), _RIM_KERNEL, iterations=1 if area < 400 else 2)
        image[mask & ~inner.astype(bool)] = colour * RIM_SHADE
    image += PIXEL_NOISE * rng.standard_normal(image.shape, dtype=np.float32)
    return colours


def _texture(rng: np.random.Generator, height: int, width: int, amplitude: float) -> np.ndarray:
    """``(H, W, 3)`` float32 zero-mean texture: smooth noise with features of about 15 px plus
    about 4 px, mostly shared by the three channels (a grey-ish grain, as soil or foliage)."""
    fields = [
        _smooth_field(rng, height, width, max(2, min(height, width) // size)) - 0.5
        for size in (15, 4)
    ]
    texture = sum(fields)
    return amplitude * (0.7 * texture.mean(axis=2, keepdims=True) + 0.3 * texture)


def _ground(rng: np.random.Generator, height: int, width: int, look: Camouflage) -> np.ndarray:
    """``(H, W, 3)`` float32 ground in 0..255: a muted base colour, large-scale colour relief
    and :func:`_texture`."""
    base = 128.0 + rng.uniform(-look.ground_spread, look.ground_spread, 3).astype(np.float32)
    relief = look.ground_relief * (_smooth_field(rng, height, width, int(rng.integers(3, 7))) - 0.5)
    return base + relief + _texture(rng, height, width, look.texture)


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    """``(H, W)`` float32 alpha in 0..1: the bool ``mask`` with its edge blurred by ``sigma``."""
    alpha = mask.astype(np.float32)
    return cv2.GaussianBlur(alpha, (0, 0), sigma) if sigma > 0 else alpha


def _blob(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``(H, W)`` bool mask of an irregular blob (a star-shaped polygon with random radii) of the
    objects' sizes (``CLUTTER_SIZES``), anywhere in the image."""
    size = np.exp(rng.uniform(*np.log(CLUTTER_SIZES)))
    count = int(rng.integers(5, 10))
    angles = np.sort(rng.uniform(0, 2 * np.pi, count))
    radii = size / 2 * rng.uniform(0.5, 1.0, count)
    points = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    return _fill(points + rng.uniform([0, 0], [width, height]), height, width)


def _paint_camouflaged(
    rng: np.random.Generator,
    image: np.ndarray,
    labels: list[int],
    masks: list[np.ndarray],
    look: Camouflage,
) -> np.ndarray:
    """Paint unannotated clutter, then each object (bottom to top), onto the ground ``image``
    ``(H, W, 3)`` float32 in place, then vary the lighting and add sensor noise. A blob's fill is
    the ground's local colour plus an offset (its class's hue times ``look.contrast`` for an
    object, a random one of that length for clutter), a random brightness and a texture of the
    ground's family; its edge is soft and it casts a soft shadow. Returns the ``(G, 3)`` uint8
    mean fill colours of the objects."""
    height, width = image.shape[:2]
    local = cv2.GaussianBlur(image, (0, 0), 8.0)
    fills = _texture(rng, height, width, look.texture)
    hues = np.array(CLASS_COLOURS, np.float32)
    hues -= hues.mean(axis=1, keepdims=True)
    hues /= np.linalg.norm(hues, axis=1, keepdims=True)
    clutter = [_blob(rng, height, width) for _ in range(int(rng.integers(*look.clutter)))]
    offsets = [rng.standard_normal(3) * look.contrast / np.sqrt(3) for _ in clutter]
    offsets += [look.contrast * hues[label] for label in labels]
    margin = int(np.ceil(3 * max(look.edge_blur, 1.5) + look.shadow_offset)) + 1
    colours = []
    for index, (mask, offset) in enumerate(zip(clutter + masks, offsets, strict=True)):
        rows, cols = np.nonzero(mask)
        if not len(rows):  # a clutter blob that fills no pixel (an object always does)
            continue
        y0, x0 = max(rows.min() - margin, 0), max(cols.min() - margin, 0)
        y1, x1 = min(rows.max() + 1 + margin, height), min(cols.max() + 1 + margin, width)
        alpha = _soft(mask[y0:y1, x0:x1], look.edge_blur)
        step = round(look.shadow_offset)
        shadow = np.zeros_like(alpha)
        shadow[step:, step:] = alpha[: alpha.shape[0] - step, : alpha.shape[1] - step]
        window = image[y0:y1, x0:x1]
        window *= 1.0 - look.shadow * cv2.GaussianBlur(shadow, (0, 0), 1.5)[..., None]
        colour = local[int(rows.mean()), int(cols.mean())] + offset
        colour += rng.uniform(-look.brightness, look.brightness)
        window += alpha[..., None] * (colour + fills[y0:y1, x0:x1] - window)
        if index >= len(clutter):
            colours.append(colour)
    light = _smooth_field(rng, height, width, 2).mean(axis=2, keepdims=True)
    image *= 1.0 + 2 * look.lighting * (light - 0.5)
    image += look.noise * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.round(colours), 0, 255).astype(np.uint8).reshape(-1, 3)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB ``image`` after JPEG compression at ``quality`` (its artefacts)."""
    ok, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def render_image(
    rng: np.random.Generator,
    height: int,
    width: int,
    max_objects: int = 5,
    layout: Layout = PRESETS["default"],
) -> SyntheticImage:
    """Render one image with ``layout.min_objects..max_objects`` objects on a textured background.

    Args:
        rng: the image's random stream (all randomness comes from it).
        height, width: image size in pixels.
        max_objects: upper bound on the number of objects (at least ``layout.min_objects``).
        layout: object counts, sizes and occlusion (:data:`PRESETS`).

    Returns:
        The image and its objects; boxes are computed from the visible masks.
    """
    look = layout.look
    image = _background(rng, height, width) if look is None else _ground(rng, height, width, look)
    labels: list[int] = []
    masks: list[np.ndarray] = []
    areas: list[int] = []  # pixels of each unoccluded shape inside the image
    truncated: list[bool] = []
    top = np.full((height, width), -1, np.int64)  # the object drawn on top of each pixel (-1: none)
    shown = np.zeros(0, np.int64)  # visible pixels of each object so far
    for _ in range(int(rng.integers(layout.min_objects, max_objects + 1))):
        label = int(rng.integers(len(SYNTHETIC_CLASSES)))
        for _try in range(PLACEMENT_TRIES):
            polygon = _shape_polygon(label, rng, height, width, layout)
            mask = _fill(polygon, height, width)
            area = int(mask.sum())
            if area < 0.5 * max(cv2.contourArea(polygon.astype(np.float32)), 1.0):
                continue  # mostly outside the image
            # Pixels each earlier object would lose under this one.
            lost = np.bincount(top[mask] + 1, minlength=len(masks) + 1)[1:]
            if all(v >= layout.min_visible * a for v, a in zip(shown - lost, areas, strict=True)):
                break
        else:
            continue  # no placement keeps the others visible enough: skip this object
        low, high = polygon.min(axis=0), polygon.max(axis=0)
        top[mask] = len(masks)
        shown = np.append(shown - lost, area)
        labels.append(label)
        masks.append(mask)
        areas.append(area)
        truncated.append(bool(low.min() < 0 or high[0] > width or high[1] > height))
    if look is None:
        colours = _paint_flat(rng, image, labels, masks, areas)
    else:
        colours = _paint_camouflaged(rng, image, labels, masks, look)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    visible_masks = _visible_masks(masks)
    boxes, difficult, visible_fraction = [], [], []
    for mask, area in zip(visible_masks, areas, strict=True):
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        box = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
        fraction = float(mask.sum()) / area
        boxes.append(box)
        visible_fraction.append(fraction)
        longer = max(box[2] - box[0], box[3] - box[1])
        difficult.append(fraction < DIFFICULT_VISIBLE or longer < DIFFICULT_SIZE)
    return SyntheticImage(
        image=image if look is None else _jpeg(image, look.jpeg_quality),
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        labels=np.array(labels, np.int64),
        difficult=np.array(difficult, bool),
        truncated=np.array(truncated, bool),
        masks=np.array(visible_masks, bool).reshape(-1, height, width),
        visible=np.array(visible_fraction, np.float64),
        colours=colours,
    )


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of image ``index`` (1-based) for ``seed``."""
    return np.random.default_rng([seed, index])


@dataclass(frozen=True)
class SyntheticParams:
    """What a generated data set depends on, validated on construction (a :class:`DetectError`
    names the bad value). Keyword arguments of :func:`generate_synthetic_dataset` and
    :func:`is_complete`.

    Attributes:
        num_train, num_val, num_test: images per split (``trainval`` = train + val).
        image_size: ``(H, W)`` in pixels (None: the preset's).
        seed: the same seed gives the same images and byte-identical annotations.
        max_objects: objects per image are drawn uniformly from the preset's minimum (1 for
            ``default``) to this (None: the preset's maximum).
        image_ext: ``".jpg"`` (quality 95) or ``".png"`` (lossless).
        preset: a key of :data:`PRESETS`: ``default`` (1-5 objects, 24 px up to half the image)
            or ``small-dense`` (30-150 objects of 15-60 px, partly occluded, camouflaged).
    """

    num_train: int = 120
    num_val: int = 40
    num_test: int = 60
    image_size: tuple[int, int] | None = None
    seed: int = 0
    max_objects: int | None = None
    image_ext: str = ".jpg"
    preset: str = "default"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise DetectError(
                f"synthetic data: preset must be one of {list(PRESETS)}, got {self.preset!r}"
            )
        layout = PRESETS[self.preset]
        height, width = (int(v) for v in self.image_size or layout.image_size)
        object.__setattr__(self, "image_size", (height, width))
        if self.max_objects is None:
            object.__setattr__(self, "max_objects", layout.max_objects)
        if min(height, width) < 2 * MIN_OBJECT_SIZE:
            raise DetectError(
                f"synthetic data: image size {height}x{width} is too small "
                f"(min side {2 * MIN_OBJECT_SIZE})"
            )
        if self.seed < 0:
            raise DetectError(f"synthetic data: seed must be >= 0, got {self.seed}")
        counts = (self.num_train, self.num_val, self.num_test)
        if min(counts) < 0 or sum(counts) == 0:
            raise DetectError(
                f"synthetic data: image counts must be >= 0 and not all 0, got "
                f"train={self.num_train} val={self.num_val} test={self.num_test}"
            )
        if self.max_objects < layout.min_objects:
            raise DetectError(
                f"synthetic data: max_objects must be >= {layout.min_objects} (preset "
                f"{self.preset}), got {self.max_objects}"
            )
        if self.image_ext not in (".jpg", ".png"):
            raise DetectError(
                f"synthetic data: image_ext must be '.jpg' or '.png', got {self.image_ext!r}"
            )

    def record(self) -> dict:
        """The parameters as recorded in ``synthetic.json`` (with the generator version)."""
        return {
            "generator_version": PRESETS[self.preset].version,
            "num_train": int(self.num_train),
            "num_val": int(self.num_val),
            "num_test": int(self.num_test),
            "image_size": list(self.image_size),
            "seed": int(self.seed),
            "max_objects": int(self.max_objects),
            "image_ext": self.image_ext,
            "preset": self.preset,
        }


def read_info(root: str | Path) -> dict | None:
    """The folder's ``synthetic.json`` contents, or None when absent or unreadable."""
    try:
        info = json.loads((Path(root) / INFO_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) and info.get("format") == INFO_FORMAT else None


def is_complete(root: str | Path, **params: Any) -> bool:
    """True when ``root`` holds a finished data set generated with these parameters (keyword
    arguments: the fields of :class:`SyntheticParams`) and every listed file is present."""
    root = Path(root)
    info = read_info(root)
    expected = SyntheticParams(**params).record()
    if not info or not info.get("complete") or info.get("params") != expected:
        return False
    for split in ("train", "val", "trainval", "test"):
        split_path = root / "ImageSets" / "Main" / f"{split}.txt"
        if not split_path.is_file():
            return False
        for image_id in split_path.read_text().split():
            xml = root / "Annotations" / f"{image_id}.xml"
            image = root / "JPEGImages" / f"{image_id}{info['params']['image_ext']}"
            if not (xml.is_file() and image.is_file()):
                return False
    return True


def ensure_synthetic_dataset(
    root: str | Path, progress: bool = True, force: bool = False, **params: Any
) -> bool:
    """Generate the data set of ``params`` (the fields of :class:`SyntheticParams`) under
    ``root`` unless a complete one with the same parameters is there (:func:`is_complete`) and
    ``force`` is false. Returns True when it generated, False when it kept the folder."""
    if not force and is_complete(root, **params):
        return False
    generate_synthetic_dataset(root, progress=progress, **params)
    return True


def _write_info(root: Path, params: dict, complete: bool, summary: dict | None = None) -> None:
    info = {
        "format": INFO_FORMAT,
        "complete": complete,
        "params": params,
        "classes": list(SYNTHETIC_CLASSES),
        "summary": summary or {},
    }
    atomic_write_text(root / INFO_FILE, json.dumps(info, indent=1) + "\n")


def _check_target(root: Path) -> None:
    """Refuse to write into a non-empty folder that is not a synthetic data set (e.g. real VOC)."""
    if root.exists() and not root.is_dir():
        raise DetectError(f"synthetic data {root}: exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / INFO_FILE).is_file():
        raise DetectError(
            f"synthetic data {root}: folder is not empty and holds no {INFO_FILE}; refusing to "
            "overwrite it (choose an empty or new folder)"
        )


def _remove_stale(root: Path, image_names: set[str]) -> None:
    """Delete images and XML left by an earlier, larger generation in the same folder."""
    stems = {Path(name).stem for name in image_names}
    for path in (root / "JPEGImages").iterdir():
        if path.name not in image_names:
            path.unlink()
    for path in (root / "Annotations").glob("*.xml"):
        if path.stem not in stems:
            path.unlink()


def summarize(annotations_by_split: Mapping[str, list[Annotation]]) -> dict:
    """Images per split, objects per class per split, and difficult / truncated counts."""
    summary: dict = {"images": {}, "objects": {}, "difficult": {}, "truncated": {}}
    for split, split_annotations in annotations_by_split.items():
        counts = dict.fromkeys(SYNTHETIC_CLASSES, 0)
        for annotation in split_annotations:
            for label in annotation.labels.tolist():
                counts[SYNTHETIC_CLASSES[label]] += 1
        summary["images"][split] = len(split_annotations)
        summary["objects"][split] = counts
        summary["difficult"][split] = int(sum(int(a.difficult.sum()) for a in split_annotations))
        summary["truncated"][split] = int(sum(int(a.truncated.sum()) for a in split_annotations))
    return summary


def generate_synthetic_dataset(
    root: str | Path, progress: bool = True, **params: Any
) -> dict[str, list[Annotation]]:
    """Generate the synthetic data set in VOC layout under ``root``.

    Writes ``JPEGImages/<id><image_ext>``, ``Annotations/<id>.xml``, ``ImageSets/Main/{train,val,
    trainval,test}.txt`` and ``synthetic.json`` (parameters and summary, marked complete last).

    Args:
        root: output folder; created, or an earlier synthetic data set there is overwritten. A
            non-empty folder without ``synthetic.json`` is refused.
        progress: show a tqdm bar.
        **params: the fields of :class:`SyntheticParams` (``num_train``, ``num_val``,
            ``num_test``, ``image_size``, ``seed``, ``max_objects``, ``image_ext``, ``preset``);
            the others keep their defaults.

    Returns:
        ``{split: [Annotation]}`` for ``train``, ``val``, ``trainval`` and ``test``; boxes
        ``(G, 4)`` float32 xyxy 0-based continuous pixels, labels index
        :data:`SYNTHETIC_CLASSES`.
    """
    root = Path(root)
    spec = SyntheticParams(**params)
    height, width = spec.image_size
    _check_target(root)
    root.mkdir(parents=True, exist_ok=True)
    _write_info(root, spec.record(), complete=False)
    counts = {"train": spec.num_train, "val": spec.num_val, "test": spec.num_test}
    annotations_by_split: dict[str, list[Annotation]] = {}
    index = 0
    with tqdm(total=sum(counts.values()), desc="synthetic images", disable=not progress) as bar:
        for split, count in counts.items():
            annotations_by_split[split] = []
            for _ in range(count):
                index += 1
                image_id = f"{index:06d}"
                rendered = render_image(
                    image_rng(spec.seed, index),
                    height,
                    width,
                    spec.max_objects,
                    PRESETS[spec.preset],
                )
                path = root / "JPEGImages" / f"{image_id}{spec.image_ext}"
                write_image(path, rendered.image)
                annotations_by_split[split].append(
                    Annotation(
                        image_id=image_id,
                        path=path,
                        width=width,
                        height=height,
                        boxes=rendered.boxes,
                        labels=rendered.labels,
                        difficult=rendered.difficult,
                        truncated=rendered.truncated,
                    )
                )
                bar.update()
    annotations_by_split["trainval"] = annotations_by_split["train"] + annotations_by_split["val"]
    write_voc_dataset(root, SYNTHETIC_CLASSES, annotations_by_split)
    _remove_stale(
        root, {a.path.name for a in annotations_by_split["trainval"] + annotations_by_split["test"]}
    )
    summary = summarize(annotations_by_split)
    _write_info(root, spec.record(), complete=True, summary=summary)
    log.info("synthetic data set written to %s: %s images", root, summary["images"])
    return annotations_by_split
