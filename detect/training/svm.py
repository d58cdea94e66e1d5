"""One-vs-rest linear SVMs with hard-negative mining (docs/method.md §6, R-CNN's recipe).

Per class: positives are the ground-truth boxes, negatives the pool rows (ground-truth boxes of
other classes and proposals) with IoU < ``neg_iou`` to every ground truth of that class. Features are scaled so their mean L2 norm is
``feature_norm``; scikit-learn's ``LinearSVC`` (liblinear, L2-regularised hinge loss, as
R-CNN's ``-s 3``) with ``C``, positive class weight and intercept scaling from the config.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC
from tqdm import tqdm

from detect.config import SVMConfig
from detect.errors import DetectError
from detect.models.scoring import SVMModel
from detect.training.features import RegionFeatures

log = logging.getLogger(__name__)


def feature_scale(features: np.ndarray, target_norm: float) -> float:
    """The factor making the mean L2 norm of ``features`` ``(N, D)`` equal ``target_norm``."""
    mean_norm = float(np.linalg.norm(features, axis=1).mean()) if len(features) else 0.0
    return target_norm / mean_norm if mean_norm > 0 else 1.0


@dataclass
class MiningResult:
    """One class's SVM: ``score(x) = x @ weight + bias`` on scaled features.

    ``active`` holds the indices (into the negative pool) of the negatives in the final training
    set; ``history`` the size of that set after each round.
    """

    weight: np.ndarray
    bias: float
    active: np.ndarray
    history: list[int]


def _fit(positives: np.ndarray, negatives: np.ndarray, cfg: SVMConfig) -> tuple[np.ndarray, float]:
    x = np.concatenate([positives, negatives]).astype(np.float64)
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))]).astype(np.int64)
    svm = LinearSVC(
        C=cfg.C,
        loss="hinge",
        dual=True,
        class_weight={1: cfg.positive_weight, 0: 1.0},
        intercept_scaling=cfg.intercept_scaling,
        max_iter=20_000,
        random_state=0,  # liblinear visits rows in a random order: the same model every run
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm.fit(x, y)
    return svm.coef_[0].astype(np.float32), float(svm.intercept_[0])


def train_with_mining(
    positives: np.ndarray, negatives: np.ndarray, cfg: SVMConfig, rng: np.random.Generator
) -> MiningResult:
    """Train one class's SVM on scaled features with hard-negative mining.

    Round 0 trains on a random subset of ``cfg.initial_negatives`` negatives; each of the
    ``cfg.rounds`` following rounds adds every pool negative scoring above ``cfg.hard_threshold``,
    drops active negatives scoring below ``cfg.easy_threshold`` and retrains.

    Args:
        positives: ``(P, D)`` scaled features of the ground-truth boxes (P >= 1).
        negatives: ``(N, D)`` scaled features of the negative pool.
    """
    if len(positives) == 0:
        raise DetectError("SVM training: a class has no positive examples")
    count = min(cfg.initial_negatives, len(negatives))
    active = np.sort(rng.choice(len(negatives), size=count, replace=False))
    weight, bias = _fit(positives, negatives[active], cfg)
    history = [len(active)]
    for _ in range(cfg.rounds):
        scores = negatives @ weight + bias
        keep = np.zeros(len(negatives), dtype=bool)
        keep[active] = scores[active] >= cfg.easy_threshold
        hard = scores > cfg.hard_threshold
        new_active = np.flatnonzero(keep | hard)
        if np.array_equal(new_active, active):
            break
        active = new_active
        weight, bias = _fit(positives, negatives[active], cfg)
        history.append(len(active))
    return MiningResult(weight, bias, active, history)


def train_svms(features: RegionFeatures, num_classes: int, cfg: SVMConfig, seed: int) -> SVMModel:
    """Train the ``num_classes`` one-vs-rest SVMs on features extracted from the training set.

    Uses ``features.gt_*`` rows as positives of their class and ``features.pool_*`` rows with
    IoU < ``cfg.neg_iou`` to every ground truth of a class as that class's negatives.
    """
    gt = features.gt_features.numpy()
    pool = features.pool_features.numpy()
    scale = feature_scale(np.concatenate([gt, pool]), cfg.feature_norm)
    gt, pool = gt * scale, pool * scale
    weights, biases = [], []
    for k in tqdm(range(num_classes), desc="SVMs", unit="class", leave=False):
        positives = gt[features.gt_labels.numpy() == k]
        negative_rows = np.flatnonzero(features.pool_class_iou[:, k].numpy() < cfg.neg_iou)
        result = train_with_mining(
            positives, pool[negative_rows], cfg, np.random.default_rng([seed, k])
        )
        log.info(
            "SVM class %d: %d positives, negatives per round %s", k, len(positives), result.history
        )
        weights.append(torch.from_numpy(result.weight))
        biases.append(result.bias)
    return SVMModel(
        cfg.feature, scale, torch.stack(weights), torch.tensor(biases, dtype=torch.float32)
    )
