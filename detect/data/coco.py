"""COCO instances json reader (through pycocotools).

Labels are contiguous 0-based indices over the categories sorted by COCO category id (or in the
order of the ``classes`` asked for); :func:`coco_categories` gives the label -> category id map used
both here and by :mod:`detect.evaluation.coco`. COCO ``[x, y, w, h]`` boxes are converted with
:func:`detect.ops.boxes.xyxy_from_xywh`; ``iscrowd`` regions go to ``Annotation.crowd_boxes``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path

import torch
from pycocotools.coco import COCO

from detect.config import DataConfig
from detect.data.boxcheck import BoxProblems, check_box
from detect.data.coco_schema import check_instances
from detect.errors import DetectError
from detect.files import read_json
from detect.ops.boxes import xyxy_from_xywh
from detect.structures import Annotation, DetectionDataset


def load_coco(path: str | Path, max_image_pixels: int = DataConfig.max_image_pixels) -> COCO:
    """A pycocotools ``COCO`` index of an instances json (its progress prints silenced).

    Raises:
        DetectError: the file is missing, not json, or any record is malformed (see
            :func:`detect.data.coco_schema.check_instances`).
    """
    path = Path(path)
    payload = read_json(path, "COCO annotations")
    check_instances(payload, path, max_image_pixels)
    coco = COCO()
    coco.dataset = payload
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_categories(
    coco: COCO, classes: Sequence[str] = (), where: str = "COCO annotations"
) -> tuple[tuple[str, ...], list[int]]:
    """Class names and the COCO category id of each label.

    Args:
        classes: wanted class names in label order; empty = every category, sorted by id.

    Raises:
        DetectError: a requested class is not a category of the json (lists the known ones).
    """
    categories = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
    by_name = {c["name"]: c["id"] for c in categories}
    if not classes:
        return tuple(c["name"] for c in categories), [c["id"] for c in categories]
    unknown = [name for name in classes if name not in by_name]
    if unknown:
        raise DetectError(f"{where}: unknown class {unknown[0]!r}; known: {list(by_name)}")
    return tuple(classes), [by_name[name] for name in classes]


def read_coco_dataset(
    json_path: str | Path,
    split: str = "",
    classes: Sequence[str] = (),
    image_dir: str | Path = "",
    strict_boxes: bool = True,
    check_images: bool = True,
    max_image_pixels: int = DataConfig.max_image_pixels,
) -> DetectionDataset:
    """Read a COCO instances json into a :class:`DetectionDataset` (``root`` = the json path).

    Args:
        split: only names the split (default: the json's stem).
        classes: class names in label order; empty = all categories sorted by id. Annotations of
            categories not asked for are left out.
        image_dir: folder with the images named by ``file_name``; default: the json's folder.
        strict_boxes: False clips boxes to the image and drops empty ones (w or h <= 0) with one
            warning, instead of raising.
        check_images: raise when an image file is missing.
        max_image_pixels: an image whose stated size is over this many pixels is an error.

    Image ids become ``str(id)``; images keep the json's order.
    """
    json_path = Path(json_path)
    coco = load_coco(json_path, max_image_pixels)
    class_names, category_ids = coco_categories(coco, classes, f"COCO annotations {json_path}")
    label_of = {cat: label for label, cat in enumerate(category_ids)}
    known_categories = set(coco.getCatIds())
    folder = Path(image_dir) if image_dir else json_path.parent
    problems = BoxProblems()
    annotations = []
    for image in coco.dataset["images"]:
        path = folder / image["file_name"]
        if check_images and not path.is_file():
            raise DetectError(
                f"COCO annotations {json_path}: image {image['id']} file {path} not found "
                "(set image_dir to the image folder)"
            )
        width, height = int(image["width"]), int(image["height"])
        boxes, labels, crowd = [], [], []
        for ann in coco.imgToAnns.get(image["id"], []):
            where = f"COCO annotations {json_path}: annotation id {ann.get('id')}"
            if ann["category_id"] not in known_categories:
                raise DetectError(f"{where}: unknown category_id {ann['category_id']}")
            if ann["category_id"] not in label_of:
                continue
            xyxy = xyxy_from_xywh(torch.tensor([ann["bbox"]], dtype=torch.float64))[0].tolist()
            shown = f"{where} (image {image['id']}): bbox {ann['bbox']} (x y w h)"
            box = check_box(xyxy, width, height, shown, strict_boxes, problems)
            if box is None:
                continue
            if ann.get("iscrowd", 0):
                crowd.append(box)
            else:
                boxes.append(box)
                labels.append(label_of[ann["category_id"]])
        annotations.append(
            Annotation(
                image_id=str(image["id"]),
                path=path,
                width=width,
                height=height,
                boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                labels=labels,
                crowd_boxes=torch.tensor(crowd, dtype=torch.float32).reshape(-1, 4),
            )
        )
    problems.report(f"COCO annotations {json_path}")
    if not annotations:
        raise DetectError(f"COCO annotations {json_path}: empty split (no images)")
    return DetectionDataset(
        name=json_path.stem,
        root=json_path,
        split=split or json_path.stem,
        class_names=class_names,
        annotations=annotations,
    )
