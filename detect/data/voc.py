"""PASCAL VOC layout: reader and writer.

A VOC-layout folder holds ``Annotations/<id>.xml``, ``JPEGImages/<id>.<ext>`` and
``ImageSets/Main/<split>.txt`` (one image id per line), as in the VOC2007/VOC2012 devkits. The XML
stores 1-based *inclusive* pixel indices; this module is the only place that knows it: boxes are
converted with :func:`detect.ops.boxes.xyxy_from_voc` when read and
:func:`detect.ops.boxes.voc_from_xyxy` when written, and are 0-based continuous xyxy everywhere
else.

Listing a split's images (:func:`read_voc_images`) loads no torch; reading the annotations does.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from detect.data.boxcheck import BoxProblems, check_box
from detect.data.images import DEFAULT_MAX_IMAGE_PIXELS, IMAGE_SUFFIXES, read_image
from detect.data.names import check_class_names, check_name
from detect.errors import DetectError
from detect.files import atomic_write_text, read_text

if TYPE_CHECKING:
    from detect.structures import Annotation, DetectionDataset

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def split_file(root: str | Path, split: str) -> Path:
    """``root/ImageSets/Main/<split>.txt``; a split name that is not a plain file-name part
    (:func:`detect.data.names.check_name`) is a :class:`DetectError`."""
    check_name(split, "split", f"VOC data set {root}")
    return Path(root) / "ImageSets" / "Main" / f"{split}.txt"


def read_split_ids(root: str | Path, split: str) -> list[str]:
    """Image ids listed in ``ImageSets/Main/<split>.txt`` (first token of each non-blank line).

    Raises:
        DetectError: the file is missing, not UTF-8 text, lists no image, or lists an id that is not
            a plain file-name part (``../../x`` would leave the data root).
    """
    path = split_file(root, split)
    if not path.is_file():
        main = path.parent
        known = (
            sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem) if main.is_dir() else []
        )
        raise DetectError(f"VOC split file {path}: not found (split {split!r}; available: {known})")
    text = read_text(path, "VOC split file")
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not ids:
        raise DetectError(f"VOC split file {path}: empty split {split!r} (no image ids)")
    for image_id in ids:
        check_name(image_id, "image id", f"VOC split file {path}")
    return ids


def _check_layout(root: Path, check_images: bool) -> None:
    if not root.is_dir():
        raise DetectError(f"VOC data set {root}: folder not found")
    folders = ("Annotations", "JPEGImages", "ImageSets/Main")
    for sub in folders if check_images else (folders[0], folders[2]):
        if not (root / sub).is_dir():
            raise DetectError(
                f"VOC data set {root}: missing folder {sub}/ (expected Annotations/, "
                "JPEGImages/, ImageSets/Main/<split>.txt)"
            )


def _text(node: ET.Element, tag: str, xml_path: Path, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DetectError(f"annotation {xml_path}: {where}missing <{tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, xml_path: Path, where: str) -> float:
    text = _text(node, tag, xml_path, where)
    try:
        value = float(text)
    except ValueError as exc:
        raise DetectError(
            f"annotation {xml_path}: {where}<{tag}> is not a number: {text!r}"
        ) from exc
    if not math.isfinite(value):
        raise DetectError(f"annotation {xml_path}: {where}<{tag}> is not a finite number: {text!r}")
    return value


def _image_size(size: ET.Element, xml_path: Path, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` of ``<size>``: whole numbers, ``(0, 0)`` when not stated (a few real
    annotations say 0), at most ``max_pixels`` pixels in all."""
    width, height = (_number(size, tag, xml_path, "size: ") for tag in ("width", "height"))
    if not (width.is_integer() and height.is_integer() and width >= 0 and height >= 0):
        raise DetectError(
            f"annotation {xml_path}: size: <width>/<height> must be whole numbers >= 0, "
            f"got {width:g}x{height:g}"
        )
    if width * height > max_pixels:
        raise DetectError(
            f"annotation {xml_path}: size {width:g}x{height:g} is over the limit of {max_pixels} "
            "pixels (data.max_image_pixels)"
        )
    return int(width), int(height)


def _flag(node: ET.Element, tag: str, xml_path: Path, where: str) -> bool:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        return False
    text = child.text.strip()
    if text not in ("0", "1"):
        raise DetectError(f"annotation {xml_path}: {where}<{tag}> must be 0 or 1, got {text!r}")
    return text == "1"


def _image_path(
    root: Path, image_id: str, filename: str | None, available: set[str] | None
) -> Path:
    """The image file of ``image_id``; ``available`` = JPEGImages/ listing, None = do not check."""
    candidates = [filename] if filename else []
    candidates += [image_id + suffix for suffix in IMAGE_SUFFIXES]
    candidates += [image_id + suffix.upper() for suffix in IMAGE_SUFFIXES]
    if available is None:
        return root / "JPEGImages" / candidates[0]
    for name in candidates:
        if name in available:
            return root / "JPEGImages" / name
    raise DetectError(
        f"VOC data set {root}: image for {image_id!r} not found in JPEGImages/ "
        f"(looked for {candidates[0]!r})"
    )


