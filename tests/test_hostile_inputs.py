"""Hostile and malformed inputs: every one is a one-line DetectError naming the file and the value.

Each test builds its bad file itself; the readers must refuse it (or, for a byte-order mark, read
it correctly), and nothing may be written outside the folder the user named.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _train_data import make_tiny_voc, tiny_config_dict
from test_voc import make_voc

from detect.cli import main
from detect.config import Config, ModelConfig, load_config
from detect.data import load_dataset
from detect.data.coco import load_coco, read_coco_dataset
from detect.data.images import read_image, write_image
from detect.data.voc import read_split_ids
from detect.errors import DetectError
from detect.evaluation.coco_results import read_coco_results
from detect.evaluation.detections_json import read_detections_json, write_detections_json
from detect.evaluation.voc_files import comp4_path, read_comp4, write_comp4
from detect.models import build_detector
from detect.proposals.sources import items_from_list
from detect.structures import Detections
from detect.training.checkpoint import save_checkpoint

CLASSES = ("circle", "square")


def voc_with_classes(root: Path, class_lines: str) -> Path:
    """A one-image VOC folder whose classes.txt holds ``class_lines`` (raw text)."""
    make_voc(root, {"a": [("circle", (1, 1, 20, 20), 0, 0)]})
    (root / "classes.txt").write_text(class_lines)
    return root


# ---- point 8: names that would build file names outside the output folder ----


@pytest.mark.parametrize("bad", ["../../evil", "a/b", "a\\b", "..", "tab\there", "nul\x00"])
def test_class_list_rejects_path_like_and_control_names(tmp_path, bad):
    root = voc_with_classes(tmp_path / "voc", f"circle\n{bad}\n")
    with pytest.raises(DetectError) as info:
        load_dataset(root, "test")
    message = str(info.value)
    assert "classes.txt" in message and repr(bad.strip()) in message
    assert "\n" not in message


def test_split_ids_escaping_the_data_root_are_rejected(tmp_path):
    root = make_voc(tmp_path / "voc", {"a": []})
    (root / "ImageSets" / "Main" / "test.txt").write_text("a\n../../x\n")
    with pytest.raises(DetectError, match=r"test\.txt: image id '\.\./\.\./x' contains a path"):
        read_split_ids(root, "test")


def test_comp4_names_never_leave_the_folder(tmp_path):
    out = tmp_path / "out"
    dets = {"a": Detections([[0, 0, 5, 5]], [0.9], [1])}
    with pytest.raises(DetectError, match=r"class name '\.\./\.\./\.\./evil' contains a path"):
        write_comp4(out, "test", dets, ("circle", "../../../evil"))
    with pytest.raises(DetectError, match=r"split '\.\./x' contains a path"):
        comp4_path(out, "../x", "circle")
    written = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert written == set()  # nothing written, not even the valid class's file


def test_score_with_a_path_like_split_is_one_line(tmp_path, capsys):
    root = make_voc(tmp_path / "voc", {"a": []})
    (root / "t.txt").write_text("a\n")  # where ImageSets/Main/../../t.txt points
    status = main(["score", "--gt", str(root), "--split", "../../t", "--detections", str(root)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert "split '../../t' contains a path separator" in err


# ---- point 11 (non-UTF-8 text files) and 13 (byte-order marks) ----


def test_non_utf8_split_and_comp4_files_are_one_line_errors(tmp_path):
    root = make_voc(tmp_path / "voc", {"a": []})
    (root / "ImageSets" / "Main" / "test.txt").write_bytes(b"a\n\xff\xfeb\n")
    with pytest.raises(DetectError, match=r"test\.txt: not a text file \(byte 2 is not UTF-8\)"):
        read_split_ids(root, "test")
    write_comp4(tmp_path / "c", "test", {}, CLASSES)
    comp4_path(tmp_path / "c", "test", "square").write_bytes(b"a 0.5 1 1 2 2\n\xe9\n")
    with pytest.raises(DetectError, match=r"comp4_det_test_square\.txt: not a text file"):
        read_comp4(tmp_path / "c", "test", CLASSES)


def test_byte_order_mark_is_stripped_from_class_list_and_split(tmp_path):
    root = voc_with_classes(tmp_path / "voc", "\ufeffcircle\nsquare\n")
    split = root / "ImageSets" / "Main" / "test.txt"
    split.write_bytes(b"\xef\xbb\xbfa\n")
    dataset = load_dataset(root, "test")
    assert dataset.class_names == ("circle", "square")
    assert dataset.image_ids == ["a"]
    assert dataset.annotations[0].labels.tolist() == [0]
    torch.testing.assert_close(dataset.annotations[0].boxes, torch.tensor([[0.0, 0.0, 20.0, 20.0]]))


# ---- point 9: image size read from the header, checked before decoding ----


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width x height`` (one row of pixel data follows)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\x00" + b"\x00" * (3 * min(width, 1000)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", row) + chunk(b"IEND", b"")
    )
    return path


def test_huge_header_is_refused_before_decoding(tmp_path):
    path = png_header_only(tmp_path / "bomb.png", 12000, 10000)
    assert path.stat().st_size < 1000
    with pytest.raises(DetectError, match=r"bomb\.png: 12000x10000 pixels is over the limit"):
        read_image(path)


def test_image_limit_is_configurable(tmp_path):
    path = tmp_path / "small.png"
    write_image(path, np.full((80, 100, 3), 7, np.uint8))
    with pytest.raises(DetectError, match=r"small\.png: 100x80 pixels is over the limit of 7999"):
        read_image(path, max_pixels=7999)
    assert read_image(path, max_pixels=8000).shape == (80, 100, 3)


def test_image_over_opencv_limit_is_one_line(tmp_path):
    path = png_header_only(tmp_path / "giant.png", 100000, 100000)  # 10^10 > OpenCV's 2^30
    with pytest.raises(DetectError, match=r"giant\.png: cannot decode"):
        read_image(path, max_pixels=10**12)


def test_proposals_and_run_name_the_oversized_image(tmp_path, capsys):
    images = tmp_path / "images"
    png_header_only(images / "bomb.png", 30000, 30000)
    status = main(["proposals", "--data", str(images), "--out", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert status == 1 and "bomb.png: 30000x30000 pixels is over the limit" in err
    assert "Traceback" not in err

    model = tmp_path / "model.pt"
    config = Config(model=ModelConfig(backbone="tiny", scales=(96,), fc_dims=(16, 16)))
    save_checkpoint(model, build_detector("spp", config.model, 2), CLASSES, config)
    out = tmp_path / "out"
    status = main(["run", "--checkpoint", str(model), str(images), "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 1 and "bomb.png: 30000x30000 pixels is over the limit" in err
    limit = ["--set", "data.max_image_pixels=100"]
    write_image(images / "small.png", np.zeros((20, 30, 3), np.uint8))
    status = main(
        ["run", "--checkpoint", str(model), str(images / "small.png"), *limit, "--out", str(out)]
    )
    assert status == 1  # the image is skipped, named on stderr
    assert "small.png: 30x20 pixels is over the limit of 100" in capsys.readouterr().err


# ---- point 10: values accepted silently before ----


def voc_with_xml_edit(root: Path, old: str, new: str) -> Path:
    make_voc(root, {"a": [("circle", (1, 1, 20, 20), 0, 0)]})
    (root / "classes.txt").write_text("circle\nsquare\n")
    xml = root / "Annotations" / "a.xml"
    text = xml.read_text()
    assert old in text
    xml.write_text(text.replace(old, new, 1))
    return root


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("<xmin>1</xmin>", "<xmin>nan</xmin>", r"<xmin> is not a finite number: 'nan'"),
        ("<ymax>20</ymax>", "<ymax>inf</ymax>", r"<ymax> is not a finite number: 'inf'"),
        ("<width>50</width>", "<width>1e12</width>", r"size 1e\+12x40 is over the limit"),
        ("<width>50</width>", "<width>50.5</width>", r"must be whole numbers >= 0, got 50.5x40"),
    ],
)
def test_voc_non_finite_and_implausible_values(tmp_path, old, new, message):
    root = voc_with_xml_edit(tmp_path / "voc", old, new)
    with pytest.raises(DetectError, match=r"a\.xml: .*" + message):
        load_dataset(root, "test")


# ---- points 8, 10, 11: COCO instances json ----


def coco_json(tmp_path: Path, edit) -> Path:
    """A valid two-image instances json, then ``edit(payload)`` applied to it."""
    payload = {
        "images": [
            {"id": 1, "file_name": "1.jpg", "width": 100, "height": 80},
            {"id": 2, "file_name": "2.jpg", "width": 100, "height": 80},
        ],
        "annotations": [
            {"id": 5, "image_id": 1, "category_id": 3, "bbox": [10, 10, 50, 50], "iscrowd": 0},
            {"id": 6, "image_id": 2, "category_id": 4, "bbox": [0, 0, 20, 30], "area": 600},
        ],
        "categories": [{"id": 3, "name": "circle"}, {"id": 4, "name": "square"}],
    }
    edit(payload)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(payload))  # NaN is written as the bare token NaN, as Python does
    return path


COCO_CASES = {
    "bbox with 3 numbers": (
        lambda p: p["annotations"][0].update(bbox=[10, 10, 60]),
        r"annotations\[0\]: bbox must be \[x, y, w, h\] of 4 finite numbers, got \[10, 10, 60\]",
    ),
    "NaN bbox": (
        lambda p: p["annotations"][1].update(bbox=[0, float("nan"), 20, 30]),
        r"annotations\[1\]: bbox must be .*got \[0, nan, 20, 30\]",
    ),
    "bbox of strings": (
        lambda p: p["annotations"][0].update(bbox=["10", "10", "5", "5"]),
        r"annotations\[0\]: bbox must be .*got \['10'",
    ),
    "null bbox": (
        lambda p: p["annotations"][0].update(bbox=None),
        r"annotations\[0\]: bbox must be .*got None",
    ),
    "missing bbox": (
        lambda p: p["annotations"][0].pop("bbox"),
        r"annotations\[0\]: missing 'bbox'",
    ),
    "missing image_id": (
        lambda p: p["annotations"][1].pop("image_id"),
        r"annotations\[1\]: missing 'image_id'",
    ),
    "missing file_name": (
        lambda p: p["images"][1].pop("file_name"),
        r"images\[1\]: missing 'file_name'",
    ),
    "missing width": (
        lambda p: p["images"][0].pop("width"),
        r"images\[0\]: missing 'width'",
    ),
    "images as a list of ints": (
        lambda p: p.update(images=[1, 2]),
        r"images\[0\] must be an object, got 1",
    ),
    "duplicate category names": (
        lambda p: p["categories"][1].update(name="circle"),
        r"categories: duplicate class name 'circle'",
    ),
    "category name with a path": (
        lambda p: p["categories"][1].update(name="../../../evil"),
        r"categories: class name '\.\./\.\./\.\./evil' contains a path separator",
    ),
    "huge stated size": (
        lambda p: p["images"][0].update(width=10**6, height=10**6),
        r"images\[0\]: size 1000000x1000000 is over the limit",
    ),
}


@pytest.mark.parametrize("case", list(COCO_CASES))
def test_coco_bad_values_are_one_line_errors(tmp_path, case):
    edit, message = COCO_CASES[case]
    path = coco_json(tmp_path, edit)
    with pytest.raises(DetectError, match=r"instances\.json: " + message):
        read_coco_dataset(path, check_images=False)


def test_coco_valid_file_still_reads_with_default_area(tmp_path):
    path = coco_json(tmp_path, lambda p: None)
    dataset = read_coco_dataset(path, check_images=False)
    assert dataset.class_names == ("circle", "square")
    torch.testing.assert_close(
        dataset.annotations[0].boxes, torch.tensor([[10.0, 10.0, 60.0, 60.0]])
    )
    assert load_coco(path).anns[5]["area"] == 50 * 50  # missing area = w * h, for COCOeval


# ---- points 10, 11: the project's detections json and COCO results ----


def detections_json(tmp_path: Path, edit) -> Path:
    """A valid detections json for images 'a' and 'b', then ``edit(payload)`` applied to it."""
    path = tmp_path / "detections.json"
    dets = {"a": Detections([[1, 2, 30, 40]], [0.9], [0]), "b": Detections.empty()}
    write_detections_json(path, dets, CLASSES)
    payload = json.loads(path.read_text())
    edit(payload)
    path.write_text(json.dumps(payload))
    return path


DETECTIONS_CASES = {
    "NaN score": (
        lambda p: p["images"]["a"][0].update(score=float("nan")),
        r"image a: detection 0: score must be a finite number, got nan",
    ),
    "infinite score": (
        lambda p: p["images"]["a"][0].update(score=float("inf")),
        r"image a: detection 0: score must be a finite number, got inf",
    ),
    "NaN box": (
        lambda p: p["images"]["a"][0].update(box=[1, float("nan"), 30, 40]),
        r"image a: detection 0: box must be 4 finite numbers, got \[1, nan, 30, 40\]",
    ),
    "string box value": (
        lambda p: p["images"]["a"][0].update(box=[1, "x", 30, 40]),
        r"image a: detection 0: box must be 4 finite numbers, got \[1, 'x', 30, 40\]",
    ),
    "missing classes": (lambda p: p.pop("classes"), r"'classes' must be a list .*got nothing"),
    "missing images": (lambda p: p.pop("images"), r"'images' must be an object .*got nothing"),
    "images as a list": (
        lambda p: p.update(images=[["a"]]),
        r"'images' must be an object of image id -> list, got \[\['a'\]\]",
    ),
    "path-like class": (
        lambda p: p.update(classes=["circle", "../up"]),
        r"classes: class name '\.\./up' contains a path separator",
    ),
}


@pytest.mark.parametrize("case", list(DETECTIONS_CASES))
def test_detections_json_bad_values_are_one_line_errors(tmp_path, case):
    edit, message = DETECTIONS_CASES[case]
    path = detections_json(tmp_path, edit)
    with pytest.raises(DetectError, match=r"detections .*detections\.json: " + message):
        read_detections_json(path)


@pytest.mark.parametrize(
    ("field", "value"), [("score", float("nan")), ("score", float("-inf")), ("bbox", "nan")]
)
def test_coco_results_with_non_finite_values_are_refused(tmp_path, field, value):
    record = {"image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5}
    record[field] = [1, float("nan"), 3, 4] if value == "nan" else value
    path = tmp_path / "results.json"
    path.write_text(json.dumps([record, record]))
    with pytest.raises(DetectError, match=r"results\.json: detection 0: .*all finite numbers"):
        read_coco_results(path)


# ---- points 11, 12: configs and checkpoints ----


def test_yaml_and_set_accept_exponent_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("finetune:\n  lr: 1e-3\n  iterations: 1e3\nsvm:\n  C: 2.5e2\n")
    config = load_config(path, ["bbox_reg.ridge_lambda=1e4", "test.score_threshold=5E-2"])
    assert config.finetune.lr == 0.001 and config.finetune.iterations == 1000
    assert isinstance(config.finetune.iterations, int)
    assert config.svm.C == 250.0 and config.bbox_reg.ridge_lambda == 10000.0
    assert config.test.score_threshold == 0.05
    assert load_config(None, ["proposals.cache_dir=1e3"]).proposals.cache_dir == "1e3"


def test_set_errors_name_set_not_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("finetune:\n  lr: 0.01\n")
    with pytest.raises(DetectError) as info:
        load_config(path, ["finetune.log_every=5", "finetune.lr=fast"])
    assert str(info.value) == "--set finetune.lr=fast: finetune.lr: expected a number, got 'fast'"
    path.write_text("finetune:\n  lr: fast\n")  # an error in the file still names the file
    with pytest.raises(DetectError, match=r"c\.yaml: finetune\.lr: expected a number"):
        load_config(path, ["finetune.log_every=5"])


def test_yaml_top_level_list_with_set_is_one_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("- finetune\n- model\n")
    with pytest.raises(DetectError, match=r"c\.yaml: the top level must be a mapping .*got a list"):
        load_config(path, ["finetune.lr=0.1"])
    args = ["proposals", "--config", str(path), "--set", "finetune.lr=0.1", "--data", str(path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "top level must be a mapping" in err


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        (("class_names",), r"missing or bad 'class_names'"),
        (("model",), r"missing or bad 'model' \(expected the model weights\)"),
        (("config",), r"missing or bad 'config'"),
        (("config", "model"), r"missing or bad 'config.model'"),
        (("method",), r"missing or bad 'method'"),
    ],
)
def test_checkpoint_with_format_tag_but_missing_keys(tmp_path, capsys, drop, message):
    path = tmp_path / "model.pt"
    config = Config(model=ModelConfig(backbone="tiny", scales=(96,), fc_dims=(16, 16)))
    save_checkpoint(path, build_detector("spp", config.model, 2), CLASSES, config)
    payload = torch.load(path, weights_only=True)
    node = payload
    for key in drop[:-1]:
        node = node[key]
    del node[drop[-1]]
    torch.save(payload, path)
    image = tmp_path / "x.png"
    write_image(image, np.zeros((20, 30, 3), np.uint8))
    status = main(["run", "--checkpoint", str(path), str(image), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert re.search(r"checkpoint .*model\.pt: " + message, err), err


def test_eval_split_cannot_move_the_output_folder(tmp_path, capsys):
    model = tmp_path / "run" / "model.pt"
    config = Config(model=ModelConfig(backbone="tiny", scales=(96,), fc_dims=(16, 16)))
    save_checkpoint(model, build_detector("spp", config.model, 2), CLASSES, config)
    data = coco_json(tmp_path, lambda p: None)
    split = "x/../../../y"  # the default output folder eval_<split> would be tmp_path's parent/y
    args = ["eval", "--checkpoint", str(model), "--data", str(data), "--split", split]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--split: split {split!r} contains a path separator" in err


def test_eval_names_an_oversized_image_of_the_split(tmp_path, capsys):
    model = tmp_path / "run" / "model.pt"
    config = Config(model=ModelConfig(backbone="tiny", scales=(96,), fc_dims=(16, 16)))
    save_checkpoint(model, build_detector("spp", config.model, 2), CLASSES, config)
    root = voc_with_classes(tmp_path / "voc", "circle\nsquare\n")
    png_header_only(tmp_path / "bomb.png", 12000, 10000).replace(root / "JPEGImages" / "a.jpg")
    args = ["eval", "--checkpoint", str(model), "--data", str(root), "--split", "test"]
    assert main([*args, "--out", str(tmp_path / "eval")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith("detect eval: error: proposals: 1 image(s) failed")
    assert "a.jpg: 12000x10000 pixels is over the limit" in last


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: (p.update(stage="finetune"), p.pop("optimizer", None)), "'optimizer'"),
        (lambda p: p.update(stage="finetune", iteration="3"), "'iteration'"),
        (lambda p: p.pop("log"), "'log'"),
        (lambda p: p.pop("stage"), "'stage'"),
    ],
)
def test_resume_from_checkpoint_missing_resume_keys(tmp_path, capsys, edit, message):
    data = make_tiny_voc(tmp_path / "tiny", num_images=2)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(data, iterations=1)))
    run = tmp_path / "run"
    args = ["train", "--config", str(config), "--out", str(run)]
    assert main(args) == 0
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    edit(payload)
    torch.save(payload, run / "checkpoint.pt")
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"checkpoint.pt: cannot resume: missing or bad {message}" in err


def test_run_on_an_image_over_opencv_limit_is_one_line(tmp_path, capsys):
    model = tmp_path / "model.pt"
    config = Config(model=ModelConfig(backbone="tiny", scales=(96,), fc_dims=(16, 16)))
    save_checkpoint(model, build_detector("spp", config.model, 2), CLASSES, config)
    giant = png_header_only(tmp_path / "giant.png", 100000, 100000)  # 10^10 > 2^30 pixels
    args = ["run", "--checkpoint", str(model), str(giant), "--out", str(tmp_path / "out")]
    assert main([*args, "--set", "data.max_image_pixels=1e12"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"detect run: error: skipped image {giant}: cannot decode")


def test_image_list_not_utf8_or_with_bom(tmp_path, capsys):
    write_image(tmp_path / "img0.png", np.zeros((20, 30, 3), np.uint8))
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"\xef\xbb\xbfimg0.png\n")
    assert [item.image_id for item in items_from_list(listing)] == ["img0"]
    listing.write_bytes(b"img0.png\n\xff\n")
    args = ["proposals", "--data", str(listing), "--out", str(tmp_path / "cache")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "list.txt: not a text file (byte 9 is not UTF-8)" in err
