"""SVMs and ridge read from per-image shards on disk equal brute-force fits on all rows in RAM."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from detect.config import BBoxRegConfig, SVMConfig
from detect.training.bbox_reg import train_ridge
from detect.training.features import RegionFeatures, RegionFeatureShards
from detect.training.svm import train_svms

DIMS, CLASSES = 6, 2


def random_image(rng, num_gt: int, num_pool: int) -> RegionFeatures:
    """One image's rows: class-shifted ground truths, a pool overlapping them, regression rows."""
    labels = rng.integers(0, CLASSES, num_gt)
    gt = rng.normal(0, 1, (num_gt, DIMS)) + 1.5 * np.eye(DIMS)[labels]
    pool = np.concatenate([gt, rng.normal(0, 1.2, (num_pool, DIMS))])
    iou = rng.uniform(0, 1, (len(pool), CLASSES)) * (rng.uniform(size=(len(pool), 1)) < 0.3)
    iou[np.arange(num_gt), labels] = 1.0
    reg_labels = rng.integers(0, CLASSES, 7)
    return RegionFeatures(
        torch.tensor(gt, dtype=torch.float32),
        torch.from_numpy(labels),
        torch.tensor(pool, dtype=torch.float32),
        torch.tensor(iou, dtype=torch.float32),
        torch.tensor(rng.normal(0, 2, (7, DIMS + 2)), dtype=torch.float32),
        torch.from_numpy(reg_labels),
        torch.tensor(rng.normal(0, 0.2, (7, 4)), dtype=torch.float32),
    )


@pytest.fixture()
def images():
    rng = np.random.default_rng(5)
    return [random_image(rng, 2 + i % 3, 60 + 10 * i) for i in range(6)]


def on_disk(images, folder) -> RegionFeatureShards:
    shards = RegionFeatureShards(folder)
    for image in images:
        shards.add(image)
    return shards


def fit(positives, negatives, cfg):
    x = np.concatenate([positives, negatives]).astype(np.float64)
    y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))].astype(np.int64)
    svm = LinearSVC(
        C=cfg.C,
        loss="hinge",
        dual=True,
        class_weight={1: cfg.positive_weight, 0: 1.0},
        intercept_scaling=cfg.intercept_scaling,
        max_iter=20_000,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm.fit(x, y)
    return svm.coef_[0].astype(np.float32), float(svm.intercept_[0])


def brute_force_svm(images, k, cfg, seed):
    """R-CNN's mining on every row concatenated in RAM (the recipe of docs/method.md §6)."""
    gt = np.concatenate([i.gt_features.numpy() for i in images])
    labels = np.concatenate([i.gt_labels.numpy() for i in images])
    pool = np.concatenate([i.pool_features.numpy() for i in images])
    iou = np.concatenate([i.pool_class_iou.numpy() for i in images])
    everything = np.concatenate([gt, pool]).astype(np.float64)
    scale = cfg.feature_norm / np.sqrt((everything**2).sum(axis=1)).mean()
    positives = gt[labels == k] * scale
    negatives = pool[iou[:, k] < cfg.neg_iou] * scale
    rng = np.random.default_rng([seed, k])
    count = min(cfg.initial_negatives, len(negatives))
    active = np.sort(rng.choice(len(negatives), size=count, replace=False))
    weight, bias = fit(positives, negatives[active], cfg)
    sizes = [len(active)]
    for _ in range(cfg.rounds):
        scores = negatives @ weight + bias
        chosen = [
            i
            for i in range(len(negatives))
            if scores[i] > cfg.hard_threshold or (i in active and scores[i] >= cfg.easy_threshold)
        ]
        if cfg.max_active_negatives and len(chosen) > cfg.max_active_negatives:
            chosen = sorted(sorted(chosen, key=lambda i: -scores[i])[: cfg.max_active_negatives])
        if list(active) == chosen:
            break
        active = np.array(chosen)
        weight, bias = fit(positives, negatives[active], cfg)
        sizes.append(len(active))
    return scale, weight, bias, sizes


@pytest.mark.parametrize("cap", [0, 40])
def test_svms_from_shards_equal_the_in_memory_brute_force(images, tmp_path, cap):
    cfg = SVMConfig(initial_negatives=50, rounds=3, C=0.01, max_active_negatives=cap)
    shards = on_disk(images, tmp_path / "shards")
    assert len(list((tmp_path / "shards").glob("*.npz"))) == len(images)
    model = train_svms(shards, CLASSES, cfg, seed=4)
    for k in range(CLASSES):
        scale, weight, bias, sizes = brute_force_svm(images, k, cfg, seed=4)
        assert len(sizes) > 1  # mining changed the set at least once
        if cap:
            assert max(sizes[1:]) == cap
        assert model.scale == pytest.approx(scale, rel=1e-6)
        np.testing.assert_allclose(model.weight[k].numpy(), weight, rtol=1e-4, atol=1e-5)
        assert float(model.bias[k]) == pytest.approx(bias, rel=1e-4, abs=1e-5)


def test_ridge_from_shards_equals_the_closed_form_on_all_rows(images, tmp_path):
    cfg = BBoxRegConfig(ridge_lambda=3.0, feature_norm=20.0)
    ridge = train_ridge(on_disk(images, tmp_path / "shards"), CLASSES, cfg)
    x = np.concatenate([i.reg_features.numpy() for i in images]).astype(np.float64)
    y = np.concatenate([i.reg_targets.numpy() for i in images]).astype(np.float64)
    labels = np.concatenate([i.reg_labels.numpy() for i in images])
    scale = 20.0 / np.linalg.norm(x, axis=1).mean()
    assert ridge.scale == pytest.approx(scale, rel=1e-6)
    for k in range(CLASSES):
        design = np.hstack([x[labels == k] * scale, np.ones(((labels == k).sum(), 1))])
        penalty = 3.0 * np.eye(design.shape[1])
        penalty[-1, -1] = 0.0  # the intercept is not penalised
        beta = np.linalg.solve(design.T @ design + penalty, design.T @ y[labels == k])
        np.testing.assert_allclose(ridge.weight[k].numpy(), beta[:-1], atol=1e-4)
        np.testing.assert_allclose(ridge.bias[k].numpy(), beta[-1], atol=1e-4)


def test_shards_read_back_what_was_written(images, tmp_path):
    joined = on_disk(images, tmp_path / "shards").joined()
    for name in ("gt_features", "pool_class_iou", "reg_labels", "reg_targets"):
        expected = torch.cat([getattr(i, name) for i in images])
        assert torch.equal(getattr(joined, name), expected), name
