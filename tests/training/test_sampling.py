"""Window sampling: thresholds, proportions, targets (by the R-CNN formulas), flips, determinism."""

import math

import numpy as np
import pytest
import torch

from detect.training.sampling import derived_generator, hflip_example, sample_rois

GT = torch.tensor([[0.0, 0.0, 10.0, 10.0]])


def shifted(dx: float) -> list[float]:
    """A 10x10 box shifted right by dx: IoU with GT = (10 - dx) / (10 + dx)."""
    return [dx, 0.0, 10.0 + dx, 10.0]


def test_thresholds_on_hand_made_boxes():
    # IoUs: 1.0 (identical), 0.667 (dx 2), 0.5 exactly (dx 10/3), 0.429 (dx 4), 0.1 exactly
    # (dx 90/11), 0.053 (dx 9), 0 (far away).
    dxs = [0.0, 2.0, 10 / 3, 4.0, 90 / 11, 9.0, 30.0]
    proposals = torch.tensor([shifted(dx) for dx in dxs])
    out = sample_rois(proposals, GT, torch.tensor([1]), 100, torch.Generator().manual_seed(0))
    expected_iou = sorted([(10 - dx) / (10 + dx) for dx in dxs] + [1.0], reverse=True)
    fg = out.labels > 0
    # GT itself, the identical proposal, IoU 0.667 and IoU 0.5 (inclusive) are foreground.
    assert int(fg.sum()) == 4
    assert torch.all(out.labels[fg] == 2)  # class index 1 -> head column 2
    assert torch.all(out.ious[fg] >= 0.5 - 1e-6)
    # Background: 0.429 and 0.1 (inclusive low bound); 0.053 and 0 are neither.
    bg_ious = sorted(out.ious[~fg].tolist())
    assert np.allclose(bg_ious, [0.1, 3 / 7], atol=1e-5)
    assert np.allclose(sorted(out.ious.tolist(), reverse=True), expected_iou[:6], atol=1e-5)


def test_targets_follow_the_rcnn_formulas():
    gt = torch.tensor([[10.0, 20.0, 50.0, 60.0], [100.0, 100.0, 120.0, 140.0]])
    proposals = torch.tensor([[12.0, 18.0, 48.0, 66.0], [101.0, 104.0, 119.0, 139.0]])
    out = sample_rois(proposals, gt, torch.tensor([0, 3]), 16, torch.Generator().manual_seed(1))
    for box, label, target in zip(out.boxes, out.labels, out.targets, strict=True):
        if label == 0:
            assert torch.all(target == 0)
            continue
        g = gt[0] if label == 1 else gt[1]
        px, py = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        pw, ph = box[2] - box[0], box[3] - box[1]
        gx, gy, gw, gh = (g[0] + g[2]) / 2, (g[1] + g[3]) / 2, g[2] - g[0], g[3] - g[1]
        hand = [(gx - px) / pw, (gy - py) / ph, math.log(gw / pw), math.log(gh / ph)]
        assert np.allclose(target.tolist(), hand, atol=1e-5)
    assert sorted(out.labels.tolist()) == [1, 1, 4, 4]


def test_proportions_with_plenty_of_candidates():
    rng = np.random.default_rng(0)
    fg = [shifted(dx) for dx in rng.uniform(0, 3, 100)]  # IoU > 0.53
    bg = [shifted(dx) for dx in rng.uniform(3.5, 8, 500)]  # IoU in (0.11, 0.48)
    proposals = torch.tensor(fg + bg, dtype=torch.float32)
    out = sample_rois(proposals, GT, torch.tensor([0]), 128, torch.Generator().manual_seed(0))
    assert out.boxes.shape == (128, 4)
    assert int((out.labels > 0).sum()) == 32  # 25 %
    assert int((out.labels == 0).sum()) == 96
    assert len({tuple(b) for b in out.boxes.tolist()}) == 128  # without replacement


def test_few_foreground_fills_with_background():
    proposals = torch.tensor([shifted(dx) for dx in np.linspace(4, 8, 50)], dtype=torch.float32)
    out = sample_rois(proposals, GT, torch.tensor([0]), 20, torch.Generator().manual_seed(0))
    assert int((out.labels > 0).sum()) == 1  # only the ground truth itself
    assert out.boxes.shape[0] == 20


