"""PASCAL VOC average precision, exactly as the official devkit computes it.

Where other tools differ from the devkit, ``docs/departures.md`` lists the variants.

Per class, detections of every image are sorted by descending score (a *stable* sort, so ties keep
the input order: images in the order of the ``detections`` dict, then each image's detection order,
as the lines of a comp4 file would be). Each detection takes the ground truth of its image and class
with the highest IoU (the first one on ties), whether or not that one is already taken, as in the
devkit's ``VOCevaldet``. Then:

* IoU >= ``iou_threshold`` (0.5) and the ground truth is ``difficult``: the detection is ignored
  (neither true nor false positive);
* IoU >= threshold and the ground truth is not yet taken: true positive, the ground truth is taken;
* otherwise (taken already, i.e. a duplicate, or IoU below the threshold, or no ground truth):
  false positive.

Recall divides by the number of non-difficult ground truths. Since the best match of a detection
does not depend on which ground truths are taken, the "first detection of a ground truth wins"
rule is computed without a per-detection loop: the true positives are the first occurrences of each
matched ground truth in score order.

IoU is :func:`detect.ops.boxes.paired_box_iou` on 0-based continuous boxes, which equals the
devkit's ``+1`` formula on its 1-based inclusive boxes. Computed in float64 as the devkit does.

AP variants:

* ``voc07``: 11-point interpolated AP, the devkit's ``for t=0:0.1:1``: mean over the 11 thresholds
  ``t`` of the highest precision at recall >= t (0 when none). The thresholds are MATLAB's values
  of ``0:0.1:1`` (:func:`matlab_colon`), whose upper half is computed back from 1, so t is exactly
  ``0.6`` and ``0.7``.
* ``voc07_numpy``: the same with ``t in np.arange(0, 1.1, 0.1)``, the thresholds of the Python
  reimplementations (py-faster-rcnn's ``voc_eval.py``, Detectron, mmdetection): ``0.6000000000000001``
  and ``0.7000000000000001`` there, so AP differs from ``voc07`` whenever recall is exactly 0.6 or
  0.7 (10 positives ranked as 6 hits, 10 false positives, 4 hits: 0.8182 vs 0.7727). Matching is
  still the devkit's (IoU >= 0.5; those tools use > 0.5).
* ``voc10``: area under the monotone precision envelope (VOC2010+ ``VOCap``).

A class without any non-difficult ground truth in the split has AP ``nan`` (the devkit divides by
zero there) and is left out of the mAP, with a warning; a class with ground truth but no detections
has AP 0.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from detect.errors import DetectError
from detect.ops.boxes import paired_box_iou
from detect.structures import DetectionDataset, Detections

log = logging.getLogger(__name__)


@dataclass
class VOCResult:
    """VOC scores of one split.

    Attributes:
        metric: one of :data:`VOC_METRICS`.
        ap: class name -> AP (``nan`` for a class without non-difficult ground truth).
        mAP: mean AP over the classes whose AP is not ``nan``.
        precision, recall: class name -> ``(D,)`` float64 arrays over that class's detections in
            descending score order (ignored detections repeat the previous point, as in the devkit).
        num_positives: class name -> number of non-difficult ground truths.
    """

    metric: str
    ap: dict[str, float]
    mAP: float
    precision: dict[str, np.ndarray]
    recall: dict[str, np.ndarray]
    num_positives: dict[str, int]


def matlab_colon(start: float, step: float, stop: float) -> np.ndarray:
    """MATLAB's ``start:step:stop`` (``step > 0``), float64, value for value.

    MATLAB counts ``n = round((stop - start) / step)`` steps (one fewer when that overshoots
    ``stop`` by more than a rounding tolerance), computes the first half of the range forward as
    ``start + k * step`` and the second half backward as ``last - (n - k) * step`` from the last
    value, and puts ``(start + last) / 2`` in the middle when ``n`` is even. ``0:0.1:1`` therefore
    holds exactly ``0.6`` and ``0.7`` (``1 - 4 * 0.1``, ``1 - 3 * 0.1``), unlike ``np.arange``.
    """
    start, step, stop = float(start), float(step), float(stop)
    tolerance = 2.0 * np.finfo(np.float64).eps * max(abs(start), abs(stop))
    count = round((stop - start) / step)
    if start + count * step > stop + tolerance:
        count -= 1
    if count < 0:
        return np.zeros(0)
    last = stop if abs(start + count * step - stop) <= tolerance else start + count * step
    k = np.arange(count + 1)
    values = np.where(2 * k <= count, start + k * step, last - (count - k) * step)
    if count % 2 == 0:
        values[count // 2] = (start + last) / 2.0
    return values


# The devkit's ``for t=0:0.1:1`` and the Python tools' ``np.arange(0.0, 1.1, 0.1)``.
VOC07_THRESHOLDS = matlab_colon(0.0, 0.1, 1.0)
VOC07_NUMPY_THRESHOLDS = np.arange(0.0, 1.1, 0.1)


def voc07_ap(
    recall: np.ndarray, precision: np.ndarray, thresholds: np.ndarray = VOC07_THRESHOLDS
) -> float:
    """11-point AP of ``(D,)`` recall (non-decreasing) and precision arrays: the mean over the
    11 ``thresholds`` t of the highest precision at recall >= t (0 when none). The default
    thresholds are the devkit's; pass :data:`VOC07_NUMPY_THRESHOLDS` for the Python tools'."""
    if recall.size == 0:
        return 0.0
    # Highest precision at recall >= t = suffix maximum from the first index where recall >= t.
    suffix_max = np.maximum.accumulate(precision[::-1])[::-1]
    first = np.searchsorted(recall, thresholds, side="left")
    values = np.where(first < recall.size, suffix_max[np.minimum(first, recall.size - 1)], 0.0)
    return float(np.sum(values / float(len(thresholds))))


def voc10_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010+ AP: area under the monotone precision envelope of ``(D,)`` recall/precision."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


# Metric name -> AP of (recall, precision); the variants are described in the module docstring.
AP_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "voc07": voc07_ap,
    "voc07_numpy": functools.partial(voc07_ap, thresholds=VOC07_NUMPY_THRESHOLDS),
    "voc10": voc10_ap,
}
VOC_METRICS = tuple(AP_FUNCTIONS)


def _flatten_detections(
    detections: Mapping[str, Detections], index_of: Mapping[str, int], num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All detections as flat arrays: image index, label, score, box (float64), in input order."""
    images, labels, scores, boxes = [], [], [], []
    for image_id, dets in detections.items():
        if image_id not in index_of:
            raise DetectError(f"detections for image {image_id!r}, which is not in the split")
        if len(dets) == 0:
            continue
        bad = (dets.labels < 0) | (dets.labels >= num_classes)
        if bool(bad.any()):
            raise DetectError(
                f"detections for image {image_id!r}: label {int(dets.labels[bad][0])} outside "
                f"0..{num_classes - 1}"
            )
        images.append(np.full(len(dets), index_of[image_id], dtype=np.int64))
        labels.append(dets.labels.numpy())
        scores.append(dets.scores.numpy())
        boxes.append(dets.boxes.numpy())
    if not images:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4))
    return (
        np.concatenate(images),
        np.concatenate(labels),
        np.concatenate(scores).astype(np.float64),
        np.concatenate(boxes).astype(np.float64),
    )


