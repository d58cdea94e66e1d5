"""The small-dense synthetic preset (issue 17): many small, partly occluded objects per image."""

import numpy as np
import pytest

from detect.cli import main
from detect.data.synthetic import PRESETS, SyntheticParams, image_rng, read_info, render_image
from detect.errors import DetectError

DENSE = PRESETS["small-dense"]


def test_small_dense_images_hold_many_small_partly_hidden_objects():
    counts, sizes, hidden = [], [], 0
    for index in range(1, 5):
        rendered = render_image(image_rng(5, index), 192, 256, DENSE.max_objects, DENSE)
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


def test_preset_defaults_and_bad_values():
    params = SyntheticParams(preset="small-dense")
    assert params.image_size == DENSE.image_size and params.max_objects == DENSE.max_objects
    assert SyntheticParams().image_size == (256, 320) and SyntheticParams().max_objects == 5
    with pytest.raises(DetectError, match=r"preset must be one of \['default', 'small-dense'\]"):
        SyntheticParams(preset="tiny")
    with pytest.raises(DetectError, match=r"max_objects must be >= 30 \(preset small-dense\)"):
        SyntheticParams(preset="small-dense", max_objects=10)


def test_synth_cli_preset(tmp_path, capsys):
    out = tmp_path / "sd"
    args = ["synth", "--preset", "small-dense", "--out", str(out), "--size", "160x200"]
    assert main([*args, "--train", "1", "--val", "0", "--test", "1"]) == 0
    info = read_info(out)
    assert info["params"]["preset"] == "small-dense" and info["params"]["max_objects"] == 150
    assert info["params"]["image_size"] == [160, 200]
    assert sum(info["summary"]["objects"]["test"].values()) >= 20
