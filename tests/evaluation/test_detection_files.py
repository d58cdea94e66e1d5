"""Detections read from every format ``detect score`` accepts, told apart by what they hold, and
mapped onto the ground truth's classes; values checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from detect.errors import DetectError
from detect.evaluation.detection_files import DetectionsSource
from detect.evaluation.detections_json import DETECTIONS_FILE, write_detections_json
from detect.evaluation.voc_files import write_comp4
from detect.structures import Annotation, DetectionDataset, Detections

CLASSES = ("cat", "dog")


def dataset(split: str = "test") -> DetectionDataset:
    anns = [Annotation(i, Path(f"{i}.jpg"), 50, 40, [], []) for i in ("1", "2")]
    return DetectionDataset("t", Path("."), split, CLASSES, anns)


def check(got: dict[str, Detections], want: dict[str, tuple[list, list, list]]) -> None:
    assert list(got) == list(want)
    for image_id, (boxes, scores, labels) in want.items():
        torch.testing.assert_close(
            got[image_id].boxes, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        )
        torch.testing.assert_close(got[image_id].scores, torch.tensor(scores))
        assert got[image_id].labels.tolist() == labels


def test_project_json_file_and_the_folder_holding_it_map_labels_by_name(tmp_path):
    # The file's own class order is dog, cat: its label 0 is the ground truth's 1.
    dets = {"2": Detections([[1, 2, 11, 22], [0, 0, 5, 5]], [0.5, 0.25], [0, 1])}
    write_detections_json(tmp_path / "run" / DETECTIONS_FILE, dets, ("dog", "cat"))
    for path in (tmp_path / "run" / DETECTIONS_FILE, tmp_path / "run"):
        source = DetectionsSource.read(path)
        assert source.format == "detect" and source.class_names == ("dog", "cat")
        check(
            source.for_dataset(dataset(), "test"),
            {"2": ([[1, 2, 11, 22], [0, 0, 5, 5]], [0.5, 0.25], [1, 0])},
        )


def test_comp4_folder(tmp_path):
    write_comp4(tmp_path, "test", {"1": Detections([[0, 0, 10, 20]], [0.75], [1])}, CLASSES)
    source = DetectionsSource.read(tmp_path)
    assert source.format == "comp4" and source.class_names == ()
    check(source.for_dataset(dataset(), "test"), {"1": ([[0, 0, 10, 20]], [0.75], [1])})
    with pytest.raises(DetectError, match="comp4_det_val_cat.txt: not found"):
        source.for_dataset(dataset("val"), "val")


def test_coco_results_keep_only_the_asked_categories(tmp_path):
    path = tmp_path / "results.json"
    records = [
        {"image_id": 2, "category_id": 9, "bbox": [1, 2, 10, 20], "score": 0.5},
        {"image_id": 1, "category_id": 4, "bbox": [0, 0, 3, 4], "score": 0.25},
        {"image_id": 2, "category_id": 5, "bbox": [0, 0, 1, 1], "score": 0.125},  # not asked
    ]
    path.write_text("  \n" + json.dumps(records))
    source = DetectionsSource.read(path)
    assert source.format == "coco" and source.records == records
    # cat is category 4, dog 9; bbox [x, y, w, h] -> [x, y, x + w, y + h].
    check(
        source.for_dataset(dataset(), "test", category_ids=[4, 9]),
        {"2": ([[1, 2, 11, 22]], [0.5], [1]), "1": ([[0, 0, 3, 4]], [0.25], [0])},
    )
    with pytest.raises(DetectError, match="COCO results need a COCO annotations json"):
        source.for_dataset(dataset(), "test")
    records[0]["image_id"] = 7
    path.write_text(json.dumps(records))
    with pytest.raises(DetectError, match="detection 0: image 7 not in the ground truth"):
        DetectionsSource.read(path).for_dataset(dataset(), "test", category_ids=[4, 9])


def test_bad_detections_are_one_line_errors_naming_the_file(tmp_path):
    dets = {"3": Detections([[0, 0, 1, 1]], [0.5], [0])}
    write_detections_json(tmp_path / "other_image.json", dets, CLASSES)
    write_detections_json(tmp_path / "other_class.json", {"1": dets["3"]}, ("bird",))
    (tmp_path / "number.json").write_text("3")
    cases = [
        (tmp_path / "missing.json", "missing.json: not found"),
        (tmp_path / "number.json", "number.json: neither a detect-detections-v1 file nor a COCO"),
    ]
    for path, message in cases:
        with pytest.raises(DetectError, match=message):
            DetectionsSource.read(path)
    with pytest.raises(DetectError, match="other_image.json: image '3' is not in split 'test'"):
        DetectionsSource.read(tmp_path / "other_image.json").for_dataset(dataset(), "test")
    with pytest.raises(DetectError, match="other_class.json: class 'bird' is not a ground-truth"):
        DetectionsSource.read(tmp_path / "other_class.json").for_dataset(dataset(), "test")
