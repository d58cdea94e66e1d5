"""Detection in one image: multi-scale SPP-net (or R-CNN) scoring, box decoding, post-processing.

Each region is pooled at the scale :mod:`detect.models.scales` chooses for it. Boxes are
``(N, 4)`` float32 xyxy, 0-based continuous pixels of the original image unless a docstring says
otherwise.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from detect.config import TestConfig, check_values
from detect.models.detector import Detector, dedupe_windows
from detect.models.heads import HeadOutput
from detect.models.scales import scale_groups
from detect.ops.boxes import batched_nms, clip_boxes, decode_deltas
from detect.structures import Detections


class RegionScorer(Protocol):
    """Turns head outputs into per-class scores ``(R, K)`` and deltas ``(R, 4 * K)`` (no background)."""

    def __call__(self, out: HeadOutput) -> tuple[Tensor, Tensor]: ...


class SoftmaxScorer:
    """``softmax(cls_logits)[:, 1:]`` and the learned deltas ``bbox_deltas[:, 4:]``."""

    def __call__(self, out: HeadOutput) -> tuple[Tensor, Tensor]:
        return torch.softmax(out.cls_logits, dim=1)[:, 1:], out.bbox_deltas[:, 4:]


class Timer:
    """Accumulated wall-clock seconds per named stage and counters (used by ``detect bench``).

    Stages: ``conv`` (resize + backbone; R-CNN: backbone on crops), ``warp`` (R-CNN crops),
    ``pool``, ``fc`` (head + scorer), ``post`` (decode, clip, NMS). Counters: ``regions``,
    ``windows`` (distinct windows after projection, SPP only).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start


def _score_spp(
    model: Detector,
    image: np.ndarray,
    proposals: Tensor,
    scorer: RegionScorer,
    scales: Sequence[int],
    timer: Timer,
) -> tuple[Tensor, Tensor]:
    height, width = image.shape[:2]
    count, classes = proposals.shape[0], model.num_classes
    scores = torch.zeros((count, classes))
    deltas = torch.zeros((count, 4 * classes))
    batch = max(1, model.cfg.region_batch)
    for short_side, index in scale_groups(proposals, height, width, scales, model.cfg.max_size):
        with timer.section("conv"):
            prepared, scale = model.prepare(image, short_side)
            feature_map = model.features(prepared)
        with timer.section("pool"):
            windows = model.windows(proposals[index] * scale, tuple(feature_map.shape[1:]))
            unique, inverse = dedupe_windows(windows)
        timer.counts["windows"] += int(unique.shape[0])
        unique_scores, unique_deltas = [], []
        for start in range(0, unique.shape[0], batch):
            with timer.section("pool"):
                pooled = model.pyramid(feature_map, unique[start : start + batch])
            with timer.section("fc"):
                part_scores, part_deltas = scorer(model.head(pooled))
            unique_scores.append(part_scores)
            unique_deltas.append(part_deltas)
        scores[index] = torch.cat(unique_scores)[inverse].float()
        deltas[index] = torch.cat(unique_deltas)[inverse].float()
    return scores, deltas


def pool_rcnn_crops(model: Detector, image: Tensor, boxes: Tensor, timer: Timer) -> Tensor:
    """R-CNN up to the head, timed as ``warp``, ``conv`` and ``pool``: crops of ``boxes (R, 4)``
    (xyxy, pixels of the normalised ``image (3, H, W)``), backbone, image-level SPP of each crop's
    map -> ``(R, C * bins)`` (what :meth:`Detector.pool_crops` computes, in timed stages)."""
    with timer.section("warp"):
        crops = model.crops(image, boxes)
    with timer.section("conv"):
        feature_maps = model.backbone(crops)
    with timer.section("pool"):
        pooled = model.pyramid.pool_maps(feature_maps)
    return pooled


