"""The range-max table path of SPP region pooling (docs/method.md §2) against torchvision's
``roi_pool`` (with the finest-to-coarser max-pool derivation written out here), a brute-force
``amax`` over rectangles and brute-force ``adaptive_max_pool2d``."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_pool

import detect.models.spp as spp_module
from detect.models.range_max import RangeMaxTable, log2_floor, roi_pool_bins
from detect.models.spp import SpatialPyramidPool


def _roi_pool_pyramid(features, windows, batch_index, levels):
    """The pyramid from torchvision's roi_pool: each level pooled on its own when it does not
    divide the finest, else max-pooled from the finest grid; half-precision maps cast to float32."""
    features = features.float() if features.dtype in (torch.float16, torch.bfloat16) else features
    rois = torch.cat([batch_index[:, None], windows], 1).to(features.dtype)
    finest = max(levels)
    fine = roi_pool(features, rois, (finest, finest), 1.0)
    grids = [
        F.max_pool2d(fine, finest // n)
        if finest % n == 0
        else roi_pool(features, rois, (n, n), 1.0)
        for n in levels
    ]
    return torch.cat([grid.flatten(1) for grid in grids], 1)


def _no_roi_pool(*_args, **_kwargs):
    raise AssertionError("the range-max table path should have served this call")


def _windows(count, height, width, generator):
    """Random windows plus 1-cell ones, the full map, border rows / columns, tall and wide."""
    xs = torch.randint(0, width, (count, 2), generator=generator).sort(dim=1).values
    ys = torch.randint(0, height, (count, 2), generator=generator).sort(dim=1).values
    fixed = [
        [0, 0, width - 1, height - 1],
        [0, 0, 0, 0],
        [width - 1, height - 1, width - 1, height - 1],
        [0, height - 1, width - 1, height - 1],
        [width - 1, 0, width - 1, height - 1],
        [width // 2, 0, width // 2, height - 1],
        [0, height // 2, width - 1, height // 2],
    ]
    return torch.cat(
        [torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], 1), torch.tensor(fixed)]
    )


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 7])
def test_bins_are_roi_pool_bins_for_every_length(n):
    # One row of cells valued by their index (ascending: a bin's max is its last cell; descending:
    # its first), every window length 1..260 at several offsets: roi_pool's float32 rounding.
    width = 300
    lengths = torch.arange(1, 261)
    low = lengths % 37
    high = low + lengths - 1
    rois = torch.stack(
        [torch.zeros_like(low), low, torch.zeros_like(low), high, torch.zeros_like(low)], 1
    )
    ramp = torch.arange(width, dtype=torch.float32)
    starts, ends = roi_pool_bins(low, high, n, torch.float32)
    up = roi_pool(ramp.view(1, 1, 1, width), rois.float(), (1, n), 1.0)[:, 0, 0]
    down = roi_pool(-ramp.view(1, 1, 1, width), rois.float(), (1, n), 1.0)[:, 0, 0]
    assert torch.equal(up.long(), ends - 1)
    assert torch.equal((-down).long(), starts)


def test_log2_floor():
    values = torch.arange(1, 5000)
    expected = torch.tensor([v.bit_length() - 1 for v in values.tolist()])
    assert torch.equal(log2_floor(values), expected)


def test_rectangle_max_matches_brute_force():
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 13, 17, 5, generator=generator)
    count = 200
    batch = torch.randint(0, 3, (count,), generator=generator)
    ys = torch.randint(0, 14, (count, 2), generator=generator).sort(1).values
    xs = torch.randint(0, 18, (count, 2), generator=generator).sort(1).values
    ys[:, 1] += ys[:, 0] == ys[:, 1]  # non-empty [start, end), still inside the map
    xs[:, 1] += xs[:, 0] == xs[:, 1]
    ys, xs = ys.clamp(max=13), xs.clamp(max=17)
    ys[:, 0] = torch.minimum(ys[:, 0], ys[:, 1] - 1)
    xs[:, 0] = torch.minimum(xs[:, 0], xs[:, 1] - 1)
    table = RangeMaxTable(maps, int((ys[:, 1] - ys[:, 0]).max()), int((xs[:, 1] - xs[:, 0]).max()))
    corners = table.corner_rows(batch, (ys[:, :1], ys[:, 1:]), (xs[:, :1], xs[:, 1:]))
    ours = table.rectangle_max(corners)[:, 0, 0]
    for row in range(count):
        (y0, y1), (x0, x1) = ys[row].tolist(), xs[row].tolist()
        expected = maps[batch[row], y0:y1, x0:x1].amax(dim=(0, 1))
        assert torch.equal(ours[row], expected), (row, y0, y1, x0, x1)


@pytest.mark.parametrize(
    ("levels", "size", "maps"),
    [
        ((1, 2, 3, 6), (43, 57), 1),  # ZF-5's conv5 map at 688 x 917
        ((1, 2, 3, 6), (4, 5), 2),  # maps smaller than 6 cells a side
        ((1, 2, 4), (21, 9), 3),
        ((1, 2, 3, 4), (30, 31), 2),  # 3 does not divide 4: pooled from the map on its own
        ((6, 3, 1), (1, 40), 1),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_table_path_equals_roi_pool(monkeypatch, levels, size, maps, dtype):
    generator = torch.Generator().manual_seed(sum(size) + maps)
    height, width = size
    features = torch.randn(maps, 8, height, width, generator=generator).to(dtype)
    windows = _windows(300, height, width, generator)
    batch_index = torch.randint(0, maps, (windows.shape[0],), generator=generator)
    expected = _roi_pool_pyramid(features, windows, batch_index, levels)
    monkeypatch.setattr(spp_module, "roi_pool", _no_roi_pool)
    pyramid = SpatialPyramidPool(levels)
    for layout in (torch.contiguous_format, torch.channels_last):
        with torch.no_grad():
            ours = pyramid(features.contiguous(memory_format=layout), windows, batch_index)
        assert ours.dtype == expected.dtype
        assert torch.equal(ours, expected)


def test_table_path_in_small_chunks_and_against_adaptive_max_pool(monkeypatch):
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(6, 23, 29, generator=generator)
    windows = _windows(40, 23, 29, generator)
    monkeypatch.setattr(spp_module, "roi_pool", _no_roi_pool)
    monkeypatch.setattr(spp_module, "CHUNK_BYTES", 1)  # one window per chunk
    pooled = SpatialPyramidPool((1, 2, 3, 6))(features, windows)
    for row, (x0, y0, x1, y1) in enumerate(windows.tolist()):
        window = features[:, y0 : y1 + 1, x0 : x1 + 1]
        expected = torch.cat([F.adaptive_max_pool2d(window, n).flatten() for n in (1, 2, 3, 6)])
        assert torch.equal(pooled[row], expected), (x0, y0, x1, y1)


def test_roi_pool_serves_gradients_and_windows_outside_the_map():
    generator = torch.Generator().manual_seed(6)
    features = torch.randn(1, 4, 9, 11, generator=generator)
    pyramid = SpatialPyramidPool()
    windows = torch.tensor([[2, 1, 8, 7]])
    grad = pyramid(features.clone().requires_grad_(True), windows)
    assert grad.requires_grad
    with torch.no_grad():
        assert torch.equal(grad.detach(), pyramid(features, windows))
    # Partly outside the map / malformed: roi_pool's clipping and 1x1 forcing.
    odd = torch.tensor([[5, 5, 14, 12], [6, 2, 3, 4]])
    expected = _roi_pool_pyramid(features, odd, torch.zeros(2, dtype=torch.long), (1, 2, 3, 6))
    assert torch.equal(pyramid(features, odd), expected)


def test_table_path_runs_on_one_thread_and_restores_the_setting(monkeypatch):
    seen = []
    table_pool = SpatialPyramidPool._table_pool

    def spy(*args):
        seen.append(torch.get_num_threads())
        return table_pool(*args)

    monkeypatch.setattr(SpatialPyramidPool, "_table_pool", spy)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        SpatialPyramidPool()(torch.randn(1, 3, 7, 8), torch.tensor([[1, 1, 6, 5]]))
        assert seen == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
