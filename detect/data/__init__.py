"""Data set readers and writers (VOC, COCO, the built-in synthetic set) and image loading."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from detect.config import DataConfig
from detect.errors import DetectError

if TYPE_CHECKING:  # the readers import torch, :mod:`detect.data.images` does not
    from detect.structures import DetectionDataset


def load_dataset(
    root: str | Path,
    split: str,
    classes: Sequence[str] = (),
    image_dir: str | Path = "",
    strict_boxes: bool = True,
    max_image_pixels: int = DataConfig.max_image_pixels,
) -> DetectionDataset:
    """Load one split of a data set; boxes come back 0-based continuous xyxy.

    Args:
        root: a VOC-layout folder (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``) or a
            COCO instances ``.json`` file.
        split: VOC split name (``ImageSets/Main/<split>.txt``); for COCO it only names the split.
        classes: class names in label order; empty = the 20 VOC classes (VOC) or every category
            of the json (COCO).
        image_dir: COCO only: folder with the images (default: beside the json, see
            :func:`detect.data.coco.read_coco_dataset`).
        strict_boxes: False clips/drops bad boxes with a warning instead of raising.
        max_image_pixels: an image size stated by the annotations over this many pixels is an
            error.
    """
    root = Path(root)
    if root.is_dir():
        from detect.data.voc import read_voc_dataset

        return read_voc_dataset(
            root,
            split,
            classes=classes,
            strict_boxes=strict_boxes,
            max_image_pixels=max_image_pixels,
        )
    if root.suffix.lower() == ".json":
        from detect.data.coco import read_coco_dataset

        return read_coco_dataset(
            root,
            split=split,
            classes=classes,
            image_dir=image_dir,
            strict_boxes=strict_boxes,
            max_image_pixels=max_image_pixels,
        )
    raise DetectError(
        f"data set {root}: not a VOC-layout folder or a COCO .json file"
        + ("" if root.exists() else " (path does not exist)")
    )
