"""Region poolers: how a :class:`detect.models.DetectionModel` turns boxes into fixed-length features.

The pooler is the one part that differs between the two methods; it is given to the model
(torchvision's ``RoIHeads`` takes its ``box_roi_pool`` the same way), and the model runs the same
head, scorer and post-processing on what it pools:

* :class:`SPPPooler` (SPP-net): conv features once per image (per scale), every box projected
  onto the map (:func:`detect.models.spp.project_boxes`), each distinct window pooled once by the
  spatial pyramid;
* :class:`CropPooler` (R-CNN): every box dilated to include ``context`` pixels of context at crop
  scale, warped (bilinear) to ``crop_size x crop_size`` (the mean outside the image), then the
  backbone and image-level pyramid pooling of each crop's whole map (the same pyramid, so the same
  head fits).

Both produce :class:`PooledRegions`: ``(B, C * bins)`` batches of pooled features, computed lazily
(only one batch of crops or windows exists at a time), and the row of the concatenated batches
that each box takes its outputs from. Boxes are ``(R, 4)`` float xyxy, 0-based continuous pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from detect.config import ModelConfig
from detect.errors import DetectError
from detect.models.backbones import Backbone
from detect.models.scales import resize_scale, scale_groups
from detect.models.spp import project_boxes, projection_offsets
from detect.models.stage_timer import StageTimer

if TYPE_CHECKING:
    from detect.models.detection_model import DetectionModel

METHODS = ("spp", "rcnn")
# ``(short_side, prepared image (3, H', W')) -> conv map (C, h, w)``: SPP-net's conv features.
FeatureMap = Callable[[int, Tensor], Tensor]


class PooledRegions(NamedTuple):
    """The pooled features of ``R`` boxes.

    Attributes:
        batches: ``(B, C * bins)`` batches, in order (at least one, possibly empty).
        inverse: ``(R,)`` row of the concatenated batches holding each box's features (SPP-net:
            a window shared by several boxes is pooled once); None when row ``i`` is box ``i``.
    """

    batches: Iterator[Tensor]
    inverse: Tensor | None


class RegionPooler(Protocol):
    """What :class:`detect.models.DetectionModel` needs from a pooler."""

    method: str  # "spp" or "rcnn": the name checkpoints record

    def input_scale(self, height: int, width: int, short_side: int, max_size: int) -> float:
        """The resize factor of a ``height x width`` image before pooling."""
        ...

    def pool(
        self,
        model: DetectionModel,
        image: Tensor,
        boxes: Tensor,
        batch: int | None = None,
        timer: StageTimer | None = None,
    ) -> PooledRegions:
        """Pool ``boxes (R, 4)`` (pixels of the prepared ``image (3, H', W')``) in batches of
        ``batch`` (None: one batch)."""
        ...

    def groups(
        self,
        model: DetectionModel,
        image: np.ndarray,
        boxes: Tensor,
        scales: Sequence[int],
        timer: StageTimer,
        feature_map: FeatureMap | None = None,
    ) -> Iterator[tuple[Tensor | None, PooledRegions]]:
        """Test time: ``(rows, pooled)`` per group of ``boxes (R, 4)`` (pixels of the original
        ``(H, W, 3)`` uint8 ``image``) pooled together; ``rows (n,)`` are the boxes of the
        group (None: all). ``feature_map``: where SPP-net takes a scale's conv map from
        (default ``model.features``; e.g. the fc-mode cache of training)."""
        ...


def dedupe_windows(windows: Tensor) -> tuple[Tensor, Tensor]:
    """``(unique (U, 4), inverse (R,))`` with ``unique[inverse] == windows``."""
    unique, inverse = torch.unique(windows, dim=0, return_inverse=True)
    return unique, inverse


def warp_crops(image: Tensor, boxes: Tensor, crop_size: int, context: int) -> Tensor:
    """R-CNN crops: each box dilated so that, once warped to ``crop_size``, it is surrounded by
    ``context`` pixels of context, then bilinearly resampled; outside the image the value is 0
    (the mean, since ``image`` is normalised).

    Args:
        image: ``(3, H, W)`` normalised image.
        boxes: ``(R, 4)`` xyxy continuous pixels of ``image``.

    Returns:
        ``(R, 3, crop_size, crop_size)``; output pixel ``j`` samples the dilated box at
        ``x1' + (j + 0.5) * w' / crop_size`` (continuous coordinates).
    """
    count = boxes.shape[0]
    if count == 0:
        return image.new_zeros((0, 3, crop_size, crop_size))
    if not 0 <= 2 * context < crop_size:
        raise DetectError(f"model.rcnn_context: {context} px leaves nothing of a {crop_size} crop")
    boxes = boxes.to(image.dtype)
    size = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-3)
    pad = size * (context / (crop_size - 2 * context))
    low, high = boxes[:, :2] - pad, boxes[:, 2:] + pad
    steps = (torch.arange(crop_size, dtype=image.dtype, device=image.device) + 0.5) / crop_size
    xs = low[:, 0:1] + steps[None] * (high[:, 0:1] - low[:, 0:1])  # (R, crop)
    ys = low[:, 1:2] + steps[None] * (high[:, 1:2] - low[:, 1:2])
    height, width = image.shape[1:]
    gx = (2.0 * xs / width - 1.0)[:, None, :].expand(count, crop_size, crop_size)
    gy = (2.0 * ys / height - 1.0)[:, :, None].expand(count, crop_size, crop_size)
    # One grid_sample over the single image: the R grids side by side in one wide grid.
    grid = torch.stack([gx, gy], dim=-1).permute(1, 0, 2, 3).reshape(1, crop_size, -1, 2)
    sampled = torch.nn.functional.grid_sample(
        image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return sampled.reshape(3, crop_size, count, crop_size).permute(2, 0, 1, 3)


def _batch_starts(count: int, batch: int | None) -> range:
    """Start rows of batches of ``batch`` over ``count`` rows (one batch, maybe empty, when
    ``count`` is 0 or ``batch`` is None)."""
    return range(0, max(count, 1), max(1, batch or count or 1))


class SPPPooler:
    """SPP-net: project boxes onto the image's conv map and pool each distinct window once.

    Attributes:
        stride: the backbone's total stride S. offsets: projection offsets (paper Appendix A,
            :func:`detect.models.spp.projection_offsets`). batch: windows per batch at test time.
    """

    method = "spp"

    def __init__(self, stride: int, offsets: tuple[float, float], batch: int) -> None:
        self.stride = stride
        self.offsets = offsets
        self.batch = batch

    def input_scale(self, height: int, width: int, short_side: int, max_size: int) -> float:
        """Shorter side ``short_side``, longer side at most ``max_size`` (0 = no cap)."""
        return resize_scale(height, width, short_side, max_size)

    def windows(self, boxes: Tensor, map_size: tuple[int, int]) -> Tensor:
        """``(R, 4)`` boxes (xyxy, prepared-image pixels) -> ``(R, 4)`` inclusive cell windows
        ``(x0, y0, x1, y1)`` of a ``map_size = (h, w)`` feature map."""
        return project_boxes(boxes, self.stride, map_size, self.offsets)

    def pool_map(
        self,
        model: DetectionModel,
        feature_map: Tensor,
        boxes: Tensor,
        batch: int | None = None,
        timer: StageTimer | None = None,
    ) -> PooledRegions:
        """Pool ``boxes (R, 4)`` (xyxy, pixels of the prepared image) from its already computed
        ``feature_map (C, h, w)``: project, de-duplicate windows, pyramid-pool each distinct window
        once, ``batch`` windows at a time (stages ``pool``; counter ``windows``)."""
        timer = timer or StageTimer()
        with timer.section("pool"):
            windows = self.windows(boxes, tuple(feature_map.shape[1:]))
            unique, inverse = dedupe_windows(windows)
        timer.counts["windows"] += int(unique.shape[0])

        def batches() -> Iterator[Tensor]:
            for start in _batch_starts(unique.shape[0], batch):
                end = start + (batch or unique.shape[0])
                with timer.section("pool"):
                    pooled = model.pyramid(feature_map, unique[start:end])
                yield pooled

        return PooledRegions(batches(), inverse)

    def pool(
        self,
        model: DetectionModel,
        image: Tensor,
        boxes: Tensor,
        batch: int | None = None,
        timer: StageTimer | None = None,
    ) -> PooledRegions:
        """Conv features of the prepared ``image (3, H', W')`` once (stage ``conv``), then
        :meth:`pool_map` of ``boxes (R, 4)`` (xyxy, pixels of ``image``)."""
        timer = timer or StageTimer()
        with timer.section("conv"):
            feature_map = model.features(image)
        return self.pool_map(model, feature_map, boxes, batch, timer)

    def groups(
        self,
        model: DetectionModel,
        image: np.ndarray,
        boxes: Tensor,
        scales: Sequence[int],
        timer: StageTimer,
        feature_map: FeatureMap | None = None,
    ) -> Iterator[tuple[Tensor | None, PooledRegions]]:
        """Each box pooled at the scale :func:`scale_groups` chooses for it among ``scales``
        (shorter sides): one group per scale used, conv once per group (stage ``conv``, resizing
        included; ``feature_map(short_side, prepared)`` when given), windows in batches of
        :attr:`batch`."""
        height, width = image.shape[:2]
        choice = scale_groups(boxes.cpu(), height, width, scales, model.cfg.max_size)
        for short_side, index in choice:
            with timer.section("conv"):
                prepared, scale = model.prepare(image, short_side)
                if feature_map is None:
                    conv = model.features(prepared)
                else:
                    conv = feature_map(short_side, prepared)
            group_boxes = boxes[index.to(boxes.device)] * scale
            yield index, self.pool_map(model, conv, group_boxes, self.batch, timer)


class CropPooler:
    """R-CNN: warp every box to a ``crop_size`` crop with ``context`` pixels of context, run the
    backbone on the crops and pyramid-pool each crop's whole map.

    Attributes:
        crop_size, context: as :func:`warp_crops`. batch: crops per batch at test time.
    """

    method = "rcnn"

    def __init__(self, crop_size: int, context: int, batch: int) -> None:
        self.crop_size = crop_size
        self.context = context
        self.batch = batch

    def input_scale(self, height: int, width: int, short_side: int, max_size: int) -> float:
        """1: crops are warped from the original image."""
        return 1.0

    def crops(self, image: Tensor, boxes: Tensor) -> Tensor:
        """``(R, 3, crop, crop)`` warped crops of ``boxes (R, 4)`` in ``image``'s pixels."""
        return warp_crops(image, boxes, self.crop_size, self.context)

    def pool_crops(
        self,
        model: DetectionModel,
        image: Tensor,
        boxes: Tensor,
        timer: StageTimer | None = None,
    ) -> Tensor:
        """Crops of ``boxes (R, 4)`` (xyxy, pixels of the normalised ``image (3, H, W)``), the
        backbone, image-level SPP of each crop's map -> ``(R, C * bins)`` (stages ``warp``,
        ``conv``, ``pool``)."""
        timer = timer or StageTimer()
        with timer.section("warp"):
            crops = self.crops(image, boxes)
        with timer.section("conv"):
            feature_maps = model.backbone(crops)
        with timer.section("pool"):
            pooled = model.pyramid.pool_maps(feature_maps)
        return pooled

    def pool(
        self,
        model: DetectionModel,
        image: Tensor,
        boxes: Tensor,
        batch: int | None = None,
        timer: StageTimer | None = None,
    ) -> PooledRegions:
        """:meth:`pool_crops` of ``boxes (R, 4)`` in batches of ``batch`` boxes (only one batch's
        crops and conv maps exist at a time: all 2,000 proposals of an image as ZF-5 crops at once
        would need about 10 GB). No boxes: one empty batch, so outputs keep their widths."""
        timer = timer or StageTimer()

        def batches() -> Iterator[Tensor]:
            for start in _batch_starts(boxes.shape[0], batch):
                end = start + (batch or boxes.shape[0])
                yield self.pool_crops(model, image, boxes[start:end], timer)

        return PooledRegions(batches(), None)

    def groups(
        self,
        model: DetectionModel,
        image: np.ndarray,
        boxes: Tensor,
        scales: Sequence[int],
        timer: StageTimer,
        feature_map: FeatureMap | None = None,
    ) -> Iterator[tuple[Tensor | None, PooledRegions]]:
        """One group: every box warped from the original image (``scales`` and ``feature_map``
        do not apply), in batches of :attr:`batch` crops."""
        prepared, _scale = model.prepare(image)
        yield None, self.pool(model, prepared, boxes, self.batch, timer)


def build_pooler(method: str, cfg: ModelConfig, backbone: Backbone) -> RegionPooler:
    """The pooler of ``method`` (``"spp"`` or ``"rcnn"``) for ``backbone`` with ``cfg``'s settings
    (projection, crop size and context, test-time batch sizes)."""
    if method == "spp":
        offsets = projection_offsets(cfg.projection, backbone.offsets)
        return SPPPooler(backbone.stride, offsets, cfg.region_batch)
    if method == "rcnn":
        return CropPooler(
            cfg.rcnn_crop_size or backbone.crop_size, cfg.rcnn_context, cfg.rcnn_batch
        )
    raise DetectError(f"method: unknown detection method {method!r}; known: {list(METHODS)}")
