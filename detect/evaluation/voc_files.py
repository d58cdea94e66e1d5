"""VOC comp4 detection files: ``comp4_det_<split>_<class>.txt``, one per class.

Each line is ``image_id score x1 y1 x2 y2`` with the box in VOC 1-based inclusive pixel indices
(converted with :func:`detect.ops.boxes.voc_from_xyxy` / :func:`detect.ops.boxes.xyxy_from_voc`).
Numbers are written as the shortest text that reads back to the same float32.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from detect.data.names import check_name
from detect.errors import DetectError
from detect.files import atomic_write_text, read_text
from detect.ops.boxes import voc_from_xyxy, xyxy_from_voc
from detect.structures import Detections


def comp4_path(directory: str | Path, split: str, class_name: str) -> Path:
    """``directory/comp4_det_<split>_<class_name>.txt``; a split or class name that is not a plain
    file-name part (:func:`detect.data.names.check_name`) is a :class:`DetectError`, so the file
    is always inside ``directory``."""
    where = f"comp4 files in {directory}"
    check_name(split, "split", where)
    check_name(class_name, "class name", where)
    return Path(directory) / f"comp4_det_{split}_{class_name}.txt"


def write_comp4(
    out_dir: str | Path,
    split: str,
    detections: Mapping[str, Detections],
    class_names: Sequence[str],
) -> list[Path]:
    """Write one comp4 file per class (also for classes without detections), atomically.

    Args:
        detections: image id -> :class:`Detections` (boxes ``(N, 4)`` xyxy 0-based continuous).
        class_names: label order of ``Detections.labels``.

    Returns:
        The written paths, in class order. Lines follow the order of ``detections`` and, within an
        image, the detections' order.
    """
    paths = [comp4_path(out_dir, split, name) for name in class_names]  # every name checked first
    lines: list[list[str]] = [[] for _ in class_names]
    for image_id, dets in detections.items():
        if len(dets) == 0:
            continue
        voc = voc_from_xyxy(dets.boxes).numpy().astype(np.float32)
        scores = dets.scores.numpy().astype(np.float32)
        for label, score, box in zip(dets.labels.tolist(), scores, voc, strict=True):
            numbers = " ".join(str(v) for v in (score, *box))
            lines[label].append(f"{image_id} {numbers}\n")
    for path, class_lines in zip(paths, lines, strict=True):
        atomic_write_text(path, "".join(class_lines))
    return paths


def read_comp4(
    in_dir: str | Path,
    split: str,
    class_names: Sequence[str],
    image_ids: Collection[str] | None = None,
) -> dict[str, Detections]:
    """Read the comp4 files of every class in ``class_names`` from ``in_dir``.

    Args:
        image_ids: the split's image ids; a detection for any other image is an error. ``None``
            accepts any image id.

    Returns:
        image id -> :class:`Detections` (boxes xyxy 0-based continuous), images in order of first
        appearance (class files read in ``class_names`` order), lines in file order.

    Raises:
        DetectError: a missing class file, or a malformed line / unknown image, naming the file and
            line number.
    """
    known = set(image_ids) if image_ids is not None else None
    order: dict[str, int] = {}  # image id -> index of first appearance
    image_index, values, labels = [], [], []
    for label, name in enumerate(class_names):
        path = comp4_path(in_dir, split, name)
        if not path.is_file():
            raise DetectError(f"comp4 file {path}: not found (class {name!r}, split {split!r})")
        for number, line in enumerate(read_text(path, "comp4 file").splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"comp4 file {path} line {number}"
            if len(fields) != 6:
                raise DetectError(f"{where}: expected 'image_id score x1 y1 x2 y2', got {line!r}")
            try:
                numbers = [float(v) for v in fields[1:]]
            except ValueError as exc:
                raise DetectError(f"{where}: not a number in {line!r}") from exc
            if not all(map(math.isfinite, numbers)):
                raise DetectError(f"{where}: non-finite value in {line!r}")
            image_id = fields[0]
            if known is not None and image_id not in known:
                raise DetectError(f"{where}: image {image_id!r} is not in split {split!r}")
            image_index.append(order.setdefault(image_id, len(order)))
            values.append(numbers)
            labels.append(label)
    table = torch.tensor(values, dtype=torch.float32).reshape(-1, 5)
    boxes, scores = xyxy_from_voc(table[:, 1:]), table[:, 0]
    label_tensor = torch.tensor(labels, dtype=torch.int64)
    # Group by image (stable: class files in order, then line order within each file).
    by_image = torch.tensor(image_index, dtype=torch.int64)
    sort = torch.sort(by_image, stable=True).indices
    counts = torch.bincount(by_image, minlength=len(order)).tolist()
    chunks = zip(
        order,
        boxes[sort].split(counts),
        scores[sort].split(counts),
        label_tensor[sort].split(counts),
        strict=True,
    )
    return {image_id: Detections(b, s, la) for image_id, b, s, la in chunks}
