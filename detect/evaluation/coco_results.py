"""COCO results json: a list of ``{"image_id": int, "category_id": int, "bbox": [x, y, w, h],
"score": float}`` records, ``bbox`` in COCO's ``xywh`` (converted with
:func:`detect.ops.boxes.xywh_from_xyxy` / :func:`detect.ops.boxes.xyxy_from_xywh`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from detect.errors import DetectError
from detect.files import atomic_write_text, read_json
from detect.ops.boxes import xywh_from_xyxy, xyxy_from_xywh
from detect.structures import Detections, is_finite_number


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


def detections_from_coco_results(
    records: list[dict],
    category_ids: Sequence[int],
    image_ids: Collection[str],
    where: str,
) -> dict[str, Detections]:
    """Group result records (as read by :func:`read_coco_results`) by image into
    :class:`Detections` (boxes xyxy 0-based continuous), labels the index of each record's
    category in ``category_ids``; records of other categories are left out.

    Args:
        image_ids: the ground truth's image ids (``str`` of the COCO ids); a record of any other
            image is a :class:`DetectError` naming ``where`` and the record's index.

    Returns:
        image id -> :class:`Detections`, images in order of first appearance, records in file order.
    """
    label_of = {category: label for label, category in enumerate(category_ids)}
    grouped: dict[str, list[dict]] = {}
    for index, record in enumerate(records):
        image_id = str(record["image_id"])
        if image_id not in image_ids:
            raise DetectError(
                f"{where}: detection {index}: image {image_id} not in the ground truth"
            )
        if record["category_id"] in label_of:
            grouped.setdefault(image_id, []).append(record)
    return {
        image_id: Detections(
            xyxy_from_xywh([r["bbox"] for r in image_records]),
            [r["score"] for r in image_records],
            [label_of[r["category_id"]] for r in image_records],
        )
        for image_id, image_records in grouped.items()
    }