def _match_class(
    det_image: np.ndarray,
    det_boxes: np.ndarray,
    gt_image: np.ndarray,
    gt_boxes: np.ndarray,
    gt_difficult: np.ndarray,
    num_images: int,
    iou_threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """True/false positive flags ``(D,)`` for one class's detections, already in score order.

    ``gt_*`` are that class's ground truths sorted by image (``gt_image`` non-decreasing).
    """
    num_dets = det_image.size
    gt_start = np.searchsorted(gt_image, np.arange(num_images + 1))
    gt_count = np.diff(gt_start)[det_image]
    # One row per (detection, ground truth of its image) pair, detections in score order and each
    # detection's ground truths in annotation order.
    pair_det = np.repeat(np.arange(num_dets), gt_count)
    pair_first = np.cumsum(gt_count) - gt_count
    pair_gt = gt_start[det_image][pair_det] + np.arange(pair_det.size) - pair_first[pair_det]
    iou = paired_box_iou(
        torch.from_numpy(det_boxes[pair_det]), torch.from_numpy(gt_boxes[pair_gt])
    ).numpy()
    best_iou = np.full(num_dets, -np.inf)
    np.maximum.at(best_iou, pair_det, iou)
    # First ground truth reaching the maximum (the devkit's strict ">" scan keeps the first).
    is_best = iou == best_iou[pair_det]
    best_dets, first_pair = np.unique(pair_det[is_best], return_index=True)
    best_gt = np.full(num_dets, -1)
    best_gt[best_dets] = pair_gt[is_best][first_pair]

    matched = best_iou >= iou_threshold
    ignored = np.zeros(num_dets, dtype=bool)
    ignored[matched] = gt_difficult[best_gt[matched]]
    candidates = np.nonzero(matched & ~ignored)[0]
    tp = np.zeros(num_dets, dtype=bool)
    _, first_claim = np.unique(best_gt[candidates], return_index=True)
    tp[candidates[first_claim]] = True
    fp = ~tp & ~ignored
    return tp, fp


def evaluate_voc(
    detections: Mapping[str, Detections],
    dataset: DetectionDataset,
    metric: str = "voc07",
    iou_threshold: float = 0.5,
) -> VOCResult:
    """VOC AP per class and mAP of ``detections`` against ``dataset`` (devkit rules, see module).

    Args:
        detections: image id -> :class:`Detections` (boxes ``(N, 4)`` xyxy 0-based continuous,
            labels indices into ``dataset.class_names``). Images of the split may be missing (no
            detections); an image that is not in the split is a :class:`DetectError`.
        dataset: the split's ground truth.
        metric: ``"voc07"`` (the devkit's 11-point), ``"voc07_numpy"`` (11-point with the Python
            tools' thresholds) or ``"voc10"`` (area under the envelope).
        iou_threshold: minimum IoU for a match (inclusive).
    """
    if metric not in VOC_METRICS:
        raise DetectError(f"VOC metric {metric!r}: expected one of {list(VOC_METRICS)}")
    index_of = {image_id: i for i, image_id in enumerate(dataset.image_ids)}
    num_images, class_names = len(index_of), dataset.class_names
    det_image, det_label, det_score, det_boxes = _flatten_detections(
        detections, index_of, len(class_names)
    )
    gt_image = np.concatenate(
        [np.full(len(a), i, dtype=np.int64) for i, a in enumerate(dataset.annotations)] + [[]]
    ).astype(np.int64)
    gt_label = torch.cat(
        [a.labels for a in dataset.annotations] + [torch.zeros(0, dtype=torch.int64)]
    ).numpy()
    gt_boxes = (
        torch.cat([a.boxes for a in dataset.annotations] + [torch.zeros(0, 4)]).double().numpy()
    )
    gt_difficult = torch.cat(
        [a.difficult for a in dataset.annotations] + [torch.zeros(0, dtype=torch.bool)]
    ).numpy()
    # Stable sort by descending score once; per-class subsets keep that order.
    order = np.argsort(-det_score, kind="stable")
    det_image, det_label, det_boxes = det_image[order], det_label[order], det_boxes[order]

    ap_fn = AP_FUNCTIONS[metric]
    result = VOCResult(metric, {}, float("nan"), {}, {}, {})
    for label, name in enumerate(tqdm(class_names, desc=f"{metric} AP", unit="class", leave=False)):
        dets = det_label == label
        gts = gt_label == label
        num_pos = int(np.count_nonzero(gts & ~gt_difficult))
        tp, fp = _match_class(
            det_image[dets],
            det_boxes[dets],
            gt_image[gts],
            gt_boxes[gts],
            gt_difficult[gts],
            num_images,
            iou_threshold,
        )
        tp_sum, fp_sum = np.cumsum(tp, dtype=np.float64), np.cumsum(fp, dtype=np.float64)
        precision = tp_sum / np.maximum(tp_sum + fp_sum, np.finfo(np.float64).eps)
        recall = tp_sum / num_pos if num_pos else np.full(tp_sum.shape, np.nan)
        result.precision[name], result.recall[name] = precision, recall
        result.num_positives[name] = num_pos
        result.ap[name] = ap_fn(recall, precision) if num_pos else float("nan")
    missing = [name for name, ap in result.ap.items() if np.isnan(ap)]
    if missing:
        log.warning("classes without non-difficult ground truth, left out of the mAP: %s", missing)
    valid = [ap for ap in result.ap.values() if not np.isnan(ap)]
    result.mAP = float(np.mean(valid)) if valid else float("nan")
    return result
