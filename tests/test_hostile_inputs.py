"""Hostile and malformed inputs: every one is a one-line DetectError naming the file and the value.

Each test builds its bad file itself; the readers must refuse it (or, for a byte-order mark, read
it correctly), and nothing may be written outside the folder the user named.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_voc import make_voc

from detect.cli import main
from detect.data import load_dataset
from detect.data.voc import read_split_ids
from detect.errors import DetectError
from detect.evaluation.voc_files import comp4_path, read_comp4, write_comp4
from detect.structures import Detections

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
    status = main(["score", "--gt", str(root), "--split", "../../t", "--detections", str(root)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "split '../../t'" in err


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
