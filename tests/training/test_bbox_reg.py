"""Ridge box regression: training rows and targets (hand formulas), the closed form vs numpy."""

import math

import numpy as np
import pytest
import torch

from detect.config import BBoxRegConfig
from detect.data.images import write_image
from detect.models.heads import HeadOutput
from detect.models.scoring import RidgeRegressor, RidgeScorer
from detect.structures import Annotation, DetectionDataset
from detect.training.bbox_reg import fit_ridge, train_ridge
from detect.training.features import RegionFeatures, extract_region_features


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def hand_targets(p, g) -> list[float]:
    pw, ph, gw, gh = p[2] - p[0], p[3] - p[1], g[2] - g[0], g[3] - g[1]
    px, py, gx, gy = p[0] + pw / 2, p[1] + ph / 2, g[0] + gw / 2, g[1] + gh / 2
    return [(gx - px) / pw, (gy - py) / ph, math.log(gw / pw), math.log(gh / ph)]


class FakeDetector:
    """'pooled' features = the box in original pixels plus a constant."""

    def eval(self):
        return self

    def region_outputs(self, image, boxes, feature_map=None):
        assert image.shape == (60, 80, 3)
        pooled = torch.cat([boxes, torch.ones(len(boxes), 1)], dim=1)
        r = len(boxes)
        return HeadOutput(pooled, -pooled, torch.zeros(r, 3), torch.zeros(r, 12))


def test_region_features_rows_and_targets(tmp_path):
    path = tmp_path / "a.png"
    write_image(path, np.zeros((60, 80, 3), dtype=np.uint8))
    gt = [[10.0, 10.0, 30.0, 40.0], [50.0, 5.0, 70.0, 25.0]]
    ann = Annotation("a", path, 80, 60, torch.tensor(gt), [1, 0])
    dataset = DetectionDataset("t", tmp_path, "train", ("x", "y"), [ann])
    proposals = [
        [11.0, 12.0, 31.0, 40.0],  # IoU 0.86 with gt 0
        [10.0, 10.0, 30.0, 30.0],  # IoU 0.667 with gt 0
        [14.0, 10.0, 30.0, 40.0],  # IoU 0.8 with gt 0
        [52.0, 8.0, 68.0, 28.0],  # IoU 0.6 (approx) with gt 1
        [0.0, 0.0, 10.0, 10.0],  # IoU 0
        [20.0, 20.0, 60.0, 50.0],  # low
    ]
    features = extract_region_features(
        FakeDetector(), dataset, {"a": torch.tensor(proposals)}, svm_feature="fc7", min_iou=0.6
    ).joined()
    # Brute force: every box (gt first, then proposals) whose best IoU >= 0.6.
    expected = []
    for box in gt + proposals:
        overlaps = [iou(box, g) for g in gt]
        best = int(np.argmax(overlaps))
        if overlaps[best] >= 0.6:
            expected.append((box, [1, 0][best], hand_targets(box, gt[best])))
    assert features.reg_features.shape == (len(expected), 5)
    for row, (box, label, targets) in enumerate(expected):
        assert np.allclose(features.reg_features[row, :4].tolist(), box)
        assert int(features.reg_labels[row]) == label
        assert np.allclose(features.reg_targets[row].tolist(), targets, atol=1e-5)
    # SVM rows: positives are the GT boxes; the pool is GT + proposals with per-class IoUs.
    assert torch.allclose(features.gt_features, -torch.tensor([[*g, 1.0] for g in gt]))
    assert features.gt_labels.tolist() == [1, 0]
    assert features.pool_features.shape[0] == 2 + len(proposals)
    pool_boxes = gt + proposals
    for row, box in enumerate(pool_boxes):
        for k, g in ((1, gt[0]), (0, gt[1])):
            assert math.isclose(float(features.pool_class_iou[row, k]), iou(box, g), abs_tol=1e-5)


def numpy_ridge(x, y, lam):
    """Closed form with an unpenalised intercept: augmented design, zero penalty on the bias."""
    a = np.hstack([x, np.ones((len(x), 1))])
    penalty = lam * np.eye(a.shape[1])
    penalty[-1, -1] = 0.0
    beta = np.linalg.solve(a.T @ a + penalty, a.T @ y)
    return beta[:-1], beta[-1]


@pytest.mark.parametrize("n, d", [(200, 6), (5, 30)])  # primal and dual branches
def test_fit_ridge_matches_numpy_closed_form(n, d):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)) * 3 + 1
    y = x[:, :4] * 0.5 + rng.normal(size=(n, 4)) * 0.1 + 2.0
    w, b = fit_ridge(torch.tensor(x), torch.tensor(y), lam=7.0)
    w_ref, b_ref = numpy_ridge(x, y, 7.0)
    assert np.allclose(w.numpy(), w_ref, atol=1e-4)
    assert np.allclose(b.numpy(), b_ref, atol=1e-4)


def test_train_ridge_per_class_and_scorer(caplog):
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(60, 5)), dtype=torch.float32)
    labels = torch.tensor([0] * 30 + [2] * 30)
    targets = torch.tensor(rng.normal(size=(60, 4)) * 0.1, dtype=torch.float32)
    empty = torch.zeros((0, 5))
    features = RegionFeatures(empty, empty[:, 0].long(), empty, empty, x, labels, targets)
    ridge = train_ridge(features, 3, BBoxRegConfig(ridge_lambda=10.0, feature_norm=20.0))
    scale = 20.0 / float(x.norm(dim=1).mean())
    assert math.isclose(ridge.scale, scale, rel_tol=1e-5)
    w_ref, b_ref = numpy_ridge(x[30:].double().numpy() * scale, targets[30:].double().numpy(), 10.0)
    assert np.allclose(ridge.weight[2].numpy(), w_ref, atol=1e-4)
    assert torch.all(ridge.weight[1] == 0) and torch.all(ridge.bias[1] == 0)  # no rows: no shift
    assert "ridge box regression: class 1 has no region with IoU >= 0.6" in caplog.text

    out = HeadOutput(x[:3], x[:3], torch.zeros(3, 4), torch.zeros(3, 16))
    deltas = ridge(out)
    assert deltas.shape == (3, 12)
    expected = x[:3].double().numpy() * scale @ w_ref + b_ref
    assert np.allclose(deltas[:, 8:12].numpy(), expected, atol=1e-4)
    restored = RidgeRegressor.from_state_dict(ridge.state_dict())
    scores, scorer_deltas = RidgeScorer(lambda o: (o.cls_logits[:, 1:], None), restored)(out)
    assert scores.shape == (3, 3) and torch.allclose(scorer_deltas, deltas)
