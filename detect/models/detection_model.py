"""The detection network: backbone, injected region pooler, spatial pyramid and head, and the
test-time path (pool, head, scorer, then :mod:`detect.models.postprocess`) that inference,
evaluation, the bench and the demo all run. Boxes are ``(N, 4)`` float32 xyxy, 0-based continuous
pixels of the original image unless a docstring says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from detect.config import ModelConfig, RuntimeConfig, TestConfig, check_values
from detect.errors import DetectError
from detect.models.backbones import Backbone
from detect.models.heads import Head, HeadOutput
from detect.models.inputs import image_tensor, resize_by
from detect.models.poolers import (
    METHODS,
    FeatureMap,
    PooledRegions,
    RegionPooler,
    build_pooler,
)
from detect.models.postprocess import class_boxes, postprocess
from detect.models.rpn import SharedRPN
from detect.models.scoring import RegionScorer, SoftmaxScorer
from detect.models.spp import SpatialPyramidPool
from detect.models.stage_timer import StageTimer
from detect.runtime import autocast, full_precision, resolve_runtime
from detect.structures import Detections


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


def resize_image(
    image: np.ndarray, pooler: RegionPooler, cfg: ModelConfig, short_side: int | None = None
) -> tuple[np.ndarray, float]:
    """``(H, W, 3)`` uint8 RGB -> ``(resized (H', W', 3) uint8, scale)``: the resize of
    :meth:`DetectionModel.prepare` without the normalisation (what data-loading workers do, with
    no model at hand)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DetectError(f"image: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    scale = pooler.input_scale(height, width, short_side or cfg.scales[0], cfg.max_size)
    return resize_by(image, scale), scale


class DetectionModel(nn.Module):
    """A detector network: ``backbone`` + region ``pooler`` + spatial ``pyramid`` + ``head``.

    The pooler (:mod:`detect.models.poolers`) decides how boxes become pooled features (SPP-net's
    projection onto one conv map, or R-CNN's warped crops); everything else, the test-time path
    (:meth:`detect`) included, is shared.

    Attributes:
        method: the pooler's name, ``"spp"`` or ``"rcnn"``. num_classes: K (no background).
        cfg: its ModelConfig. precision: ``runtime.precision`` of the test-time path
            (:meth:`use_runtime`; ``"fp32"`` until then).
    """

    def __init__(self, backbone: Backbone, pooler: RegionPooler, head: Head, cfg: ModelConfig):
        super().__init__()
        check_model_config(cfg)
        self.cfg = cfg
        self.backbone = backbone
        self.pooler = pooler
        self.pyramid = SpatialPyramidPool(cfg.pyramid_levels)
        self.head = head
        self.num_classes = head.cls_score.out_features - 1
        self.register_buffer("_mean", torch.tensor(backbone.mean).view(3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(backbone.std).view(3, 1, 1), persistent=False)
        self.precision = "fp32"
        # A region proposal head on this backbone's conv map (:meth:`use_shared_rpn`): then
        # :meth:`detect` without proposals computes each image's map once for both.
        self.rpn: SharedRPN | None = None

    @property
    def method(self) -> str:
        return self.pooler.method

    @property
    def device(self) -> torch.device:
        """Where the parameters and buffers are (and the network runs)."""
        return self._mean.device

    def use_runtime(self, runtime: RuntimeConfig) -> DetectionModel:
        """Move the model to ``runtime.device``, run :meth:`autocast` regions in
        ``runtime.precision`` and the backbone in channels_last when ``runtime.channels_last``
        or the precision is not fp32; every value is checked first (a one-line
        :class:`DetectError`, :func:`detect.runtime.resolve_runtime`). Returns the model."""
        device = resolve_runtime(runtime)
        self.precision = runtime.precision
        self.backbone.set_channels_last(runtime.channels_last or runtime.precision != "fp32")
        return self.to(device)

    def autocast(self):
        """The context forward passes run in: :func:`detect.runtime.autocast` on the model's
        device in its :attr:`precision`."""
        return autocast(self.device, self.precision)

    def with_pooler(self, pooler: RegionPooler) -> DetectionModel:
        """The same backbone and head (shared modules, not copies) run through ``pooler``, on the
        same device and in the same precision."""
        model = DetectionModel(self.backbone, pooler, self.head, self.cfg).to(self.device)
        model.precision = self.precision
        model.rpn = self.rpn
        return model

    def use_shared_rpn(self, rpn: SharedRPN | None) -> DetectionModel:
        """Propose from this model's own conv maps with ``rpn`` (a head fitted on this
        backbone, :mod:`detect.models.rpn`; None: proposals must be given); moved to the model's
        device. Returns the model."""
        self.rpn = None if rpn is None else rpn.to(self.device)
        return self

    # ---- input -------------------------------------------------------------------------------
    def prepare(self, image: np.ndarray, short_side: int | None = None) -> tuple[Tensor, float]:
        """``(H, W, 3)`` uint8 RGB -> ``((3, H', W') normalised float, scale)``.

        Resized by the pooler's :meth:`~detect.models.poolers.RegionPooler.input_scale`: SPP-net
        makes the shorter side ``short_side`` (default ``cfg.scales[0]``) with the longer side
        capped at ``cfg.max_size``; R-CNN keeps scale 1 (crops are warped from the original).
        """
        resized, scale = resize_image(image, self.pooler, self.cfg, short_side)
        return self.normalise(resized), scale

    def normalise(self, image: np.ndarray) -> Tensor:
        """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float normalised by the backbone's mean/std."""
        return (image_tensor(image).to(self.device) - self._mean) / self._std

    def features(self, image: Tensor) -> Tensor:
        """Conv features ``(C, h, w)`` of one prepared image ``(3, H', W')``."""
        return self.backbone(image[None])[0]

    # ---- the differentiable single-image path (training) -------------------------------------
    def head_outputs(self, regions: PooledRegions) -> HeadOutput:
        """The head on every batch of ``regions``, scattered back to its ``R`` boxes."""
        out = HeadOutput.cat([self.head(pooled) for pooled in regions.batches])
        return out if regions.inverse is None else out.index(regions.inverse)

    def forward(self, image: Tensor, boxes: Tensor) -> HeadOutput:
        """Head outputs for ``boxes (R, 4)`` (xyxy, pixels of the prepared ``image (3, H', W')``),
        all regions in one batch. SPP-net: conv once, project, pool and head once per distinct
        window. R-CNN: warp, conv, pool and head for every box."""
        return self.head_outputs(self.pooler.pool(self, image, boxes))

    def forward_features(self, feature_map: Tensor, boxes: Tensor) -> HeadOutput:
        """SPP-net head outputs from an already computed ``feature_map (C, h, w)`` of a prepared
        image, for ``boxes (R, 4)`` (xyxy, pixels of that prepared image); needs an
        :class:`~detect.models.poolers.SPPPooler`."""
        return self.head_outputs(self.pooler.pool_map(self, feature_map, boxes))

    # ---- test time ---------------------------------------------------------------------------
    def region_outputs(
        self, image: np.ndarray, boxes: Tensor, feature_map: FeatureMap | None = None
    ) -> HeadOutput:
        """Head outputs of ``boxes (R, 4)`` (xyxy, pixels of the ``(H, W, 3)`` uint8 ``image``)
        pooled as :meth:`detect` pools them (SPP-net: each box at the scale
        :func:`detect.models.scales.scale_groups` chooses among ``cfg.scales``; its conv map from
        ``feature_map(short_side, prepared)`` when given), computed in :meth:`autocast` on the
        model's device (cast them for numpy: ``out.to("cpu", float32)``)."""
        boxes = boxes.to(self.device)
        with self.autocast():
            if boxes.shape[0] == 0:
                prepared, _scale = self.prepare(image)
                return self(prepared, boxes)
            parts, order = [], []
            for rows, regions in self.pooler.groups(
                self, image, boxes, self.cfg.scales, StageTimer(), feature_map
            ):
                parts.append(self.head_outputs(regions))
                order.append(torch.arange(boxes.shape[0]) if rows is None else rows)
        return HeadOutput.cat(parts).index(torch.argsort(torch.cat(order)))

    def score_regions(
        self,
        image: np.ndarray,
        proposals: Tensor,
        scorer: RegionScorer,
        scales: Sequence[int],
        timer: StageTimer,
        feature_map: FeatureMap | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``scores (R, K)`` and ``deltas (R, 4K)`` (float32, on the CPU) of ``proposals (R, 4)``
        (xyxy, original pixels); the head and scorer run per pooled batch (stage ``fc``). The
        network runs in :meth:`autocast`, the scorer on float32 copies of its outputs.
        ``feature_map``: where SPP-net takes a scale's conv map from (default the backbone)."""
        count, classes = proposals.shape[0], self.num_classes
        scores = torch.zeros((count, classes))
        deltas = torch.zeros((count, 4 * classes))
        with self.autocast():
            groups = self.pooler.groups(
                self, image, proposals.to(self.device), scales, timer, feature_map
            )
            for rows, regions in groups:
                part_scores, part_deltas = [], []
                for pooled in regions.batches:
                    with timer.section("fc"):
                        out = self.head(pooled)
                        with full_precision(self.device):
                            batch_scores, batch_deltas = scorer(out.to(torch.float32))
                    part_scores.append(batch_scores)
                    part_deltas.append(batch_deltas)
                group_scores, group_deltas = torch.cat(part_scores), torch.cat(part_deltas)
                if regions.inverse is not None:
                    group_scores, group_deltas = (
                        group_scores[regions.inverse],
                        group_deltas[regions.inverse],
                    )
                target = slice(None) if rows is None else rows
                scores[target] = group_scores.float().cpu()
                deltas[target] = group_deltas.float().cpu()
        return scores, deltas

    def shared_proposals(
        self, image: np.ndarray, short_side: int, timer: StageTimer
    ) -> tuple[Tensor, FeatureMap]:
        """Proposals ``(R, 4)`` (float32 xyxy, original pixels, on the model's device) of the
        ``(H, W, 3)`` uint8 ``image`` by :attr:`rpn` from its conv map at ``short_side`` (stages
        ``conv`` and ``rpn``), and the :data:`FeatureMap` that hands SPP-net that same map
        (other scales: the backbone). Call in :meth:`autocast`, without gradients."""
        if self.rpn is None:
            raise DetectError(
                "detect: no proposals given and the model has no shared RPN head (a checkpoint "
                "trained with proposals.method rpn and proposals.rpn_shared true has one)"
            )
        with timer.section("conv"):
            prepared, scale = self.prepare(image, short_side)
            conv = self.features(prepared)
        with timer.section("rpn"):
            proposals = self.rpn(conv[None], scale, image.shape[:2])

        def feature_map(side: int, prepared: Tensor) -> Tensor:
            return conv if side == short_side else self.features(prepared)

        return proposals, feature_map

    @torch.no_grad()
    def detect(
        self,
        image: np.ndarray,
        proposals: Tensor | None,
        test_cfg: TestConfig,
        scorer: RegionScorer | None = None,
        *,
        scales: Sequence[int] | None = None,
        timer: StageTimer | None = None,
    ) -> Detections:
        """Detect objects in one image.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            proposals: ``(R, 4)`` xyxy, original image pixels; None: proposed by :attr:`rpn`
                from the conv map SPP-net then pools from (:meth:`shared_proposals`, at the
                first of the scales): one backbone pass for both.
            test_cfg: thresholds, NMS and caps.
            scorer: a :class:`~detect.models.scoring.RegionScorer`; default
                :class:`~detect.models.scoring.SoftmaxScorer`.
            scales: shorter sides for SPP-net (default ``test_cfg.scales``, else
                ``cfg.scales``, the training scales); ignored by R-CNN.
            timer: accumulates per-stage seconds and counters when given.

        Returns:
            :class:`Detections` in original image pixels (empty when there are no proposals);
            the model runs in eval mode for the call, then its mode is restored.
        """
        scorer = scorer or SoftmaxScorer()
        timer = timer or StageTimer()
        scales = scales or test_cfg.scales or self.cfg.scales
        was_training = self.training
        self.eval()
        try:
            feature_map = None
            if proposals is None:
                with self.autocast():
                    proposals, feature_map = self.shared_proposals(image, scales[0], timer)
            proposals = torch.as_tensor(proposals, dtype=torch.float32).reshape(-1, 4).cpu()
            timer.counts["regions"] += int(proposals.shape[0])
            if proposals.shape[0] == 0:
                return Detections.empty()
            scores, deltas = self.score_regions(
                image, proposals, scorer, scales, timer, feature_map
            )
        finally:
            self.train(was_training)
        with timer.section("post"):
            boxes = class_boxes(proposals, deltas, test_cfg)
            return postprocess(scores, boxes, image.shape[0], image.shape[1], test_cfg)

    def compress_svd(self) -> None:
        """Apply the test-time truncated SVD of ``cfg.svd_ranks`` to the head (no-op if empty).

        Call after loading trained weights; the compressed head has different parameter names.
        """
        if self.cfg.svd_ranks:
            self.head.compress(self.cfg.svd_ranks)


def build_detector(
    method: str, cfg: ModelConfig, num_classes: int, backbone: Backbone | None = None
) -> DetectionModel:
    """A detection model with ``cfg.backbone`` (weights per ``cfg.weights``), the pooler of
    ``method`` and a fresh head.

    Args:
        method: ``"spp"`` or ``"rcnn"`` (:func:`detect.models.poolers.build_pooler`).
        cfg: the model section of the config.
        num_classes: K, without background.
        backbone: use this backbone instead of building ``cfg.backbone``.
    """
    from detect.models.weights import load_backbone

    if num_classes < 1:
        raise DetectError(f"num_classes: expected at least one class, got {num_classes}")
    check_model_config(cfg)  # before loading weights, which may take a while
    if method not in METHODS:  # before loading weights too
        raise DetectError(f"method: unknown detection method {method!r}; known: {list(METHODS)}")
    backbone = backbone or load_backbone(cfg.backbone, cfg.weights)
    pyramid_bins = SpatialPyramidPool(cfg.pyramid_levels).num_bins
    head = Head(backbone.out_channels * pyramid_bins, cfg.fc_dims, num_classes, cfg.dropout)
    return DetectionModel(backbone, build_pooler(method, cfg, backbone), head, cfg)
