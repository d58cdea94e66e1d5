"""The per-region head: fc6, fc7 (ReLU, dropout), softmax classifier and per-class box regression.

Truncated SVD (Fast R-CNN §3.1) replaces an fc layer ``W (out, in)`` by two layers
``W ~= U_k (U_k^T W)`` (= ``U_k S_k V_k^T``): ``in -> k`` without bias, then ``k -> out`` with the
original bias.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from detect.errors import DetectError


class HeadOutput(NamedTuple):
    """Outputs for ``R`` regions.

    Attributes:
        pooled: ``(R, C * bins)`` SPP features (input of fc6).
        fc7: ``(R, D)`` the last fc layer's activation (after ReLU, before dropout).
        cls_logits: ``(R, K + 1)`` classifier logits, column 0 = background.
        bbox_deltas: ``(R, 4 * (K + 1))`` per-class (tx, ty, tw, th) as
            :func:`detect.ops.boxes.encode_deltas`, unnormalised; columns ``4k .. 4k + 3`` for
            class column ``k``.
    """

    pooled: Tensor
    fc7: Tensor
    cls_logits: Tensor
    bbox_deltas: Tensor

    def to(self, *args, **kwargs) -> HeadOutput:
        """Every output through ``Tensor.to`` (e.g. ``out.to("cpu", torch.float32)``)."""
        return HeadOutput(*(t.to(*args, **kwargs) for t in self))

    def index(self, index: Tensor) -> HeadOutput:
        """The outputs of the regions ``index`` (e.g. scattering de-duplicated windows back)."""
        return HeadOutput(*(t[index] for t in self))

    @staticmethod
    def cat(parts: Sequence[HeadOutput]) -> HeadOutput:
        """The outputs of several region batches (at least one), rows concatenated in order."""
        return HeadOutput(*(torch.cat(chunks) for chunks in zip(*parts, strict=True)))


def truncated_svd(layer: nn.Linear, rank: int) -> nn.Sequential:
    """Best rank-``rank`` approximation (Frobenius) of ``layer`` as two Linear layers.

    By Eckart-Young the best approximation is ``W_k = U_k U_k^T W`` with ``U_k`` the top-``k``
    left singular vectors (or ``W V_k V_k^T`` with right ones), so only the eigenvectors of the
    smaller Gram matrix are needed: seconds for fc6 (4096 x 12800) where a full SVD takes about a
    minute. Float64 for small layers, float32 for large ones (as Fast R-CNN's compress_net).
    """
    out_features, in_features = layer.out_features, layer.in_features
    if not 0 < rank <= min(in_features, out_features):
        raise DetectError(
            f"model.svd_ranks: rank {rank} out of range for a {out_features}x{in_features} layer"
        )
    with torch.no_grad():
        dtype = torch.float64 if min(in_features, out_features) <= 1024 else torch.float32
        weight = layer.weight.to(dtype)
        left = out_features <= in_features
        gram = weight @ weight.T if left else weight.T @ weight
        basis = torch.linalg.eigh(gram).eigenvectors[:, -rank:]  # top-k eigenvectors
        first = nn.Linear(in_features, rank, bias=False)
        second = nn.Linear(rank, out_features, bias=layer.bias is not None)
        first.weight.copy_(basis.T @ weight if left else basis.T)
        second.weight.copy_(basis if left else weight @ basis)
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)


class Head(nn.Module):
    """fc layers (ReLU + dropout each), then ``cls_score`` (K+1) and ``bbox_pred`` (4(K+1))."""

    def __init__(
        self, in_dim: int, fc_dims: Sequence[int], num_classes: int, dropout: float = 0.5
    ) -> None:
        super().__init__()
        if not fc_dims:
            raise DetectError("model.fc_dims: at least one fc layer is needed")
        dims = [in_dim, *fc_dims]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.dropout = nn.Dropout(dropout)
        self.cls_score = nn.Linear(dims[-1], num_classes + 1)
        self.bbox_pred = nn.Linear(dims[-1], 4 * (num_classes + 1))
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, pooled: Tensor) -> HeadOutput:
        """``pooled (R, in_dim)`` -> :class:`HeadOutput`."""
        x = pooled
        activation = x
        for fc in self.fcs:
            activation = torch.relu(fc(x))
            x = self.dropout(activation)
        return HeadOutput(pooled, activation, self.cls_score(x), self.bbox_pred(x))

    def compress(self, ranks: Sequence[int]) -> None:
        """Replace fc layer ``i`` by its truncated SVD of rank ``ranks[i]`` (in place)."""
        if len(ranks) > len(self.fcs):
            raise DetectError(
                f"model.svd_ranks: {len(ranks)} ranks for {len(self.fcs)} fc layers: {list(ranks)}"
            )
        for i, rank in enumerate(ranks):
            if isinstance(self.fcs[i], nn.Linear):
                self.fcs[i] = truncated_svd(self.fcs[i], int(rank))
