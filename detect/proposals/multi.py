"""``ss-multi``: selective search's diversification (Uijlings et al., IJCV 2013 §3-4) as an ensemble.

Every combination of a colour space and a graph-segmentation ``k`` (with the paper's two fast
grouping strategies, colour+texture+size+fill and texture+size+fill) is its own selective-search
hierarchy, run by OpenCV (``cv2.ximgproc.segmentation``) with the smallest initial region set by
``min_region`` pixels (OpenCV's presets use 100, which swallows objects of a few hundred pixels).
The hierarchies' ranked lists are merged by rank (every list's first box, then every list's second,
... :func:`detect.proposals.ranking.interleave`), so no single hierarchy dominates the top of the
merged list, then near duplicates are dropped greedily (a box overlapping a better-ranked kept one
by more than ``dedup_iou``).

Numpy and OpenCV only (proposal workers never import torch). Boxes are ``(R, 4)`` float32 xyxy,
0-based continuous pixels of the original image.
"""

from __future__ import annotations

import numpy as np

from detect.config import check_values
from detect.proposals.ranking import interleave, suppress_overlaps
from detect.proposals.search import (
    check_rgb_image,
    check_search_params,
    postprocess_boxes,
    rects_to_original,
    search_image,
    seed_c_rand,
)

# OpenCV conversions from BGR (None: the BGR image itself).
COLOR_SPACES = {
    "hsv": "COLOR_BGR2HSV",
    "lab": "COLOR_BGR2Lab",
    "rgb": None,
    "ycrcb": "COLOR_BGR2YCrCb",
}
STRATEGIES = ("color,texture,size,fill", "texture,size,fill")
SIGMA = 0.8  # graph segmentation's Gaussian smoothing (OpenCV's selective-search presets)


def check_multi_params(
    color_spaces: tuple, ks: tuple, min_region: int, dedup_iou: float, **search
) -> None:
    """Raise :class:`DetectError` naming the ``proposals.*`` setting ``ss-multi`` cannot use
    (``search``: :func:`detect.proposals.search.check_search_params`'s arguments)."""
    spaces_ok = len(color_spaces) > 0 and all(c in COLOR_SPACES for c in color_spaces)
    checks = [
        (
            spaces_ok,
            "multi_color_spaces",
            color_spaces,
            f"a non-empty list of {list(COLOR_SPACES)}",
        ),
        (len(ks) > 0 and min(ks, default=0) > 0, "multi_ks", ks, "a non-empty list of numbers > 0"),
        (min_region >= 1, "multi_min_region", min_region, ">= 1 (pixels)"),
        (0 < dedup_iou <= 1, "multi_dedup_iou", dedup_iou, "in (0, 1]"),
    ]
    check_values("proposals.", checks)
    check_search_params("fast", **search)


def _hierarchy(image_bgr: np.ndarray, color_space: str, k: float, min_region: int, strategy: str):
    """One selective-search hierarchy: ``(R, 4)`` int32 ``x, y, w, h`` rects, ranked."""
    import cv2

    segmentation = cv2.ximgproc.segmentation
    conversion = COLOR_SPACES[color_space]
    converted = (
        image_bgr if conversion is None else cv2.cvtColor(image_bgr, getattr(cv2, conversion))
    )
    search = segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(image_bgr)
    search.clearImages()
    search.addImage(converted)
    search.clearGraphSegmentations()
    search.addGraphSegmentation(segmentation.createGraphSegmentation(SIGMA, float(k), min_region))
    search.clearStrategies()
    makers = {
        "color": segmentation.createSelectiveSearchSegmentationStrategyColor,
        "texture": segmentation.createSelectiveSearchSegmentationStrategyTexture,
        "size": segmentation.createSelectiveSearchSegmentationStrategySize,
        "fill": segmentation.createSelectiveSearchSegmentationStrategyFill,
    }
    parts = [makers[name]() for name in strategy.split(",")]
    search.addStrategy(segmentation.createSelectiveSearchSegmentationStrategyMultiple(*parts))
    seed_c_rand()
    return np.asarray(search.process(), dtype=np.int32).reshape(-1, 4)


def multi_search_boxes(
    image: np.ndarray,
    color_spaces: tuple = ("hsv", "lab", "rgb"),
    ks: tuple = (100.0, 200.0),
    min_region: int = 30,
    dedup_iou: float = 0.95,
    resize_long_side: int = 500,
    upscale: float = 1.0,
    min_size: float = 16.0,
    max_proposals: int = 2000,
) -> np.ndarray:
    """The ``ss-multi`` proposals of ``image`` ``(H, W, 3)`` uint8 RGB.

    Args:
        color_spaces: keys of :data:`COLOR_SPACES`.
        ks: graph-segmentation ``k`` values (larger: larger initial regions).
        min_region: smallest initial region, pixels of the searched image.
        dedup_iou: a box overlapping a better-ranked kept one by more IoU is dropped (1 = only
            exact duplicates).
        resize_long_side, upscale: the searched image's size, as :func:`selective_search`.
        min_size: boxes with a side below this (original pixels) are dropped.
        max_proposals: at most this many (0 = all).

    Returns:
        ``(R, 4)`` float32 xyxy boxes, original pixels, clipped, in merged ranking order.
    """
    check_rgb_image(image, "ss-multi proposals")
    search = {
        "resize_long_side": resize_long_side,
        "min_size": min_size,
        "max_proposals": max_proposals,
        "upscale": upscale,
    }
    check_multi_params(color_spaces, ks, min_region, dedup_iou, **search)
    height, width = image.shape[:2]
    resized = search_image(image, resize_long_side, upscale)
    ranked = [
        rects_to_original(
            _hierarchy(resized, space, k, min_region, strategy), resized.shape[:2], (height, width)
        )
        for space in color_spaces
        for k in ks
        for strategy in STRATEGIES
    ]
    boxes = postprocess_boxes(interleave(ranked), height, width, min_size, 0)
    return np.ascontiguousarray(boxes[suppress_overlaps(boxes, dedup_iou, max_proposals)])
