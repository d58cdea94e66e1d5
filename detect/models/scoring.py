"""Region scorers: head outputs -> per-class scores and box deltas, as test time uses them.

A scorer turns a :class:`detect.models.heads.HeadOutput` of ``R`` regions into ``scores (R, K)``
and ``deltas (R, 4 * K)`` (no background column; deltas as :func:`detect.ops.boxes.encode_deltas`,
columns ``4k .. 4k + 3`` for class ``k``). Four kinds, chosen by ``test.classifier`` and
``bbox_reg.method`` (:func:`detect.checkpoints.build_scorer`):

* :class:`SoftmaxScorer`: the network's softmax classifier and learned box-regression layer;
* :class:`SVMScorer`: linear SVMs on ``fc7`` or the pooled features (:class:`SVMModel`);
* :class:`RidgeScorer`: another scorer's scores with deltas from :class:`RidgeRegressor`.

The parameters of the SVMs and the ridge regressors are fitted by :mod:`detect.training.svm` and
:mod:`detect.training.bbox_reg` (docs/method.md §6).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import Tensor

from detect.models.heads import HeadOutput


class RegionScorer(Protocol):
    """Turns head outputs into per-class scores ``(R, K)`` and deltas ``(R, 4 * K)`` (no background)."""

    def __call__(self, out: HeadOutput) -> tuple[Tensor, Tensor]: ...


class SoftmaxScorer:
    """``softmax(cls_logits)[:, 1:]`` and the learned deltas ``bbox_deltas[:, 4:]``."""

    def __call__(self, out: HeadOutput) -> tuple[Tensor, Tensor]:
        return torch.softmax(out.cls_logits, dim=1)[:, 1:], out.bbox_deltas[:, 4:]


@dataclass
class SVMModel:
    """All classes' SVMs: ``weight (K, D)``, ``bias (K,)`` applied to ``features * scale``;
    ``feature`` is ``"fc7"`` (``out.fc7``) or ``"pool"`` (``out.pooled``)."""

    feature: str
    scale: float
    weight: Tensor
    bias: Tensor

    def scores(self, features: Tensor) -> Tensor:
        """``(R, K)`` SVM scores of raw features ``(R, D)``."""
        return (features.float() * self.scale) @ self.weight.T + self.bias

    def to(self, device: torch.device | str) -> SVMModel:
        """The same SVMs with their tensors on ``device``."""
        return replace(self, weight=self.weight.to(device), bias=self.bias.to(device))

    def state_dict(self) -> dict:
        return {
            "feature": self.feature,
            "scale": self.scale,
            "weight": self.weight,
            "bias": self.bias,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> SVMModel:
        return cls(state["feature"], float(state["scale"]), state["weight"], state["bias"])


class SVMScorer:
    """:class:`RegionScorer` from SVM scores on ``out.fc7`` or ``out.pooled``.

    Scores are ``sigmoid(margin)``: a monotone map, so rankings and AP are those of the raw SVM
    margins, while ``test.score_threshold`` keeps one meaning for both classifiers (the default
    0.05 keeps margins above -2.94; R-CNN's SVMs score true objects around -1..1). Deltas come
    from ``deltas_from`` (a callable ``HeadOutput -> (R, 4K)``, e.g. the ridge regressor) or, when
    None, from the learned layer (``out.bbox_deltas[:, 4:]``).
    """

    def __init__(
        self, svm: SVMModel, deltas_from: Callable[[HeadOutput], Tensor] | None = None
    ) -> None:
        self.svm = svm
        self.deltas_from = deltas_from

    def __call__(self, out: HeadOutput) -> tuple[Tensor, Tensor]:
        features = out.fc7 if self.svm.feature == "fc7" else out.pooled
        deltas = self.deltas_from(out) if self.deltas_from else out.bbox_deltas[:, 4:]
        return torch.sigmoid(self.svm.scores(features)), deltas


@dataclass
class RidgeRegressor:
    """Per-class linear regressors: deltas of class k = ``(pooled * scale) @ weight[k] + bias[k]``.

    ``weight (K, D, 4)``, ``bias (K, 4)``; a class without training rows has zeros (no shift).
    """

    scale: float
    weight: Tensor
    bias: Tensor

    def __call__(self, out: HeadOutput) -> Tensor:
        """``(R, 4K)`` deltas from a :class:`HeadOutput`'s ``pooled`` features ``(R, D)``."""
        deltas = torch.einsum("rd,kdt->rkt", out.pooled.float() * self.scale, self.weight)
        return (deltas + self.bias).reshape(out.pooled.shape[0], -1)

    def to(self, device: torch.device | str) -> RidgeRegressor:
        """The same regressors with their tensors on ``device``."""
        return replace(self, weight=self.weight.to(device), bias=self.bias.to(device))

    def state_dict(self) -> dict:
        return {"scale": self.scale, "weight": self.weight, "bias": self.bias}

    @classmethod
    def from_state_dict(cls, state: dict) -> RidgeRegressor:
        return cls(float(state["scale"]), state["weight"], state["bias"])


class RidgeScorer:
    """:class:`RegionScorer` taking scores from ``base`` and deltas from ``ridge``."""

    def __init__(self, base: RegionScorer, ridge: RidgeRegressor) -> None:
        self.base = base
        self.ridge = ridge

    def __call__(self, out: HeadOutput) -> tuple[Tensor, Tensor]:
        scores, _ = self.base(out)
        return scores, self.ridge(out)
