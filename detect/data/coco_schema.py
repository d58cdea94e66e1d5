"""Structure and value checks of a COCO instances json, before pycocotools indexes it.

pycocotools trusts its input: a missing key or a value of the wrong type is a ``KeyError`` or
``TypeError`` deep inside it, and a NaN box or a 3-number box is accepted silently. This module
checks every record once, so each such file is one :class:`DetectError` naming the file, the record
and the value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detect.data.names import check_class_names
from detect.errors import DetectError
from detect.structures import is_finite_number


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _records(payload: dict, key: str, where: str) -> list[dict]:
    records = payload[key]
    if not isinstance(records, list):
        raise DetectError(
            f"{where}: {key!r} must be a list of objects, got {type(records).__name__}"
        )
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise DetectError(f"{where}: {key}[{index}] must be an object, got {record!r}")
    return records


def _require(record: dict, key: str, ok: bool, expected: str, where: str) -> None:
    if key not in record:
        raise DetectError(f"{where}: missing {key!r} ({expected})")
    if not ok:
        raise DetectError(f"{where}: {key} must be {expected}, got {record[key]!r}")


def _check_categories(payload: dict, where: str) -> None:
    categories = _records(payload, "categories", where)
    ids = set()
    for index, category in enumerate(categories):
        at = f"{where}: categories[{index}]"
        _require(category, "id", _is_id(category.get("id")), "an integer", at)
        _require(category, "name", isinstance(category.get("name"), str), "a string", at)
        if category["id"] in ids:
            raise DetectError(f"{at}: duplicate category id {category['id']}")
        ids.add(category["id"])
    check_class_names([c["name"] for c in categories], f"{where}: categories")


def _check_images(payload: dict, where: str, max_pixels: int) -> set[int]:
    ids = set()
    for index, image in enumerate(_records(payload, "images", where)):
        at = f"{where}: images[{index}]"
        _require(image, "id", _is_id(image.get("id")), "an integer", at)
        name = image.get("file_name")
        _require(image, "file_name", isinstance(name, str) and bool(name), "a file name", at)
        for key in ("width", "height"):
            value = image.get(key)
            whole = is_finite_number(value) and float(value).is_integer() and value > 0
            _require(image, key, whole, "a whole number > 0", at)
        if image["width"] * image["height"] > max_pixels:
            raise DetectError(
                f"{at}: size {image['width']}x{image['height']} is over the limit of "
                f"{max_pixels} pixels (data.max_image_pixels)"
            )
        if image["id"] in ids:
            raise DetectError(f"{at}: duplicate image id {image['id']}")
        ids.add(image["id"])
    return ids


def _check_annotations(payload: dict, where: str, image_ids: set[int]) -> None:
    for index, ann in enumerate(_records(payload, "annotations", where)):
        at = f"{where}: annotations[{index}]"
        _require(ann, "id", _is_id(ann.get("id")), "an integer", at)
        _require(ann, "image_id", _is_id(ann.get("image_id")), "an integer", at)
        _require(ann, "category_id", _is_id(ann.get("category_id")), "an integer", at)
        bbox = ann.get("bbox")
        four = isinstance(bbox, list) and len(bbox) == 4 and all(map(is_finite_number, bbox))
        _require(ann, "bbox", four, "[x, y, w, h] of 4 finite numbers", at)
        if ann["image_id"] not in image_ids:
            raise DetectError(f"{at}: image_id {ann['image_id']} is not in 'images'")
        if "iscrowd" in ann and ann["iscrowd"] not in (0, 1):
            raise DetectError(f"{at}: iscrowd must be 0 or 1, got {ann['iscrowd']!r}")
        if "area" in ann:
            ok = is_finite_number(ann["area"]) and ann["area"] >= 0
            _require(ann, "area", ok, "a finite number >= 0", at)
        else:  # COCOeval reads the area of every ground-truth box: default to the box's
            ann["area"] = float(bbox[2]) * float(bbox[3])


def check_instances(payload: Any, path: Path, max_pixels: int) -> None:
    """Check a parsed instances json in place, before it is indexed.

    Requires ``images`` (``id``, ``file_name``, whole ``width``/``height`` > 0 whose product is at
    most ``max_pixels``), ``annotations`` (``id``, ``image_id`` of a listed image,
    ``category_id``, ``bbox`` = 4 finite numbers ``[x, y, w, h]``, optional ``iscrowd`` 0/1 and
    ``area`` >= 0, which defaults to ``w * h``) and ``categories`` (``id``, a unique ``name`` that
    is a plain file-name part, see :mod:`detect.data.names`).

    Raises:
        DetectError: ``"COCO annotations <path>: <record>: <problem>"`` for the first bad value.
    """
    where = f"COCO annotations {path}"
    missing = [
        k
        for k in ("images", "annotations", "categories")
        if not isinstance(payload, dict) or k not in payload
    ]
    if missing:
        raise DetectError(f"{where}: not an instances json (missing keys {missing})")
    _check_categories(payload, where)
    image_ids = _check_images(payload, where, max_pixels)
    _check_annotations(payload, where, image_ids)
