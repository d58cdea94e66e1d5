"""Projection (docs/method.md §3) and spatial pyramid pooling (docs/method.md §2) against brute force."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from detect.errors import DetectError
from detect.models.spp import SpatialPyramidPool, project_boxes, projection_offsets


def _project(box, offsets=(0.0, 0.0), map_size=(10, 20)):
    return project_boxes(torch.tensor([box], dtype=torch.float32), 16, map_size, offsets)[
        0
    ].tolist()


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        # left = floor(x1/16)+1, right = ceil(x2/16)-1, worked by hand.
        ((33, 40, 100, 90), [3, 3, 6, 5]),
        ((0, 0, 320, 160), [1, 1, 19, 9]),  # whole image (map 10 x 20)
        ((32, 32, 64, 64), [3, 3, 3, 3]),  # exactly two cells wide -> the one strictly inside
        # tiny: left 4 > right 3 -> the cell of the two whose centre 16 i is nearest the box centre
        ((50, 50, 60, 60), [3, 3, 3, 3]),  # centre 55: cell 3 (48) nearer than cell 4 (64)
        ((60, 60, 62, 62), [4, 4, 4, 4]),  # centre 61: cell 4 (64) nearer than cell 3 (48)
        ((300, 150, 330, 170), [19, 9, 19, 9]),  # beyond the border: clamped to the last cell
        ((-10, -10, 20, 20), [0, 0, 1, 1]),  # negative coordinates clamp to 0
        (
            (5, 5, 7, 7),
            [0, 0, 0, 0],
        ),  # tiny at the border: left 1 > right 0 -> centre 6 nearest cell 0
    ],
)
def test_projection_hand_examples(box, expected):
    assert _project(box) == expected


def test_projection_offsets_mode_reference_zf5():
    # The reference code's ZF-5: left = floor((x1 - 6.5)/16) + 1, right = ceil((x2 - 3.5)/16) - 1.
    # x: floor(26.5/16)+1 = 2, ceil(96.5/16)-1 = 6; y: floor(33.5/16)+1 = 3, ceil(86.5/16)-1 = 5.
    assert _project((33, 40, 100, 90), offsets=(6.5, 3.5)) == [2, 3, 6, 5]


def test_projection_offsets_selection():
    assert projection_offsets("paper", (3.0, 3.0)) == (0.0, 0.0)
    assert projection_offsets("auto", (3.0, 4.0)) == (3.0, 4.0)
    with pytest.raises(DetectError, match="projection"):
        projection_offsets("bogus", (0.0, 0.0))


@settings(max_examples=200, deadline=None)
@given(
    x=st.floats(-100, 1200),
    y=st.floats(-100, 1200),
    w=st.floats(0.1, 1500),
    h=st.floats(0.1, 1500),
    map_h=st.integers(1, 80),
    map_w=st.integers(1, 80),
    offset=st.floats(0, 20),
)
def test_projection_windows_inside_map(x, y, w, h, map_h, map_w, offset):
    boxes = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32)
    x0, y0, x1, y1 = project_boxes(boxes, 16, (map_h, map_w), (offset, offset))[0].tolist()
    assert 0 <= x0 <= x1 < map_w
    assert 0 <= y0 <= y1 < map_h


def _brute_force(features, windows, levels):
    rows = []
    for x0, y0, x1, y1 in windows.tolist():
        window = features[:, y0 : y1 + 1, x0 : x1 + 1]
        rows.append(torch.cat([F.adaptive_max_pool2d(window, n).flatten() for n in levels]))
    return torch.stack(rows)


def _random_windows(count, height, width, generator):
    xs = torch.randint(0, width, (count, 2), generator=generator).sort(dim=1).values
    ys = torch.randint(0, height, (count, 2), generator=generator).sort(dim=1).values
    windows = torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], dim=1)
    extra = torch.tensor([[0, 0, width - 1, height - 1], [3, 4, 3, 4], [0, 0, 0, height - 1]])
    return torch.cat([windows, extra])


@pytest.mark.parametrize("levels", [(1, 2, 3, 6), (1, 2, 4), (6, 3, 1), (1, 2, 3, 4)])
def test_spp_matches_adaptive_max_pool_brute_force(levels):
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(4, 47, 71, generator=generator)
    windows = _random_windows(300, 47, 71, generator)
    pooled = SpatialPyramidPool(levels)(features, windows)
    assert pooled.shape == (windows.shape[0], 4 * sum(n * n for n in levels))
    assert torch.equal(pooled, _brute_force(features, windows, levels))


def test_roi_pool_bins_equal_paper_bins_for_every_window_size():
    # Every window height/width 1..130 at several positions (the formula's float rounding).
    features = torch.randn(1, 140, 140)
    sizes = torch.arange(1, 131)
    windows = torch.stack([sizes % 7, sizes % 5, sizes % 7 + sizes - 1, sizes % 5 + sizes - 1], 1)
    pooled = SpatialPyramidPool((1, 2, 3, 6))(features, windows)
    assert torch.equal(pooled, _brute_force(features, windows, (1, 2, 3, 6)))


@pytest.mark.parametrize("levels", [(1, 2, 3, 6), (2, 4, 6), (6, 3)])
def test_pyramid_levels_nest(levels):
    # The layer pools levels that divide the finest from the finest grid's bins (4 does not
    # divide 6: pooled on its own). Each level's slice of the output must still be that level's
    # own adaptive max pool of the window, for every window size, including fewer than 6 cells.
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2, 34, 34, generator=generator)
    windows = torch.tensor(
        [[2, 3, 2 + w - 1, 3 + h - 1] for h in range(1, 30) for w in range(1, 30)]
    )
    pooled = SpatialPyramidPool(levels)(features, windows)
    start = 0
    for n in levels:
        width = 2 * n * n
        for row, (x0, y0, x1, y1) in enumerate(windows.tolist()):
            window = features[:, y0 : y1 + 1, x0 : x1 + 1]
            expected = F.adaptive_max_pool2d(window, n).flatten()
            assert torch.equal(pooled[row, start : start + width], expected), (n, x1 - x0, y1 - y0)
        start += width
    assert start == pooled.shape[1]


def test_image_level_spp_and_batch_index():
    features = torch.randn(3, 8, 9, 13)
    pooled = SpatialPyramidPool((1, 2, 4)).pool_maps(features)
    expected = torch.cat([F.adaptive_max_pool2d(features, n).flatten(1) for n in (1, 2, 4)], dim=1)
    assert torch.equal(pooled, expected)


def test_spp_gradient_matches_brute_force():
    generator = torch.Generator().manual_seed(2)
    base = torch.randn(3, 20, 25, generator=generator)
    windows = _random_windows(40, 20, 25, generator)
    weights = torch.randn(40 + 3, 3 * 50, generator=generator)
    ours = base.clone().requires_grad_(True)
    (SpatialPyramidPool()(ours, windows) * weights).sum().backward()
    brute = base.clone().requires_grad_(True)
    (_brute_force(brute, windows, (1, 2, 3, 6)) * weights).sum().backward()
    assert ours.grad.abs().sum() > 0
    torch.testing.assert_close(ours.grad, brute.grad)


def test_empty_windows_and_bad_levels():
    assert SpatialPyramidPool()(
        torch.randn(2, 5, 5), torch.zeros((0, 4), dtype=torch.long)
    ).shape == (
        0,
        100,
    )
    with pytest.raises(DetectError, match="pyramid_levels"):
        SpatialPyramidPool((0, 2))


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        # left offset 6.5, right offset 3.5, worked by hand (map 10 x 20):
        # x1 = 20: floor(13.5 / 16) + 1 = 1 (with 3.5 it would be 2); x2 = 100: ceil(96.5/16) - 1 = 6
        ((20, 20, 100, 100), [1, 1, 6, 6]),
        # tiny: left floor(52.5/16)+1 = 4 > right ceil(57.5/16)-1 = 3; centre 60 - (6.5+3.5)/2 = 55
        # -> floor(55/16 + 0.5) = 3 (subtracting 3.5 twice would give 4)
        ((59, 59, 61, 61), [3, 3, 3, 3]),
    ],
)
def test_projection_with_unequal_offsets(box, expected):
    assert _project(box, offsets=(6.5, 3.5)) == expected


def test_projection_centre_in_double_precision():
    # x1 = 7 * 2^-23, x2 = 16 - 2^-20 (both exact in float32): left 1 > right 0, a tiny box whose
    # centre 8 - 2^-24 is nearer cell 0 (centre 0) than cell 1 (16) by a hair. In float32 the sum
    # x1 + x2 rounds to 16 and the box would land in cell 1.
    x1, x2 = 7 * 2.0**-23, 16 - 2.0**-20
    assert _project((x1, x1, x2, x2)) == [0, 0, 0, 0]


def test_spp_of_a_single_window():
    features = torch.randn(3, 9, 11, generator=torch.Generator().manual_seed(4))
    window = torch.tensor([[1, 2, 7, 8]])
    pooled = SpatialPyramidPool((1, 2, 3, 6))(features, window)
    assert torch.equal(pooled, _brute_force(features, window, (1, 2, 3, 6)))
