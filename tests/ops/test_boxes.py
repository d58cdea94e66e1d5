"""Box operations against torchvision and hand-worked values, plus property tests."""

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from detect.ops import boxes as B


def random_boxes(n: int, seed: int, size: float = 100.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2 + 1.0
    return torch.cat([xy, xy + wh], dim=1)


def boxes_strategy(min_side: float):
    return st.lists(
        st.tuples(
            st.floats(0, 500), st.floats(0, 500), st.floats(min_side, 300), st.floats(min_side, 300)
        ),
        min_size=1,
        max_size=20,
    ).map(
        lambda rows: torch.tensor(
            [[x, y, x + w, y + h] for x, y, w, h in rows], dtype=torch.float32
        )
    )


box_strategy = boxes_strategy(1.0)
# Size ratios below exp(DELTA_LOG_CLAMP) = 62.5, so decode is not clamped.
regression_boxes = boxes_strategy(8.0)


def test_iou_matches_torchvision():
    a, b = random_boxes(50, 1), random_boxes(40, 2)
    torch.testing.assert_close(B.box_iou(a, b), torchvision.ops.box_iou(a, b))


def test_iou_hand_worked():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    # overlap 5x10 = 50, union 150 -> 1/3; disjoint -> 0; identical -> 1
    torch.testing.assert_close(B.box_iou(a, b), torch.tensor([[1 / 3, 0.0, 1.0]]))


def test_iou_degenerate_boxes_are_zero_not_nan():
    a = torch.tensor([[5.0, 5.0, 5.0, 5.0]])
    assert B.box_iou(a, a).item() == 0.0


@given(box_strategy, box_strategy)
@settings(max_examples=50, deadline=None)
def test_iou_symmetric_and_bounded(a, b):
    iou = B.box_iou(a, b)
    torch.testing.assert_close(iou, B.box_iou(b, a).T)
    assert (iou >= 0).all() and (iou <= 1 + 1e-6).all()


@given(regression_boxes, regression_boxes)
@settings(max_examples=50, deadline=None)
def test_decode_inverts_encode(props, gts):
    n = min(len(props), len(gts))
    props, gts = props[:n], gts[:n]
    deltas = B.encode_deltas(props, gts)
    torch.testing.assert_close(B.decode_deltas(props, deltas), gts, atol=1e-2, rtol=1e-4)


def test_encode_hand_worked():
    proposal = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size (10, 20)
    target = torch.tensor([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), size (20, 20)
    expected = torch.tensor([[0.7, 0.2, torch.log(torch.tensor(2.0)), 0.0]])
    torch.testing.assert_close(B.encode_deltas(proposal, target), expected)


def test_decode_per_class_layout():
    props = random_boxes(5, 3)
    deltas = torch.randn(5, 12) * 0.1
    decoded = B.decode_deltas(props, deltas)
    for k in range(3):
        torch.testing.assert_close(
            decoded[:, 4 * k : 4 * k + 4], B.decode_deltas(props, deltas[:, 4 * k : 4 * k + 4])
        )


@given(box_strategy, st.integers(501, 2000))
@settings(max_examples=50, deadline=None)
def test_flip_twice_is_identity(boxes, width):
    torch.testing.assert_close(
        B.hflip_boxes(B.hflip_boxes(boxes, width), width), boxes, atol=1e-3, rtol=0
    )


def test_flip_hand_worked():
    flipped = B.hflip_boxes(torch.tensor([[0.0, 1.0, 10.0, 5.0]]), 100)
    torch.testing.assert_close(flipped, torch.tensor([[90.0, 1.0, 100.0, 5.0]]))


def test_clip():
    clipped = B.clip_boxes(torch.tensor([[-5.0, -1.0, 120.0, 40.0]]), height=30, width=100)
    torch.testing.assert_close(clipped, torch.tensor([[0.0, 0.0, 100.0, 30.0]]))


def test_voc_round_trip_and_width():
    voc = torch.tensor([[1.0, 1.0, 10.0, 20.0]])  # devkit width = 10 - 1 + 1 = 10
    xyxy = B.xyxy_from_voc(voc)
    torch.testing.assert_close(xyxy, torch.tensor([[0.0, 0.0, 10.0, 20.0]]))
    torch.testing.assert_close(B.voc_from_xyxy(xyxy), voc)


def test_coco_round_trip():
    xywh = torch.tensor([[3.0, 4.0, 10.0, 20.0]])
    xyxy = B.xyxy_from_xywh(xywh)
    torch.testing.assert_close(xyxy, torch.tensor([[3.0, 4.0, 13.0, 24.0]]))
    torch.testing.assert_close(B.xywh_from_xyxy(xyxy), xywh)


def test_voc_iou_equals_devkit_formula():
    """IoU of converted boxes equals the devkit's +1 inclusive-pixel formula on the raw boxes."""
    g = torch.Generator().manual_seed(5)
    for _ in range(200):
        a = torch.randint(1, 50, (4,), generator=g).float()
        b = torch.randint(1, 50, (4,), generator=g).float()
        a[2:] = a[:2] + torch.randint(0, 30, (2,), generator=g)
        b[2:] = b[:2] + torch.randint(0, 30, (2,), generator=g)
        iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
        ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
        inter = max(iw, 0) * max(ih, 0)
        union = (
            (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
        )
        ours = B.box_iou(B.xyxy_from_voc(a[None]), B.xyxy_from_voc(b[None])).item()
        assert abs(ours - float(inter / union)) < 1e-6


def test_batched_nms_matches_per_class_loop():
    boxes = random_boxes(60, 7)
    scores = torch.rand(60, generator=torch.Generator().manual_seed(8))
    labels = torch.arange(60) % 3
    keep = B.batched_nms(boxes, scores, labels, 0.3)
    expected = []
    for c in range(3):
        idx = torch.nonzero(labels == c).flatten()
        expected += idx[torchvision.ops.nms(boxes[idx], scores[idx], 0.3)].tolist()
    assert sorted(keep.tolist()) == sorted(expected)
    assert (scores[keep][:-1] >= scores[keep][1:]).all()
    assert (
        B.batched_nms(
            torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.3
        ).numel()
        == 0
    )


def test_decode_clamps_huge_deltas():
    decoded = B.decode_deltas(
        torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[0.0, 0.0, 50.0, 50.0]])
    )
    assert torch.isfinite(decoded).all()
    assert decoded[0, 2] - decoded[0, 0] == pytest.approx(10 * 1000 / 16, rel=1e-4)


def test_conversions_give_float32_for_any_input_dtype_and_leading_shape():
    for convert in (B.xyxy_from_voc, B.voc_from_xyxy, B.xyxy_from_xywh, B.xywh_from_xyxy):
        for dtype in (torch.int64, torch.float64):
            assert convert(torch.tensor([[1, 2, 5, 9]], dtype=dtype)).dtype == torch.float32
    # One box (4,) and a batch (2, 1, 4): the last axis holds the coordinates.
    one = torch.tensor([3.0, 4.0, 10.0, 20.0])
    assert B.xyxy_from_xywh(one).tolist() == [3.0, 4.0, 13.0, 24.0]
    assert B.xywh_from_xyxy(one).tolist() == [3.0, 4.0, 7.0, 16.0]
    assert B.xyxy_from_voc(one).tolist() == [2.0, 3.0, 10.0, 20.0]
    assert B.voc_from_xyxy(one).tolist() == [4.0, 5.0, 10.0, 20.0]
    batch = one.repeat(2, 1, 1)
    assert B.xyxy_from_xywh(batch).tolist() == [[[3.0, 4.0, 13.0, 24.0]]] * 2
    assert B.xywh_from_xyxy(batch).tolist() == [[[3.0, 4.0, 7.0, 16.0]]] * 2
    # The inputs are not modified in place.
    assert one.tolist() == [3.0, 4.0, 10.0, 20.0]


def test_area_and_iou_of_boxes_smaller_than_a_pixel():
    boxes = torch.tensor([[2.0, 3.0, 2.5, 5.0], [4.0, 4.0, 3.0, 6.0], [1.0, 1.0, 1.5, 1.25]])
    # 0.5 x 2; inverted width -> 0; 0.5 x 0.25.
    assert B.box_area(boxes).tolist() == [1.0, 0.0, 0.125]
    tiny = torch.tensor([[1.0, 1.0, 1.5, 1.25], [1.25, 1.0, 1.75, 1.25]])
    # Identical: 1. Shifted by half the width: overlap 0.25 x 0.25, union 0.1875 -> 1/3.
    torch.testing.assert_close(B.box_iou(tiny[:1], tiny), torch.tensor([[1.0, 1 / 3]]))
    torch.testing.assert_close(B.paired_box_iou(tiny, tiny[[0, 0]]), torch.tensor([1.0, 1 / 3]))


def test_paired_iou_hand_worked():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 5.0, 5.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [5.0, 5.0, 5.0, 5.0]])
    # 50 / 150; disjoint; empty union -> 0, not nan.
    torch.testing.assert_close(B.paired_box_iou(a, b), torch.tensor([1 / 3, 0.0, 0.0]))


def test_scale_boxes_hand_worked():
    boxes = torch.tensor([[1.0, 2.0, 3.0, 5.0]])
    assert B.scale_boxes(boxes, 2.5).tolist() == [[2.5, 5.0, 7.5, 12.5]]


def test_batched_nms_of_nothing_is_an_empty_index():
    keep = B.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.int64
