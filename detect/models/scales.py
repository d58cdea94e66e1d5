"""Which of several image scales each region is pooled at: one rule for training and testing.

With several ``model.scales`` (shorter sides), SPP-net computes conv features at each scale and
pools every region from the single scale at which the region's scaled area is closest to
224 x 224 pixels (the paper's rule; docs/departures.md compares it with the released code's).
Test-time detection (:class:`detect.models.poolers.SPPPooler`) and the SVM / box-regression features of training
(:mod:`detect.training.features`) both group their boxes with :func:`scale_groups`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from detect.ops.boxes import box_area

TARGET_AREA = 224.0 * 224.0


def resize_scale(height: int, width: int, short_side: int, max_size: int) -> float:
    """Scale factor making the shorter side ``short_side`` with the longer side at most ``max_size``
    (0 = no cap)."""
    scale = short_side / min(height, width)
    if max_size > 0 and round(max(height, width) * scale) > max_size:
        scale = max_size / max(height, width)
    return scale


def choose_scales(boxes: Tensor, factors: Sequence[float]) -> Tensor:
    """``(R,)`` index of the factor at which each box's scaled area is closest to 224 x 224.

    Args:
        boxes: ``(R, 4)`` xyxy in original pixels. factors: resize factor of each scale.
    Ties go to the earlier scale.
    """
    area = box_area(boxes).double()[:, None]
    scaled = area * torch.tensor(factors, dtype=torch.float64)[None, :] ** 2
    return torch.argmin((scaled - TARGET_AREA).abs(), dim=1)


def scale_groups(
    boxes: Tensor, height: int, width: int, scales: Sequence[int], max_size: int
) -> list[tuple[int, Tensor]]:
    """The boxes of each scale: ``[(short_side, index (n,))]``, in the order of ``scales``, only
    the scales :func:`choose_scales` picks for at least one box.

    Args:
        boxes: ``(R, 4)`` xyxy, pixels of the original ``height x width`` image.
        scales: shorter sides; each resize factor as :func:`resize_scale` (capped by ``max_size``).
    """
    factors = [resize_scale(height, width, short_side, max_size) for short_side in scales]
    choice = choose_scales(boxes, factors)
    groups = [
        (short_side, torch.nonzero(choice == k).flatten()) for k, short_side in enumerate(scales)
    ]
    return [(short_side, index) for short_side, index in groups if index.numel() > 0]
