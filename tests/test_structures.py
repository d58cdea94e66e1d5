"""Core types: validation and shapes."""

import pytest
import torch

from detect.errors import DetectError
from detect.structures import Annotation


def test_annotation_defaults_and_shapes():
    ann = Annotation("a", "x.jpg", 10, 20, [[0, 0, 5, 5]], [1])
    assert ann.boxes.dtype == torch.float32 and ann.boxes.shape == (1, 4)
    assert ann.difficult.tolist() == [False] and ann.crowd_boxes.shape == (0, 4)
    assert len(Annotation("b", "y.jpg", 10, 20, [], [])) == 0


def test_bad_box_shape_is_a_clear_error():
    with pytest.raises(DetectError, match=r"annotation a.*\(1, 3\)"):
        Annotation("a", "x.jpg", 10, 20, [[0, 0, 5]], [1])
