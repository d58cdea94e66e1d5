"""Dense proposals: multi-scale, multi-aspect sliding windows ranked by a cheap objectness score.

The window shapes ``(w, h)`` are the k-means centres of the training boxes' shapes (clustered on
``log w, log h``, so a 16-px and a 64-px object weigh alike); each shape slides over the image at a
stride of ``stride`` times its own width and height, so small shapes are placed finely enough for
small objects. A window's objectness is the colour contrast between it and a thin ring around it
(the Euclidean distance of their mean CIE Lab colours, from integral images): a window fitting an
object differs from its surround, one half on it does not. Each shape keeps the windows that are
local maxima of objectness among their 3x3 grid neighbours; all shapes' windows are ranked by
objectness and greedily thinned (:func:`detect.proposals.ranking.suppress_overlaps`).

Numpy and OpenCV only (proposal workers never import torch). Boxes are ``(R, 4)`` float32 xyxy,
0-based continuous pixels.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from detect.config import ProposalConfig, check_values
from detect.errors import DetectError
from detect.proposals.ranking import suppress_overlaps
from detect.proposals.search import check_rgb_image

if TYPE_CHECKING:
    from detect.structures import DetectionDataset

KMEANS_ITERATIONS = 300
# Only the best-scoring CANDIDATES_PER_PROPOSAL * max_proposals windows enter the suppression.
CANDIDATES_PER_PROPOSAL = 4


def check_dense_params(
    shapes: tuple, stride: float, ring: float, nms_iou: float, max_proposals: int
) -> None:
    """Raise :class:`DetectError` naming the ``proposals.dense_*`` setting that is unusable."""
    well_formed = all(len(s) == 2 and min(s) > 0 for s in shapes)
    checks = [
        (len(shapes) > 0, "dense_shapes", shapes, "non-empty (fitted from training boxes)"),
        (well_formed, "dense_shapes", shapes, "(width, height) pairs > 0"),
        (0 < stride <= 1, "dense_stride", stride, "in (0, 1] (a fraction of the window size)"),
        (0 < ring <= 1, "dense_ring", ring, "in (0, 1] (a fraction of the window size)"),
        (0 < nms_iou <= 1, "dense_nms_iou", nms_iou, "in (0, 1]"),
        (max_proposals >= 0, "max_proposals", max_proposals, ">= 0 (0 = all)"),
    ]
    check_values("proposals.", checks)


def kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: ``(k, D)`` initial centres picked among ``points`` ``(N, D)``."""
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        distance = ((points[:, None, :] - np.array(centres)[None]) ** 2).sum(-1).min(axis=1)
        total = distance.sum()
        pick = (
            rng.integers(len(points)) if total == 0 else rng.choice(len(points), p=distance / total)
        )
        centres.append(points[pick])
    return np.array(centres, dtype=np.float64)


def kmeans(points: np.ndarray, centres: np.ndarray, iterations: int = KMEANS_ITERATIONS):
    """Lloyd's k-means from ``centres`` ``(k, D)`` on ``points`` ``(N, D)`` until no point changes
    cluster: ``(centres (k, D), labels (N,))``. A centre left without points stays where it is."""
    centres = np.array(centres, dtype=np.float64)
    labels = np.full(len(points), -1)
    for _ in range(iterations):
        distance = ((points[:, None, :] - centres[None]) ** 2).sum(-1)
        new_labels = distance.argmin(axis=1)
        if (new_labels == labels).all():
            break
        labels = new_labels
        for cluster in range(len(centres)):
            members = points[labels == cluster]
            if len(members):
                centres[cluster] = members.mean(axis=0)
    return centres, labels


def fit_window_shapes(box_sizes: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Window shapes for ``box_sizes`` ``(N, 2)`` widths and heights (pixels): the ``k`` k-means
    centres of ``(log w, log h)`` (fewer when there are fewer distinct sizes), as ``(k, 2)``
    ``(w, h)`` rounded to 0.1 px and sorted by area."""
    sizes = np.asarray(box_sizes, np.float64).reshape(-1, 2)
    sizes = sizes[(sizes > 0).all(axis=1)]
    if len(sizes) == 0:
        raise DetectError("dense proposals: no training boxes to fit window shapes to")
    points = np.log(sizes)
    k = min(k, len(np.unique(points, axis=0)))
    centres, _ = kmeans(points, kmeans_plus_plus(points, k, np.random.default_rng(seed)))
    shapes = np.round(np.exp(centres), 1)
    return shapes[np.argsort(shapes.prod(axis=1), kind="stable")]


def window_grid(width: int, height: int, shape: tuple[float, float], stride: float) -> np.ndarray:
    """``(rows, cols, 4)`` int64 xyxy windows of ``shape`` ``(w, h)`` (rounded to whole pixels)
    inside a ``width`` x ``height`` image, their top-left corners at ``round(i * stride * w)``,
    ``round(j * stride * h)`` (steps of at least 1 px); empty when the shape does not fit."""
    box_w, box_h = max(1, round(shape[0])), max(1, round(shape[1]))
    step_x, step_y = max(1.0, stride * shape[0]), max(1.0, stride * shape[1])
    xs = np.unique(np.round(np.arange(0, width - box_w + 1e-9, step_x)).astype(np.int64))
    ys = np.unique(np.round(np.arange(0, height - box_h + 1e-9, step_y)).astype(np.int64))
    x1, y1 = np.meshgrid(xs, ys)
    return np.stack([x1, y1, x1 + box_w, y1 + box_h], axis=-1).reshape(len(ys), len(xs), 4)


def _area_sums(integral: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``(N, C)`` sums over integer xyxy ``boxes`` ``(N, 4)`` from an ``(H + 1, W + 1, C)``
    integral image."""
    x1, y1, x2, y2 = boxes.T
    return integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]


