"""One-vs-rest linear SVMs with hard-negative mining (docs/method.md §6, R-CNN's recipe).

Per class: positives are the ground-truth boxes, negatives the pool rows (ground-truth boxes of
other classes and proposals) with IoU < ``neg_iou`` to every ground truth of that class. Features are scaled so their mean L2 norm is
``feature_norm``; scikit-learn's ``LinearSVC`` (liblinear, L2-regularised hinge loss, as
R-CNN's ``-s 3``) with ``C``, positive class weight and intercept scaling from the config.

Bounded memory: the features stream from per-image shards
(:class:`detect.training.features.RegionFeatureShards`); a class's negative pool is a
:class:`NegativePool` that scores every negative one image at a time and gathers only the rows of
the round's training set, which ``max_active_negatives`` caps (the highest scoring kept).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC
from tqdm import tqdm

from detect.config import SVMConfig
from detect.errors import DetectError
from detect.models.scoring import SVMModel
from detect.training.features import RegionFeatures, RegionFeatureShards

log = logging.getLogger(__name__)


def chunked_feature_scale(chunks: Iterable[np.ndarray], target_norm: float) -> float:
    """The factor making the mean L2 norm of the rows of all ``chunks`` (each ``(n, D)``)
    equal ``target_norm`` (1 when there are no rows or all are zero)."""
    total, count = 0.0, 0
    for chunk in chunks:
        total += float(np.linalg.norm(chunk.astype(np.float64), axis=1).sum())
        count += len(chunk)
    mean_norm = total / count if count else 0.0
    return target_norm / mean_norm if mean_norm > 0 else 1.0


def feature_scale(features: np.ndarray, target_norm: float) -> float:
    """The factor making the mean L2 norm of ``features`` ``(N, D)`` equal ``target_norm``."""
    return chunked_feature_scale([features], target_norm)


class NegativePool:
    """One class's SVM negatives, scaled: the pool rows of each image whose IoU with every
    ground truth of the class is below ``neg_iou``, numbered in image order, read one image at a
    time.

    Args:
        features: per-image shards (or all rows at once).
        k: the class; scale: the feature scale.
    """

    def __init__(
        self, features: RegionFeatures | RegionFeatureShards, k: int, neg_iou: float, scale: float
    ) -> None:
        self.features = features
        self.scale = scale
        self.rows = [
            np.flatnonzero(iou[:, k] < neg_iou) for (iou,) in features.arrays("pool_class_iou")
        ]
        self.starts = np.cumsum([0] + [len(r) for r in self.rows])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _chunks(self):
        for rows, (pool,) in zip(self.rows, self.features.arrays("pool_features"), strict=True):
            yield rows, pool

    def scores(self, weight: np.ndarray, bias: float) -> np.ndarray:
        """``(N,)`` ``x @ weight + bias`` of every negative, one image at a time."""
        parts = [(pool[rows] * self.scale) @ weight + bias for rows, pool in self._chunks()]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def gather(self, index: np.ndarray) -> np.ndarray:
        """The scaled rows of the sorted negatives ``index (n,)``: ``(n, D)``."""
        parts = []
        for i, (rows, pool) in enumerate(self._chunks()):
            start, end = self.starts[i], self.starts[i + 1]
            local = index[(index >= start) & (index < end)] - start
            if len(local) or not parts:
                parts.append(pool[rows[local]] * self.scale)
        return np.concatenate(parts)


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


class _ArrayPool:
    """A :class:`NegativePool` over an ``(N, D)`` array already scaled."""

    def __init__(self, negatives: np.ndarray) -> None:
        self.negatives = negatives

    def __len__(self) -> int:
        return len(self.negatives)

    def scores(self, weight: np.ndarray, bias: float) -> np.ndarray:
        return self.negatives @ weight + bias

    def gather(self, index: np.ndarray) -> np.ndarray:
        return self.negatives[index]


def train_with_mining(
    positives: np.ndarray,
    negatives: np.ndarray | NegativePool,
    cfg: SVMConfig,
    rng: np.random.Generator,
) -> MiningResult:
    """Train one class's SVM on scaled features with hard-negative mining.

    Round 0 trains on a random subset of ``cfg.initial_negatives`` negatives; each of the
    ``cfg.rounds`` following rounds adds every pool negative scoring above ``cfg.hard_threshold``,
    drops active negatives scoring below ``cfg.easy_threshold`` and retrains. With
    ``cfg.max_active_negatives`` a round's set keeps only that many, the highest scoring.

    Args:
        positives: ``(P, D)`` scaled features of the ground-truth boxes (P >= 1).
        negatives: ``(N, D)`` scaled features of the negative pool, or a :class:`NegativePool`
            (rows read from disk when needed).
    """
    if len(positives) == 0:
        raise DetectError("SVM training: a class has no positive examples")
    pool = _ArrayPool(negatives) if isinstance(negatives, np.ndarray) else negatives
    count = min(cfg.initial_negatives, len(pool))
    active = np.sort(rng.choice(len(pool), size=count, replace=False))
    weight, bias = _fit(positives, pool.gather(active), cfg)
    history = [len(active)]
    for _ in range(cfg.rounds):
        scores = pool.scores(weight, bias)
        keep = np.zeros(len(pool), dtype=bool)
        keep[active] = scores[active] >= cfg.easy_threshold
        hard = scores > cfg.hard_threshold
        new_active = np.flatnonzero(keep | hard)
        if 0 < cfg.max_active_negatives < len(new_active):
            hardest = np.argsort(-scores[new_active], kind="stable")[: cfg.max_active_negatives]
            new_active = np.sort(new_active[hardest])
        if np.array_equal(new_active, active):
            break
        active = new_active
        weight, bias = _fit(positives, pool.gather(active), cfg)
        history.append(len(active))
    return MiningResult(weight, bias, active, history)


def train_svms(
    features: RegionFeatures | RegionFeatureShards, num_classes: int, cfg: SVMConfig, seed: int
) -> SVMModel:
    """Train the ``num_classes`` one-vs-rest SVMs on features extracted from the training set.

    Uses ``gt_*`` rows as positives of their class and ``pool_*`` rows with IoU < ``cfg.neg_iou``
    to every ground truth of a class as that class's negatives; ``features`` are read one image
    at a time (:meth:`~detect.training.features.RegionFeatureShards.arrays`).
    """
    scale = chunked_feature_scale(
        chain(
            (gt for (gt,) in features.arrays("gt_features")),
            (pool for (pool,) in features.arrays("pool_features")),
        ),
        cfg.feature_norm,
    )
    weights, biases = [], []
    for k in tqdm(range(num_classes), desc="SVMs", unit="class", leave=False):
        positives = np.concatenate(
            [gt[labels == k] * scale for gt, labels in features.arrays("gt_features", "gt_labels")]
        )
        negatives = NegativePool(features, k, cfg.neg_iou, scale)
        result = train_with_mining(positives, negatives, cfg, np.random.default_rng([seed, k]))
        log.info(
            "SVM class %d: %d positives, negatives per round %s", k, len(positives), result.history
        )
        weights.append(torch.from_numpy(result.weight))
        biases.append(result.bias)
    return SVMModel(
        cfg.feature, scale, torch.stack(weights), torch.tensor(biases, dtype=torch.float32)
    )
