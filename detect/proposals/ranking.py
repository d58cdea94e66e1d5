"""Numpy box helpers for merging and ranking proposals (no torch: proposal workers use them).

Boxes are ``(N, 4)`` float xyxy, 0-based continuous pixels; a box's area is ``(x2 - x1) *
(y2 - y1)``, as in :func:`detect.ops.boxes.box_iou`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def box_iou_np(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU of xyxy boxes ``(N, 4)`` and ``(M, 4)`` (0 where a union is empty)."""
    boxes1 = np.asarray(boxes1, np.float64).reshape(-1, 4)
    boxes2 = np.asarray(boxes2, np.float64).reshape(-1, 4)
    low = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    high = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (high - low).clip(0).prod(axis=2)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).clip(0).prod(axis=1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).clip(0).prod(axis=1)
    union = area1[:, None] + area2[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def suppress_overlaps(boxes: np.ndarray, iou_threshold: float, limit: int = 0) -> np.ndarray:
    """Greedy suppression in the given (ranking) order: indices ``(K,)`` of the boxes ``(N, 4)``
    whose IoU with every earlier kept box is at most ``iou_threshold``, stopping after ``limit``
    kept (0 = no limit). ``iou_threshold >= 1`` keeps every box (exact duplicates included)."""
    count = boxes.shape[0]
    if iou_threshold >= 1.0:
        return np.arange(count if limit <= 0 else min(limit, count))
    boxes = np.asarray(boxes, np.float64)
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    remaining = np.arange(count)
    kept: list[int] = []
    while remaining.size and (limit <= 0 or len(kept) < limit):
        first, rest = remaining[0], remaining[1:]
        kept.append(int(first))
        width = (np.minimum(x2[first], x2[rest]) - np.maximum(x1[first], x1[rest])).clip(0)
        height = (np.minimum(y2[first], y2[rest]) - np.maximum(y1[first], y1[rest])).clip(0)
        inter = width * height
        union = area[first] + area[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        remaining = rest[iou <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


def interleave(ranked: Sequence[np.ndarray]) -> np.ndarray:
    """Merge ranked lists of boxes (each ``(N_i, 4)``) into one ``(sum N_i, 4)``: every list's
    first box (in list order), then every list's second, and so on, so no list's ranking
    dominates the merged one."""
    arrays = [np.asarray(boxes, np.float32).reshape(-1, 4) for boxes in ranked]
    if not arrays:
        return np.zeros((0, 4), np.float32)
    rank = np.concatenate([np.arange(len(a)) for a in arrays])
    source = np.concatenate([np.full(len(a), i) for i, a in enumerate(arrays)])
    return np.concatenate(arrays)[np.lexsort((source, rank))]
