"""`detect score` end to end on a tiny VOC folder and a tiny COCO json, and on the folder that
`detect run` wrote."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from _tiny_model import save_tiny_checkpoint
from _voc_devkit import brute_voc_eval

from detect.cli import main
from detect.data.images import write_image
from detect.data.voc import write_voc_dataset
from detect.evaluation.coco import STAT_NAMES
from detect.evaluation.coco_results import write_coco_results
from detect.evaluation.detections_json import write_detections_json
from detect.evaluation.voc_files import comp4_path, write_comp4
from detect.structures import Annotation, Detections

CLASSES = ("a", "b", "c")


@pytest.fixture
def voc(tmp_path):
    """Ground truth and detections of the hand-worked case in test_voc_ap.py."""
    root = tmp_path / "voc"
    gt = Annotation(
        "1",
        root / "JPEGImages" / "1.jpg",
        100,
        100,
        [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]],
        [0, 0, 0, 1],
        [False, False, True, False],
    )
    other = Annotation("2", root / "JPEGImages" / "2.jpg", 100, 100, [], [])
    write_voc_dataset(root, CLASSES, {"test": [gt, other]})
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [40, 40, 50, 50], [80, 80, 90, 90], [20, 20, 30, 30]]
    dets = {"1": Detections(boxes, [0.9, 0.8, 0.7, 0.6, 0.5], [0, 0, 0, 0, 0])}
    return root, dets


def run_score(tmp_path, *args) -> tuple[int, dict | None]:
    out = tmp_path / "scores.json"
    status = main(["score", *map(str, args), "--json", str(out)])
    return status, json.loads(out.read_text()) if out.exists() else None


def test_comp4_voc07_and_voc10(tmp_path, voc, capsys):
    root, dets = voc
    write_comp4(tmp_path / "comp4", "test", dets, CLASSES)
    args = [
        "--gt",
        root,
        "--split",
        "test",
        "--detections",
        tmp_path / "comp4",
        "--classes",
        *CLASSES,
    ]
    status, scores = run_score(tmp_path, *args)
    assert status == 0 and scores["metric"] == "voc07"
    # Class a: 8.5 / 11 (worked out in test_voc_ap.py); b: 0 (no detections); c: no GT -> null.
    assert scores["ap"]["a"] == pytest.approx(8.5 / 11) and scores["ap"]["b"] == 0.0
    assert scores["ap"]["c"] is None and scores["mAP"] == pytest.approx(8.5 / 22)
    printed = capsys.readouterr().out
    assert "mean" in printed and "0.7727" in printed
    status, scores = run_score(tmp_path, *args, "--metric", "voc10")
    assert status == 0 and scores["ap"]["a"] == pytest.approx(0.75)
    # The Python tools' 11 thresholds: the same here (recall is never exactly 0.6 or 0.7).
    status, scores = run_score(tmp_path, *args, "--metric", "voc07_numpy")
    assert status == 0 and scores["metric"] == "voc07_numpy"
    assert scores["ap"]["a"] == pytest.approx(8.5 / 11)


def test_project_detections_json(tmp_path, voc):
    root, dets = voc
    path = tmp_path / "dets.json"
    # The file's own class order differs from the ground truth's: labels are mapped by name.
    reordered = {k: Detections(d.boxes, d.scores, 2 - d.labels) for k, d in dets.items()}
    write_detections_json(path, reordered, ("c", "b", "a"))
    status, scores = run_score(tmp_path, "--gt", root, "--detections", path, "--classes", *CLASSES)
    assert status == 0 and scores["ap"]["a"] == pytest.approx(8.5 / 11)


def test_bad_detection_files_exit_2(tmp_path, voc, capsys):
    root, dets = voc
    write_comp4(tmp_path / "comp4", "test", dets, CLASSES)
    comp4_path(tmp_path / "comp4", "test", "b").write_text("1 0.5 1 1 5\n")
    status, _ = run_score(
        tmp_path, "--gt", root, "--detections", tmp_path / "comp4", "--classes", *CLASSES
    )
    err = capsys.readouterr().err
    assert status == 2 and "comp4_det_test_b.txt line 1" in err
    comp4_path(tmp_path / "comp4", "test", "b").write_text("9 0.5 1 1 5 5\n")
    status, _ = run_score(
        tmp_path, "--gt", root, "--detections", tmp_path / "comp4", "--classes", *CLASSES
    )
    assert status == 2 and "image '9' is not in split 'test'" in capsys.readouterr().err
    status, _ = run_score(tmp_path, "--gt", root, "--split", "val", "--detections", tmp_path)
    assert status == 2 and "val.txt" in capsys.readouterr().err


def test_coco_results(tmp_path):
    images = [{"id": 1, "file_name": "1.jpg", "width": 50, "height": 50}]
    anns = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 5,
            "bbox": [0, 0, 10, 10],
            "area": 100,
            "iscrowd": 0,
        }
    ]
    gt = Path(tmp_path / "gt.json")
    gt.write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 5, "name": "x"}]})
    )
    results = tmp_path / "res.json"
    write_coco_results(results, {"1": Detections([[0, 0, 10, 10]], [0.9], [0])}, [5])
    status, scores = run_score(tmp_path, "--gt", gt, "--detections", results)
    assert status == 0 and scores["metric"] == "coco"
    assert list(scores["stats"]) == list(STAT_NAMES)
    # One perfect detection: AP 1 at every IoU; no small/large objects -> -1 (pycocotools).
    assert scores["mAP"] == pytest.approx(1.0) and scores["stats"]["APm"] == -1.0
    assert scores["stats"]["APs"] == pytest.approx(1.0)
    status, scores = run_score(tmp_path, "--gt", gt, "--detections", results, "--metric", "voc07")
    assert status == 0 and scores["ap"]["x"] == pytest.approx(1.0)
    assert not math.isnan(scores["mAP"])


def test_binary_and_misplaced_files_are_one_line_errors(tmp_path, voc, capsys):
    root, dets = voc
    good = tmp_path / "dets.json"
    write_detections_json(good, dets, CLASSES)
    (tmp_path / "binary.json").write_bytes(bytes(range(128, 256)))
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "folder").mkdir()
    gt = ["score", "--gt", str(root), "--classes", *CLASSES]
    cases = [
        (["--detections", str(tmp_path / "binary.json")], "binary.json: not a text file"),
        (["--detections", str(good), "--json", str(tmp_path / "folder")], "folder: it is a"),
        (["--detections", str(good), "--json", str(tmp_path / "a_file" / "s.json")], "a_file is"),
    ]
    for args, message in cases:
        assert main([*gt, *args]) == 2, args
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]
        assert "detect score: error: " in last and message in last and "Traceback" not in err
    coco_gt = ["score", "--gt", str(tmp_path / "binary.json"), "--detections", str(good)]
    assert main(coco_gt) == 2
    assert "COCO annotations" in capsys.readouterr().err


def test_class_names_come_from_the_detections_file_without_classes_txt(tmp_path, voc):
    root, dets = voc
    path = tmp_path / "dets.json"
    reordered = {k: Detections(d.boxes, d.scores, 2 - d.labels) for k, d in dets.items()}
    write_detections_json(path, reordered, ("c", "b", "a"))
    # classes.txt is the ground truth's own list: it wins over the file's, and sets the order.
    status, scores = run_score(tmp_path, "--gt", root, "--detections", path)
    assert status == 0 and list(scores["ap"]) == ["a", "b", "c"]
    assert scores["ap"]["a"] == pytest.approx(8.5 / 11) and scores["ap"]["b"] == 0.0
    (root / "classes.txt").unlink()
    # Without it, the file's list (not VOC's 20 classes, which do not name a, b, c).
    status, scores = run_score(tmp_path, "--gt", root, "--detections", path)
    assert status == 0 and list(scores["ap"]) == ["c", "b", "a"]
    assert scores["ap"]["a"] == pytest.approx(8.5 / 11) and scores["ap"]["b"] == 0.0
    assert scores["ap"]["c"] is None and scores["mAP"] == pytest.approx(8.5 / 22)
    # comp4 files carry no class list: VOC's 20, whose files are not there.
    write_comp4(tmp_path / "comp4", "test", dets, CLASSES)
    status, _ = run_score(tmp_path, "--gt", root, "--detections", tmp_path / "comp4")
    assert status == 2


@pytest.fixture
def tiny_checkpoint(tmp_path):
    return save_tiny_checkpoint(tmp_path / "model.pt", cache_dir=tmp_path / "cache")


def scene(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (90, 120, 3)).astype(np.uint8)
    x, y = (int(v) for v in rng.integers(5, 40, 2))
    image[y : y + 40, x : x + 50] = (220, 30, 30)
    return image


def test_score_reads_the_folder_detect_run_wrote(tmp_path, tiny_checkpoint, capsys):
    images, out = tmp_path / "images", tmp_path / "out"
    stems = ["im0", "im1", "im2"]
    for seed, stem in enumerate(stems):
        write_image(images / f"{stem}.png", scene(seed))
    assert main(["run", "--checkpoint", str(tiny_checkpoint), str(images), "--out", str(out)]) == 0
    # Ground truth from run's per-image files (not the combined file score reads): per image,
    # the top box of each class becomes an object (rounded to whole pixels), plus one object
    # nothing detected; the other detections are duplicates or misses.
    per_image = {stem: json.loads((out / f"{stem}.json").read_text()) for stem in stems}
    classes = tuple(per_image["im0"]["classes"])
    annotations, voc_gt = [], {}
    for stem, payload in per_image.items():
        boxes, labels = [[1, 1, 4, 4]], [1]
        for label, name in enumerate(classes):
            mine = [d for d in payload["detections"] if d["label"] == name]
            if mine:
                best = max(mine, key=lambda d: d["score"])
                boxes.append([round(v) for v in best["box"]])
                labels.append(label)
        annotations.append(Annotation(stem, images / f"{stem}.png", 120, 90, boxes, labels))
        # The brute force works on VOC 1-based inclusive boxes: (x1 + 1, y1 + 1, x2, y2).
        voc_gt[stem] = [
            (la, [b[0] + 1, b[1] + 1, b[2], b[3]]) for b, la in zip(boxes, labels, strict=True)
        ]
    write_voc_dataset(tmp_path / "voc", classes, {"test": annotations})
    assert sum(len(p["detections"]) for p in per_image.values()) > len(stems)
    status, scores = run_score(tmp_path, "--gt", tmp_path / "voc", "--detections", out)
    assert status == 0, capsys.readouterr().err
    expected = {}
    for label, name in enumerate(classes):
        gt = {s: [(b, False) for la, b in objs if la == label] for s, objs in voc_gt.items()}
        npos = sum(len(objs) for objs in gt.values())
        dets = [
            (stem, d["score"], [d["box"][0] + 1, d["box"][1] + 1, d["box"][2], d["box"][3]])
            for stem, payload in per_image.items()
            for d in payload["detections"]
            if d["label"] == name
        ]
        expected[name] = brute_voc_eval(gt, dets, npos, "voc07")[0]
        assert scores["ap"][name] == pytest.approx(expected[name], abs=1e-6), name
    assert 0 < scores["mAP"] == pytest.approx(sum(expected.values()) / len(expected), abs=1e-6)


def test_run_refuses_an_image_whose_results_would_overwrite_the_combined_file(
    tmp_path, tiny_checkpoint, capsys
):
    write_image(tmp_path / "images" / "detections.png", scene(0))
    args = ["run", "--checkpoint", str(tiny_checkpoint), str(tmp_path / "images")]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "detections.png" in err and "rename the image" in err and len(err.splitlines()) == 1
