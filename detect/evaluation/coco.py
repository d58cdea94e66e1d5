"""COCO results json and the pycocotools ``COCOeval`` bridge.

A COCO results file is a json list of ``{"image_id": int, "category_id": int, "bbox": [x, y, w, h],
"score": float}``; boxes are converted with :func:`detect.ops.boxes.xywh_from_xyxy`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.data.coco import coco_categories, load_coco
from detect.errors import DetectError
from detect.files import atomic_write_text, read_json
from detect.ops.boxes import xywh_from_xyxy
from detect.structures import DetectionDataset, Detections, is_finite_number

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


def _coco_image_id(image_id: str) -> int:
    try:
        return int(image_id)
    except ValueError as exc:
        raise DetectError(
            f"detections for image {image_id!r}: COCO image ids are integers"
        ) from exc


def coco_results(detections: Mapping[str, Detections], category_ids: Sequence[int]) -> list[dict]:
    """COCO result records of ``detections`` (image id -> :class:`Detections`, boxes xyxy).

    ``category_ids[label]`` is the COCO category of each label (see
    :func:`detect.data.coco.coco_categories`).
    """
    records = []
    for image_id, dets in detections.items():
        coco_id = _coco_image_id(image_id)
        boxes = xywh_from_xyxy(dets.boxes).tolist()
        for box, score, label in zip(
            boxes, dets.scores.tolist(), dets.labels.tolist(), strict=True
        ):
            records.append(
                {
                    "image_id": coco_id,
                    "category_id": int(category_ids[label]),
                    "bbox": [round(v, 3) for v in box],
                    "score": round(score, 6),
                }
            )
    return records


def write_coco_results(
    path: str | Path, detections: Mapping[str, Detections], category_ids: Sequence[int]
) -> None:
    """Write a COCO results json (atomically)."""
    atomic_write_text(Path(path), json.dumps(coco_results(detections, category_ids)))


def read_coco_results(path: str | Path) -> list[dict]:
    """Read and check a COCO results json (a list of image_id/category_id/bbox/score records).

    Raises:
        DetectError: naming the file and the index of the first bad record (a missing key, a wrong
            type, or a score or bbox value that is NaN or infinite).
    """
    path = Path(path)
    records = read_json(path, "COCO results")
    if not isinstance(records, list):
        raise DetectError(f"COCO results {path}: expected a json list of detections")
    for index, record in enumerate(records):
        ok = (
            isinstance(record, dict)
            and isinstance(record.get("image_id"), int)
            and isinstance(record.get("category_id"), int)
            and is_finite_number(record.get("score"))
            and isinstance(record.get("bbox"), list)
            and len(record["bbox"]) == 4
            and all(map(is_finite_number, record["bbox"]))
        )
        if not ok:
            raise DetectError(
                f"COCO results {path}: detection {index}: expected image_id (int), category_id "
                f"(int), bbox [x, y, w, h] and score, all finite numbers; got {record!r}"
            )
    return records


def evaluate_coco(
    detections: Mapping[str, Detections] | list[dict],
    gt: DetectionDataset | str | Path,
    classes: Sequence[str] = (),
    coco_gt: COCO | None = None,
) -> dict[str, float]:
    """COCOeval (bbox) stats by name: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs...

    Args:
        detections: image id -> :class:`Detections` (labels index the class list), or COCO result
            records as read by :func:`read_coco_results`.
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
