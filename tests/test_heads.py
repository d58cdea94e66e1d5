"""Head outputs and truncated SVD against numpy's SVD."""

import numpy as np
import pytest
import torch
from torch import nn

from detect.errors import DetectError
from detect.models.heads import Head, truncated_svd


def test_head_shapes_and_fc7_is_relu_activation():
    head = Head(in_dim=20, fc_dims=(16, 12), num_classes=3, dropout=0.5).eval()
    x = torch.randn(7, 20)
    out = head(x)
    assert out.pooled is x
    assert out.fc7.shape == (7, 12) and out.cls_logits.shape == (7, 4)
    assert out.bbox_deltas.shape == (7, 16)
    fc6 = torch.relu(head.fcs[0](x))
    torch.testing.assert_close(out.fc7, torch.relu(head.fcs[1](fc6)))
    torch.testing.assert_close(out.cls_logits, head.cls_score(out.fc7))


@pytest.mark.parametrize(
    ("shape", "rank"), [((30, 40), 1), ((30, 40), 17), ((30, 40), 30), ((40, 25), 7)]
)
def test_truncated_svd_is_the_best_rank_k_approximation(shape, rank):
    layer = nn.Linear(shape[1], shape[0])
    x = torch.randn(9, shape[1])
    compressed = truncated_svd(layer, rank)
    approx = (compressed[1].weight @ compressed[0].weight).detach().double().numpy()
    weight = layer.weight.detach().double().numpy()
    singular = np.linalg.svd(weight, compute_uv=False)
    # Eckart-Young: the best rank-k Frobenius error is the norm of the dropped singular values.
    best = np.sqrt((singular[rank:] ** 2).sum())
    assert abs(np.linalg.norm(weight - approx) - best) < 1e-4
    error = (layer(x) - compressed(x)).norm(dim=1)
    spectral = singular[rank] if rank < len(singular) else 0.0
    assert torch.all(error <= spectral * x.norm(dim=1) + 1e-4)


def test_head_compress_keeps_outputs_at_full_rank_and_counts_ranks():
    head = Head(24, (16, 8), 2).eval()
    x = torch.randn(5, 24)
    before = head(x)
    head.compress((16, 8))
    after = head(x)
    torch.testing.assert_close(after.cls_logits, before.cls_logits, atol=1e-5, rtol=1e-4)
    assert isinstance(head.fcs[0], nn.Sequential)
    with pytest.raises(DetectError, match="svd_ranks"):
        Head(24, (16, 8), 2).compress((4, 4, 4))
    with pytest.raises(DetectError, match="rank 99"):
        Head(24, (16, 8), 2).compress((99,))
