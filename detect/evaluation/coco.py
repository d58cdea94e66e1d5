"""The pycocotools ``COCOeval`` bridge: COCO bbox stats of detections or COCO result records.

The results file format itself is :mod:`detect.evaluation.coco_results`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.data.coco import coco_categories, load_coco
from detect.errors import DetectError
from detect.evaluation.coco_results import coco_results
from detect.structures import DetectionDataset, Detections

log = logging.getLogger(__name__)

# Names of COCOeval.stats, in its order (bbox evaluation).
STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)


def evaluate_coco(
    detections: Mapping[str, Detections] | list[dict],
    gt: DetectionDataset | str | Path,
    classes: Sequence[str] = (),
    coco_gt: COCO | None = None,
) -> dict[str, float]:
    """COCOeval (bbox) stats by name: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs...

    Args:
        detections: image id -> :class:`Detections` (labels index the class list), or COCO result
            records as read by :func:`detect.evaluation.coco_results.read_coco_results`.
        gt: the COCO data set (its ``root`` is the instances json) or the json path.
        classes: the label order of ``detections`` and the categories evaluated; default: the
            data set's classes, or every category of the json.
        coco_gt: the json already loaded with :func:`detect.data.coco.load_coco` (so a caller
            that has it does not read the file again); default: loaded here.

    A stat without ground truth to measure is ``-1`` as in pycocotools. Raises
    :class:`DetectError` for a detection of an image or category that is not in the json.
    """
    json_path = Path(gt.root) if isinstance(gt, DetectionDataset) else Path(gt)
    if isinstance(gt, DetectionDataset) and not classes:
        classes = gt.class_names
    if coco_gt is None:
        coco_gt = load_coco(json_path)
    _, category_ids = coco_categories(coco_gt, classes, f"COCO annotations {json_path}")
    records = (
        copy.deepcopy(detections)
        if isinstance(detections, list)
        else coco_results(detections, category_ids)
    )
    image_ids = set(coco_gt.getImgIds())
    all_categories = set(coco_gt.getCatIds())
    for index, record in enumerate(records):
        if record["image_id"] not in image_ids:
            raise DetectError(
                f"detection {index}: image {record['image_id']} is not in {json_path}"
            )
        if record["category_id"] not in all_categories:
            raise DetectError(
                f"detection {index}: category_id {record['category_id']} is not in {json_path}"
            )
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        if records:
            coco_dt = coco_gt.loadRes(records)
        else:  # pycocotools cannot load an empty result list: an index with no detections
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": coco_gt.dataset["images"],
                "categories": coco_gt.dataset["categories"],
                "annotations": [],
            }
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.catIds = list(category_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    log.debug("COCOeval:\n%s", printed.getvalue())
    return {
        name: float(value)
        for name, value in zip(STAT_NAMES, np.asarray(evaluator.stats), strict=True)
    }
