"""Selective search (Uijlings et al.) through OpenCV contrib's ``cv2.ximgproc.segmentation``.

The image is resized so its longer side is ``resize_long_side`` (the original R-CNN / SPP-net
pipeline ran selective search on ~500-pixel images for speed), the search runs single-threaded
(parallelism comes from running several images at once, :mod:`detect.proposals.compute`), and the
boxes are mapped back to the original image's pixels.

OpenCV ranks the regions by ``rand() * hierarchy level``; the C library's ``rand`` is seeded before
every search so the same image always gives the same boxes in the same order, whatever the number
of workers or the order the images are processed in.

Everything but :func:`selective_search` works on numpy arrays, so proposal worker processes never
import torch (importing it takes seconds per process); OpenCV is imported where a search runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import TYPE_CHECKING

import numpy as np

from detect.config import check_values
from detect.errors import DetectError

if TYPE_CHECKING:
    from torch import Tensor

SEARCH_MODES = ("fast", "quality")
# Seed of the C library's rand() before each search (glibc treats 0 and 1 alike; 1 is its default).
RAND_SEED = 1


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def seed_c_rand() -> None:
    libc = _libc()
    if libc is not None:
        libc.srand(RAND_SEED)


def check_search_params(
    mode: str, resize_long_side: int, min_size: float, max_proposals: int, upscale: float = 1.0
) -> None:
    """Raise :class:`DetectError` naming the ``proposals.*`` setting that selective search
    cannot use (arguments as :func:`selective_search`)."""
    checks = [
        (mode in SEARCH_MODES, "mode", mode, f"one of {list(SEARCH_MODES)}"),
        (resize_long_side >= 0, "resize_long_side", resize_long_side, ">= 0 (0 = original size)"),
        (min_size >= 0, "min_size", min_size, ">= 0"),
        (max_proposals >= 0, "max_proposals", max_proposals, ">= 0 (0 = all)"),
        (0 < upscale <= 8, "upscale", upscale, "in (0, 8]"),
    ]
    check_values("proposals.", checks)


def search_long_side(height: int, width: int, resize_long_side: int, upscale: float) -> int:
    """The longer side of the image a search runs on: ``resize_long_side`` (0 = the image's own)
    times ``upscale``."""
    return max(1, round((resize_long_side or max(height, width)) * upscale))


def search_image(image: np.ndarray, resize_long_side: int, upscale: float = 1.0) -> np.ndarray:
    """The ``(h, w, 3)`` uint8 BGR image a search runs on, from ``(H, W, 3)`` uint8 RGB
    ``image``: resized so its longer side is :func:`search_long_side`."""
    height, width = image.shape[:2]
    long_side = search_long_side(height, width, resize_long_side, upscale)
    return _resize_for_search(np.ascontiguousarray(image[:, :, ::-1]), long_side)


def rects_to_original(rects: np.ndarray, searched: tuple[int, int], original: tuple[int, int]):
    """OpenCV ``x, y, w, h`` rects ``(R, 4)`` on an image of size ``searched`` ``(h, w)`` as
    ``(R, 4)`` float32 xyxy boxes in pixels of the ``original`` ``(H, W)`` image (a rect covers
    pixels ``x .. x + w - 1``, i.e. continuous ``[x, x + w)``)."""
    rects = np.asarray(rects, np.float32).reshape(-1, 4)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    scale = [original[1] / searched[1], original[0] / searched[0]] * 2
    return boxes * np.array(scale, dtype=np.float32)


def _resize_for_search(image: np.ndarray, long_side: int) -> np.ndarray:
    """Resize ``(H, W, 3)`` so ``max(H, W) == long_side`` (0 = keep the original size)."""
    import cv2

    height, width = image.shape[:2]
    if long_side <= 0 or max(height, width) == long_side:
        return image
    scale = long_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def raw_selective_search(image_bgr: np.ndarray, mode: str) -> np.ndarray:
    """OpenCV's selective search on a BGR uint8 image: ``(R, 4)`` int32 ``x, y, w, h`` rects in
    the method's ranking order (rect covers pixels ``x .. x + w - 1``)."""
    import cv2

    if mode not in SEARCH_MODES:
        raise DetectError(f"proposals.mode must be one of {list(SEARCH_MODES)}, got {mode!r}")
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(image_bgr)
    if mode == "fast":
        search.switchToSelectiveSearchFast()
    else:
        search.switchToSelectiveSearchQuality()
    seed_c_rand()
    rects = search.process()
    return np.asarray(rects, dtype=np.int32).reshape(-1, 4)


def remove_small_boxes(boxes: np.ndarray, min_size: float) -> np.ndarray:
    """Indices ``(M,)`` of the xyxy boxes ``(N, 4)`` whose width and height are both at least
    ``min_size``."""
    return np.flatnonzero((boxes[:, 2:] - boxes[:, :2] >= min_size).all(axis=1))


def unique_boxes(boxes: np.ndarray) -> np.ndarray:
    """Indices ``(M,)`` of the first occurrence of each distinct box ``(N, 4)``, in the original
    order."""
    return np.sort(np.unique(boxes, axis=0, return_index=True)[1])


def postprocess_boxes(
    boxes: np.ndarray, height: int, width: int, min_size: float, max_proposals: int
) -> np.ndarray:
    """Clip ``(R, 4)`` float32 xyxy boxes to the image, drop those with a side below ``min_size``,
    drop exact duplicates and keep the first ``max_proposals`` (0 = all), preserving the input
    order."""
    boxes = boxes.copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    boxes = boxes[remove_small_boxes(boxes, min_size)]
    boxes = boxes[unique_boxes(boxes)]
    if max_proposals > 0:
        boxes = boxes[:max_proposals]
    return np.ascontiguousarray(boxes)


def check_rgb_image(image: np.ndarray, where: str) -> None:
    """Raise :class:`DetectError` naming ``where`` unless ``image`` is ``(H, W, 3)`` uint8."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DetectError(
            f"{where}: expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}"
        )


def search_boxes(
    image: np.ndarray,
    mode: str = "fast",
    resize_long_side: int = 500,
    min_size: float = 16.0,
    max_proposals: int = 2000,
    upscale: float = 1.0,
) -> np.ndarray:
    """:func:`selective_search` as a numpy ``(R, 4)`` float32 array (without torch)."""
    check_rgb_image(image, "selective_search")
    check_search_params(mode, resize_long_side, min_size, max_proposals, upscale)
    height, width = image.shape[:2]
    resized = search_image(image, resize_long_side, upscale)
    rects = raw_selective_search(resized, mode)
    boxes = rects_to_original(rects, resized.shape[:2], (height, width))
    return postprocess_boxes(boxes, height, width, min_size, max_proposals)


def selective_search(
    image: np.ndarray,
    mode: str = "fast",
    resize_long_side: int = 500,
    min_size: float = 16.0,
    max_proposals: int = 2000,
    upscale: float = 1.0,
) -> Tensor:
    """Selective-search proposals for one image.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        mode: ``"fast"`` or ``"quality"`` (OpenCV's two presets).
        resize_long_side: the search runs on the image resized so its longer side is this
            (0 = the original size); boxes are mapped back to original pixels.
        min_size: boxes with a width or height below this (original pixels) are dropped.
        max_proposals: at most this many boxes are kept, in the method's ranking order (0 = all).
        upscale: the search image is ``resize_long_side`` (or the original size) times this:
            above 1 it finds objects smaller than the segmentation's smallest region.

    Returns:
        ``(R, 4)`` float32 xyxy boxes, 0-based continuous pixels of ``image``, clipped to it.
    """
    import torch

    return torch.from_numpy(
        search_boxes(image, mode, resize_long_side, min_size, max_proposals, upscale)
    )
