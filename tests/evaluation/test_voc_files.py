"""comp4 files: 1-based coordinates by hand, round trip, and errors naming file and line."""

from __future__ import annotations

import pytest
import torch

from detect.errors import DetectError
from detect.evaluation.voc_files import comp4_path, read_comp4, write_comp4
from detect.structures import Detections

CLASSES = ("cat", "dog")


def test_written_lines_are_voc_one_based(tmp_path):
    dets = {
        "000001": Detections([[0.0, 0.0, 10.0, 20.0], [4.5, 5.0, 8.0, 9.0]], [0.75, 0.5], [1, 0])
    }
    paths = write_comp4(tmp_path, "test", dets, CLASSES)
    assert paths == [comp4_path(tmp_path, "test", c) for c in CLASSES]
    # continuous (0, 0, 10, 20) covers VOC pixels 1..10 x 1..20.
    assert paths[1].read_text() == "000001 0.75 1.0 1.0 10.0 20.0\n"
    assert paths[0].read_text() == "000001 0.5 5.5 6.0 8.0 9.0\n"


def test_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(0)
    dets = {}
    for i in range(5):
        n = i * 3
        xy = torch.rand(n, 2, generator=gen) * 100
        boxes = torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=gen) * 50], 1)
        labels = torch.randint(0, 2, (n,), generator=gen)
        dets[f"im{i}"] = Detections(boxes, torch.rand(n, generator=gen), labels)
    write_comp4(tmp_path, "val", dets, CLASSES)
    back = read_comp4(tmp_path, "val", CLASSES, image_ids=list(dets))
    assert set(back) == {k for k, d in dets.items() if len(d)}
    for image_id, got in back.items():
        want = dets[image_id]
        # read_comp4 groups by class file: compare per class, order within a class kept.
        for label in range(2):
            g, w = got.labels == label, want.labels == label
            torch.testing.assert_close(got.boxes[g], want.boxes[w], rtol=0, atol=1e-4)
            torch.testing.assert_close(got.scores[g], want.scores[w], rtol=0, atol=0)


def test_errors_name_file_and_line(tmp_path):
    write_comp4(tmp_path, "test", {"a": Detections([[0, 0, 1, 1]], [0.5], [0])}, CLASSES)
    path = comp4_path(tmp_path, "test", "dog")
    path.write_text("a 0.5 1 1 2 2\na 0.5 1 1 2\n")
    with pytest.raises(DetectError, match=r"comp4_det_test_dog.txt line 2: expected"):
        read_comp4(tmp_path, "test", CLASSES)
    path.write_text("a 0.5 1 1 2 2\n\na x 1 1 2 2\n")
    with pytest.raises(DetectError, match=r"comp4_det_test_dog.txt line 3: not a number"):
        read_comp4(tmp_path, "test", CLASSES)
    path.write_text("b 0.5 1 1 2 2\n")
    with pytest.raises(DetectError, match=r"comp4_det_test_dog.txt line 1: image 'b' is not in"):
        read_comp4(tmp_path, "test", CLASSES, image_ids=["a"])
    path.unlink()
    with pytest.raises(DetectError, match=r"comp4_det_test_dog.txt: not found"):
        read_comp4(tmp_path, "test", CLASSES)
