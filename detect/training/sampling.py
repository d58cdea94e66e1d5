"""Foreground / background window sampling for fine-tuning, and its scale draws. Pure functions.

All boxes are ``(N, 4)`` float32 xyxy in the pixels of one image (whatever scale the caller uses;
IoU and the regression targets are scale invariant).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from detect.ops.boxes import box_iou, encode_deltas, hflip_boxes


class SampledRois(NamedTuple):
    """Windows for one image of one iteration.

    Attributes:
        boxes: ``(S, 4)`` xyxy, foreground first.
        labels: ``(S,)`` int64, 0 = background, ``1..K`` = class index + 1 (head column).
        targets: ``(S, 4)`` encoded deltas to the matched ground truth; zeros for background.
        ious: ``(S,)`` best IoU of each window with a ground-truth box.
    """

    boxes: Tensor
    labels: Tensor
    targets: Tensor
    ious: Tensor


def _choose(candidates: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` indices drawn without replacement from ``candidates`` (all when fewer)."""
    if candidates.numel() <= count:
        return candidates
    order = torch.randperm(candidates.numel(), generator=generator)[:count]
    return candidates[order]


def sample_rois(
    proposals: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    num_rois: int,
    generator: torch.Generator,
    fg_fraction: float = 0.25,
    fg_iou: float = 0.5,
    bg_iou_low: float = 0.1,
    bg_iou_high: float = 0.5,
) -> SampledRois:
    """Sample ``num_rois`` training windows from one image's proposals (Fast R-CNN recipe).

    The ground-truth boxes are added to the candidates (they are foreground by definition).
    Foreground: best IoU with a ground truth ``>= fg_iou``; at most ``round(fg_fraction *
    num_rois)`` of them. Background: best IoU in ``[bg_iou_low, bg_iou_high)`` filling the rest.
    When no candidate lies in that band (e.g. an image without objects), background is drawn from
    all windows with IoU ``< bg_iou_high`` instead, so every image still yields negatives. Fewer
    than ``num_rois`` windows come back when there are not enough candidates.

    Args:
        proposals: ``(R, 4)`` xyxy. gt_boxes: ``(G, 4)`` xyxy. gt_labels: ``(G,)`` 0-based class
            indices. generator: the source of randomness (deterministic sampling).
    """
    proposals = proposals.reshape(-1, 4).float()
    gt_boxes = gt_boxes.reshape(-1, 4).float()
    boxes = torch.cat([gt_boxes, proposals], dim=0)
    if gt_boxes.shape[0] > 0:
        iou = box_iou(boxes, gt_boxes)
        best_iou, best_gt = iou.max(dim=1)
    else:
        best_iou = torch.zeros(boxes.shape[0])
        best_gt = torch.zeros(boxes.shape[0], dtype=torch.int64)

    fg_candidates = torch.nonzero(best_iou >= fg_iou).flatten()
    fg = _choose(fg_candidates, min(int(round(fg_fraction * num_rois)), num_rois), generator)
    in_band = (best_iou >= bg_iou_low) & (best_iou < bg_iou_high)
    if not bool(in_band.any()):
        in_band = best_iou < bg_iou_high
    bg = _choose(torch.nonzero(in_band).flatten(), num_rois - fg.numel(), generator)

    keep = torch.cat([fg, bg])
    labels = torch.zeros(keep.numel(), dtype=torch.int64)
    targets = torch.zeros((keep.numel(), 4), dtype=torch.float32)
    if fg.numel() > 0:
        matched = best_gt[fg]
        labels[: fg.numel()] = gt_labels.to(torch.int64)[matched] + 1
        targets[: fg.numel()] = encode_deltas(boxes[fg], gt_boxes[matched])
    return SampledRois(boxes[keep], labels, targets, best_iou[keep])


SCALE_DRAWS = ("window", "image")


def draw_scales(count: int, num_scales: int, per: str, generator: torch.Generator) -> Tensor:
    """``(count,)`` int64: the scale index each of ``count`` training windows is pooled at.

    With several scales each window draws one uniformly (``per="window"``, as the released
    ``spp_finetune_voc.m``) or all windows of the image share one draw (``per="image"``: one conv
    per image). With one scale all are 0 and nothing is drawn, so single-scale runs consume no
    randomness here.
    """
    if num_scales == 1 or count == 0:
        return torch.zeros(count, dtype=torch.int64)
    draws = torch.randint(num_scales, (count if per == "window" else 1,), generator=generator)
    return draws.expand(count).clone()


def hflip_example(
    image: np.ndarray, proposals: Tensor, gt_boxes: Tensor
) -> tuple[np.ndarray, Tensor, Tensor]:
    """Mirror an ``(H, W, 3)`` image left-right with its proposals and ground-truth boxes."""
    width = image.shape[1]
    flipped = np.ascontiguousarray(image[:, ::-1])
    return flipped, hflip_boxes(proposals, width), hflip_boxes(gt_boxes, width)


def derived_generator(seed: int, *keys: int) -> torch.Generator:
    """A torch generator whose seed is a well-mixed function of ``seed`` and ``keys``.

    Used to make every random choice of an iteration a function of (seed, iteration), so that a
    resumed run makes the same choices as an uninterrupted one.
    """
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
