"""SVMs: feature scaling, hard-negative mining on planted hard negatives, the scorer, train_svms."""

import numpy as np
import torch

from detect.config import SVMConfig
from detect.models.heads import HeadOutput
from detect.training.features import RegionFeatures
from detect.training.svm import SVMModel, SVMScorer, feature_scale, train_svms, train_with_mining


def planted_problem(seed: int = 0):
    """Positives near x0 = +2, 3000 easy negatives near x0 = -2 and 15 hard negatives that sit
    between (x0 = 0.6, shifted in x1) which a random initial subset almost never contains."""
    rng = np.random.default_rng(seed)
    positives = rng.normal(0, 0.3, (40, 4))
    positives[:, 0] += 2
    easy = rng.normal(0, 0.3, (3000, 4))
    easy[:, 0] -= 2
    hard = rng.normal(0, 0.05, (15, 4))
    hard[:, 0] += 0.6
    hard[:, 1] += 1.0
    negatives = np.concatenate([easy, hard])
    scale = feature_scale(np.concatenate([positives, negatives]), 20.0)
    return positives * scale, negatives * scale, np.arange(3000, 3015)


def test_feature_scale_gives_the_target_mean_norm():
    x = np.random.default_rng(0).normal(size=(50, 7))
    assert np.isclose(np.linalg.norm(x * feature_scale(x, 20.0), axis=1).mean(), 20.0)


def test_mining_finds_the_planted_hard_negatives():
    positives, negatives, hard = planted_problem()
    initial = train_with_mining(
        positives, negatives, SVMConfig(rounds=0, initial_negatives=100), np.random.default_rng(1)
    )
    mined = train_with_mining(
        positives, negatives, SVMConfig(rounds=3, initial_negatives=100), np.random.default_rng(1)
    )
    assert not np.isin(hard, initial.active).any()
    before = negatives[hard] @ initial.weight + initial.bias
    after = negatives[hard] @ mined.weight + mined.bias
    assert np.all(before > -1.0)  # hard for the first model (inside the margin)
    assert np.isin(hard, mined.active).all()  # every planted hard negative was added
    assert np.all(after < before - 1.0)  # and the retrained SVM pushes them down
    assert len(mined.active) < 100  # easy negatives (score < -1.2) were dropped
    assert np.all(positives @ mined.weight + mined.bias > 0)
    assert mined.history[0] == 100 and len(mined.history) > 1


def test_liblinear_settings_follow_the_config():
    # Hinge loss with C: on a 1-d separable problem the optimum puts both classes on the margin.
    positives = np.array([[2.0], [3.0]])
    negatives = np.array([[-2.0], [-3.0]])
    cfg = SVMConfig(C=10.0, rounds=0, initial_negatives=2, intercept_scaling=10.0)
    result = train_with_mining(positives, negatives, cfg, np.random.default_rng(0))
    assert np.isclose(2.0 * result.weight[0] + result.bias, 1.0, atol=0.05)
    assert np.isclose(-2.0 * result.weight[0] + result.bias, -1.0, atol=0.05)


def fake_output(fc7: torch.Tensor, pooled: torch.Tensor) -> HeadOutput:
    r = fc7.shape[0]
    deltas = torch.arange(r * 12, dtype=torch.float32).reshape(r, 12)
    return HeadOutput(pooled, fc7, torch.zeros(r, 3), deltas)


def test_svm_scorer_uses_the_configured_feature_and_scale():
    weight = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    model = SVMModel("fc7", 2.0, weight, torch.tensor([0.5, 0.0]))
    out = fake_output(torch.tensor([[1.0, 3.0]]), torch.tensor([[5.0, 5.0]]))
    scores, deltas = SVMScorer(model)(out)
    assert torch.allclose(scores, torch.sigmoid(torch.tensor([[2.5, -6.0]])))
    assert torch.equal(deltas, out.bbox_deltas[:, 4:])
    pool_model = SVMModel("pool", 1.0, weight, torch.zeros(2))
    scores, deltas = SVMScorer(pool_model, deltas_from=lambda o: o.pooled)(out)
    assert torch.allclose(scores, torch.sigmoid(torch.tensor([[5.0, -5.0]])))
    assert deltas.tolist() == [[5.0, 5.0]]
    assert SVMModel.from_state_dict(model.state_dict()).scores(out.fc7).tolist() == [[2.5, -6.0]]


def test_train_svms_per_class_negatives_by_iou():
    positives, negatives, _ = planted_problem(1)
    raw_scale = 1.0 / feature_scale(np.concatenate([positives, negatives]), 20.0)
    # Class 1 = class 0 with its coordinates reversed (x3 = +3); a proposal is a negative of a class only if its IoU
    # with that class's ground truth is < 0.3.
    gt = np.concatenate([positives, 1.5 * positives[:10, ::-1]]) * raw_scale
    # The pool holds the ground truths (IoU 1 with their own class) and the proposals.
    pool = np.concatenate([gt, (np.concatenate([negatives[:500], positives[:5]]) * raw_scale)])
    iou = np.zeros((555, 2), dtype=np.float32)
    iou[:40, 0] = iou[40:50, 1] = 1.0
    iou[550:, 0] = 0.8  # near-duplicates of class-0 positives: not class-0 negatives
    features = RegionFeatures(
        torch.tensor(gt, dtype=torch.float32),
        torch.tensor([0] * 40 + [1] * 10),
        torch.tensor(pool, dtype=torch.float32),
        torch.from_numpy(iou),
        torch.zeros((0, 3)),
        torch.zeros(0, dtype=torch.int64),
        torch.zeros((0, 4)),
    )
    svm = train_svms(features, 2, SVMConfig(initial_negatives=100), seed=0)
    assert svm.weight.shape == (2, 4) and svm.bias.shape == (2,)
    scores = svm.scores(features.gt_features)
    assert torch.all(scores[:40, 0] > 0) and torch.all(scores[40:, 1] > 0)
    assert torch.all(scores[:40, 1] < 0)
    pool_scores = svm.scores(features.pool_features)
    assert torch.all(pool_scores[50:550] < 0)
    assert torch.all(pool_scores[550:, 0] > 0) and torch.all(pool_scores[550:, 1] < 0)