def test_image_without_objects_gives_background():
    proposals = torch.tensor([[0.0, 0.0, 5.0, 5.0], [3.0, 3.0, 9.0, 9.0]])
    out = sample_rois(
        proposals, torch.zeros((0, 4)), torch.zeros(0), 8, torch.Generator().manual_seed(0)
    )
    assert out.labels.tolist() == [0, 0]


def test_sampling_is_deterministic_by_generator():
    proposals = torch.tensor([shifted(dx) for dx in np.linspace(0, 8, 200)], dtype=torch.float32)
    a = sample_rois(proposals, GT, torch.tensor([0]), 16, derived_generator(5, 2, 7))
    b = sample_rois(proposals, GT, torch.tensor([0]), 16, derived_generator(5, 2, 7))
    c = sample_rois(proposals, GT, torch.tensor([0]), 16, derived_generator(5, 2, 8))
    assert torch.equal(a.boxes, b.boxes)
    assert not torch.equal(a.boxes, c.boxes)


def test_hflip_example():
    image = np.zeros((4, 10, 3), dtype=np.uint8)
    image[:, 1:3] = 255  # columns 1..2 -> continuous x in [1, 3)
    boxes = torch.tensor([[1.0, 0.0, 3.0, 4.0]])
    flipped, props, gt = hflip_example(image, boxes, boxes * 2)
    assert np.array_equal(np.flatnonzero(flipped[0, :, 0]), [7, 8])  # continuous [7, 9)
    assert props.tolist() == [[7.0, 0.0, 9.0, 4.0]]
    assert gt.tolist() == [[4.0, 0.0, 8.0, 8.0]]
    back, props2, _ = hflip_example(flipped, props, gt)
    assert np.array_equal(back, image) and torch.equal(props2, boxes)


def exact(height: float) -> list[float]:
    """The left part of GT [0, 0, 10, 10], ``height`` tall: IoU = height / 10 exactly."""
    return [0.0, 0.0, 10.0, height]


def test_iou_bounds_are_exact_on_binary_fractions():
    # IoU 0.5, 0.5, 0.25, 0.1 (exact in float32: 5/10, 1/10) and 0.05.
    proposals = torch.tensor([exact(5.0), [0.0, 5.0, 10.0, 10.0], exact(2.5), exact(1.0)])
    proposals = torch.cat([proposals, torch.tensor([exact(0.5)])])
    out = sample_rois(proposals, GT, torch.tensor([0]), 100, torch.Generator().manual_seed(0))
    fg = out.labels > 0
    assert sorted(out.ious[fg].tolist()) == [0.5, 0.5, 1.0]  # 0.5 is foreground ...
    assert sorted(out.ious[~fg].tolist()) == pytest.approx([0.1, 0.25])  # ... never background
    assert out.labels.dtype == torch.int64 and out.targets.dtype == torch.float32


def test_background_fallback_excludes_the_high_bound():
    # Nothing in [0.1, 0.5): background is drawn from IoU < 0.5, so 0.05 but not 0.5.
    proposals = torch.tensor([exact(5.0), exact(0.5), [20.0, 20.0, 30.0, 30.0]])
    out = sample_rois(proposals, GT, torch.tensor([0]), 100, torch.Generator().manual_seed(0))
    assert sorted(out.ious[out.labels == 0].tolist()) == pytest.approx([0.0, 0.05])
    assert sorted(out.ious[out.labels > 0].tolist()) == [0.5, 1.0]


def test_all_candidates_fit_no_randomness_is_drawn():
    # Exactly the foreground quota (2 of 8) and exactly enough background: nothing to choose.
    proposals = torch.tensor([exact(5.0)] + [exact(h) for h in (1.0, 1.5, 2.0, 2.5, 3.0, 3.5)])
    generator = torch.Generator().manual_seed(4)
    state = generator.get_state()
    out = sample_rois(proposals, GT, torch.tensor([0]), 8, generator)
    assert torch.equal(generator.get_state(), state)
    assert torch.equal(out.boxes, torch.cat([GT, proposals]))  # input order, foreground first


def test_derived_generator_seeds_with_64_bits_of_the_seed_sequence():
    for seed, keys in ((5, (2, 7)), (0, ()), (123, (1, 2, 3))):
        words = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
        expected = int(words[0]) * 2**32 + int(words[1])
        assert derived_generator(seed, *keys).initial_seed() == expected
