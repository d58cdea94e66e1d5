"""The region proposal network: anchors against a brute-force loop, target assignment against a
hand-worked example, sampling counts, and a tiny training run whose proposals find the objects
far more often than as many random boxes."""

import numpy as np
import pytest
import torch
from _train_data import make_tiny_voc, tiny_config
from torchvision.ops import box_iou

from detect.data import load_dataset
from detect.data.images import read_image
from detect.models.rpn import assign_targets, grid_anchors, rpn_loss, sample_anchors
from detect.training.rpn import build_rpn, train_rpn


def test_grid_anchors_match_a_loop():
    shapes = torch.tensor([[10.0, 20.0], [33.0, 7.5]])
    anchors = grid_anchors(shapes, (3, 4), stride=16, offset=8.5)
    expected = []
    for i in range(3):
        for j in range(4):
            cx, cy = 8.5 + 16 * j, 8.5 + 16 * i
            for w, h in shapes.tolist():
                expected.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    assert torch.equal(anchors, torch.tensor(expected))


def test_assign_targets_by_hand():
    anchors = torch.tensor(
        [
            [0, 0, 10, 10],  # IoU 1 with box 0: positive
            [5, 0, 15, 10],  # IoU 50 / 150 = 0.33 with box 0: ignored
            [20, 20, 30, 30],  # IoU 64 / 136 = 0.47 with box 1, its best anchor: positive
            [0, 0, 10, 20],  # IoU 100 / 200 = 0.5 with box 0: ignored
            [50, 50, 60, 60],  # no overlap: negative
        ],
        dtype=torch.float32,
    )
    boxes = torch.tensor([[0, 0, 10, 10], [22, 22, 32, 32]], dtype=torch.float32)
    labels, matched = assign_targets(anchors, boxes)
    assert labels.tolist() == [1, -1, 1, -1, 0]
    assert matched[0] == 0 and matched[2] == 1
    labels, _ = assign_targets(anchors, torch.zeros((0, 4)))
    assert labels.tolist() == [0] * 5  # no objects: every anchor is a negative


@pytest.mark.parametrize(("positives", "expected"), [(300, (128, 128)), (10, (10, 246))])
def test_sample_anchors_counts(positives, expected):
    labels = torch.cat([torch.ones(positives), torch.zeros(1000), -torch.ones(50)]).long()
    sampled = sample_anchors(labels, torch.Generator().manual_seed(0))
    assert ((sampled == 1).sum().item(), (sampled == 0).sum().item()) == expected
    assert ((sampled == 1) <= (labels == 1)).all() and ((sampled == 0) <= (labels == 0)).all()


def test_rpn_loss_by_hand():
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 20], [5, 5, 9, 9]])
    boxes = torch.tensor([[2.0, 0, 12, 10]])  # anchor 0 shifted by 0.2 of its width
    labels = torch.tensor([1, 0, -1])
    logits = torch.zeros(3)
    deltas = torch.zeros(3, 4)
    # BCE of logit 0 is ln 2 for both sampled anchors; smooth-L1 (beta 1/9) of tx = 0.2:
    # 0.2 - 0.5 / 9; divided by the 2 sampled anchors.
    expected = (2 * np.log(2) + 0.2 - 0.5 / 9) / 2
    loss = rpn_loss(logits, deltas, anchors, boxes, labels, torch.zeros(3, dtype=torch.long))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_tiny_rpn_finds_objects_far_better_than_random_boxes(tmp_path):
    root = make_tiny_voc(tmp_path, num_images=8)
    config = tiny_config(root)
    dataset = load_dataset(root / "voc", "trainval", config.data.classes)
    torch.manual_seed(0)
    rpn = build_rpn(config, dataset)
    losses = train_rpn(rpn, dataset, iterations=400, lr=0.02, seed=0)
    assert np.mean(losses[-50:]) < 0.5 * np.mean(losses[:10])
    rng = np.random.default_rng(0)
    found = random_found = total = 0
    for ann in dataset.annotations:
        image = read_image(ann.path)
        boxes = torch.from_numpy(rpn.propose(image, min_size=4, max_proposals=50))
        assert boxes.dtype == torch.float32 and 0 < len(boxes) <= 50
        assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 2] <= image.shape[1]).all()
        corners = rng.uniform(0, 64, (50, 2))
        random = torch.from_numpy(np.hstack([corners, corners + rng.uniform(8, 40, (50, 2))]))
        found += int((box_iou(ann.boxes, boxes).max(dim=1).values >= 0.5).sum())
        random_found += int((box_iou(ann.boxes, random.float()).max(dim=1).values >= 0.5).sum())
        total += len(ann.boxes)
    assert found / total >= 0.6
    assert found >= 2 * random_found + 0.3 * total
