"""COCO reader fields from a hand-written instances json: names, split, sizes, image folder,
iscrowd defaults, skipped categories, and the exact error messages."""

from __future__ import annotations

import json
import re

import pytest
import torch

from detect.data.coco import coco_categories, load_coco, read_coco_dataset
from detect.errors import DetectError

CATEGORIES = [{"id": 5, "name": "cup"}, {"id": 2, "name": "dog"}]


def instances(tmp_path, annotations, images=None, name="val2017.json"):
    if images is None:
        images = [{"id": 9, "file_name": "9.jpg", "width": 640, "height": 480}]
    for image in images:
        (tmp_path / image["file_name"]).write_bytes(b"x")
    for index, ann in enumerate(annotations, start=1):
        ann.setdefault("id", index)
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])
    path = tmp_path / name
    payload = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    path.write_text(json.dumps(payload))
    return path


def test_fields_by_hand(tmp_path):
    anns = [
        {"image_id": 9, "category_id": 5, "bbox": [0.1, 0.2, 10.3, 20.4]},  # no iscrowd: a box
        {"image_id": 9, "category_id": 2, "bbox": [1, 2, 3, 4], "iscrowd": 0},
        {"image_id": 9, "category_id": 5, "bbox": [5, 5, 5, 5], "iscrowd": 1},
        {"image_id": 9, "category_id": 2, "bbox": [100, 100, 50, 60]},
    ]
    path = instances(tmp_path, anns)
    ds = read_coco_dataset(path)
    assert (ds.name, ds.split, ds.root) == ("val2017", "val2017", path)
    assert read_coco_dataset(path, split="minival").split == "minival"
    (ann,) = ds.annotations
    assert (ann.image_id, ann.width, ann.height) == ("9", 640, 480)
    assert ann.path == tmp_path / "9.jpg"
    assert ds.class_names == ("dog", "cup")  # sorted by category id: 2, 5
    assert ann.labels.tolist() == [1, 0, 0]
    expected = torch.tensor([[0.1, 0.2, 10.4, 20.6], [1, 2, 4, 6], [100, 100, 150, 160]])
    assert ann.boxes.dtype == torch.float32 and ann.crowd_boxes.dtype == torch.float32
    torch.testing.assert_close(ann.boxes, expected)
    assert ann.crowd_boxes.tolist() == [[5.0, 5.0, 10.0, 10.0]]


def test_a_class_subset_skips_other_categories_wherever_they_are(tmp_path):
    anns = [
        {"image_id": 9, "category_id": 5, "bbox": [0, 0, 4, 4]},
        {"image_id": 9, "category_id": 2, "bbox": [1, 1, 4, 4]},
        {"image_id": 9, "category_id": 5, "bbox": [2, 2, 4, 4]},
        {"image_id": 9, "category_id": 2, "bbox": [3, 3, 700, 4]},  # outside: clipped
        {"image_id": 9, "category_id": 2, "bbox": [3, 3, 0, 4]},  # empty: dropped
        {"image_id": 9, "category_id": 2, "bbox": [4, 4, 4, 4]},
    ]
    path = instances(tmp_path, anns)
    (ann,) = read_coco_dataset(path, classes=("dog",), strict_boxes=False).annotations
    assert ann.boxes.tolist() == [
        [1.0, 1.0, 5.0, 5.0],
        [3.0, 3.0, 640.0, 7.0],
        [4.0, 4.0, 8.0, 8.0],
    ]
    with pytest.raises(DetectError, match="outside"):
        read_coco_dataset(path, classes=("dog",))  # strict by default


def test_images_from_another_folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    path = instances(tmp_path, [{"image_id": 9, "category_id": 2, "bbox": [1, 1, 2, 2]}])
    (tmp_path / "9.jpg").unlink()
    (images / "9.jpg").write_bytes(b"x")
    assert read_coco_dataset(path, image_dir=images).annotations[0].path == images / "9.jpg"
    with pytest.raises(DetectError) as info:
        read_coco_dataset(path)
    assert str(info.value) == (
        f"COCO annotations {path}: image 9 file {tmp_path / '9.jpg'} not found "
        "(set image_dir to the image folder)"
    )


def test_error_messages(tmp_path):
    path = instances(tmp_path, [{"image_id": 9, "category_id": 2, "bbox": [1, 1, 2, 2]}])
    with pytest.raises(
        DetectError,
        match=re.escape(f"COCO annotations {path}: unknown class 'cat'; known: ['dog', 'cup']"),
    ):
        read_coco_dataset(path, classes=("cat",))
    empty = instances(tmp_path, [], images=[], name="empty.json")
    with pytest.raises(
        DetectError,
        match="^" + re.escape(f"COCO annotations {empty}: empty split (no images)") + "$",
    ):
        read_coco_dataset(empty)


def test_the_pixel_limit_reaches_the_reader(tmp_path):
    path = instances(tmp_path, [{"image_id": 9, "category_id": 2, "bbox": [1, 1, 2, 2]}])
    assert len(read_coco_dataset(path, max_image_pixels=640 * 480)) == 1
    with pytest.raises(DetectError, match="640x480"):
        read_coco_dataset(path, max_image_pixels=640 * 480 - 1)


def test_loading_is_quiet_and_errors_name_the_file(tmp_path, capsys):
    path = instances(tmp_path, [{"image_id": 9, "category_id": 2, "bbox": [1, 1, 2, 2]}])
    coco = load_coco(path)
    assert capsys.readouterr().out == ""  # pycocotools' index messages are not printed
    with pytest.raises(
        DetectError, match=r"^COCO annotations: unknown class 'cat'; known: \['dog', 'cup'\]$"
    ):
        coco_categories(coco, ("cat",))
    path.write_text("{not json")
    with pytest.raises(DetectError, match="^" + re.escape(f"COCO annotations {path}: ")):
        load_coco(path)
    path.write_text(json.dumps({"images": [], "categories": CATEGORIES}))
    with pytest.raises(DetectError, match=re.escape(str(path))):
        load_coco(path)
