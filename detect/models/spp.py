"""Projection of image boxes onto the conv feature map and the spatial pyramid pooling layer.

The pyramid's bins and the projection of image windows onto cells (the paper's Appendix A).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_pool

from detect.errors import DetectError
from detect.models.range_max import RangeMaxTable, roi_pool_bins

PROJECTION_MODES = ("auto", "paper")
HALF_DTYPES = (torch.float16, torch.bfloat16)
# Windows per chunk of the range-max path: about this many bytes of finest-level maxima at a time
# (its intermediates stay in cache).
CHUNK_BYTES = 1 << 22


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch's CPU operations on one thread within the block (the previous setting restored
    after). The range-max path is dozens of short memory-bound operations; each multi-threaded one
    waits for all its threads, so while another process keeps a core busy two threads made it
    about 8x slower than one (0.48 s against 0.06 s per image; docs/method.md §2)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def project_boxes(
    boxes: Tensor,
    stride: int,
    map_size: tuple[int, int],
    offsets: tuple[float, float] = (0.0, 0.0),
) -> Tensor:
    """Map image boxes to inclusive feature-map windows (the paper's Appendix A).

    ``left = floor((x1 - offsets[0]) / S) + 1``, ``right = ceil((x2 - offsets[1]) / S) - 1``, the
    same for top / bottom; ``offsets = (0, 0)`` is the paper's formula. When ``left > right`` (a
    box narrower than a cell) both become the cell between them whose centre is nearest the box
    centre, ``floor((cx - offset) / S + 0.5)``. Windows are clamped to the map, so every window
    has at least one cell.

    Args:
        boxes: ``(R, 4)`` xyxy, continuous pixels of the (scaled) image the features came from.
        stride: the backbone's total stride S.
        map_size: ``(h, w)`` of the feature map.
        offsets: ``(left, right)`` receptive-field offsets in pixels (see
            :func:`projection_offsets`).

    Returns:
        ``(R, 4)`` int64 windows ``(x0, y0, x1, y1)`` of cell indices, inclusive on both ends.
    """
    boxes = boxes.detach().to(torch.float64)
    low = torch.floor((boxes[:, :2] - offsets[0]) / stride).long() + 1
    high = torch.ceil((boxes[:, 2:] - offsets[1]) / stride).long() - 1
    # The "midpoint" of a tiny box: the cell whose centre (offset + S * i) is nearest the box
    # centre; it always lies between right and left (which differ by at most 2).
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 - (offsets[0] + offsets[1]) / 2
    middle = torch.floor(centre / stride + 0.5).long()
    tiny = low > high
    low = torch.where(tiny, middle, low)
    high = torch.where(tiny, middle, high)
    height, width = map_size
    limits = torch.tensor([width - 1, height - 1], device=boxes.device)
    low = torch.minimum(low.clamp(min=0), limits)
    high = torch.minimum(high.clamp(min=0), limits)
    return torch.cat([low, high], dim=1)


def projection_offsets(mode: str, backbone_offsets: tuple[float, float]) -> tuple[float, float]:
    """The offsets :func:`project_boxes` uses for ``model.projection`` ``mode``.

    * ``auto``: the backbone's declared geometry (``Backbone.offsets``, the centre of feature
      cell 0, proved per backbone by the impulse test), so a window holds the cells whose
      receptive-field centres lie inside the box, for any backbone.
    * ``paper``: the literal Appendix A formula (offsets 0), which assumes cell ``i`` is centred
      at ``S * i``: right for backbones padded by ``k // 2`` at every layer (``zf5_padded``,
      ``tiny``), about one cell off for the released ZF-5 and AlexNet, half a cell for VGG16.
    """
    if mode == "auto":
        return backbone_offsets
    if mode == "paper":
        return (0.0, 0.0)
    raise DetectError(f"model.projection: unknown mode {mode!r}; known: {list(PROJECTION_MODES)}")


class SpatialPyramidPool(nn.Module):
    """Max-pool windows of a feature map into ``len(levels)`` grids, concatenated.

    Level ``n`` splits a window of ``h x w`` cells into ``n x n`` bins; bin ``(i, j)`` covers rows
    ``[floor(i*h/n), ceil((i+1)*h/n))`` and columns likewise (``adaptive_max_pool2d`` semantics).
    Output per window: the levels in the order given, each flattened as ``(C, n, n)``.

    torchvision's ``roi_pool`` with ``spatial_scale=1`` on inclusive cell coordinates computes
    exactly these bins, and coarser levels that divide the finest one are unions of whole finest
    bins, so they are max-pooled from the finest result (both facts are tested against brute-force
    ``adaptive_max_pool2d``). Differentiable (max-pool gradient to the arg-max cell). Where no
    gradient is needed, on CPU, the finest bins come from a range-max table instead of
    ``roi_pool``'s scalar loop (:mod:`detect.models.range_max`): the same bins and values.
    """

    def __init__(self, levels: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        if not levels or any(int(n) < 1 for n in levels):
            raise DetectError(f"model.pyramid_levels: expected positive integers, got {levels!r}")
        self.levels = tuple(int(n) for n in levels)
        self.finest = max(self.levels)
        # Pooled from the map; the others are max-pooled from the finest level's grid.
        self.direct = tuple(n for n in self.levels if self.finest % n or n == self.finest)

    @property
    def num_bins(self) -> int:
        return sum(n * n for n in self.levels)

    def forward(
        self, features: Tensor, windows: Tensor, batch_index: Tensor | None = None
    ) -> Tensor:
        """Pool windows of a batch of feature maps.

        Args:
            features: ``(N, C, h, w)`` (or ``(C, h, w)`` for one map).
            windows: ``(R, 4)`` int inclusive cell windows ``(x0, y0, x1, y1)`` (see
                :func:`project_boxes`).
            batch_index: ``(R,)`` which map each window is on (default: all on map 0).

        Returns:
            ``(R, C * num_bins)`` pooled features (float32 for float16 / bfloat16 maps).
        """
        if features.ndim == 3:
            features = features[None]
        count = windows.shape[0]
        if batch_index is None:
            batch_index = torch.zeros(count, dtype=windows.dtype, device=windows.device)
        if self._table_applies(features, windows):
            with one_thread():
                return self._table_pool(features, windows, batch_index)
        if features.dtype in HALF_DTYPES:
            # torchvision's CPU roi_pool has no bf16 kernel; a max is exact in float32 anyway.
            features = features.float()
        if count == 0:
            return features.new_zeros((0, features.shape[1] * self.num_bins))
        rois = torch.cat([batch_index[:, None], windows], dim=1).to(features.dtype)
        direct = {n: roi_pool(features, rois, (n, n), spatial_scale=1.0) for n in self.direct}
        return torch.cat([grid.flatten(1) for grid in self._grids(direct)], dim=1)

    def _grids(self, direct: dict[int, Tensor]) -> list[Tensor]:
        """Every level's ``(R, C, n, n)`` grid, in order, from the ``direct`` levels' grids."""
        return [
            direct[n] if n in direct else F.max_pool2d(direct[self.finest], self.finest // n)
            for n in self.levels
        ]

    @staticmethod
    def _table_applies(features: Tensor, windows: Tensor) -> bool:
        """The range-max table serves CPU maps when no gradient is needed and every window is a
        well-formed window inside the map (as :func:`project_boxes` makes them); otherwise
        ``roi_pool`` (its backward; its clipping and 1x1 forcing of malformed windows)."""
        if features.device.type != "cpu" or (torch.is_grad_enabled() and features.requires_grad):
            return False
        if windows.shape[0] == 0:
            return True
        x0, y0, x1, y1 = windows.unbind(1)
        height, width = features.shape[-2:]
        inside = (x0 >= 0) & (y0 >= 0) & (x0 <= x1) & (y0 <= y1) & (x1 < width) & (y1 < height)
        return bool(inside.all())

    def _table_pool(self, features: Tensor, windows: Tensor, batch_index: Tensor) -> Tensor:
        """:meth:`forward` through a :class:`RangeMaxTable` of the maps, in chunks of windows
        (:data:`CHUNK_BYTES`). The table keeps the map's dtype (max is exact); the
        bins are computed in the dtype ``roi_pool`` would see (float32 for half types)."""
        count, channels = windows.shape[0], features.shape[1]
        dtype = torch.float32 if features.dtype in HALF_DTYPES else features.dtype
        output = features.new_empty((count, channels * self.num_bins), dtype=dtype)
        if count == 0:
            return output
        windows, batch_index = windows.long(), batch_index.long()
        grids = {
            n: (
                roi_pool_bins(windows[:, 1], windows[:, 3], n, dtype),
                roi_pool_bins(windows[:, 0], windows[:, 2], n, dtype),
            )
            for n in self.direct
        }
        table = RangeMaxTable(
            features.permute(0, 2, 3, 1),  # (N, h, w, C): a view of a channels_last map
            max(int((ends - starts).max()) for (starts, ends), _ in grids.values()),
            max(int((ends - starts).max()) for _, (starts, ends) in grids.values()),
        )
        corners = {n: table.corner_rows(batch_index, *grid) for n, grid in grids.items()}
        views, start = [], 0
        for n in self.levels:
            views.append(output[:, start : start + channels * n * n].view(count, channels, n, n))
            start += channels * n * n
        step = max(1, CHUNK_BYTES // (self.finest**2 * channels * features.element_size()))
        for first in range(0, count, step):
            part = slice(first, first + step)
            # (r, n, n, C) maxima viewed as (r, C, n, n) channels_last grids.
            direct = {
                n: table.rectangle_max(index[:, part]).permute(0, 3, 1, 2)
                for n, index in corners.items()
            }
            for view, grid in zip(views, self._grids(direct), strict=True):
                view[part].copy_(grid)
        return output

    def pool_maps(self, features: Tensor) -> Tensor:
        """Image-level SPP: each whole map of ``(N, C, h, w)`` -> ``(N, C * num_bins)``."""
        count, _channels, height, width = features.shape
        whole = torch.tensor([[0, 0, width - 1, height - 1]], device=features.device)
        return self.forward(
            features,
            whole.expand(count, 4),
            torch.arange(count, device=features.device),
        )


BIN_RULES = ("adaptive", "sliding")


def sliding_bins(size: int, n: int) -> tuple[int, int]:
    """``(window, stride)`` of the paper's level-``n`` bins on a side of ``size`` cells:
    ``window = ceil(size / n)``, ``stride = floor(size / n)`` (section 2.3, "the size of each
    pooling window is ceil(a/n) and the stride floor(a/n)"). Bin ``i`` covers cells
    ``[i * stride, i * stride + window)``; the last ``size - ((n - 1) * stride + window)`` cells
    are in no bin (one of 14 at n = 6: window 3, stride 2). When ``n`` divides ``size`` the bins
    tile the side exactly, as the adaptive bins do. ``size < n`` (stride 0) has no such bins."""
    return -(-size // n), size // n


def sliding_pool(features: Tensor, n: int) -> Tensor:
    """``(N, C, h, w)`` -> ``(N, C, n, n)``: max-pool of the paper's sliding bins
    (:func:`sliding_bins`) along each side; a side shorter than ``n`` cells has no such bins and
    falls back to the adaptive ones (``adaptive_max_pool2d``) for this level."""
    height, width = features.shape[-2:]
    if height < n or width < n:
        return F.adaptive_max_pool2d(features, n)
    (kernel_h, stride_h), (kernel_w, stride_w) = sliding_bins(height, n), sliding_bins(width, n)
    pooled = F.max_pool2d(features, (kernel_h, kernel_w), (stride_h, stride_w))
    return pooled[:, :, :n, :n]  # windows past the n-th (when size % n > size // n) are dropped


def image_pyramid_pool(features: Tensor, levels: Sequence[int], bins: str = "adaptive") -> Tensor:
    """Image-level SPP: each whole map of ``(N, C, h, w)`` (any ``h``, ``w``) ->
    ``(N, C * sum(n * n))``, the levels in the order given, each flattened as ``(C, n, n)``.

    ``bins``: ``adaptive`` (bin ``(i, j)`` covers rows ``[floor(i*h/n), ceil((i+1)*h/n))``, as
    :class:`SpatialPyramidPool`: no cell is left out) or ``sliding`` (the paper's window
    ``ceil(a/n)``, stride ``floor(a/n)``: :func:`sliding_pool`).
    """
    if bins == "adaptive":
        return SpatialPyramidPool(levels).pool_maps(features)
    if bins == "sliding":
        return torch.cat([sliding_pool(features, int(n)).flatten(1) for n in levels], dim=1)
    raise DetectError(f"classify.bins: unknown bin rule {bins!r}; known: {list(BIN_RULES)}")
