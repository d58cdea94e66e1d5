"""comp4 files by hand: an image with a single detection, float32 text, names that cannot be
file-name parts."""

from __future__ import annotations

import re

import pytest

from detect.errors import DetectError
from detect.evaluation.voc_files import comp4_path, read_comp4, write_comp4
from detect.structures import Detections


def test_single_detections_and_float32_text(tmp_path):
    dets = {
        "a": Detections([[0.1, 0.0, 10.0, 20.0]], [0.1], [0]),  # one detection
        "b": Detections([[1.0, 2.0, 3.0, 4.0]], [0.3], [1]),
    }
    paths = write_comp4(tmp_path, "val", dets, ("cat", "dog"))
    # Scores and boxes written as float32 (0.1 -> "0.1", not 0.10000000149011612).
    assert paths[0].read_text() == "a 0.1 1.1 1.0 10.0 20.0\n"
    assert paths[1].read_text() == "b 0.3 2.0 3.0 3.0 4.0\n"
    back = read_comp4(tmp_path, "val", ("cat", "dog"))
    assert list(back) == ["a", "b"] and back["b"].labels.tolist() == [1]


@pytest.mark.parametrize(
    ("split", "name", "what"), [("a/b", "cat", "split"), ("val", "../cat", "class name")]
)
def test_names_that_are_not_file_name_parts(tmp_path, split, name, what):
    bad = split if what == "split" else name
    where = re.escape(f"comp4 files in {tmp_path}: {what} {bad!r}")
    with pytest.raises(DetectError, match="^" + where):
        comp4_path(tmp_path, split, name)
