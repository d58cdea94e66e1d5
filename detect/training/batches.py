"""What fine-tuning iteration ``i`` trains on, prepared by data-loading workers (docs/method.md §6).

:class:`IterationBatches` is a map-style dataset indexed by iteration: item ``i`` holds the
images of :func:`image_order` ``(seed, i)``, each read, flipped or not, resized to the scale(s)
its windows are pooled at, with its sampled windows, their labels and regression targets. Every
random choice of an image (flip, window sampling, scale draws) comes from a generator seeded from
``(seed, i, position)``, its position in the iteration's image order, so item ``i`` is the same in
the main process, in any worker, in any number of workers and after a resume, and under torchrun
each rank samples its images (positions ``rank, rank + world_size, ...``) exactly as one process
samples them for the whole batch (:mod:`detect.training.ddp`).

Boxes are ``(n, 4)`` float32 xyxy in pixels of the resized (and flipped) image.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from detect.config import Config, ModelConfig
from detect.data.images import read_image
from detect.distributed import shard_items
from detect.models.detection_model import resize_image
from detect.models.poolers import RegionPooler
from detect.ops.boxes import scale_boxes
from detect.proposals.cache import image_digest
from detect.structures import DetectionDataset
from detect.training.sampling import (
    SampledRois,
    derived_generator,
    draw_scales,
    hflip_example,
    sample_rois,
)

ORDER_KEY, ITERATION_KEY = 1, 2  # separate random streams derived from the seed


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, num_images: int) -> tuple[int, ...]:
    generator = derived_generator(seed, ORDER_KEY, epoch)
    return tuple(torch.randperm(num_images, generator=generator).tolist())


def image_order(seed: int, iteration: int, images_per_batch: int, num_images: int) -> list[int]:
    """Dataset indices used by 0-based ``iteration``: consecutive slots of per-epoch permutations."""
    indices = []
    for slot in range(iteration * images_per_batch, (iteration + 1) * images_per_batch):
        epoch, offset = divmod(slot, num_images)
        indices.append(_epoch_permutation(seed, epoch, num_images)[offset])
    return indices


class ScaleWindows(NamedTuple):
    """An image's windows pooled at one scale: ``image (H', W', 3)`` uint8 RGB resized so its
    shorter side is ``short_side`` (SPP-net; R-CNN: the original image), ``windows (n, 4)`` in
    its pixels, ``labels (n,)`` (0 = background), ``targets (n, 4)`` regression deltas."""

    short_side: int
    image: Tensor
    windows: Tensor
    labels: Tensor
    targets: Tensor


class ImageWindows(NamedTuple):
    """One image of an iteration: its id, the sha256 of its file (what a feature cache is keyed
    by), whether it is mirrored, its windows per scale (none when sampling found none) and its
    0-based position in the iteration's image order (what its random draws are seeded by)."""

    image_id: str
    digest: str
    flip: bool
    groups: list[ScaleWindows]
    position: int


def windows_by_scale(
    image: np.ndarray,
    base: tuple[np.ndarray, float],
    rois: SampledRois,
    pooler: RegionPooler,
    cfg: ModelConfig,
    per: str,
    generator: torch.Generator,
) -> list[ScaleWindows]:
    """An image's sampled windows grouped by the scale they are pooled at in this iteration.

    ``base`` is ``resize_image(image)`` (``cfg.scales[0]``), the scale of ``rois.boxes``.
    SPP-net with several ``cfg.scales``: each window's scale is drawn by :func:`draw_scales`
    (``finetune.random_scale``: per window, as the released code, or per image); test-time scale
    choice is for the SVM / ridge features, not fine-tuning. R-CNN warps crops from the original
    image: one group.
    """
    scales = cfg.scales if pooler.method == "spp" else cfg.scales[:1]
    draws = draw_scales(rois.boxes.shape[0], len(scales), per, generator)
    base_scale = base[1]
    groups = []
    for k, short_side in enumerate(scales):
        index = torch.nonzero(draws == k).flatten()
        if index.numel() == 0:
            continue
        resized, scale = base if k == 0 else resize_image(image, pooler, cfg, short_side)
        groups.append(
            ScaleWindows(
                short_side,
                torch.from_numpy(resized),
                rois.boxes[index] * (scale / base_scale),
                rois.labels[index],
                rois.targets[index],
            )
        )
    return groups


class IterationBatches(Dataset):
    """``iteration -> (iteration, [ImageWindows, ...])``: the inputs of one fine-tuning
    iteration (see the module docstring).

    Args:
        proposals: image_id -> ``(R, 4)`` xyxy original pixels.
        pooler, model_cfg: the model's region pooler and config (how images are resized).
        shard: ``(rank, world_size)``: only the images at positions ``rank, rank + world_size,
            ...`` of each iteration's order (``(0, 1)``: all of them).
    """

    def __init__(
        self,
        dataset: DetectionDataset,
        proposals: dict[str, Tensor],
        config: Config,
        pooler: RegionPooler,
        model_cfg: ModelConfig,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.dataset = dataset
        self.shard = shard
        self.proposals = proposals
        self.config = config
        self.pooler = pooler
        self.model_cfg = model_cfg
        cfg = config.finetune
        self.rois_per_image = max(1, cfg.rois_per_image_batch // cfg.images_per_batch)

    def __getitem__(self, iteration: int) -> tuple[int, list[ImageWindows]]:
        cfg = self.config.finetune
        order = image_order(self.config.seed, iteration, cfg.images_per_batch, len(self.dataset))
        images = []
        for position, index in shard_items(list(enumerate(order)), *self.shard):
            generator = derived_generator(self.config.seed, ITERATION_KEY, iteration, position)
            ann = self.dataset[index]
            keep = ~ann.difficult
            image = read_image(ann.path, self.config.data.max_image_pixels)
            boxes, gt_boxes = self.proposals[ann.image_id].reshape(-1, 4), ann.boxes[keep]
            flip = cfg.flip and bool(torch.rand(1, generator=generator) < 0.5)
            if flip:
                image, boxes, gt_boxes = hflip_example(image, boxes, gt_boxes)
            base = resize_image(image, self.pooler, self.model_cfg)
            rois = sample_rois(
                scale_boxes(boxes, base[1]),
                scale_boxes(gt_boxes, base[1]),
                ann.labels[keep],
                self.rois_per_image,
                generator,
                cfg.fg_fraction,
                cfg.fg_iou,
                cfg.bg_iou_low,
                cfg.bg_iou_high,
            )
            groups = []
            if rois.boxes.shape[0] > 0:
                groups = windows_by_scale(
                    image, base, rois, self.pooler, self.model_cfg, cfg.random_scale, generator
                )
            digest = image_digest(ann.path)
            images.append(ImageWindows(ann.image_id, digest, flip, groups, position))
        return iteration, images
