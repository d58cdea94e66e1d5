"""The small-dense synthetic preset (issue 17): many small, partly occluded objects per image."""

import cv2
import numpy as np
import pytest

from detect.cli import main
from detect.data.synthetic import (
    CLASS_COLOURS,
    PRESETS,
    SyntheticParams,
    image_rng,
    read_info,
    render_image,
)
from detect.errors import DetectError

DENSE = PRESETS["small-dense"]


def test_small_dense_images_hold_many_small_partly_hidden_objects():
    counts, sizes, hidden = [], [], 0
    for index in range(1, 4):
        rendered = render_image(image_rng(5, index), *DENSE.image_size, DENSE.max_objects, DENSE)
        counts.append(len(rendered.boxes))
        assert rendered.masks.sum(axis=0).max() <= 1  # visible masks are disjoint
        for box, mask, visible in zip(
            rendered.boxes, rendered.masks, rendered.visible, strict=True
        ):
            rows, cols = np.where(mask)
            assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            assert visible >= DENSE.min_visible
            hidden += visible < 1.0
            if visible == 1.0:  # an unoccluded shape's box: its rotated nominal size
                sizes.append(np.sqrt((box[2] - box[0]) * (box[3] - box[1])))
    # placements that would hide an earlier object too much are skipped, so some images hold
    # fewer objects than drawn, but never fewer than a crowd
    assert min(counts) >= 20 and max(counts) <= DENSE.max_objects
    assert hidden > 20
    assert 12 <= min(sizes) < 20 and 45 < max(sizes) <= 60 * 1.5


def test_small_dense_images_are_deterministic_by_seed():
    first, again = (render_image(image_rng(5, 1), 128, 160, 60, DENSE) for _ in range(2))
    other = render_image(image_rng(6, 1), 128, 160, 60, DENSE)
    assert np.array_equal(first.image, again.image) and np.array_equal(first.boxes, again.boxes)
    assert np.array_equal(first.labels, again.labels)
    assert not np.array_equal(first.image, other.image)
    # one colour per object, also when a clutter blob fills no pixel (as in image 5 of seed 0)
    crowded = render_image(image_rng(0, 5), *DENSE.image_size, DENSE.max_objects, DENSE)
    assert len(crowded.colours) == len(crowded.labels) == len(crowded.boxes) > 30


def _contrast_and_hue(layout, seed, images, height, width):
    """Median colour distance between the inside of unoccluded objects (eroded 3 px) and the
    ground around them (a 7-px ring clear of every object), and the fraction of those objects
    whose inside-minus-ring colour points closest to their own class's hue."""
    hues = np.array(CLASS_COLOURS, float)
    hues -= hues.mean(axis=1, keepdims=True)
    distances, right = [], 0
    for index in range(1, images + 1):
        rendered = render_image(image_rng(seed, index), height, width, layout.max_objects, layout)
        image = rendered.image.astype(float)
        objects = cv2.dilate(rendered.masks.any(axis=0).astype(np.uint8), np.ones((5, 5)))
        objects = objects.astype(bool)
        for mask, label, visible in zip(
            rendered.masks, rendered.labels, rendered.visible, strict=True
        ):
            inside = cv2.erode(mask.astype(np.uint8), np.ones((7, 7))).astype(bool)
            ring = cv2.dilate(mask.astype(np.uint8), np.ones((15, 15))).astype(bool) & ~objects
            if visible < 1.0 or inside.sum() < 20 or ring.sum() < 20:
                continue
            difference = image[inside].mean(axis=0) - image[ring].mean(axis=0)
            distances.append(np.linalg.norm(difference))
            right += int(np.argmax(hues @ difference) == label)
    return float(np.median(distances)), right / len(distances), len(distances)


def test_small_dense_objects_blend_with_the_ground_but_keep_their_class_hue():
    # Camouflaged: about a quarter of the default preset's flat colours' contrast, yet the
    # object's colour still leans towards its class's hue (what a classifier can learn).
    dense, dense_hue, count = _contrast_and_hue(DENSE, 5, 4, 192, 256)
    flat, _, _ = _contrast_and_hue(PRESETS["default"], 5, 20, 256, 320)
    assert count >= 20
    assert dense < 60 < 100 < flat
    assert dense_hue >= 0.8


def test_preset_defaults_and_bad_values():
    params = SyntheticParams(preset="small-dense")
    assert params.image_size == DENSE.image_size and params.max_objects == DENSE.max_objects
    assert SyntheticParams().image_size == (256, 320) and SyntheticParams().max_objects == 5
    with pytest.raises(DetectError, match=r"preset must be one of \['default', 'small-dense'\]"):
        SyntheticParams(preset="tiny")
    with pytest.raises(DetectError, match=r"seed must be >= 0, got -3"):
        SyntheticParams(seed=-3)  # numpy's generators refuse it (a traceback before)
    with pytest.raises(DetectError, match=r"max_objects must be >= 30 \(preset small-dense\)"):
        SyntheticParams(preset="small-dense", max_objects=10)


def test_synth_cli_preset(tmp_path, capsys):
    out = tmp_path / "sd"
    args = ["synth", "--preset", "small-dense", "--out", str(out), "--size", "160x200"]
    assert main([*args, "--train", "1", "--val", "0", "--test", "1"]) == 0
    info = read_info(out)
    assert info["params"]["preset"] == "small-dense" and info["params"]["max_objects"] == 150
    assert info["params"]["image_size"] == [160, 200]
    # the camouflaged rendering has its own version: the default preset's folders stay valid
    assert info["params"]["generator_version"] == 2
    assert SyntheticParams().record()["generator_version"] == 1
    assert sum(info["summary"]["objects"]["test"].values()) >= 20
