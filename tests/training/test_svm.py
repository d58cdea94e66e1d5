"""SVMs: feature scaling, hard-negative mining on planted hard negatives, the scorer, train_svms."""

import logging
import re
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

import detect.training.svm as svm_module
from detect.config import SVMConfig
from detect.errors import DetectError
from detect.models.heads import HeadOutput
from detect.models.scoring import SVMModel, SVMScorer
from detect.training.features import RegionFeatures
from detect.training.svm import MiningResult, feature_scale, train_svms, train_with_mining


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
    restored = SVMModel.from_state_dict(model.state_dict())
    assert restored.scores(out.fc7).tolist() == [[2.5, -6.0]]
    # The restored model still scores fc7 (not the pooled features) through the scorer.
    assert torch.allclose(SVMScorer(restored)(out)[0], torch.sigmoid(torch.tensor([[2.5, -6.0]])))


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


def overlapping_problem():
    """Positives and negatives that overlap, so that negatives score all over the margin."""
    rng = np.random.default_rng(3)
    positives = rng.normal(0, 1.0, (30, 3))
    positives[:, 0] += 1.0
    negatives = rng.normal(0, 1.0, (400, 3))
    negatives[:, 0] -= 1.0
    return positives * 4, negatives * 4


def test_mining_round_by_the_thresholds_brute_force():
    positives, negatives = overlapping_problem()
    cfg = SVMConfig(rounds=0, initial_negatives=60)
    first = train_with_mining(positives, negatives, cfg, np.random.default_rng(2))
    scores = negatives @ first.weight + first.bias
    # One round by hand: keep the active negatives scoring >= -1.2, add every one above -1.
    expected = sorted(
        i
        for i in range(len(negatives))
        if (i in set(first.active) and scores[i] >= -1.2) or scores[i] > -1.0
    )
    active = set(first.active)
    inactive = np.array([i not in active for i in range(len(negatives))])
    assert np.any(inactive & (scores > -1.0) & (scores < 0.0))  # added only with threshold -1
    assert np.any(~inactive & (scores >= -1.2) & (scores <= -1.0))  # kept, not added
    assert np.any(~inactive & (scores < -1.2))  # dropped
    assert np.any(inactive & (scores > -1.2) & (scores <= -1.0))  # neither added nor kept
    mined = train_with_mining(
        positives, negatives, replace(cfg, rounds=1), np.random.default_rng(2)
    )
    assert mined.active.tolist() == expected
    assert mined.history == [60, len(expected)]
    # The retrained SVM is liblinear's on exactly those rows, with the config's settings.
    svm = LinearSVC(
        C=cfg.C,
        loss="hinge",
        dual=True,
        class_weight={1: 2.0, 0: 1.0},
        intercept_scaling=10.0,
        max_iter=20_000,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm.fit(
            np.concatenate([positives, negatives[expected]]),
            np.r_[np.ones(len(positives)), np.zeros(len(expected))].astype(np.int64),
        )
    # liblinear visits rows in a random order: equal up to its stopping tolerance.
    np.testing.assert_allclose(mined.weight, svm.coef_[0], atol=1e-4)
    assert mined.bias == pytest.approx(svm.intercept_[0], abs=1e-3)


def test_train_svms_takes_negatives_below_neg_iou_and_scales_features(monkeypatch):
    rng = np.random.default_rng(4)
    gt = rng.normal(size=(4, 3)).astype(np.float32)
    pool = rng.normal(size=(12, 3)).astype(np.float32)
    # Per-class IoUs around the 0.3 cutoff (and 0.5, a cutoff the papers do not use).
    iou = np.array(
        [[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9], [0.29, 0.31], [0.3, 0.2]]
        + [[0.31, 0.45], [0.45, 0.29], [0.49, 0.0], [0.0, 0.5], [0.05, 0.35], [0.2, 0.2]],
        dtype=np.float32,
    )
    seen = {}

    def spy(positives, negatives, cfg, rng):
        seen[len(seen)] = (positives, negatives)
        return MiningResult(np.ones(3, dtype=np.float32), 0.5, np.arange(0), [0])

    monkeypatch.setattr(svm_module, "train_with_mining", spy)
    features = RegionFeatures(
        torch.from_numpy(gt),
        torch.tensor([0, 1, 0, 1]),
        torch.from_numpy(pool),
        torch.from_numpy(iou),
        torch.zeros((0, 3)),
        torch.zeros(0, dtype=torch.int64),
        torch.zeros((0, 4)),
    )
    model = train_svms(features, 2, SVMConfig(feature="pool", feature_norm=5.0), seed=0)
    everything = np.concatenate([gt, pool])
    scale = 5.0 / np.mean([np.sqrt(sum(v * v for v in row)) for row in everything])
    assert model.scale == pytest.approx(scale, rel=1e-5) and model.feature == "pool"
    for k in (0, 1):
        positives, negatives = seen[k]
        np.testing.assert_allclose(positives, gt[[0, 2] if k == 0 else [1, 3]] * scale, rtol=1e-5)
        rows = [i for i in range(len(pool)) if iou[i, k] < 0.3]
        np.testing.assert_allclose(
            negatives.gather(np.arange(len(negatives))), pool[rows] * scale, rtol=1e-5
        )
    assert model.weight.tolist() == [[1.0] * 3, [1.0] * 3] and model.bias.tolist() == [0.5, 0.5]


def test_feature_scale_of_empty_zero_and_small_features():
    assert feature_scale(np.zeros((0, 5)), 20.0) == 1.0  # nothing to scale
    assert feature_scale(np.zeros((3, 5)), 20.0) == 1.0  # all-zero features stay zero
    small = np.array([[0.3, 0.4], [0.0, 0.0]])  # norms 0.5 and 0: mean 0.25
    assert feature_scale(small, 20.0) == pytest.approx(80.0)


def test_mining_needs_a_positive_and_stops_when_the_set_is_stable():
    positives, negatives, _ = planted_problem()
    with pytest.raises(DetectError, match=r"^SVM training: a class has no positive examples$"):
        train_with_mining(positives[:0], negatives, SVMConfig(), np.random.default_rng(0))
    one = train_with_mining(
        positives[:1],
        negatives[:200],
        SVMConfig(rounds=1, initial_negatives=50),
        np.random.default_rng(0),
    )
    assert one.history[0] == 50
    mined = train_with_mining(
        positives, negatives, SVMConfig(rounds=20, initial_negatives=100), np.random.default_rng(1)
    )
    # Once a round changes nothing, mining stops: no round repeats the previous set's size.
    assert len(mined.history) < 21 and mined.history[-1] != mined.history[-2]


def test_train_svms_is_seeded_and_logs_each_class(caplog):
    positives, negatives, _ = planted_problem(2)
    iou = np.zeros((len(negatives), 1), dtype=np.float32)
    features = RegionFeatures(
        torch.tensor(positives[:20], dtype=torch.float32),
        torch.zeros(20, dtype=torch.int64),
        torch.tensor(negatives, dtype=torch.float32),
        torch.from_numpy(iou),
        torch.zeros((0, 4)),
        torch.zeros(0, dtype=torch.int64),
        torch.zeros((0, 4)),
    )
    cfg = SVMConfig(initial_negatives=30, rounds=1)
    with caplog.at_level(logging.INFO, logger="detect.training.svm"):
        first = train_svms(features, 1, cfg, seed=5)
    again = train_svms(features, 1, cfg, seed=5)
    assert torch.equal(first.weight, again.weight) and torch.equal(first.bias, again.bias)
    assert re.search(r"SVM class 0: 20 positives, negatives per round \[30, \d+", caplog.text)