def rcnn_head_outputs(
    model: Detector, image: Tensor, boxes: Tensor, timer: Timer | None = None
) -> Iterator[HeadOutput]:
    """R-CNN head outputs of ``boxes (R, 4)`` (xyxy, pixels of the normalised ``image (3, H, W)``),
    one :class:`HeadOutput` per batch of ``model.cfg.rcnn_batch`` boxes, in box order.

    Only one batch's crops and conv maps exist at a time (all 2,000 proposals of an image as ZF-5
    crops at once would need about 10 GB). No boxes: one empty batch, so outputs keep their
    widths. Stages timed as :func:`pool_rcnn_crops` and ``fc`` (the head).
    """
    timer = timer or Timer()
    batch = max(1, model.cfg.rcnn_batch)
    for start in range(0, max(boxes.shape[0], 1), batch):
        pooled = pool_rcnn_crops(model, image, boxes[start : start + batch], timer)
        with timer.section("fc"):
            out = model.head(pooled)
        yield out


def _score_rcnn(
    model: Detector, image: np.ndarray, proposals: Tensor, scorer: RegionScorer, timer: Timer
) -> tuple[Tensor, Tensor]:
    prepared, _scale = model.prepare(image)
    all_scores, all_deltas = [], []
    for out in rcnn_head_outputs(model, prepared, proposals, timer):
        with timer.section("fc"):
            part_scores, part_deltas = scorer(out)
        all_scores.append(part_scores.float())
        all_deltas.append(part_deltas.float())
    return torch.cat(all_scores), torch.cat(all_deltas)


@torch.no_grad()
def detect_image(
    model: Detector,
    image: np.ndarray,
    proposals: Tensor,
    test_cfg: TestConfig,
    scorer: RegionScorer | None = None,
    *,
    scales: Sequence[int] | None = None,
    timer: Timer | None = None,
) -> Detections:
    """Detect objects in one image.

    Args:
        model: a :class:`Detector` (put in eval mode for the call, then restored).
        image: ``(H, W, 3)`` uint8 RGB.
        proposals: ``(R, 4)`` xyxy, original image pixels.
        test_cfg: thresholds, NMS and caps.
        scorer: a :class:`RegionScorer`; default :class:`SoftmaxScorer`.
        scales: shorter sides for SPP-net (default ``model.cfg.scales``); ignored by R-CNN.
        timer: accumulates per-stage seconds and counters when given.

    Returns:
        :class:`Detections` in original image pixels (empty when there are no proposals).
    """
    scorer = scorer or SoftmaxScorer()
    timer = timer or Timer()
    proposals = torch.as_tensor(proposals, dtype=torch.float32).reshape(-1, 4)
    timer.counts["regions"] += int(proposals.shape[0])
    if proposals.shape[0] == 0:
        return Detections.empty()
    was_training = model.training
    model.eval()
    try:
        if model.method == "spp":
            scores, deltas = _score_spp(
                model, image, proposals, scorer, scales or model.cfg.scales, timer
            )
        else:
            scores, deltas = _score_rcnn(model, image, proposals, scorer, timer)
    finally:
        model.train(was_training)
    with timer.section("post"):
        count, classes = scores.shape
        if test_cfg.bbox_reg:
            boxes = decode_deltas(proposals, deltas).reshape(count, classes, 4)
        else:
            boxes = proposals[:, None, :].expand(count, classes, 4)
        return postprocess(scores, boxes, image.shape[0], image.shape[1], test_cfg)


def check_test_config(test_cfg: TestConfig) -> None:
    """Raise :class:`DetectError` naming the ``test.*`` setting :func:`postprocess` cannot use."""
    checks = [
        (0.0 <= test_cfg.nms_iou <= 1.0, "nms_iou", test_cfg.nms_iou, "in [0, 1]"),
        (test_cfg.top_per_class >= 1, "top_per_class", test_cfg.top_per_class, ">= 1"),
        (test_cfg.max_per_image >= 1, "max_per_image", test_cfg.max_per_image, ">= 1"),
    ]
    check_values("test.", checks)


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
