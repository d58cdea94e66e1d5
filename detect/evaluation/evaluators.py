"""Dataset evaluators in detectron2's ``DatasetEvaluator`` shape, and the one table of their scores.

An evaluator is fed one image at a time and scores the split at the end::

    evaluator.reset()
    for image_id, detections in ...:
        evaluator.process(image_id, detections)
    scores = evaluator.evaluate()
    print(format_scores(scores))

:class:`VOCEvaluator` applies the devkit's rules (:mod:`detect.evaluation.voc_ap`),
:class:`COCOEvaluator` pycocotools' ``COCOeval`` (:mod:`detect.evaluation.coco`). ``detect eval``
and ``detect score`` both score through them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pycocotools.coco import COCO

from detect.data.coco import coco_categories, load_coco
from detect.errors import DetectError
from detect.evaluation.coco import evaluate_coco
from detect.evaluation.coco_results import coco_results
from detect.evaluation.voc_ap import VOC_METRICS, VOCResult, evaluate_voc
from detect.structures import DetectionDataset, Detections

# Every metric `detect eval` and `detect score` accept: the VOC AP variants, then COCO's.
METRICS = (*VOC_METRICS, "coco")


@dataclass
class Scores:
    """Scores of one split.

    Attributes:
        metric: one of :data:`METRICS`.
        mAP: VOC mAP over the classes with ground truth, or COCO AP@[.5:.95].
        num_images: images of the split.
        ap: class name -> AP (VOC; ``nan`` for a class without non-difficult ground truth); empty
            for COCO.
        num_positives: class name -> number of non-difficult ground truths (VOC); empty for COCO.
        stats: ``COCOeval`` stats by name (:data:`detect.evaluation.coco.STAT_NAMES`, COCO only;
            ``-1`` where pycocotools has nothing to measure).
        voc: the full VOC result, with the precision / recall curves (VOC only).
    """

    metric: str
    mAP: float
    num_images: int
    ap: dict[str, float] = field(default_factory=dict)
    num_positives: dict[str, int] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    voc: VOCResult | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        """``{"metric", "mAP", "ap", "stats"}`` with ``nan`` written as ``null``."""
        return {
            "metric": self.metric,
            "mAP": _finite_or_none(self.mAP),
            "ap": {name: _finite_or_none(ap) for name, ap in self.ap.items()},
            "stats": dict(self.stats),
        }


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


class DatasetEvaluator(ABC):
    """Collects the detections of a split, image by image, then scores them all."""

    def __init__(self) -> None:
        self._detections: dict[str, Detections] = {}

    def reset(self) -> None:
        """Forget every detection processed so far."""
        self._detections = {}

    def process(self, image_id: str, detections: Detections) -> None:
        """Add the detections of one image (boxes ``(N, 4)`` xyxy 0-based continuous pixels,
        labels indices into the evaluator's class names); an image given twice is a
        :class:`DetectError`."""
        if image_id in self._detections:
            raise DetectError(f"detections for image {image_id!r} given twice")
        self._detections[image_id] = detections

    @abstractmethod
    def evaluate(self) -> Scores:
        """Scores of everything processed since the last :meth:`reset`."""


class VOCEvaluator(DatasetEvaluator):
    """VOC AP per class with the devkit's matching rules.

    Args:
        dataset: the split's ground truth; labels index ``dataset.class_names``.
        metric: one of :data:`detect.evaluation.voc_ap.VOC_METRICS` (checked by
            :meth:`evaluate`).
        iou_threshold: the minimum IoU of a match (inclusive).
    """

    def __init__(
        self, dataset: DetectionDataset, metric: str = "voc07", iou_threshold: float = 0.5
    ) -> None:
        super().__init__()
        self.dataset, self.metric, self.iou_threshold = dataset, metric, iou_threshold

    def evaluate(self) -> Scores:
        result = evaluate_voc(self._detections, self.dataset, self.metric, self.iou_threshold)
        return Scores(
            metric=self.metric,
            mAP=result.mAP,
            num_images=len(self.dataset),
            ap=dict(result.ap),
            num_positives=dict(result.num_positives),
            voc=result,
        )


class COCOEvaluator(DatasetEvaluator):
    """COCO bbox stats from pycocotools' ``COCOeval`` over every image of the json.

    Args:
        gt_json: the COCO instances json.
        class_names: label order of the processed detections, and the categories scored; default
            every category of the json, sorted by id.
        coco_gt: the json already loaded with :func:`detect.data.coco.load_coco` (default: loaded
            here).
    """

    def __init__(
        self, gt_json: str | Path, class_names: Sequence[str] = (), coco_gt: COCO | None = None
    ) -> None:
        super().__init__()
        self.gt_json = Path(gt_json)
        self.coco_gt = coco_gt if coco_gt is not None else load_coco(self.gt_json)
        self.class_names, self.category_ids = coco_categories(
            self.coco_gt, class_names, f"COCO annotations {self.gt_json}"
        )
        self._records: list[dict] = []

    def reset(self) -> None:
        super().reset()
        self._records = []

    def process_results(self, records: list[dict]) -> None:
        """Add COCO result records as read by
        :func:`detect.evaluation.coco_results.read_coco_results`, kept exactly as they are."""
        self._records += records

    def evaluate(self) -> Scores:
        records = self._records + coco_results(self._detections, self.category_ids)
        stats = evaluate_coco(records, self.gt_json, self.class_names, coco_gt=self.coco_gt)
        return Scores(
            metric="coco",
            mAP=stats["AP"],
            num_images=len(self.coco_gt.getImgIds()),
            stats=stats,
        )


def format_scores(scores: Scores) -> str:
    """The per-class AP table with ground-truth counts and the mean (VOC), or the COCO stats."""
    if scores.metric == "coco":
        width = max((len(name) for name in scores.stats), default=4)
        return "\n".join(f"{name:<{width}}  {value:7.4f}" for name, value in scores.stats.items())
    width = max(len(name) for name in (*scores.ap, "mean"))
    lines = [f"{'class':<{width}}  {'AP':>7}  {'GT':>6}"]
    lines += [
        f"{name:<{width}}  {ap:7.4f}  {scores.num_positives[name]:6d}"
        for name, ap in scores.ap.items()
    ]
    lines.append(
        f"{'mean':<{width}}  {scores.mAP:7.4f}  ({scores.metric}, {scores.num_images} images)"
    )
    return "\n".join(lines)
