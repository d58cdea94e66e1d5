"""Image-level SPP bins (docs/classification.md): the paper's sliding rule against a brute-force
loop, and where it coincides with the adaptive bins and where it leaves cells out."""

import math

import pytest
import torch
import torch.nn.functional as F

from detect.errors import DetectError
from detect.models.spp import image_pyramid_pool, sliding_bins, sliding_pool


def _brute_sliding(features, n):
    """Section 2.3 literally: window ceil(a/n), stride floor(a/n), bin i from i * stride."""
    height, width = features.shape[-2:]
    win_h, win_w = math.ceil(height / n), math.ceil(width / n)
    step_h, step_w = height // n, width // n
    out = torch.empty(*features.shape[:2], n, n)
    for i in range(n):
        for j in range(n):
            window = features[..., i * step_h : i * step_h + win_h, j * step_w : j * step_w + win_w]
            out[..., i, j] = window.amax(dim=(-2, -1))
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
@pytest.mark.parametrize(("height", "width"), [(13, 13), (14, 9), (6, 20), (11, 17), (12, 12)])
def test_sliding_pool_matches_the_brute_force_rule(n, height, width):
    features = torch.randn(2, 3, height, width)
    assert torch.equal(sliding_pool(features, n), _brute_sliding(features, n))


def test_sliding_bins_hand_worked():
    assert sliding_bins(13, 6) == (3, 2)  # ZF-5's 13x13 conv5: bins end at 5*2+3 = 13, all cells
    assert sliding_bins(13, 3) == (5, 4)  # ends at 2*4+5 = 13
    assert sliding_bins(14, 6) == (3, 2)  # ends at 13: the 14th cell is in no bin
    assert sliding_bins(11, 6) == (2, 1)  # ends at 7: four cells in no bin
    assert sliding_bins(12, 6) == (2, 2)  # n divides a: exact tiling


def _cells_covered(size, n):
    window, stride = sliding_bins(size, n)
    return {cell for i in range(n) for cell in range(i * stride, i * stride + window)}


@pytest.mark.parametrize("size", [6, 12, 18, 24])
def test_sliding_equals_adaptive_when_n_divides_the_side(size):
    features = torch.randn(1, 4, size, size)
    for n in (1, 2, 3, 6):
        assert torch.equal(sliding_pool(features, n), F.adaptive_max_pool2d(features, n))
    levels = (1, 2, 3, 6)
    assert torch.equal(
        image_pyramid_pool(features, levels, "sliding"),
        image_pyramid_pool(features, levels, "adaptive"),
    )


@pytest.mark.parametrize(("size", "left_out"), [(14, {13}), (11, {7, 8, 9, 10}), (10, {7, 8, 9})])
def test_sliding_leaves_the_last_cells_out(size, left_out):
    assert set(range(size)) - _cells_covered(size, 6) == left_out
    # A peak in a left-out cell: the adaptive bins see it, the sliding ones do not.
    features = torch.zeros(1, 1, size, size)
    cell = min(left_out)
    features[0, 0, cell, cell] = 5.0
    assert F.adaptive_max_pool2d(features, 6).max() == 5.0
    assert sliding_pool(features, 6).max() == 0.0


def test_sides_at_least_n_covered_from_the_first_cell():
    for size in range(6, 40):
        assert 0 in _cells_covered(size, 6)
        assert len(_cells_covered(size, 6)) >= size - 6  # never more than n - 1 cells left out


def test_short_side_falls_back_to_adaptive_bins():
    features = torch.randn(1, 2, 4, 9)  # 4 rows < 6 bins: stride floor(4/6) = 0
    assert torch.equal(sliding_pool(features, 6), F.adaptive_max_pool2d(features, 6))


@pytest.mark.parametrize("bins", ["adaptive", "sliding"])
def test_image_pyramid_pool_layout(bins):
    features = torch.randn(2, 3, 14, 10)
    out = image_pyramid_pool(features, (1, 2), bins)
    assert out.shape == (2, 3 * (1 + 4))
    assert torch.equal(out[:, :3], features.amax(dim=(2, 3)))  # level 1 first: global max


def test_unknown_bin_rule_is_one_line():
    with pytest.raises(DetectError, match="classify.bins: unknown bin rule 'stretch'"):
        image_pyramid_pool(torch.zeros(1, 1, 4, 4), (1,), "stretch")
