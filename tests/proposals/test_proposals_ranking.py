"""Numpy box ranking helpers against brute force: IoU, greedy suppression, rank interleaving."""

import numpy as np
import torch

from detect.ops.boxes import box_iou
from detect.proposals.ranking import box_iou_np, interleave, suppress_overlaps


def random_boxes(rng, count, size=60.0):
    corners = rng.uniform(0, size, (count, 2))
    return np.concatenate([corners, corners + rng.uniform(1, 20, (count, 2))], axis=1)


def test_iou_matches_torch():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 30), random_boxes(rng, 20)
    expected = box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(box_iou_np(a, b), expected, atol=1e-9)


def brute_force_suppression(boxes, threshold, limit):
    """Keep a box when its IoU with every kept box so far is at most ``threshold``."""
    kept = []
    for i, box in enumerate(boxes):
        if limit and len(kept) == limit:
            break
        ious = [box_iou_np(box[None], boxes[j][None])[0, 0] for j in kept]
        if all(iou <= threshold for iou in ious):
            kept.append(i)
    return kept


def test_suppression_matches_the_pairwise_loop():
    rng = np.random.default_rng(1)
    for threshold, limit in [(0.3, 0), (0.6, 0), (0.9, 0), (0.5, 7)]:
        boxes = random_boxes(rng, 80, size=40.0)
        boxes = np.concatenate([boxes, boxes[:10]])  # exact duplicates are suppressed
        got = suppress_overlaps(boxes, threshold, limit).tolist()
        assert got == brute_force_suppression(boxes, threshold, limit)
    assert suppress_overlaps(boxes, 1.0, 5).tolist() == [0, 1, 2, 3, 4]
    assert suppress_overlaps(np.zeros((0, 4)), 0.5).tolist() == []


def test_interleave_takes_each_lists_next_box_in_turn():
    a = np.array([[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]], np.float32)
    b = np.array([[10, 10, 11, 11]], np.float32)
    c = np.array([[20, 20, 21, 21], [21, 21, 22, 22]], np.float32)
    expected = [a[0], b[0], c[0], a[1], c[1], a[2]]
    np.testing.assert_array_equal(interleave([a, b, c]), np.array(expected))
    assert interleave([]).shape == (0, 4)
