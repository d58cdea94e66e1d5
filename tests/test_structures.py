"""Core types: validation, detections json round trip and its errors."""

import json

import pytest
import torch

from detect.errors import DetectError
from detect.evaluation.detections_json import read_detections_json, write_detections_json
from detect.structures import Annotation, Detections

CLASSES = ("circle", "square")


def test_annotation_defaults_and_shapes():
    ann = Annotation("a", "x.jpg", 10, 20, [[0, 0, 5, 5]], [1])
    assert ann.boxes.dtype == torch.float32 and ann.boxes.shape == (1, 4)
    assert ann.difficult.tolist() == [False] and ann.crowd_boxes.shape == (0, 4)
    assert len(Annotation("b", "y.jpg", 10, 20, [], [])) == 0


def test_bad_box_shape_is_a_clear_error():
    with pytest.raises(DetectError, match=r"annotation a.*\(1, 3\)"):
        Annotation("a", "x.jpg", 10, 20, [[0, 0, 5]], [1])


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
