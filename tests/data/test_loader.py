"""Image decoding in worker processes: same images, same order, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detect.data.images import read_image, write_image
from detect.data.loader import load, read_images
from detect.errors import DetectError
from detect.structures import Annotation


def noise_annotations(tmp_path, count: int) -> list[Annotation]:
    rng = np.random.default_rng(0)
    annotations = []
    for index in range(count):
        path = tmp_path / f"{index}.png"
        size = (20 + index, 30 + 2 * index, 3)  # a different size each: no mix-up goes unseen
        write_image(path, rng.integers(0, 255, size, dtype=np.uint8))
        annotations.append(Annotation(str(index), path, size[1], size[0], [], []))
    return annotations


def test_two_workers_give_the_images_of_read_image_in_order(tmp_path):
    annotations = noise_annotations(tmp_path, 7)
    seen = list(read_images(annotations, num_workers=2))
    assert [ann.image_id for ann, _ in seen] == [str(i) for i in range(7)]
    for ann, image in seen:
        assert isinstance(image, np.ndarray) and image.dtype == np.uint8
        assert np.array_equal(image, read_image(ann.path))


def test_a_bad_image_in_a_worker_is_the_main_process_one_line_error(tmp_path):
    annotations = noise_annotations(tmp_path, 3)
    annotations[1].path.write_bytes(b"not an image")
    with pytest.raises(DetectError) as caught:
        list(read_images(annotations, num_workers=2))
    assert str(caught.value) == f"image {annotations[1].path}: not a readable image file (12 bytes)"


def test_keys_are_served_in_the_order_given_and_negative_workers_refused():
    squares = [torch.tensor(k * k) for k in range(10)]
    assert [int(x) for x in load(squares, [3, 1, 4, 1, 5], num_workers=2)] == [9, 1, 16, 1, 25]
    with pytest.raises(DetectError, match="runtime.num_workers must be >= 0, got -1"):
        next(load(squares, [0], num_workers=-1))


def test_a_dataset_of_many_tensors_reaches_the_workers():
    # One tensor per image (proposals, boxes) must not cost the fork server one descriptor each.
    tensors = [torch.full((2, 4), float(i)) for i in range(400)]
    assert [float(t.sum()) for t in load(tensors, [0, 399, 7], num_workers=2)] == [0, 3192, 56]
