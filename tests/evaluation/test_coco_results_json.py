"""COCO results json: the records written (by hand), and every malformed record refused."""

from __future__ import annotations

import json

import pytest
import torch

from detect.errors import DetectError
from detect.evaluation.coco_results import (
    detections_from_coco_results,
    read_coco_results,
    write_coco_results,
)
from detect.structures import Detections


def test_written_records_by_hand(tmp_path):
    dets = {
        "42": Detections(
            torch.tensor([[1.23456, 2.0, 5.5555, 9.0], [0.0, 0.0, 1.0, 1.0]]),
            torch.tensor([0.12345678, 0.5]),
            torch.tensor([1, 0]),
        ),
        "7": Detections.empty(),
    }
    path = tmp_path / "results.json"
    write_coco_results(path, dets, [3, 11])
    # bbox [x, y, w, h] rounded to 3 decimals, score to 6; labels mapped through category_ids.
    assert json.loads(path.read_text()) == [
        {"image_id": 42, "category_id": 11, "bbox": [1.235, 2.0, 4.321, 7.0], "score": 0.123457},
        {"image_id": 42, "category_id": 3, "bbox": [0.0, 0.0, 1.0, 1.0], "score": 0.5},
    ]
    with pytest.raises(
        DetectError, match=r"^detections for image 'x7': COCO image ids are integers$"
    ):
        write_coco_results(path, {"x7": dets["42"]}, [3, 11])


GOOD = {"image_id": 1, "category_id": 2, "bbox": [0, 0, 1.5, 2], "score": 0.5}


@pytest.mark.parametrize(
    "change",
    [
        {"image_id": "1"},
        {"category_id": 2.0},
        {"score": "high"},
        {"score": float("nan")},
        {"bbox": {"x": 0, "y": 0, "w": 1, "h": 1}},  # four values, but not a list
        {"bbox": [0, 0, 1]},
        {"bbox": [0, 0, 1, "2"]},
        {"bbox": [0, 0, 1, float("inf")]},
    ],
)
def test_each_malformed_field_is_refused(tmp_path, change):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([GOOD, {**GOOD, **change}]))
    with pytest.raises(DetectError, match=rf"^COCO results {path}: detection 1: expected"):
        read_coco_results(path)


def test_a_good_file_and_files_that_are_not_result_lists(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([GOOD]))
    assert read_coco_results(path) == [GOOD]
    path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(DetectError, match=rf"^COCO results {path}: expected a json list"):
        read_coco_results(path)
    path.write_text("[{")
    with pytest.raises(DetectError, match=rf"^COCO results {path}: "):
        read_coco_results(path)


def test_records_grouped_into_detections_by_hand():
    records = [
        {"image_id": 4, "category_id": 7, "bbox": [1, 2, 3, 4], "score": 0.5},
        {"image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.9},
        {"image_id": 4, "category_id": 9, "bbox": [5, 5, 5, 5], "score": 0.7},  # not asked for
        {"image_id": 4, "category_id": 1, "bbox": [2, 2, 2, 2], "score": 0.25},
    ]
    dets = detections_from_coco_results(records, [7, 1], {"2", "4", "6"}, "results.json")
    assert list(dets) == ["4", "2"]  # order of first appearance
    assert dets["4"].boxes.tolist() == [[1.0, 2.0, 4.0, 6.0], [2.0, 2.0, 4.0, 4.0]]
    assert dets["4"].scores.tolist() == [0.5, 0.25] and dets["4"].labels.tolist() == [0, 1]
    assert dets["2"].labels.tolist() == [1] and dets["2"].scores.tolist() == [pytest.approx(0.9)]
    with pytest.raises(
        DetectError, match=r"^results.json: detection 1: image 3 not in the ground truth$"
    ):
        detections_from_coco_results(
            records[:1] + [{**records[1], "image_id": 3}], [7], {"4"}, "results.json"
        )
