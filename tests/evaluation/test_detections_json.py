"""The project's detections json: the file as written (by hand), round trip, errors."""

import json

import pytest
import torch

from detect.errors import DetectError
from detect.evaluation.detections_json import read_detections_json, write_detections_json
from detect.structures import Detections

CLASSES = ("circle", "square")


def test_detections_json_as_written(tmp_path):
    dets = {"b": Detections([[1.234, 2, 30.256, 40]], [0.1234567], [1]), "a": Detections.empty()}
    write_detections_json(tmp_path / "d.json", dets, CLASSES)
    # Images in the given order, labels by name, each number the shortest decimal of its float32.
    assert json.loads((tmp_path / "d.json").read_text()) == {
        "format": "detect-detections-v1",
        "box_format": "xyxy, 0-based continuous pixels",
        "classes": ["circle", "square"],
        "images": {
            "b": [{"label": "square", "score": 0.1234567, "box": [1.234, 2, 30.256, 40]}],
            "a": [],
        },
    }
    assert list(json.loads((tmp_path / "d.json").read_text())["images"]) == ["b", "a"]


def test_detections_json_round_trip(tmp_path):
    dets = {
        "img1": Detections([[1.5, 2.0, 30.25, 40.0], [0, 0, 3, 3]], [0.9, 0.1], [1, 0]),
        "img2": Detections.empty(),
    }
    path = tmp_path / "d.json"
    write_detections_json(path, dets, CLASSES)
    names, back = read_detections_json(path)
    assert names == CLASSES
    torch.testing.assert_close(back["img1"].boxes, dets["img1"].boxes)
    torch.testing.assert_close(back["img1"].scores, dets["img1"].scores)
    assert back["img1"].labels.tolist() == [1, 0] and len(back["img2"]) == 0


def test_detections_json_errors_name_file_and_value(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("{not json")
    with pytest.raises(DetectError, match="d.json"):
        read_detections_json(path)
    path.write_text(
        json.dumps(
            {
                "format": "detect-detections-v1",
                "classes": list(CLASSES),
                "images": {"i": [{"label": "star", "score": 1, "box": [0, 0, 1, 1]}]},
            }
        )
    )
    with pytest.raises(DetectError, match=r"d.json: image i: .*'star'.*circle"):
        read_detections_json(path)
    path.write_text(json.dumps({"images": {}}))
    with pytest.raises(DetectError, match="not a detect-detections-v1"):
        read_detections_json(path)
