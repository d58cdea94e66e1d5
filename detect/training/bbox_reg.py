"""Bounding-box regression by ridge regression on pooled features (docs/method.md §6, R-CNN's recipe).

Per class, the training rows are the regions (proposals and ground-truth boxes) whose best IoU
with a ground truth of that class is at least ``min_iou``; the targets are
:func:`detect.ops.boxes.encode_deltas` to that ground truth. Features are scaled so their mean L2
norm is ``feature_norm`` (as R-CNN does) and the ridge penalty ``lambda`` applies to the weights,
not the intercept. The rows are read one image at a time from the region-feature shards
(:class:`detect.training.features.RegionFeatureShards`); only one class's rows are in memory.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

from detect.config import BBoxRegConfig
from detect.models.scoring import RidgeRegressor
from detect.training.features import RegionFeatures, RegionFeatureShards
from detect.training.svm import chunked_feature_scale

log = logging.getLogger(__name__)


def fit_ridge(x: Tensor, y: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    """Minimise ``||x @ w + b - y||^2 + lam * ||w||^2`` in closed form (float64).

    Args:
        x: ``(N, D)`` features. y: ``(N, T)`` targets.
    Returns:
        ``w (D, T)`` and ``b (T,)`` (float32). Uses the ``N x N`` dual system when ``N < D``.
    """
    x64, y64 = x.double(), y.double()
    x_mean, y_mean = x64.mean(dim=0), y64.mean(dim=0)
    xc, yc = x64 - x_mean, y64 - y_mean
    n, d = xc.shape
    if n < d:
        w = xc.T @ torch.linalg.solve(xc @ xc.T + lam * torch.eye(n, dtype=torch.float64), yc)
    else:
        w = torch.linalg.solve(xc.T @ xc + lam * torch.eye(d, dtype=torch.float64), xc.T @ yc)
    b = y_mean - x_mean @ w
    return w.float(), b.float()


def train_ridge(
    features: RegionFeatures | RegionFeatureShards, num_classes: int, cfg: BBoxRegConfig
) -> RidgeRegressor:
    """Fit one ridge regressor per class on the ``reg_*`` rows (IoU >= min_iou)."""
    scale = chunked_feature_scale((x for (x,) in features.arrays("reg_features")), cfg.feature_norm)
    dims = next(features.arrays("reg_features"))[0].shape[1]
    weight = torch.zeros((num_classes, dims, 4))
    bias = torch.zeros((num_classes, 4))
    for k in range(num_classes):
        parts = [
            (x[labels == k], y[labels == k])
            for x, labels, y in features.arrays("reg_features", "reg_labels", "reg_targets")
        ]
        x = torch.from_numpy(np.concatenate([x for x, _ in parts]))
        y = torch.from_numpy(np.concatenate([y for _, y in parts]))
        if x.shape[0] == 0:
            log.warning(
                "ridge box regression: class %d has no region with IoU >= %s", k, cfg.min_iou
            )
            continue
        weight[k], bias[k] = fit_ridge(x * scale, y, cfg.ridge_lambda)
    return RidgeRegressor(scale, weight, bias)