def _fmt(value: float) -> str:
    """Shortest text that reads back to the same float32 (integers without a decimal point)."""
    return str(int(value)) if float(value).is_integer() else str(np.float32(value))


def _box_text(voc_box: Sequence[float]) -> str:
    return "(" + ", ".join(_fmt(v) for v in voc_box) + ")"


def _parse_annotation(xml_path: Path, image_id: str) -> ET.Element:
    """The root element of ``Annotations/<id>.xml``; missing or malformed is a
    :class:`DetectError` naming the file."""
    if not xml_path.is_file():
        raise DetectError(f"annotation {xml_path}: file not found (image id {image_id!r})")
    try:
        return ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise DetectError(f"annotation {xml_path}: malformed XML: {exc}") from exc


def _annotated_image_path(
    tree: ET.Element, root: Path, image_id: str, available: set[str] | None
) -> Path:
    """The image file of the annotation ``tree``: its ``<filename>``, else found by ``image_id``
    (:func:`_image_path`)."""
    filename_node = tree.find("filename")
    filename = (
        filename_node.text.strip() if filename_node is not None and filename_node.text else None
    )
    return _image_path(root, image_id, filename, available)


def read_voc_annotation(
    xml_path: Path,
    image_id: str,
    root: Path,
    class_index: Mapping[str, int],
    available_images: set[str] | None,
    strict_boxes: bool = True,
    problems: BoxProblems | None = None,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> Annotation:
    """Parse one ``Annotations/<id>.xml`` into an :class:`Annotation` (0-based continuous boxes).

    Raises:
        DetectError: naming ``xml_path`` and the bad value (malformed XML, unknown class, bad box,
            a NaN or infinite number, an image size that is not whole or over
            ``max_image_pixels``, missing image).
    """
    import torch

    from detect.ops.boxes import xyxy_from_voc
    from detect.structures import Annotation

    problems = problems or BoxProblems()
    tree = _parse_annotation(xml_path, image_id)
    path = _annotated_image_path(tree, root, image_id, available_images)
    size = tree.find("size")
    width = height = 0
    if size is not None and size.find("width") is not None:
        width, height = _image_size(size, xml_path, max_image_pixels)
    if width <= 0 or height <= 0:  # a few real annotations lack the size: take it from the image
        if available_images is None:
            raise DetectError(f"annotation {xml_path}: missing <size> (and images not checked)")
        height, width = read_image(path, max_image_pixels).shape[:2]
    boxes, labels, difficult, truncated = [], [], [], []
    for index, obj in enumerate(tree.findall("object")):
        where = f"object {index}: "
        name = _text(obj, "name", xml_path, where)
        if name not in class_index:
            raise DetectError(
                f"annotation {xml_path}: {where}unknown class {name!r}; known: {list(class_index)}"
            )
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DetectError(f"annotation {xml_path}: {where}missing <bndbox>")
        voc_box = [
            _number(bndbox, tag, xml_path, where) for tag in ("xmin", "ymin", "xmax", "ymax")
        ]
        continuous = xyxy_from_voc(torch.tensor([voc_box])).tolist()[0]
        shown = f"annotation {xml_path}: {where}box {_box_text(voc_box)} (VOC x1 y1 x2 y2)"
        box = check_box(continuous, width, height, shown, strict_boxes, problems)
        if box is None:
            continue
        boxes.append(box)
        labels.append(class_index[name])
        difficult.append(_flag(obj, "difficult", xml_path, where))
        truncated.append(_flag(obj, "truncated", xml_path, where))
    return Annotation(
        image_id=image_id,
        path=path,
        width=width,
        height=height,
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=labels,
        difficult=difficult,
        truncated=truncated,
    )


CLASS_LIST_NAME = "classes.txt"


def read_class_list(root: Path) -> tuple[str, ...]:
    """Class names from ``<root>/classes.txt`` (one per line, UTF-8 with or without a byte-order
    mark), or ``()`` when there is none; each is checked (:func:`check_class_names`)."""
    path = Path(root) / CLASS_LIST_NAME
    if not path.is_file():
        return ()
    text = read_text(path, "class list")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise DetectError(f"class list {path}: no class names in the file")
    return check_class_names(names, f"class list {path}")


def read_voc_dataset(
    root: str | Path,
    split: str,
    classes: Sequence[str] = (),
    strict_boxes: bool = True,
    check_images: bool = True,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> DetectionDataset:
    """Read one split of a VOC-layout folder.

    Args:
        root: folder with ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/<split>.txt``.
        split: split name, e.g. ``"trainval"`` or ``"test"``.
        classes: class names (label order); empty = the names listed in ``<root>/classes.txt``
            (one per line, written by :func:`write_voc_dataset`) when that file exists, else the
            20 VOC classes.
        strict_boxes: when False, boxes outside the image are *clipped* to it and boxes that are
            empty after clipping (x2 < x1, or wholly outside) are *dropped*; one warning reports
            the counts. When True (default) any such box is a :class:`DetectError`.
        check_images: require ``JPEGImages/`` and each image file (False for scoring, which needs
            only the annotations; then every XML must state its image size).
        max_image_pixels: an image size stated in an XML (or read from an image header when
            the XML has none) over this many pixels is a :class:`DetectError`.

    Returns:
        The split's annotations in split-file order, boxes 0-based continuous xyxy.
    """
    from detect.structures import DetectionDataset

    root = Path(root)
    _check_layout(root, check_images)
    class_names = tuple(classes) or read_class_list(root) or VOC_CLASSES
    check_class_names(class_names, f"VOC data set {root}")
    class_index = {name: i for i, name in enumerate(class_names)}
    ids = read_split_ids(root, split)
    available = set(os.listdir(root / "JPEGImages")) if check_images else None
    problems = BoxProblems()
    annotations = [
        read_voc_annotation(
            root / "Annotations" / f"{image_id}.xml",
            image_id,
            root,
            class_index,
            available,
            strict_boxes,
            problems,
            max_image_pixels,
        )
        for image_id in ids
    ]
    problems.report(f"VOC data set {root} split {split}")
    return DetectionDataset(
        name=root.name, root=root, split=split, class_names=class_names, annotations=annotations
    )


def read_voc_images(root: str | Path, split: str) -> list[tuple[str, Path]]:
    """``(image id, image file)`` of each image of a split, in split-file order, as
    :func:`read_voc_dataset` finds them (each annotation's ``<filename>``, else by id, in
    ``JPEGImages/``), without reading the objects.

    Raises:
        DetectError: as :func:`read_voc_dataset` for the layout, the split file, an annotation
            file missing or malformed, or an image not found.
    """
    root = Path(root)
    _check_layout(root, check_images=True)
    available = set(os.listdir(root / "JPEGImages"))
    return [
        (
            image_id,
            _annotated_image_path(
                _parse_annotation(root / "Annotations" / f"{image_id}.xml", image_id),
                root,
                image_id,
                available,
            ),
        )
        for image_id in read_split_ids(root, split)
    ]


def annotation_xml(annotation: Annotation, class_names: Sequence[str], folder: str = "") -> str:
    """The VOC XML text of one annotation (boxes written 1-based inclusive)."""
    from detect.ops.boxes import voc_from_xyxy

    node = ET.Element("annotation")
    ET.SubElement(node, "folder").text = folder
    ET.SubElement(node, "filename").text = annotation.path.name
    size = ET.SubElement(node, "size")
    ET.SubElement(size, "width").text = str(int(annotation.width))
    ET.SubElement(size, "height").text = str(int(annotation.height))
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(node, "segmented").text = "0"
    voc_boxes = voc_from_xyxy(annotation.boxes).tolist()
    for voc_box, label, difficult, truncated in zip(
        voc_boxes,
        annotation.labels.tolist(),
        annotation.difficult.tolist(),
        annotation.truncated.tolist(),
        strict=True,
    ):
        obj = ET.SubElement(node, "object")
        ET.SubElement(obj, "name").text = class_names[label]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = str(int(truncated))
        ET.SubElement(obj, "difficult").text = str(int(difficult))
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), voc_box, strict=True):
            ET.SubElement(bndbox, tag).text = _fmt(value)
    ET.indent(node)
    return ET.tostring(node, encoding="unicode") + "\n"


