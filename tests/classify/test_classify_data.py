"""Classification data: the ImageFolder reader, object-centred crops of a detection set (boxes
worked by hand), the test views and the generated set."""

import numpy as np
import pytest
import torch

from detect.classify.data import eval_view, object_crops, read_image_folder, training_view
from detect.data.images import read_image, write_image
from detect.data.synthetic import SYNTHETIC_CLASSES
from detect.data.synthetic_classification import (
    ClassificationParams,
    generate_classification_set,
    image_size,
    is_complete_classification_set,
    render_object_image,
)
from detect.errors import DetectError
from detect.structures import Annotation


def _folder(root, layout):
    for split, classes in layout.items():
        for name, count in classes.items():
            for i in range(count):
                write_image(root / split / name / f"{i}.png", np.full((8, 9, 3), i, np.uint8))


def test_image_folder_layout(tmp_path):
    _folder(tmp_path, {"train": {"dog": 2, "cat": 3}})
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    names, samples = read_image_folder(tmp_path, "train")
    assert names == ["cat", "dog"]  # sorted folder names
    assert [(s.path.name, s.label) for s in samples] == [
        ("0.png", 0),
        ("1.png", 0),
        ("2.png", 0),
        ("0.png", 1),
        ("1.png", 1),
    ]
    names, samples = read_image_folder(tmp_path, "train", ["dog", "cat", "bird"])
    assert names == ["dog", "cat", "bird"] and samples[0].label == 0


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"val": {"a": 1, "b": 1}}, "is not a folder"),
        ({"train": {"a": 2}}, "needs at least 2 class folders"),
    ],
)
def test_image_folder_errors(tmp_path, layout, message):
    _folder(tmp_path, layout)
    with pytest.raises(DetectError, match=message):
        read_image_folder(tmp_path, "train")


def test_image_folder_unknown_class_for_a_trained_model(tmp_path):
    _folder(tmp_path, {"test": {"a": 1, "zebra": 1}})
    with pytest.raises(DetectError, match=r"class folders \['zebra'\] not in \['a', 'b'\]"):
        read_image_folder(tmp_path, "test", ["a", "b"])


def test_object_crops_by_hand(tmp_path):
    ann = Annotation(
        image_id="1",
        path=tmp_path / "1.png",
        width=100,
        height=80,
        boxes=torch.tensor([[10.0, 20.0, 30.0, 60.0], [90.0, 5.0, 99.0, 15.0], [0, 0, 5, 5]]),
        labels=torch.tensor([2, 1, 0]),
        difficult=torch.tensor([False, False, True]),
    )
    crops = object_crops([ann], context=1.5)
    # centre (20, 40), half sizes (10, 20) x 1.5 = (15, 30): (5, 10, 35, 70)
    # centre (94.5, 10), half (4.5, 5) x 1.5 = (6.75, 7.5): (87.75, 2.5, 101.25, 17.5) clipped
    assert [(c.box, c.label) for c in crops] == [((5, 10, 35, 70), 2), ((87, 2, 100, 18), 1)]
    image = np.arange(80 * 100 * 3, dtype=np.uint8).reshape(80, 100, 3)
    write_image(ann.path, image)
    assert np.array_equal(crops[0].load(10**6), image[10:70, 5:35])


def test_views():
    image = np.random.default_rng(0).integers(0, 256, (100, 200, 3), dtype=np.uint8)
    assert np.array_equal(eval_view(image, "crop", 50, 0.5), image[25:75, 75:125])
    assert eval_view(image, "warp", 64, 0.875).shape == (64, 64, 3)
    assert eval_view(image, "full", 64, 0.875) is image
    view = training_view(image, 80, 0.8, False, np.random.default_rng(1))
    matches = [
        (top, left)
        for top in range(0, 21)
        for left in range(0, 121)
        if np.array_equal(view, image[top : top + 80, left : left + 80])
    ]
    assert len(matches) == 1  # an 80 x 80 region of the image, not resized
    with pytest.raises(DetectError, match="unknown view 'zoom'"):
        eval_view(image, "zoom", 64, 0.875)


def test_generated_set(tmp_path):
    params = dict(num_train=8, num_test=4, side_range=(64, 96), seed=3)
    root = generate_classification_set(tmp_path / "set", progress=False, **params)
    assert is_complete_classification_set(root, **params) and not is_complete_classification_set(
        root, **{**params, "seed": 4}
    )
    names, samples = read_image_folder(root, "train")
    assert names == sorted(SYNTHETIC_CLASSES) and len(samples) == 8
    sizes = {read_image(s.path).shape[:2] for s in samples}
    assert len(sizes) > 4 and all(64 <= min(s) <= 96 and max(s) <= 2 * min(s) for s in sizes)
    again = generate_classification_set(tmp_path / "again", progress=False, **params)
    first = read_image(root / "test" / "circle" / "00000.jpg")
    assert np.array_equal(first, read_image(again / "test" / "circle" / "00000.jpg"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(DetectError, match="refusing to overwrite"):
        generate_classification_set(tmp_path / "other", progress=False, **params)


def test_generated_image_sizes_objects_and_background():
    spec = ClassificationParams(side_range=(48, 56), max_aspect=2.5, object_size=(0.2, 0.3))
    sizes = [image_size(np.random.default_rng(i), spec) for i in range(200)]
    aspects = [max(s) / min(s) for s in sizes]
    assert all(48 <= min(s) <= 56 for s in sizes) and max(aspects) <= 2.5 + 1 / 48
    assert max(aspects) > 2.2 and min(aspects) < 1.1  # log-uniform over [1, 2.5]
    portrait = sum(h > w for h, w in sizes)
    assert 70 < portrait < 130  # landscape or portrait with equal chance
    largest = 0
    for i in range(20):
        rng = np.random.default_rng(i)
        image = render_object_image(rng, i % 4, 60, 90, object_size=(0.2, 0.3))
        flat = render_object_image(
            np.random.default_rng(i), i % 4, 60, 90, object_size=(0.2, 0.3), background_contrast=0
        )
        # contrast 0: a flat background up to the pixel grain, the object drawn on it
        distance = np.abs(flat.astype(float) - np.median(flat, axis=(0, 1))).max(axis=2)
        area = int((distance > 25).sum())
        assert area <= 1.15 * (0.3 * 60) ** 2  # at most a square of the largest nominal size
        largest = max(largest, area)
        assert image.std() > flat[distance <= 25].std() + 5  # the texture is gone
    assert largest > 0.5 * (0.2 * 60) ** 2
    with pytest.raises(DetectError, match="max_aspect"):
        ClassificationParams(max_aspect=0.5)
    with pytest.raises(DetectError, match="object_size"):
        ClassificationParams(object_size=(0.5, 0.9))
    with pytest.raises(DetectError, match="background_contrast"):
        ClassificationParams(background_contrast=1.5)
