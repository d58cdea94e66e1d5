"""Detections given as a file or a folder, in any format ``detect score`` reads, told apart by
what they hold:

* a folder holding :data:`~detect.evaluation.detections_json.DETECTIONS_FILE` (what ``detect
  eval --out DIR`` and ``detect run --out DIR`` write): that project detections json;
* any other folder: VOC comp4 files ``comp4_det_<split>_<class>.txt``
  (:mod:`detect.evaluation.voc_files`);
* a json object: the project's detections json (:mod:`detect.evaluation.detections_json`);
* a json list: COCO results (:mod:`detect.evaluation.coco_results`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from detect.errors import DetectError
from detect.evaluation.coco_results import detections_from_coco_results, read_coco_results
from detect.evaluation.detections_json import (
    DETECTIONS_FILE,
    DETECTIONS_FORMAT,
    read_detections_json,
)
from detect.evaluation.voc_files import read_comp4
from detect.files import read_text
from detect.structures import DetectionDataset, Detections


@dataclass
class DetectionsSource:
    """Detections read from a file or folder (see the module docstring), once.

    Attributes:
        path: the file or folder as given.
        format: ``"detect"`` (the project's json), ``"comp4"`` or ``"coco"`` (COCO results).
        class_names: the class names stored with the detections (project json only, else ``()``).
        detections: image id -> :class:`Detections` labelled over ``class_names`` (project json).
        records: the COCO result records (COCO results only).
    """

    path: Path
    format: str
    class_names: tuple[str, ...] = ()
    detections: dict[str, Detections] = field(default_factory=dict, repr=False)
    records: list[dict] = field(default_factory=list, repr=False)

    @classmethod
    def read(cls, path: str | Path) -> DetectionsSource:
        """Read the detections at ``path`` (comp4 files are read by :meth:`for_dataset`, which
        knows the split and the classes).

        Raises:
            DetectError: naming the path: nothing there, a file that is neither json format, or
                the format's own reader's errors.
        """
        path = Path(path)
        if path.is_dir():
            if not (path / DETECTIONS_FILE).is_file():
                return cls(path, "comp4")
            class_names, detections = read_detections_json(path / DETECTIONS_FILE)
            return cls(path, "detect", class_names, detections)
        if not path.exists():
            raise DetectError(f"detections {path}: not found")
        start = read_text(path, "detections").lstrip()[:1]
        if start == "[":
            return cls(path, "coco", records=read_coco_results(path))
        if start == "{":
            class_names, detections = read_detections_json(path)
            return cls(path, "detect", class_names, detections)
        raise DetectError(
            f"detections {path}: neither a {DETECTIONS_FORMAT} file nor a COCO results list"
        )

    def for_dataset(
        self, dataset: DetectionDataset, split: str, category_ids: list[int] | None = None
    ) -> dict[str, Detections]:
        """The detections as image id -> :class:`Detections` labelled over
        ``dataset.class_names`` (mapped by class name from a project json's own class list).

        Args:
            split: the split named in comp4 file names.
            category_ids: the COCO category of each of ``dataset``'s labels; needed for COCO
                results (records of other categories are left out).

        Raises:
            DetectError: an image that is not in ``dataset``, a class of the file that is not one
                of ``dataset``'s, COCO results without ``category_ids``, or a comp4 reading error.
        """
        image_ids = set(dataset.image_ids)
        if self.format == "comp4":
            return read_comp4(self.path, split, dataset.class_names, image_ids)
        if self.format == "coco":
            if category_ids is None:
                raise DetectError(
                    f"detections {self.path}: COCO results need a COCO annotations json as the "
                    "ground truth"
                )
            return detections_from_coco_results(
                self.records, category_ids, image_ids, f"detections {self.path}"
            )
        unknown = [image_id for image_id in self.detections if image_id not in image_ids]
        if unknown:
            raise DetectError(
                f"detections {self.path}: image {unknown[0]!r} is not in split {dataset.split!r}"
            )
        index = {name: i for i, name in enumerate(dataset.class_names)}
        missing = [name for name in self.class_names if name not in index]
        if missing:
            raise DetectError(
                f"detections {self.path}: class {missing[0]!r} is not a ground-truth class; "
                f"known: {list(dataset.class_names)}"
            )
        mapping = [index[name] for name in self.class_names]
        return {
            image_id: Detections(d.boxes, d.scores, [mapping[int(la)] for la in d.labels])
            for image_id, d in self.detections.items()
        }