def write_voc_dataset(
    root: str | Path,
    class_names: Sequence[str],
    annotations_by_split: Mapping[str, Sequence[Annotation]],
) -> None:
    """Write ``Annotations/<id>.xml`` and ``ImageSets/Main/<split>.txt`` under ``root``.

    Images are not written here: the caller puts them at ``root/JPEGImages/<id>.<ext>`` (e.g. with
    :func:`detect.data.images.write_image`) and sets ``Annotation.path`` to that file; the XML
    ``<filename>`` is ``path.name``. Boxes ``(G, 4)`` 0-based continuous xyxy are written as VOC
    1-based inclusive values. ``classes.txt`` records the class names (label order) so readers
    need not be told them. Every file is written atomically.
    """
    root = Path(root)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / CLASS_LIST_NAME, "".join(f"{name}\n" for name in class_names))
    written: set[str] = set()
    for split, split_annotations in annotations_by_split.items():
        for annotation in split_annotations:
            if annotation.image_id not in written:
                atomic_write_text(
                    root / "Annotations" / f"{annotation.image_id}.xml",
                    annotation_xml(annotation, class_names, folder=root.name),
                )
                written.add(annotation.image_id)
        ids = "".join(f"{a.image_id}\n" for a in split_annotations)
        atomic_write_text(split_file(root, split), ids)