def ring_contrast(integral: np.ndarray, boxes: np.ndarray, ring: float) -> np.ndarray:
    """Objectness ``(N,)`` of integer xyxy ``boxes`` ``(N, 4)``: the Euclidean distance between
    the mean colour inside a box and the mean colour of the ring around it, ``max(1, round(ring
    * side))`` pixels wide on each side and clipped to the image (``integral``: ``(H + 1, W + 1,
    C)`` integral image of the colours). A box whose ring lies wholly outside the image scores 0."""
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    height, width = integral.shape[0] - 1, integral.shape[1] - 1
    sides = boxes[:, 2:] - boxes[:, :2]
    margin = np.maximum(1, np.round(ring * sides)).astype(np.int64)
    outer = np.concatenate([boxes[:, :2] - margin, boxes[:, 2:] + margin], axis=1)
    outer[:, 0::2] = outer[:, 0::2].clip(0, width)
    outer[:, 1::2] = outer[:, 1::2].clip(0, height)
    inner_area = sides.prod(axis=1).astype(np.float64)
    ring_area = (outer[:, 2:] - outer[:, :2]).prod(axis=1) - inner_area
    inside = _area_sums(integral, boxes)
    around = _area_sums(integral, outer) - inside
    mean_in = inside / np.maximum(inner_area, 1)[:, None]
    mean_ring = around / np.maximum(ring_area, 1)[:, None]
    return np.where(ring_area > 0, np.sqrt(((mean_in - mean_ring) ** 2).sum(axis=1)), 0.0)


def colour_integral(image: np.ndarray) -> np.ndarray:
    """``(H + 1, W + 1, 3)`` float64 integral image of an ``(H, W, 3)`` uint8 RGB image's CIE Lab
    colours (OpenCV's 8-bit Lab)."""
    import cv2

    lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2Lab)
    return cv2.integral(lab, sdepth=cv2.CV_64F).reshape(lab.shape[0] + 1, lab.shape[1] + 1, 3)


def local_maxima(scores: np.ndarray) -> np.ndarray:
    """``(rows, cols)`` bool: grid cells whose score is the largest of their 3x3 neighbourhood
    (ties all kept)."""
    import cv2

    values = scores.astype(np.float32)
    return values >= cv2.dilate(values, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)


def dense_boxes(
    image: np.ndarray,
    shapes: tuple,
    stride: float = 0.08,
    ring: float = 0.03,
    nms_iou: float = 0.65,
    max_proposals: int = 2000,
) -> np.ndarray:
    """Dense proposals for ``image`` ``(H, W, 3)`` uint8 RGB.

    Args:
        shapes: window ``(w, h)`` pairs in pixels (see :func:`fit_window_shapes`).
        stride: each shape's step as a fraction of its width / height.
        ring: surround width as a fraction of the window's width / height.
        nms_iou: a window overlapping a better-ranked kept one by more IoU is dropped.
        max_proposals: at most this many (0 = all local maxima).

    Returns:
        ``(R, 4)`` float32 xyxy boxes inside the image, by decreasing objectness.
    """
    check_rgb_image(image, "dense proposals")
    check_dense_params(shapes, stride, ring, nms_iou, max_proposals)
    height, width = image.shape[:2]
    integral = colour_integral(image)
    boxes, scores = [np.zeros((0, 4), np.int64)], [np.zeros(0)]
    for shape in shapes:
        grid = window_grid(width, height, shape, stride)
        if grid.size == 0:
            continue
        score = ring_contrast(integral, grid.reshape(-1, 4), ring).reshape(grid.shape[:2])
        peaks = local_maxima(score)
        boxes.append(grid[peaks])
        scores.append(score[peaks])
    order = np.argsort(-np.concatenate(scores), kind="stable")
    if max_proposals > 0:  # the suppression's cost grows with its input: the best few suffice
        order = order[: CANDIDATES_PER_PROPOSAL * max_proposals]
    ranked = np.concatenate(boxes)[order].astype(np.float32)
    return np.ascontiguousarray(ranked[suppress_overlaps(ranked, nms_iou, max_proposals)])


def with_window_shapes(cfg: ProposalConfig, dataset: DetectionDataset, seed: int = 0):
    """``cfg`` with ``dense_shapes`` fitted (:func:`fit_window_shapes`, ``cfg.dense_num_shapes``)
    to the non-difficult boxes of ``dataset`` (the training images) when the method is ``dense``
    and no shapes are set; else ``cfg`` unchanged. The fitted shapes land in the saved config."""
    if cfg.method != "dense" or cfg.dense_shapes:
        return cfg
    check_values(
        "proposals.",
        [(cfg.dense_num_shapes >= 1, "dense_num_shapes", cfg.dense_num_shapes, ">= 1")],
    )
    boxes = [
        np.asarray(a.boxes, np.float64)[~np.asarray(a.difficult, bool)] for a in dataset.annotations
    ]
    boxes = np.concatenate([np.zeros((0, 4)), *boxes])
    shapes = fit_window_shapes(boxes[:, 2:] - boxes[:, :2], cfg.dense_num_shapes, seed)
    return dataclasses.replace(cfg, dense_shapes=tuple(tuple(float(v) for v in s) for s in shapes))
