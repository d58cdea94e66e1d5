"""Core value types: ground-truth annotations, data sets and detections.

Box convention (the only one used inside the package): ``float32`` tensors of shape ``(N, 4)`` in
``xyxy`` order, absolute pixels, 0-based *continuous* coordinates of the image they refer to. A
pixel with 0-based index ``i`` covers ``[i, i + 1)``, so a box covering pixels 0..9 is ``(0, 0, 10,
10)``. VOC's 1-based inclusive and COCO's ``xywh`` formats are converted at the edges, by the
functions in :mod:`detect.ops.boxes`.

Labels are 0-based indices into the data set's ``class_names`` (no background entry). Classifier
heads use ``K + 1`` outputs with column 0 the background; that offset lives in the models only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from detect.errors import DetectError

BACKGROUND = "__background__"


def is_finite_number(value: object) -> bool:
    """True for an int or float (not a bool) that is neither NaN nor infinite: the only values a
    score or box coordinate read from a file may hold."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _as_boxes(boxes, what: str) -> Tensor:
    tensor = torch.as_tensor(boxes, dtype=torch.float32)
    if tensor.numel() == 0:
        return tensor.reshape(0, 4)
    if tensor.ndim != 2 or tensor.shape[1] != 4:
        raise DetectError(f"{what}: expected boxes of shape (N, 4), got {tuple(tensor.shape)}")
    return tensor


@dataclass
class Annotation:
    """Ground truth of one image.

    Attributes:
        image_id: the data set's id of the image (VOC: file stem; COCO: str(image id)).
        path: the image file.
        width, height: image size in pixels, as stored in the file (before EXIF rotation is
            applied by readers that honour it, the annotation sizes are what the boxes refer to).
        boxes: ``(G, 4)`` float32 xyxy, 0-based continuous pixels.
        labels: ``(G,)`` int64, indices into the data set's ``class_names``.
        difficult: ``(G,)`` bool; VOC ``difficult`` objects are neither counted nor penalised.
        truncated: ``(G,)`` bool; VOC ``truncated`` flag (informational).
        crowd_boxes: ``(M, 4)`` COCO ``iscrowd`` regions, kept aside (ignored in training).
    """

    image_id: str
    path: Path
    width: int
    height: int
    boxes: Tensor
    labels: Tensor
    difficult: Tensor | None = None
    truncated: Tensor | None = None
    crowd_boxes: Tensor | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.boxes = _as_boxes(self.boxes, f"annotation {self.image_id}")
        count = self.boxes.shape[0]
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64).reshape(count)
        if self.difficult is None:
            self.difficult = torch.zeros(count, dtype=torch.bool)
        self.difficult = torch.as_tensor(self.difficult, dtype=torch.bool).reshape(count)
        if self.truncated is None:
            self.truncated = torch.zeros(count, dtype=torch.bool)
        self.truncated = torch.as_tensor(self.truncated, dtype=torch.bool).reshape(count)
        if self.crowd_boxes is None:
            self.crowd_boxes = torch.zeros((0, 4), dtype=torch.float32)
        self.crowd_boxes = _as_boxes(self.crowd_boxes, f"annotation {self.image_id} crowd")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class DetectionDataset:
    """A split of a data set: class names plus one :class:`Annotation` per image, in split order."""

    name: str
    root: Path
    split: str
    class_names: tuple[str, ...]
    annotations: list[Annotation] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: int) -> Annotation:
        return self.annotations[index]

    @property
    def image_ids(self) -> list[str]:
        return [a.image_id for a in self.annotations]


@dataclass
class Detections:
    """Detections for one image.

    Attributes:
        boxes: ``(N, 4)`` float32 xyxy, 0-based continuous pixels of the original image.
        scores: ``(N,)`` float32 confidence (higher is more confident).
        labels: ``(N,)`` int64 indices into ``class_names`` (no background).
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        self.boxes = _as_boxes(self.boxes, "detections")
        count = self.boxes.shape[0]
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32).reshape(count)
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64).reshape(count)

    @classmethod
    def empty(cls) -> Detections:
        return cls(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.int64))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to_records(self, class_names: tuple[str, ...] | list[str]) -> list[dict]:
        """JSON-ready records ``{"label": name, "score": float, "box": [x1, y1, x2, y2]}``.

        Each number is the shortest decimal that reads back to the same float32, as in comp4
        files, so scoring the records gives the numbers of scoring these detections."""
        boxes, scores = self.boxes.numpy(), self.scores.numpy()
        return [
            {
                "label": class_names[int(label)],
                "score": float(str(score)),
                "box": [float(str(v)) for v in box],
            }
            for box, score, label in zip(boxes, scores, self.labels.tolist(), strict=True)
        ]

    @classmethod
    def from_records(
        cls, records: list[dict], class_names: tuple[str, ...] | list[str], where: str
    ) -> Detections:
        """Detections from json records ``{"label": name, "score": number, "box": [x1, y1, x2,
        y2]}`` (xyxy); ``where`` names the file and image in errors.

        Raises:
            DetectError: a record that is not such an object, an unknown class, or a score or box
                value that is not a finite number (NaN, infinity, a string, null).
        """
        if not isinstance(records, list):
            raise DetectError(f"{where}: expected a list of detections, got {records!r}")
        index = {name: i for i, name in enumerate(class_names)}
        boxes, scores, labels = [], [], []
        for number, record in enumerate(records):
            at = f"{where}: detection {number}"
            if not isinstance(record, dict) or not {"label", "score", "box"} <= record.keys():
                raise DetectError(f"{at}: expected label/score/box, got {record!r}")
            name, score, box = record["label"], record["score"], record["box"]
            if not isinstance(name, str) or name not in index:
                raise DetectError(f"{at}: unknown class {name!r}; known: {list(class_names)}")
            if not is_finite_number(score):
                raise DetectError(f"{at}: score must be a finite number, got {score!r}")
            if not (isinstance(box, list) and len(box) == 4 and all(map(is_finite_number, box))):
                raise DetectError(f"{at}: box must be 4 finite numbers, got {box!r}")
            boxes.append([float(v) for v in box])
            scores.append(float(score))
            labels.append(index[name])
        return cls(boxes, scores, labels)
