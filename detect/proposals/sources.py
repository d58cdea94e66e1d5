"""What ``detect proposals --data PATH`` points at: a VOC folder, a COCO json, a folder of images or
a ``.txt`` list of image paths, turned into :class:`ImageItem` s (and the data set, when annotated)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from detect.config import DataConfig
from detect.data.images import IMAGE_SUFFIXES
from detect.errors import DetectError
from detect.files import read_text
from detect.proposals.compute import ImageItem, items_from_dataset

if TYPE_CHECKING:
    from detect.structures import DetectionDataset


def items_with_unique_ids(paths: list[Path], where: str | Path) -> list[ImageItem]:
    """One item per path, the id being the file stem; two paths with the same stem are a
    :class:`DetectError` naming both (``where`` says whose list it is)."""
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise DetectError(
                f"{where}: images {seen[path.stem]} and {path} share the id {path.stem!r}"
            )
        seen[path.stem] = path
    return [ImageItem(stem, path) for stem, path in seen.items()]


def items_from_folder(folder: str | Path) -> list[ImageItem]:
    """Images directly in ``folder`` (by suffix, sorted by name); the id is the file stem."""
    folder = Path(folder)
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DetectError(f"image folder {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return items_with_unique_ids(paths, folder)


def items_from_list(list_file: str | Path) -> list[ImageItem]:
    """Image paths one per line (relative to the list's folder; blank lines and ``#`` comments
    ignored); the id is the file stem."""
    list_file = Path(list_file)
    lines = read_text(list_file, "image list").splitlines()
    names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise DetectError(f"image list {list_file}: no image paths")
    return items_with_unique_ids([list_file.parent / name for name in names], list_file)


def is_voc_folder(data: Path) -> bool:
    """A folder with ``Annotations/`` or ``ImageSets/`` (the VOC layout)."""
    return data.is_dir() and ((data / "Annotations").is_dir() or (data / "ImageSets").is_dir())


def is_annotated(data: str | Path) -> bool:
    """``data`` is a VOC folder or a COCO ``.json`` file (a data set with boxes)."""
    data = Path(data)
    return is_voc_folder(data) or (data.suffix.lower() == ".json" and data.is_file())


def resolve_images(
    data: str | Path, split: str, data_cfg: DataConfig, annotations: bool = True
) -> tuple[list[ImageItem], DetectionDataset | None]:
    """Images named by ``data`` and, for a VOC folder or COCO json, the annotated data set (used
    for recall). Folders with ``Annotations/`` or ``ImageSets/`` are VOC; other folders are read
    as plain image folders. ``annotations=False`` lists a VOC split's images without reading
    their objects (nor importing torch), and gives no data set."""
    data = Path(data)
    if is_voc_folder(data) and not annotations:
        from detect.data.voc import read_voc_images

        return [ImageItem(image_id, path) for image_id, path in read_voc_images(data, split)], None
    if is_annotated(data):
        from detect.data import load_dataset

        dataset = load_dataset(
            data,
            split,
            data_cfg.classes,
            data_cfg.image_dir,
            data_cfg.strict_boxes,
            max_image_pixels=data_cfg.max_image_pixels,
        )
        return items_from_dataset(dataset), dataset
    if data.is_dir():
        return items_from_folder(data), None
    if data.suffix.lower() == ".txt" and data.is_file():
        return items_from_list(data), None
    raise DetectError(
        f"--data {data}: not a VOC folder, COCO .json, image folder or .txt list of images"
        + ("" if data.exists() else " (path does not exist)")
    )
