"""SPP-net and the R-CNN baseline: one :class:`Detector` sharing backbone, pyramid and head.

* ``method="spp"``: conv features once per image, every box projected onto the map
  (:func:`detect.models.spp.project_boxes`), pooled by the spatial pyramid, then the head.
* ``method="rcnn"``: every box dilated to include ``rcnn_context`` pixels of context at crop
  scale, warped (bilinear) to ``crop_size x crop_size``, padded with the mean outside the image,
  then backbone, image-level pyramid pooling of each crop's whole map (the same pyramid, so the
  same head fits) and the head.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from detect.config import ModelConfig, check_values
from detect.errors import DetectError
from detect.models.backbones import Backbone
from detect.models.heads import Head, HeadOutput
from detect.models.spp import SpatialPyramidPool, project_boxes, projection_offsets

METHODS = ("spp", "rcnn")


def check_model_config(cfg: ModelConfig) -> None:
    """Raise :class:`DetectError` naming the ``model.*`` setting a detector cannot be built or
    run with (backbone names, weights, pyramid levels and projection are checked where used)."""

    def positive(values: tuple[int, ...]) -> bool:
        return bool(values) and all(v >= 1 for v in values)

    checks = [
        (positive(cfg.scales), "scales", cfg.scales, "a non-empty list of positive sizes"),
        (cfg.max_size >= 0, "max_size", cfg.max_size, ">= 0 (0 = no cap)"),
        (positive(cfg.fc_dims), "fc_dims", cfg.fc_dims, "a non-empty list of positive widths"),
        (0.0 <= cfg.dropout < 1.0, "dropout", cfg.dropout, "in [0, 1)"),
        (all(r >= 1 for r in cfg.svd_ranks), "svd_ranks", cfg.svd_ranks, "positive ranks"),
        (cfg.rcnn_crop_size >= 0, "rcnn_crop_size", cfg.rcnn_crop_size, ">= 0 (0 = backbone's)"),
        (cfg.rcnn_context >= 0, "rcnn_context", cfg.rcnn_context, ">= 0"),
        (cfg.region_batch >= 1, "region_batch", cfg.region_batch, ">= 1"),
        (cfg.rcnn_batch >= 1, "rcnn_batch", cfg.rcnn_batch, ">= 1"),
    ]
    check_values("model.", checks)


def resize_scale(height: int, width: int, short_side: int, max_size: int) -> float:
    """Scale factor making the shorter side ``short_side`` with the longer side at most ``max_size``."""
    scale = short_side / min(height, width)
    if max_size > 0 and round(max(height, width) * scale) > max_size:
        scale = max_size / max(height, width)
    return scale


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


class Detector(nn.Module):
    """A detector: ``backbone`` + ``pyramid`` + ``head``, run the SPP-net or the R-CNN way.

    Attributes:
        method: ``"spp"`` or ``"rcnn"``. num_classes: K (no background). cfg: its ModelConfig.
    """

    def __init__(self, method: str, backbone: Backbone, cfg: ModelConfig, num_classes: int):
        super().__init__()
        check_model_config(cfg)
        if method not in METHODS:
            raise DetectError(
                f"method: unknown detection method {method!r}; known: {list(METHODS)}"
            )
        self.method = method
        self.cfg = cfg
        self.num_classes = num_classes
        self.backbone = backbone
        self.pyramid = SpatialPyramidPool(cfg.pyramid_levels)
        self.head = Head(
            backbone.out_channels * self.pyramid.num_bins, cfg.fc_dims, num_classes, cfg.dropout
        )
        self.offsets = projection_offsets(cfg.projection, backbone.offsets)
        self.crop_size = cfg.rcnn_crop_size or backbone.crop_size
        self.register_buffer("_mean", torch.tensor(backbone.mean).view(3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(backbone.std).view(3, 1, 1), persistent=False)

    # ---- input -------------------------------------------------------------------------------
    def prepare(self, image: np.ndarray, short_side: int | None = None) -> tuple[Tensor, float]:
        """``(H, W, 3)`` uint8 RGB -> ``((3, H', W') normalised float, scale)``.

        SPP: resized so the shorter side is ``short_side`` (default ``cfg.scales[0]``), the longer
        side capped at ``cfg.max_size``. R-CNN: scale 1 (crops are warped from the original).
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DetectError(
                f"image: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}"
            )
        scale = 1.0
        if self.method == "spp":
            height, width = image.shape[:2]
            scale = resize_scale(height, width, short_side or self.cfg.scales[0], self.cfg.max_size)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            if size != (width, height):
                image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        return self.normalise(image), scale

    def normalise(self, image: np.ndarray) -> Tensor:
        """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float normalised by the backbone's mean/std."""
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
        tensor = tensor.to(self._mean.device)
        return (tensor - self._mean) / self._std

    # ---- SPP-net pieces ----------------------------------------------------------------------
    def features(self, image: Tensor) -> Tensor:
        """Conv features ``(C, h, w)`` of one prepared image ``(3, H', W')``."""
        return self.backbone(image[None])[0]

    def windows(self, boxes: Tensor, map_size: tuple[int, int]) -> Tensor:
        """Project ``(R, 4)`` boxes (prepared-image pixels) to ``(R, 4)`` inclusive cell windows."""
        return project_boxes(boxes, self.backbone.stride, map_size, self.offsets)

    # ---- R-CNN pieces ------------------------------------------------------------------------
    def crops(self, image: Tensor, boxes: Tensor) -> Tensor:
        """``(R, 3, crop, crop)`` warped crops of boxes ``(R, 4)`` in ``image``'s pixels."""
        return warp_crops(image, boxes, self.crop_size, self.cfg.rcnn_context)

    def pool_crops(self, crops: Tensor) -> Tensor:
        """Backbone + image-level SPP of each crop: ``(R, 3, s, s)`` -> ``(R, C * bins)``."""
        return self.pyramid.pool_maps(self.backbone(crops))

    # ---- the differentiable single-scale path ------------------------------------------------
    def forward(self, image: Tensor, boxes: Tensor) -> HeadOutput:
        """Head outputs for ``boxes (R, 4)`` (xyxy, pixels of the prepared ``image (3, H', W')``).

        SPP: conv once, project, pool each distinct window once, head once per distinct window,
        scattered back to the ``R`` boxes. R-CNN: warp, conv, pool and head for every box.
        """
        if self.method == "rcnn":
            return self.head(self.pool_crops(self.crops(image, boxes)))
        return self.forward_features(self.features(image), boxes)

    def forward_features(self, feature_map: Tensor, boxes: Tensor) -> HeadOutput:
        """SPP-net head outputs from an already computed ``feature_map (C, h, w)`` of a prepared
        image, for ``boxes (R, 4)`` (xyxy, pixels of that prepared image): project, pool each
        distinct window once, head once per distinct window, scattered back to the ``R`` boxes.
        """
        windows = self.windows(boxes, tuple(feature_map.shape[1:]))
        unique, inverse = dedupe_windows(windows)
        return self.head(self.pyramid(feature_map, unique)).index(inverse)

    def compress_svd(self) -> None:
        """Apply the test-time truncated SVD of ``cfg.svd_ranks`` to the head (no-op if empty).

        Call after loading trained weights; the compressed head has different parameter names.
        """
        if self.cfg.svd_ranks:
            self.head.compress(self.cfg.svd_ranks)


def build_detector(method: str, cfg: ModelConfig, num_classes: int) -> Detector:
    """A detector with ``cfg.backbone`` (weights per ``cfg.weights``) and a fresh head.

    Args:
        method: ``"spp"`` or ``"rcnn"``.
        cfg: the model section of the config.
        num_classes: K, without background.
    """
    from detect.models.weights import load_backbone

    if num_classes < 1:
        raise DetectError(f"num_classes: expected at least one class, got {num_classes}")
    check_model_config(cfg)  # before loading weights, which may take a while
    return Detector(method, load_backbone(cfg.backbone, cfg.weights), cfg, num_classes)
