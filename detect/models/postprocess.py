"""Test-time post-processing of the head's per-class scores and deltas: decode, clip, per-class
NMS, top-k per class and per image (``test.*`` settings). Boxes are float32 xyxy, 0-based
continuous pixels of the original image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detect.config import TestConfig, check_values
from detect.ops.boxes import batched_nms, clip_boxes, decode_deltas
from detect.structures import Detections


def check_test_config(test_cfg: TestConfig) -> None:
    """Raise :class:`DetectError` naming the ``test.*`` setting :func:`postprocess` cannot use."""
    checks = [
        (all(side > 0 for side in test_cfg.scales), "scales", test_cfg.scales, "positive sizes"),
        (0.0 <= test_cfg.nms_iou <= 1.0, "nms_iou", test_cfg.nms_iou, "in [0, 1]"),
        (test_cfg.top_per_class >= 1, "top_per_class", test_cfg.top_per_class, ">= 1"),
        (test_cfg.max_per_image >= 1, "max_per_image", test_cfg.max_per_image, ">= 1"),
    ]
    check_values("test.", checks)


def class_boxes(proposals: Tensor, deltas: Tensor, test_cfg: TestConfig) -> Tensor:
    """``(R, K, 4)`` per-class boxes: ``proposals (R, 4)`` moved by ``deltas (R, 4K)``
    (:func:`detect.ops.boxes.decode_deltas`) when ``test.bbox_reg``, else the proposals."""
    count, classes = proposals.shape[0], deltas.shape[1] // 4
    if test_cfg.bbox_reg:
        return decode_deltas(proposals, deltas).reshape(count, classes, 4)
    return proposals[:, None, :].expand(count, classes, 4)


def postprocess(
    scores: Tensor, boxes: Tensor, height: int, width: int, test_cfg: TestConfig
) -> Detections:
    """Threshold, clip, per-class NMS, top-k per class and per-image cap.

    Args:
        scores: ``(R, K)`` per-class scores (no background column).
        boxes: ``(R, K, 4)`` per-class xyxy boxes, original image pixels.
        height, width: the original image size (boxes are clipped to it).

    Returns:
        :class:`Detections` sorted by decreasing score.
    """
    count, classes = scores.shape
    if count == 0:
        return Detections.empty()
    boxes = clip_boxes(boxes.reshape(count, 4 * classes), height, width).reshape(count, classes, 4)
    rows, labels = torch.nonzero(scores > test_cfg.score_threshold, as_tuple=True)
    candidate_boxes, candidate_scores = boxes[rows, labels], scores[rows, labels]
    keep = batched_nms(candidate_boxes, candidate_scores, labels, test_cfg.nms_iou)
    one_hot = F.one_hot(labels[keep], classes)
    rank_in_class = (one_hot.cumsum(0) * one_hot).sum(1) - 1
    keep = keep[rank_in_class < test_cfg.top_per_class][: test_cfg.max_per_image]
    return Detections(candidate_boxes[keep], candidate_scores[keep], labels[keep])
