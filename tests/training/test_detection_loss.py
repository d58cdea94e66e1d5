"""The fine-tuning loss against a per-window loop of the Fast R-CNN formulas (cross-entropy plus
smooth-L1 on the box deltas of each foreground window's own class)."""

import math

import pytest
import torch

from detect.models.heads import HeadOutput
from detect.training.finetune import detection_loss


def smooth_l1(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1.0 else abs(x) - 0.5


def loop_loss(logits, deltas, labels, targets, weight):
    """Mean cross-entropy over windows + weight * (sum of smooth-L1 over fg windows) / windows."""
    count = len(labels)
    cls = 0.0
    box = 0.0
    for r in range(count):
        row = logits[r]
        log_sum = math.log(sum(math.exp(v) for v in row))
        cls += (log_sum - row[labels[r]]) / count
        if labels[r] > 0:
            column = 4 * labels[r]  # the deltas of the window's own class
            for j in range(4):
                box += smooth_l1(deltas[r][column + j] - targets[r][j])
    box /= count
    return cls + weight * box, cls, box


@pytest.mark.parametrize("weight", [1.0, 2.5])
def test_loss_matches_a_per_window_loop(weight):
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 2, 1, 0, 3, 2, 0])  # background and three classes, out of order
    count, classes = len(labels), 4  # background + 3
    logits = torch.randn(count, classes, generator=generator) * 2
    # Deltas spread so that some differences fall inside |x| < 1 and some outside.
    deltas = torch.randn(count, 4 * classes, generator=generator) * 1.5
    targets = torch.randn(count, 4, generator=generator)
    targets[labels == 0] = 0.0
    out = HeadOutput(torch.zeros(count, 5), torch.zeros(count, 5), logits, deltas)

    total, cls, box = detection_loss(out, labels, targets, weight)

    expected = loop_loss(
        logits.tolist(), deltas.tolist(), labels.tolist(), targets.tolist(), weight
    )
    assert float(total) == pytest.approx(expected[0], rel=1e-5)
    assert float(cls) == pytest.approx(expected[1], rel=1e-5)
    assert float(box) == pytest.approx(expected[2], rel=1e-5)


def test_background_windows_add_no_box_loss():
    logits = torch.zeros(2, 3)
    deltas = torch.full((2, 12), 5.0)  # far from the targets: any box loss would show
    out = HeadOutput(torch.zeros(2, 1), torch.zeros(2, 1), logits, deltas)
    total, cls, box = detection_loss(out, torch.tensor([0, 0]), torch.zeros(2, 4), 1.0)
    assert float(box) == 0.0
    assert float(cls) == pytest.approx(math.log(3))  # uniform logits over 3 columns
    assert float(total) == pytest.approx(math.log(3))


def test_one_foreground_window_by_hand():
    # One window of class 1: logits (0, ln 3) -> cross-entropy ln(4/3); deltas of column 1 differ
    # from the targets by 0.5 (0.125) and 2.0 (1.5): box loss 1.625 over one window.
    logits = torch.tensor([[0.0, math.log(3.0)]])
    deltas = torch.tensor([[9.0, 9.0, 9.0, 9.0, 0.5, -2.0, 0.0, 0.0]])
    out = HeadOutput(torch.zeros(1, 1), torch.zeros(1, 1), logits, deltas)
    total, cls, box = detection_loss(out, torch.tensor([1]), torch.zeros(1, 4), 2.0)
    assert float(cls) == pytest.approx(math.log(4 / 3))
    assert float(box) == pytest.approx(1.625)
    assert float(total) == pytest.approx(math.log(4 / 3) + 2 * 1.625)
