"""Proposal quality: recall of the ground truth against the number of proposals kept.

A ground-truth box is recalled at IoU ``t`` by the first ``k`` proposals when one of them overlaps
it with IoU >= ``t`` (each ground truth independently, no one-to-one matching, as in Hosang et al.,
"What makes for effective detection proposals?"). Average recall (AR) is the mean recall over
IoU 0.5, 0.55, ..., 0.95. VOC ``difficult`` objects are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from detect.errors import DetectError
from detect.ops.boxes import box_iou
from detect.structures import DetectionDataset

DEFAULT_COUNTS = (10, 50, 100, 300, 500, 1000, 2000)
IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


@dataclass(frozen=True)
class RecallResult:
    """``recall[i, j]`` = fraction of ground truths recalled by the first ``counts[i]`` proposals
    at IoU ``iou_thresholds[j]``, over ``num_gt`` ground-truth boxes of ``num_images`` images."""

    counts: tuple[int, ...]
    iou_thresholds: tuple[float, ...]
    recall: np.ndarray
    num_gt: int
    num_images: int
    mean_proposals: float

    def recall_at(self, iou: float) -> np.ndarray:
        """``(len(counts),)`` recall at IoU ``iou`` (one of ``iou_thresholds``)."""
        matches = [j for j, t in enumerate(self.iou_thresholds) if abs(t - iou) < 1e-6]
        if not matches:
            raise DetectError(f"recall: IoU {iou} is not among {self.iou_thresholds}")
        return self.recall[:, matches[0]]

    @property
    def average_recall(self) -> np.ndarray:
        """``(len(counts),)`` mean recall over ``iou_thresholds``."""
        return self.recall.mean(axis=1)


def best_overlaps(proposals: Tensor, gt_boxes: Tensor, counts: Sequence[int]) -> np.ndarray:
    """``(len(counts), G)``: each ground truth's best IoU among the first ``counts[i]`` proposals
    (0 when there are none). ``proposals`` ``(R, 4)`` and ``gt_boxes`` ``(G, 4)`` xyxy."""
    result = np.zeros((len(counts), gt_boxes.shape[0]), dtype=np.float64)
    if proposals.shape[0] == 0 or gt_boxes.shape[0] == 0:
        return result
    # Running maximum over the proposal axis: column k-1 = best IoU among the first k.
    running = np.maximum.accumulate(box_iou(gt_boxes, proposals.float()).double().numpy(), axis=1)
    for i, count in enumerate(counts):
        result[i] = running[:, min(count, proposals.shape[0]) - 1]
    return result


def proposal_recall(
    proposals: dict[str, Tensor],
    dataset: DetectionDataset,
    counts: Sequence[int] = DEFAULT_COUNTS,
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> RecallResult:
    """Recall of ``dataset``'s non-difficult ground truth by ``proposals`` (``{image_id: (R, 4)
    xyxy}`` in ranking order), over the images of the data set that have proposals."""
    overlaps, sizes = [], []
    for annotation in dataset.annotations:
        if annotation.image_id not in proposals:
            continue
        boxes = proposals[annotation.image_id]
        sizes.append(boxes.shape[0])
        keep = ~annotation.difficult
        overlaps.append(best_overlaps(boxes, annotation.boxes[keep], counts))
    if not overlaps:
        raise DetectError(f"recall: no image of {dataset.name} {dataset.split} has proposals")
    best = np.concatenate(overlaps, axis=1)  # (len(counts), total G)
    thresholds = np.asarray(iou_thresholds, dtype=np.float64)
    if best.shape[1] == 0:
        recall = np.zeros((len(counts), len(thresholds)))
    else:
        recall = (best[:, :, None] >= thresholds[None, None, :] - 1e-9).mean(axis=1)
    return RecallResult(
        tuple(int(c) for c in counts),
        tuple(float(t) for t in iou_thresholds),
        recall,
        int(best.shape[1]),
        len(sizes),
        float(np.mean(sizes)),
    )


def format_recall_table(result: RecallResult) -> str:
    """Plain-text table: proposals kept | recall@0.5 | recall@0.7 | AR."""
    lines = [
        f"recall over {result.num_gt} objects in {result.num_images} images "
        f"(mean {result.mean_proposals:.0f} proposals per image)",
        f"{'proposals':>9} | {'R@0.5':>6} | {'R@0.7':>6} | {'AR':>6}",
        f"{'-' * 9}-+-{'-' * 6}-+-{'-' * 6}-+-{'-' * 6}",
    ]
    r50, r70, ar = result.recall_at(0.5), result.recall_at(0.7), result.average_recall
    for i, count in enumerate(result.counts):
        lines.append(f"{count:>9} | {r50[i]:6.3f} | {r70[i]:6.3f} | {ar[i]:6.3f}")
    return "\n".join(lines)


def save_recall_plot(result: RecallResult, path: str | Path) -> None:
    """PNG of recall@0.5, recall@0.7 and AR against the number of proposals (log axis), written
    atomically."""
    from detect.visualize import plot_curves

    curves = {
        "recall @ IoU 0.5": result.recall_at(0.5).tolist(),
        "recall @ IoU 0.7": result.recall_at(0.7).tolist(),
        "average recall (IoU 0.5:0.95)": result.average_recall.tolist(),
    }
    title = f"proposal recall ({result.num_gt} objects, {result.num_images} images)"
    plot_curves(
        result.counts, curves, path, "proposals per image", "recall", title, logx=True, ylim=(0, 1)
    )


def format_comparison(results: dict[str, RecallResult], seconds: dict[str, float | None]) -> str:
    """Plain-text table, a row per method: proposals per image, recall@0.5, recall@0.7 and AR at
    the largest count of ``counts``, and seconds per image (``seconds[method]``; None: every
    image came from the cache, not timed)."""
    lines = [
        f"{'method':<9} | {'props/img':>9} | {'R@0.5':>6} | {'R@0.7':>6} | {'AR':>6} | {'s/image':>8}",
        f"{'-' * 9}-+-{'-' * 9}-+-{'-' * 6}-+-{'-' * 6}-+-{'-' * 6}-+-{'-' * 8}",
    ]
    for method, result in results.items():
        r50, r70, ar = result.recall_at(0.5), result.recall_at(0.7), result.average_recall
        time = "cached" if seconds.get(method) is None else f"{seconds[method]:.3f}"
        lines.append(
            f"{method:<9} | {result.mean_proposals:>9.0f} | {r50[-1]:6.3f} | {r70[-1]:6.3f} | "
            f"{ar[-1]:6.3f} | {time:>8}"
        )
    counts = {result.counts[-1] for result in results.values()}
    lines.append(f"(recall with at most {'/'.join(map(str, sorted(counts)))} proposals per image)")
    return "\n".join(lines)


def save_comparison_plot(results: dict[str, RecallResult], path: str | Path) -> None:
    """One PNG: recall@0.5, recall@0.7 and AR against the number of proposals (log axis), three
    curves per method, written atomically. All results must share their counts."""
    from detect.visualize import plot_curves

    counts = {result.counts for result in results.values()}
    if len(counts) != 1:
        raise DetectError(
            f"recall comparison: the methods were measured at different counts {counts}"
        )
    curves = {}
    for method, result in results.items():
        curves[f"{method} R@0.5"] = result.recall_at(0.5).tolist()
        curves[f"{method} R@0.7"] = result.recall_at(0.7).tolist()
        curves[f"{method} AR"] = result.average_recall.tolist()
    title = "proposal recall by method ({} objects, {} images)".format(
        *next((r.num_gt, r.num_images) for r in results.values())
    )
    plot_curves(
        counts.pop(), curves, path, "proposals per image", "recall", title, logx=True, ylim=(0, 1)
    )
