"""Recall vs number of proposals: against a brute-force loop and a hand example."""

import numpy as np
import pytest
import torch

from detect.proposals import proposal_recall
from detect.proposals.recall import IOU_THRESHOLDS, format_recall_table, save_recall_plot
from detect.structures import Annotation, DetectionDataset


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _random_boxes(rng, n):
    xy = rng.uniform(0, 80, size=(n, 2))
    wh = rng.uniform(5, 40, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def _dataset(gt_per_image, difficult_per_image):
    annotations = [
        Annotation(
            f"i{k}", f"i{k}.png", 120, 120, gt, torch.zeros(len(gt), dtype=torch.int64), diff
        )
        for k, (gt, diff) in enumerate(zip(gt_per_image, difficult_per_image, strict=True))
    ]
    return DetectionDataset("t", ".", "test", ("a",), annotations)


def test_matches_brute_force():
    rng = np.random.default_rng(0)
    gts = [_random_boxes(rng, g) for g in (3, 5, 0, 4)]
    difficult = [rng.random(len(g)) < 0.25 for g in gts]
    proposals = {
        f"i{k}": torch.from_numpy(_random_boxes(rng, n)) for k, n in enumerate((40, 7, 10, 25))
    }
    counts = (1, 5, 10, 30)
    result = proposal_recall(proposals, _dataset(gts, difficult), counts)
    hits, total = np.zeros((len(counts), len(IOU_THRESHOLDS))), 0
    for k, (gt, diff) in enumerate(zip(gts, difficult, strict=True)):
        boxes = proposals[f"i{k}"].tolist()
        for g, is_difficult in zip(gt.tolist(), diff, strict=True):
            if is_difficult:
                continue
            total += 1
            for i, count in enumerate(counts):
                best = max((_iou(g, p) for p in boxes[:count]), default=0.0)
                for j, t in enumerate(IOU_THRESHOLDS):
                    hits[i, j] += best >= t
    assert result.num_gt == total
    np.testing.assert_allclose(result.recall, hits / total, atol=1e-6)
    np.testing.assert_allclose(result.average_recall, (hits / total).mean(axis=1), atol=1e-6)


def test_hand_example_table_and_plot(tmp_path):
    gt = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], dtype=np.float32)
    # First proposal: IoU 0.8 with gt 0 (box 0..10 x 0..8); second: exact gt 1.
    proposals = {"i0": torch.tensor([[0.0, 0, 10, 8], [50, 50, 60, 60]])}
    result = proposal_recall(proposals, _dataset([gt], [np.zeros(2, bool)]), counts=(1, 2))
    assert result.recall_at(0.5).tolist() == [0.5, 1.0]
    assert result.recall_at(0.7).tolist() == [0.5, 1.0]
    # AR: gt 0 recalled at 0.5..0.8 (7 of 10 thresholds), gt 1 at all 10.
    assert result.average_recall.tolist() == pytest.approx([0.35, 0.85])
    table = format_recall_table(result)
    assert "R@0.7" in table and "0.850" in table
    plot = tmp_path / "recall.png"
    save_recall_plot(result, plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
