"""Head outputs and truncated SVD against numpy's SVD."""

import numpy as np
import pytest
import torch
from torch import nn

from detect.errors import DetectError
from detect.models.heads import Head, HeadOutput, truncated_svd


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


def test_head_initialisation_is_fast_rcnns():
    # cls_score ~ N(0, 0.01), bbox_pred ~ N(0, 0.001), biases zero (thousands of weights each).
    head = Head(in_dim=32, fc_dims=(128,), num_classes=20)
    assert float(head.cls_score.weight.detach().std()) == pytest.approx(0.01, rel=0.1)
    assert float(head.bbox_pred.weight.detach().std()) == pytest.approx(0.001, rel=0.1)
    assert torch.all(head.cls_score.bias == 0) and torch.all(head.bbox_pred.bias == 0)
    with pytest.raises(DetectError, match=r"^model.fc_dims: at least one fc layer is needed$"):
        Head(in_dim=32, fc_dims=(), num_classes=2)


def test_truncated_svd_of_a_layer_without_bias_and_bad_ranks():
    layer = nn.Linear(12, 10, bias=False)
    compressed = truncated_svd(layer, 10)  # full rank: the same map
    x = torch.randn(4, 12)
    torch.testing.assert_close(compressed(x), layer(x), atol=1e-5, rtol=1e-4)
    assert compressed[0].bias is None
    for rank in (0, -1, 11):
        with pytest.raises(DetectError, match=f"rank {rank} out of range for a 10x12 layer"):
            truncated_svd(layer, rank)


def test_truncated_svd_resolves_small_singular_values_of_small_layers():
    # Singular values 1 .. 1e-5: the Gram matrix spans 1 .. 1e-10, beyond float32's precision,
    # so small layers are decomposed in float64 (the error is then only float32 storage).
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    v, _ = np.linalg.qr(rng.normal(size=(40, 30)))
    singular = np.logspace(0, -5, 30)
    layer = nn.Linear(40, 30)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy((u * singular) @ v.T))
    weight = layer.weight.detach().double().numpy()
    compressed = truncated_svd(layer, 25)
    approx = (compressed[1].weight @ compressed[0].weight).detach().double().numpy()
    best = np.sqrt((np.linalg.svd(weight, compute_uv=False)[25:] ** 2).sum())
    assert abs(np.linalg.norm(weight - approx) - best) < 1e-5


def test_head_outputs_index_and_concatenate_by_rows():
    rows = [torch.arange(6.0).reshape(2, 3) + 10 * k for k in range(4)]
    first = HeadOutput(*rows)
    second = HeadOutput(*(r[:1] + 100 for r in rows))
    joined = HeadOutput.cat([first, second])
    for ours, part_a, part_b in zip(joined, first, second, strict=True):
        assert ours.tolist() == part_a.tolist() + part_b.tolist()
    picked = joined.index(torch.tensor([2, 0, 2]))
    for ours, whole in zip(picked, joined, strict=True):
        assert ours.tolist() == [whole[2].tolist(), whole[0].tolist(), whole[2].tolist()]
