"""Exact max over many rectangles of a feature map, vectorised: a 2-D range-max (sparse) table.

SPP-net's test-time region pooling (docs/method.md §2): torchvision's CPU ``roi_pool`` is a
single-threaded scalar loop over (window, channel, bin, cell). Here each bin's maximum is the
maximum of four overlapping power-of-two blocks read from a table built once per map, so pooling
is a few row gathers and element-wise maxima over whole channel vectors (vectorised, multi-threaded
torch ops). Max is exact, so the result equals ``roi_pool``'s for finite maps, bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor


def roi_pool_bins(low: Tensor, high: Tensor, n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The ``n`` bins torchvision's ``roi_pool`` (``spatial_scale=1``) cuts an inclusive cell range
    into, with its arithmetic: ``size = max(high - low + 1, 1) / n`` and bin ``i`` covering
    ``[low + floor(i * size), low + ceil((i + 1) * size))``, computed in ``dtype`` (the map's
    dtype, as the kernel does), so the float rounding is the same.

    Args:
        low, high: ``(R,)`` int first and last cell of each window along one side.

    Returns:
        ``(starts, ends)``, each ``(R, n)`` int64 absolute cells, ``ends`` exclusive.
    """
    size = (high - low + 1).clamp(min=1).to(dtype) / n
    steps = torch.arange(n + 1, dtype=dtype, device=low.device)
    starts = torch.floor(steps[:-1] * size[:, None]).long() + low[:, None]
    ends = torch.ceil(steps[1:] * size[:, None]).long() + low[:, None]
    return starts, ends


def log2_floor(values: Tensor) -> Tensor:
    """``floor(log2(v))`` of positive ints (exact: ``frexp`` of a float holding them)."""
    return torch.frexp(values.to(torch.float64)).exponent.long() - 1


class RangeMaxTable:
    """``table[k, l, b, y, x] = max(maps[b, y : y + 2**k, x : x + 2**l])`` over channel vectors.

    Entries whose block would cross the map's far edge are never read by :meth:`rectangle_max`
    (its blocks lie inside the queried rectangle) and are left unset.

    Args:
        maps: ``(N, h, w, C)`` feature maps, channels last (any dtype; kept).
        max_height, max_width: the largest rectangle side that will be queried (cells).
    """

    def __init__(self, maps: Tensor, max_height: int, max_width: int) -> None:
        self.levels_y = int(max_height).bit_length()
        self.levels_x = int(max_width).bit_length()
        count, height, width, channels = maps.shape
        self.shape = (self.levels_y, self.levels_x, count, height, width)
        table = maps.new_empty((*self.shape, channels))
        table[0, 0] = maps
        for level in range(1, self.levels_x):
            step = 1 << (level - 1)
            previous = table[0, level - 1]
            torch.maximum(
                previous[:, :, : width - step],
                previous[:, :, step:],
                out=table[0, level, :, :, : width - step],
            )
        for level in range(1, self.levels_y):
            step = 1 << (level - 1)
            previous = table[level - 1]
            torch.maximum(
                previous[:, :, : height - step],
                previous[:, :, step:],
                out=table[level, :, :, : height - step],
            )
        self.rows = table.view(-1, channels)  # one row per (k, l, b, y, x)

    def corner_rows(
        self, batch: Tensor, rows: tuple[Tensor, Tensor], cols: tuple[Tensor, Tensor]
    ) -> Tensor:
        """Table rows of the four blocks covering each rectangle ``rows x cols`` of a window grid.

        Args:
            batch: ``(R,)`` map of each window.
            rows: ``(starts, ends)``, each ``(R, a)``: the grid's row ranges ``[start, end)``.
            cols: ``(starts, ends)``, each ``(R, b)``: its column ranges.

        Returns:
            ``(4, R, a, b)`` int64 indices into :attr:`rows` (top-left, top-right, bottom-left,
            bottom-right blocks of side ``2**floor(log2(side))``).
        """
        _, levels_x, count, height, width = self.shape
        (top, bottom), (left, right) = rows, cols
        level_y, level_x = log2_floor(bottom - top), log2_floor(right - left)
        block = level_y[:, :, None] * levels_x + level_x[:, None, :]
        block = (block * count + batch[:, None, None]) * height
        ys = (top, bottom - (1 << level_y))
        xs = (left, right - (1 << level_x))
        return torch.stack(
            [((block + y[:, :, None]) * width + x[:, None, :]) for y in ys for x in xs]
        )

    def rectangle_max(self, corners: Tensor) -> Tensor:
        """``(4, ...)`` indices from :meth:`corner_rows` -> ``(..., C)`` rectangle maxima."""
        pooled = self.rows.index_select(0, corners[0].reshape(-1))
        for index in corners[1:]:
            torch.maximum(pooled, self.rows.index_select(0, index.reshape(-1)), out=pooled)
        return pooled.view(*corners.shape[1:], -1)
