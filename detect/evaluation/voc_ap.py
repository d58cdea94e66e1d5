"""PASCAL VOC average precision, exactly as the official devkit computes it (SPEC.md §8).

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

* ``voc07``: 11-point interpolated AP, mean over ``t in np.arange(0, 1.1, 0.1)`` of the highest
  precision at recall >= t (0 when none). These are the thresholds of the Python reference
  implementations (py-faster-rcnn's ``voc_eval.py``, Detectron, mmdetection), including their
  floating-point values (``0.30000000000000004`` etc.).
* ``voc10``: area under the monotone precision envelope (VOC2010+ ``VOCap``).

A class without any non-difficult ground truth in the split has AP ``nan`` (the devkit divides by
zero there) and is left out of the mAP, with a warning; a class with ground truth but no detections
has AP 0.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from detect.errors import DetectError
from detect.ops.boxes import paired_box_iou
from detect.structures import DetectionDataset, Detections

log = logging.getLogger(__name__)

METRICS = ("voc07", "voc10")


@dataclass
class VOCResult:
    """VOC scores of one split.

    Attributes:
        metric: ``"voc07"`` or ``"voc10"``.
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


def voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007 11-point AP of ``(D,)`` recall (non-decreasing) and precision arrays."""
    thresholds = np.arange(0.0, 1.1, 0.1)
    if recall.size == 0:
        return 0.0
    # Highest precision at recall >= t = suffix maximum from the first index where recall >= t.
    suffix_max = np.maximum.accumulate(precision[::-1])[::-1]
    first = np.searchsorted(recall, thresholds, side="left")
    values = np.where(first < recall.size, suffix_max[np.minimum(first, recall.size - 1)], 0.0)
    return float(np.sum(values / 11.0))


def voc10_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010+ AP: area under the monotone precision envelope of ``(D,)`` recall/precision."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


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
        metric: ``"voc07"`` (11-point) or ``"voc10"`` (area under the envelope).
        iou_threshold: minimum IoU for a match (inclusive).
    """
    if metric not in METRICS:
        raise DetectError(f"VOC metric {metric!r}: expected one of {list(METRICS)}")
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

    ap_fn = voc07_ap if metric == "voc07" else voc10_ap
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
