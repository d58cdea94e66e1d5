"""Pure box operations. All boxes are ``(N, 4)`` float xyxy, 0-based continuous pixels.

Format conversions live here, one function pair each:

* VOC stores 1-based *inclusive* pixel indices: a box over pixels 1..10 has width
  ``x2 - x1 + 1 = 10`` in the devkit. In continuous coordinates that is ``(x1 - 1, y1 - 1, x2, y2)``,
  so widths and IoUs computed here equal the devkit's.
* COCO stores ``[x, y, w, h]`` in continuous pixels already: ``xyxy = (x, y, x + w, y + h)``.
"""

from __future__ import annotations

import math

import torch
import torchvision
from torch import Tensor

# Deltas whose exp would overflow are clamped (the same bound torchvision's BoxCoder uses).
DELTA_LOG_CLAMP = math.log(1000.0 / 16)


def xyxy_from_voc(voc_boxes: Tensor) -> Tensor:
    """VOC 1-based inclusive ``(N, 4)`` x1 y1 x2 y2 -> 0-based continuous xyxy."""
    boxes = torch.as_tensor(voc_boxes, dtype=torch.float32).clone()
    boxes[..., :2] -= 1.0
    return boxes


def voc_from_xyxy(boxes: Tensor) -> Tensor:
    """0-based continuous xyxy ``(N, 4)`` -> VOC 1-based inclusive x1 y1 x2 y2."""
    voc = torch.as_tensor(boxes, dtype=torch.float32).clone()
    voc[..., :2] += 1.0
    return voc


def xyxy_from_xywh(xywh: Tensor) -> Tensor:
    """COCO ``[x, y, w, h]`` ``(N, 4)`` -> xyxy."""
    xywh = torch.as_tensor(xywh, dtype=torch.float32)
    return torch.cat([xywh[..., :2], xywh[..., :2] + xywh[..., 2:]], dim=-1)


def xywh_from_xyxy(boxes: Tensor) -> Tensor:
    """xyxy ``(N, 4)`` -> COCO ``[x, y, w, h]``."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    return torch.cat([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """``(N,)`` areas of xyxy boxes (0 for degenerate boxes)."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU matrix ``(N, M)`` of xyxy boxes ``(N, 4)`` and ``(M, 4)``; 0 where the union is empty."""
    area1, area2 = box_area(boxes1), box_area(boxes2)
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def paired_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Element-wise IoU ``(N,)`` of row ``i`` of ``boxes1`` with row ``i`` of ``boxes2`` (both
    ``(N, 4)`` xyxy): the diagonal of :func:`box_iou` without the ``N x N`` matrix."""
    top_left = torch.max(boxes1[:, :2], boxes2[:, :2])
    bottom_right = torch.min(boxes1[:, 2:], boxes2[:, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def _centres_and_sizes(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights, widths, heights


def encode_deltas(proposals: Tensor, targets: Tensor) -> Tensor:
    """R-CNN regression targets ``(N, 4)`` = (tx, ty, tw, th) taking ``proposals`` to ``targets``.

    ``tx = (gx - px) / pw``, ``ty = (gy - py) / ph``, ``tw = log(gw / pw)``, ``th = log(gh / ph)``
    with box centres (x, y) and sizes (w, h); both inputs ``(N, 4)`` xyxy with positive sizes.
    """
    px, py, pw, ph = _centres_and_sizes(proposals)
    gx, gy, gw, gh = _centres_and_sizes(targets)
    return torch.stack(
        [(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=1
    )


def decode_deltas(proposals: Tensor, deltas: Tensor) -> Tensor:
    """Apply deltas ``(N, 4)`` (or ``(N, 4 * K)``, one set per class) to proposals ``(N, 4)``.

    Inverse of :func:`encode_deltas`; ``tw``/``th`` are clamped so ``exp`` cannot overflow.
    Returns boxes of the same shape as ``deltas``.
    """
    px, py, pw, ph = (t[:, None] for t in _centres_and_sizes(proposals))
    dx, dy = deltas[:, 0::4], deltas[:, 1::4]
    dw = deltas[:, 2::4].clamp(max=DELTA_LOG_CLAMP)
    dh = deltas[:, 3::4].clamp(max=DELTA_LOG_CLAMP)
    cx, cy = dx * pw + px, dy * ph + py
    w, h = torch.exp(dw) * pw, torch.exp(dh) * ph
    out = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=2)
    return out.reshape(deltas.shape)


def clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """Clip xyxy boxes ``(N, 4 * k)`` to the image ``[0, width] x [0, height]``."""
    clipped = boxes.clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, height)
    return clipped


def hflip_boxes(boxes: Tensor, width: int) -> Tensor:
    """Mirror xyxy boxes ``(N, 4)`` in an image of ``width`` pixels: x -> width - x."""
    flipped = boxes.clone()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return flipped


def scale_boxes(boxes: Tensor, scale: float) -> Tensor:
    """Boxes ``(N, 4)`` of an image resized by ``scale`` (continuous coordinates scale exactly)."""
    return boxes * scale


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Per-class NMS (torchvision's kernel). Returns kept indices ``(M,)`` by decreasing score.

    Args:
        boxes: ``(N, 4)`` xyxy. scores: ``(N,)``. labels: ``(N,)`` int64 class of each box.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64)
    return torchvision.ops.batched_nms(boxes.float(), scores.float(), labels, iou_threshold)
