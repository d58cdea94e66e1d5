"""COCO reader, results json and the COCOeval bridge against pycocotools used directly."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.data import load_dataset
from detect.data.coco import load_coco
from detect.errors import DetectError
from detect.evaluation.coco import STAT_NAMES, evaluate_coco
from detect.evaluation.coco_results import read_coco_results, write_coco_results
from detect.ops.boxes import xywh_from_xyxy, xyxy_from_xywh
from detect.structures import Detections

# Category ids deliberately unsorted and non-contiguous: labels follow sorted ids 1, 3, 7.
CATEGORIES = [{"id": 7, "name": "zebra"}, {"id": 1, "name": "apple"}, {"id": 3, "name": "cup"}]


def make_coco(tmp_path, num_images=6, seed=0, write_images=True):
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(num_images):
        image_id = 100 + i
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 200, "height": 150})
        if write_images:
            (tmp_path / f"{image_id}.jpg").write_bytes(b"x")
        for _ in range(int(rng.integers(1, 6))):
            x, y = float(rng.integers(0, 150)), float(rng.integers(0, 100))
            w, h = float(rng.integers(2, 200 - x + 1)), float(rng.integers(2, 150 - y + 1))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.choice([1, 3, 7])),
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": int(rng.random() < 0.15),
                }
            )
    payload = {"images": images, "annotations": anns, "categories": CATEGORIES}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(payload))
    return path, payload


def test_reader_labels_boxes_and_crowd(tmp_path):
    path, payload = make_coco(tmp_path)
    ds = load_dataset(path, "val")
    assert ds.class_names == ("apple", "cup", "zebra")
    assert ds.image_ids == [str(im["id"]) for im in payload["images"]]
    label_of = {1: 0, 3: 1, 7: 2}
    for ann in ds.annotations:
        raw = [a for a in payload["annotations"] if str(a["image_id"]) == ann.image_id]
        plain = [a for a in raw if not a["iscrowd"]]
        crowd = [a for a in raw if a["iscrowd"]]
        # xyxy by hand: (x, y, x + w, y + h)
        want = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in plain)]
        torch.testing.assert_close(ann.boxes, torch.tensor(want).reshape(-1, 4))
        assert ann.labels.tolist() == [label_of[a["category_id"]] for a in plain]
        want_crowd = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in crowd)]
        torch.testing.assert_close(ann.crowd_boxes, torch.tensor(want_crowd).reshape(-1, 4))
        assert ann.path == tmp_path / f"{ann.image_id}.jpg" and ann.width == 200


def test_reader_class_subset_and_errors(tmp_path):
    path, _ = make_coco(tmp_path)
    ds = load_dataset(path, "val", classes=("zebra", "apple"))
    assert ds.class_names == ("zebra", "apple")
    payload = json.loads(path.read_text())
    label_of = {7: 0, 1: 1}  # the order asked for; cup (3) left out
    for ann in ds.annotations:
        kept = [
            a
            for a in payload["annotations"]
            if str(a["image_id"]) == ann.image_id and not a["iscrowd"] and a["category_id"] != 3
        ]
        assert ann.labels.tolist() == [label_of[a["category_id"]] for a in kept]
        want = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in kept)]
        torch.testing.assert_close(ann.boxes, torch.tensor(want).reshape(-1, 4))
    with pytest.raises(DetectError, match="unknown class 'dog'.*apple"):
        load_dataset(path, "val", classes=("dog",))
    (tmp_path / "101.jpg").unlink()
    with pytest.raises(DetectError, match="101.jpg"):
        load_dataset(path, "val")


def test_reader_bad_box(tmp_path, caplog):
    path, payload = make_coco(tmp_path)
    payload["annotations"][0]["bbox"] = [190.0, 10.0, 20.0, 5.0]  # x2 = 210 > width 200
    payload["annotations"][1]["bbox"] = [10.0, 10.0, -3.0, 5.0]  # negative width
    path.write_text(json.dumps(payload))
    with pytest.raises(DetectError, match=r"annotation id 1 .*\[190.0, 10.0, 20.0, 5.0\].*outside"):
        load_dataset(path, "val")
    ds = load_dataset(path, "val", strict_boxes=False)
    assert "1 boxes clipped" in caplog.text and "1 dropped" in caplog.text
    assert len(ds) == 6
    path.write_text("{not json")
    with pytest.raises(DetectError, match="instances.json"):
        load_dataset(path, "val")


def test_xywh_round_trip():
    boxes = torch.tensor([[1.5, 2.0, 11.5, 22.0], [0.0, 0.0, 3.0, 4.0]])
    torch.testing.assert_close(
        xywh_from_xyxy(boxes), torch.tensor([[1.5, 2, 10, 20], [0, 0, 3, 4]])
    )
    torch.testing.assert_close(xyxy_from_xywh(xywh_from_xyxy(boxes)), boxes)


def random_detections(payload, seed):
    """Half-pixel boxes near the ground truths plus random ones (exact after rounding)."""
    rng = np.random.default_rng(seed)
    label_of = {1: 0, 3: 1, 7: 2}
    out = {}
    for image in payload["images"]:
        boxes, scores, labels = [], [], []
        for ann in payload["annotations"]:
            if ann["image_id"] != image["id"]:
                continue
            x, y, w, h = ann["bbox"]
            for _ in range(int(rng.integers(0, 3))):
                jitter = rng.integers(-6, 7, 4) / 2
                boxes.append([x + jitter[0], y + jitter[1], x + w + jitter[2], y + h + jitter[3]])
                scores.append(float(rng.integers(1, 1000)) / 1000)
                labels.append(label_of[ann["category_id"]] if rng.random() < 0.8 else 0)
        out[str(image["id"])] = Detections(
            torch.tensor(boxes).reshape(-1, 4), scores, torch.tensor(labels, dtype=torch.int64)
        )
    return out


def pycocotools_stats(gt_path, records):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        evaluator = COCOeval(gt, gt.loadRes(records), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def records_by_hand(dets: dict) -> list[dict]:
    """COCO result records of ``dets`` ({image id: Detections}, labels 0, 1, 2 of categories 1, 3
    and 7), written by hand: bbox [x1, y1, x2 - x1, y2 - y1], integer image ids."""
    cat_of = {0: 1, 1: 3, 2: 7}
    return [
        {
            "image_id": int(image_id),
            "category_id": cat_of[int(label)],
            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            "score": float(s),
        }
        for image_id, d in dets.items()
        for b, s, label in zip(d.boxes.tolist(), d.scores.tolist(), d.labels, strict=True)
    ]


@pytest.mark.parametrize("seed", [0, 1])
def test_evaluate_coco_matches_pycocotools(tmp_path, seed):
    gt_path, payload = make_coco(tmp_path, num_images=8, seed=seed)
    dets = random_detections(payload, seed)
    records = records_by_hand(dets)
    want = pycocotools_stats(gt_path, records)
    got = evaluate_coco(dets, gt_path)
    assert list(got) == list(STAT_NAMES)
    np.testing.assert_allclose([got[n] for n in STAT_NAMES], want, atol=1e-6)
    assert got["AP50"] > 0.1  # the test data really exercises matching
    # Through the results json and the dataset object: the same numbers.
    results = tmp_path / "results.json"
    write_coco_results(results, dets, [1, 3, 7])
    read = read_coco_results(results)
    assert len(read) == len(records) and all(isinstance(r["image_id"], int) for r in read)
    again = evaluate_coco(read, load_dataset(gt_path, "val"))
    np.testing.assert_allclose([again[n] for n in STAT_NAMES], want, atol=1e-6)
    # With the json already loaded (as `detect eval --metric coco` passes it): the same numbers.
    preloaded = evaluate_coco(dets, gt_path, coco_gt=load_coco(gt_path))
    np.testing.assert_allclose([preloaded[n] for n in STAT_NAMES], want, atol=1e-6)


@pytest.mark.parametrize("classes", [("zebra", "apple"), ("cup",), ("cup", "zebra", "apple")])
def test_evaluate_coco_on_a_class_subset_and_order(tmp_path, classes):
    gt_path, payload = make_coco(tmp_path, num_images=8, seed=1)
    by_name = {c["name"]: c["id"] for c in CATEGORIES}
    wanted = [by_name[name] for name in classes]  # label i is the category of classes[i]
    rng = np.random.default_rng(5)
    dets, records = {}, []
    for image in payload["images"]:
        boxes, scores, labels = [], [], []
        for ann in payload["annotations"]:
            if ann["image_id"] != image["id"] or ann["category_id"] not in wanted:
                continue
            x, y, w, h = ann["bbox"]
            for _ in range(2):
                jitter = rng.integers(-6, 7, 4) / 2
                box = [x + jitter[0], y + jitter[1], x + w + jitter[2], y + h + jitter[3]]
                label = wanted.index(ann["category_id"])
                if rng.random() < 0.3:  # a wrong label now and then
                    label = int(rng.integers(0, len(classes)))
                score = float(rng.integers(1, 1000)) / 1000
                boxes.append(box)
                scores.append(score)
                labels.append(label)
                records.append(
                    {
                        "image_id": image["id"],
                        "category_id": wanted[label],
                        "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                        "score": score,
                    }
                )
        dets[str(image["id"])] = Detections(
            torch.tensor(boxes).reshape(-1, 4), scores, torch.tensor(labels, dtype=torch.int64)
        )
    # pycocotools by hand, restricted to the chosen categories.
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        evaluator = COCOeval(gt, gt.loadRes(records), "bbox")
        evaluator.params.catIds = sorted(wanted)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    want = evaluator.stats
    assert want[1] > 0.1  # AP50: the detections really match
    got = evaluate_coco(dets, gt_path, classes)
    np.testing.assert_allclose([got[n] for n in STAT_NAMES], want, atol=1e-6)
    dataset = load_dataset(gt_path, "val", classes=classes)
    again = evaluate_coco(dets, dataset)
    np.testing.assert_allclose([again[n] for n in STAT_NAMES], want, atol=1e-6)


def test_evaluate_coco_empty_and_bad(tmp_path):
    gt_path, _ = make_coco(tmp_path)
    stats = evaluate_coco({}, gt_path)
    assert stats["AP"] == 0.0 and stats["AR100"] == 0.0
    with pytest.raises(DetectError, match="image 5 is not in"):
        evaluate_coco(
            [{"image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}], gt_path
        )
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": "x", "category_id": 1, "bbox": [0, 0], "score": 1}]))
    with pytest.raises(DetectError, match="bad.json: detection 0"):
        read_coco_results(bad)


def test_evaluate_coco_leaves_the_callers_records_alone_and_names_bad_categories(tmp_path):
    gt_path, payload = make_coco(tmp_path)
    ann = payload["annotations"][0]
    records = [{"image_id": ann["image_id"], "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]
    before = json.dumps(records)
    evaluate_coco(records, gt_path)  # pycocotools adds keys to the records it loads
    assert json.dumps(records) == before
    records[0]["category_id"] = 99
    with pytest.raises(DetectError, match=rf"^detection 0: category_id 99 is not in {gt_path}$"):
        evaluate_coco(records, gt_path)
