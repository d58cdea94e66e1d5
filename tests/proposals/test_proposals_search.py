"""Selective search: finds solid rectangles, maps boxes back from the resized image by hand."""

import numpy as np
import pytest
import torch
import torchvision
from proposals_testdata import HEIGHT, WIDTH, synthetic_image

import detect.proposals.search as ss
from detect.errors import DetectError
from detect.proposals import selective_search


@pytest.mark.parametrize("long_side", [160, 80])
def test_rectangles_are_recalled_at_iou_07(long_side):
    image, gt = synthetic_image(0)
    boxes = selective_search(image, mode="fast", resize_long_side=long_side, min_size=4)
    assert boxes.dtype == torch.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    best = torchvision.ops.box_iou(gt, boxes).max(dim=1).values
    assert (best >= 0.7).all(), best


def test_output_invariants_and_determinism():
    image, _ = synthetic_image(1)
    boxes = selective_search(image, resize_long_side=200, min_size=16, max_proposals=30)
    assert 0 < boxes.shape[0] <= 30
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (widths >= 16).all() and (heights >= 16).all()
    assert (
        (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= WIDTH).all() and (boxes[:, 3] <= HEIGHT).all()
    )
    assert len({tuple(b) for b in boxes.tolist()}) == boxes.shape[0]  # no duplicates
    again = selective_search(image, resize_long_side=200, min_size=16, max_proposals=30)
    assert torch.equal(boxes, again)


def test_mapping_back_by_hand(monkeypatch):
    """160x120 image searched at long side 80 (80x60, scale 1/2). OpenCV rect (x, y, w, h) covers
    pixels x..x+w-1, i.e. continuous [x, x+w): (10, 5, 20, 10) -> (20, 10, 60, 30) in the original."""
    seen = {}

    def fake_search(image_bgr, mode):
        seen["shape"] = image_bgr.shape
        return np.array(
            [
                [10, 5, 20, 10],  # -> 20 10 60 30
                [0, 0, 4, 30],  # 8 px wide in the original: dropped by min_size 16
                [10, 5, 20, 10],  # exact duplicate: dropped
                [70, 50, 10, 10],  # -> 140 100 160 120
                [0, 0, 80, 60],  # whole image -> 0 0 160 120, cut by max_proposals=2
            ],
            dtype=np.int32,
        )

    monkeypatch.setattr(ss, "raw_selective_search", fake_search)
    image = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    boxes = selective_search(image, resize_long_side=80, min_size=16, max_proposals=2)
    assert seen["shape"] == (60, 80, 3)
    expected = torch.tensor([[20, 10, 60, 30], [140, 100, 160, 120]], dtype=torch.float32)
    assert torch.equal(boxes, expected)


def test_rejects_bad_input():
    with pytest.raises(DetectError, match="uint8 RGB"):
        selective_search(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(DetectError, match="mode"):
        selective_search(synthetic_image()[0], mode="slow")


@pytest.mark.parametrize(
    "params, message",
    [
        ({"mode": "slow"}, r"proposals.mode must be one of \['fast', 'quality'\], got 'slow'"),
        ({"resize_long_side": -5}, r"proposals.resize_long_side must be >= 0 .*got -5"),
        ({"min_size": -1.0}, r"proposals.min_size must be >= 0, got -1.0"),
        ({"max_proposals": -1}, r"proposals.max_proposals must be >= 0 .*got -1"),
    ],
)
def test_bad_parameters_name_the_setting(params, message):
    settings = {"mode": "fast", "resize_long_side": 160, "min_size": 8.0, "max_proposals": 10}
    settings.update(params)
    with pytest.raises(DetectError, match=message):
        ss.check_search_params(**settings)
    with pytest.raises(DetectError, match=message):  # before any search is run
        selective_search(synthetic_image()[0], **settings)


def test_unique_and_small_boxes():
    boxes = np.array([[0, 0, 5, 5], [1, 1, 30, 30], [0, 0, 5, 5], [2, 2, 40, 3.0]], np.float32)
    assert ss.unique_boxes(boxes).tolist() == [0, 1, 3]
    assert ss.remove_small_boxes(boxes, 10).tolist() == [1]


def test_small_boxes_by_width_and_height_at_the_bound():
    boxes = np.array(
        [
            [20.0, 30.0, 30.0, 40.0],  # 10 x 10: kept (the bound is inclusive)
            [20.0, 30.0, 29.0, 45.0],  # 9 wide
            [20.0, 30.0, 35.0, 39.0],  # 9 high
            [5.0, 50.0, 16.0, 55.0],  # 11 x 5
            [50.0, 5.0, 55.0, 16.0],  # 5 x 11
        ],
        np.float32,
    )
    assert ss.remove_small_boxes(boxes, 10).tolist() == [0]
    assert ss.remove_small_boxes(boxes, 5).tolist() == [0, 1, 2, 3, 4]


def test_unique_boxes_first_occurrences():
    boxes = np.array(
        [[3.0, 3, 9, 9], [0, 0, 5, 5], [3, 3, 9, 9], [1, 1, 2, 2], [0, 0, 5, 5], [7, 7, 8, 8]],
        np.float32,
    )
    assert ss.unique_boxes(boxes).tolist() == [0, 1, 3, 5]
    assert ss.unique_boxes(boxes[:1]).tolist() == [0]
    assert ss.unique_boxes(np.zeros((0, 4), np.float32)).shape == (0,)


def test_postprocess_clips_drops_small_and_duplicate_boxes_and_keeps_the_order():
    boxes = np.array(
        [[-5, 2, 30, 30], [0, 2, 30, 30], [10, 10, 15, 40], [20, 20, 90, 70], [1, 1, 30, 30]],
        np.float32,
    )
    kept = ss.postprocess_boxes(boxes, height=60, width=80, min_size=8, max_proposals=2)
    assert kept.dtype == np.float32 and kept.tolist() == [[0, 2, 30, 30], [20, 20, 80, 60]]
    assert boxes[0, 0] == -5  # the input is left as it was
