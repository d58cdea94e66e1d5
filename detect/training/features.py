"""Region features of a whole training split, for the SVMs and the ridge box regressor.

One forward pass per image over its ground-truth boxes and proposals (no flip, eval mode) gives,
per region, ``out.fc7`` / ``out.pooled``: for SPP-net each box pooled at the scale test time
chooses for it (:func:`detect.models.scales.scale_groups`, so with several ``model.scales`` the
SVMs and the ridge regressor see each box as detection will), for R-CNN warped from the image in
batches of ``model.cfg.rcnn_batch`` crops (bounded memory, as at test time). Only what the later
stages need is kept: ground-truth rows (SVM positives), the candidate-negative pool (ground-truth
boxes and proposals, as R-CNN's) with each row's best IoU per class (a class's negatives are the
rows with IoU < ``neg_iou``), and pooled features + targets of regions (ground-truth boxes
included) with IoU >= ``min_iou`` (ridge regression).

Bounded memory: :func:`extract_region_features` given a folder writes each image's rows to its
own ``.npz`` shard (atomically) and keeps none in RAM; the SVMs and the ridge regressor read the
shards back one image at a time (:meth:`RegionFeatureShards.arrays`). Without a folder the
shards stay in RAM (small data, tests). Images are decoded by ``num_workers`` worker processes
(:func:`detect.data.loader.read_images`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from detect.data.images import DEFAULT_MAX_IMAGE_PIXELS
from detect.data.loader import read_images
from detect.files import atomic_path
from detect.ops.boxes import box_iou, encode_deltas
from detect.proposals.cache import image_digest
from detect.structures import DetectionDataset
from detect.training.feature_cache import ConvMapCache


@dataclass
class RegionFeatures:
    """Features of a split (rows concatenated over images).

    Attributes:
        gt_features: ``(G, D)`` SVM features of the ground-truth boxes; gt_labels ``(G,)``.
        pool_features: ``(N, D)`` SVM features of the negative candidates: every ground-truth box
            and the (possibly subsampled) proposals.
        pool_class_iou: ``(N, K)`` best IoU of each pool row with a ground truth of each class.
        reg_features: ``(M, P)`` pooled features of regions with IoU >= min_iou (GT included);
        reg_labels: ``(M,)`` class of the matched ground truth; reg_targets: ``(M, 4)`` deltas.
    """

    gt_features: Tensor
    gt_labels: Tensor
    pool_features: Tensor
    pool_class_iou: Tensor
    reg_features: Tensor
    reg_labels: Tensor
    reg_targets: Tensor

    def arrays(self, *names: str) -> Iterator[tuple[np.ndarray, ...]]:
        """The fields ``names`` as numpy arrays: one chunk (the whole split)."""
        yield tuple(getattr(self, name).numpy() for name in names)


class RegionFeatureShards:
    """:class:`RegionFeatures` of a split kept per image: ``.npz`` files in ``folder`` (read one
    at a time, one field at a time), or chunks in RAM when ``folder`` is None."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.shards: list[Path | RegionFeatures] = []

    def add(self, chunk: RegionFeatures) -> None:
        """Append one image's rows (written atomically to the next shard file)."""
        if self.folder is None:
            self.shards.append(chunk)
            return
        path = self.folder / f"{len(self.shards):07d}.npz"
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **{f.name: getattr(chunk, f.name).numpy() for f in fields(chunk)})
        self.shards.append(path)

    def arrays(self, *names: str) -> Iterator[tuple[np.ndarray, ...]]:
        """The fields ``names`` of each image in turn, as numpy arrays."""
        for shard in self.shards:
            if isinstance(shard, RegionFeatures):
                yield from shard.arrays(*names)
                continue
            with np.load(shard, allow_pickle=False) as stored:
                yield tuple(stored[name] for name in names)

    def joined(self) -> RegionFeatures:
        """All rows in RAM, concatenated over images (small data)."""
        names = [f.name for f in fields(RegionFeatures)]
        parts = list(zip(*self.arrays(*names), strict=True))
        return RegionFeatures(*(torch.from_numpy(np.concatenate(chunks)) for chunks in parts))


def class_ious(boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor, num_classes: int) -> Tensor:
    """``(R, K)`` best IoU of each box ``(R, 4)`` with a ground truth ``(G, 4)`` of each class."""
    result = torch.zeros((boxes.shape[0], num_classes))
    if gt_boxes.shape[0] == 0:
        return result
    iou = box_iou(boxes, gt_boxes)
    for k in range(num_classes):
        mask = gt_labels == k
        if bool(mask.any()):
            result[:, k] = iou[:, mask].max(dim=1).values
    return result


def _cached_maps(model, cache: ConvMapCache, digest: str):
    """``(short_side, prepared) -> conv map`` of the unmirrored image ``digest`` from ``cache``."""

    def feature_map(short_side: int, prepared: Tensor) -> Tensor:
        return cache.get(digest, False, short_side, lambda: model.features(prepared))

    return feature_map


@torch.no_grad()
def extract_region_features(
    model,
    dataset: DetectionDataset,
    proposals: dict[str, Tensor],
    svm_feature: str = "fc7",
    min_iou: float = 0.6,
    max_negatives_per_image: int = 0,
    seed: int = 0,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    folder: Path | None = None,
    num_workers: int = 0,
    conv_maps: ConvMapCache | None = None,
) -> RegionFeatureShards:
    """Run ``model`` (a :class:`detect.models.DetectionModel`) over every image of ``dataset``,
    each region pooled as test time pools it (:meth:`~detect.models.DetectionModel.region_outputs`).

    Args:
        proposals: image_id -> ``(R, 4)`` xyxy original pixels.
        svm_feature: ``"fc7"`` or ``"pool"`` (``out.pooled``): what the SVM rows hold.
        max_negatives_per_image: keep at most this many random proposals per image in the SVM
            pool (ground-truth boxes always stay) (0 = all; bounds disk use on large data sets).
        folder: where each image's shard is written (None: kept in RAM).
        num_workers: worker processes decoding the images.
        conv_maps: SPP-net's conv maps (unmirrored) from this cache, as fc-mode fine-tuning
            left them (its frozen conv layers are the model's:
            :func:`detect.training.finetune.conv_map_cache`).
    """
    model.eval()
    num_classes = len(dataset.class_names)
    shards = RegionFeatureShards(folder)
    images = read_images(dataset.annotations, max_image_pixels, num_workers)
    for ann, image in tqdm(images, total=len(dataset), desc="region features", unit="img"):
        keep = ~ann.difficult  # difficult objects are neither positives nor regression rows
        gt_boxes, gt_labels = ann.boxes[keep], ann.labels[keep]
        props = proposals[ann.image_id].reshape(-1, 4).float()
        boxes = torch.cat([gt_boxes, props])
        maps = None if conv_maps is None else _cached_maps(model, conv_maps, image_digest(ann.path))
        out = model.region_outputs(image, boxes, maps).to("cpu", torch.float32)  # for sklearn
        feats = out.fc7 if svm_feature == "fc7" else out.pooled
        num_gt = gt_boxes.shape[0]

        pool_rows = torch.arange(num_gt, boxes.shape[0])
        if 0 < max_negatives_per_image < pool_rows.numel():
            # seeded per image, so that any split of the images over processes draws the same
            rng = np.random.default_rng([seed, zlib.crc32(ann.image_id.encode())])
            chosen = rng.choice(pool_rows.numel(), max_negatives_per_image, replace=False)
            pool_rows = pool_rows[torch.from_numpy(np.sort(chosen))]
        pool_rows = torch.cat([torch.arange(num_gt), pool_rows])
        rows = torch.zeros(0, dtype=torch.int64)
        best_gt = torch.zeros(boxes.shape[0], dtype=torch.int64)
        if num_gt:
            best_iou, best_gt = box_iou(boxes, gt_boxes).max(dim=1)
            rows = torch.nonzero(best_iou >= min_iou).flatten()
        shards.add(
            RegionFeatures(
                gt_features=feats[:num_gt],
                gt_labels=gt_labels,
                pool_features=feats[pool_rows],
                pool_class_iou=class_ious(boxes[pool_rows], gt_boxes, gt_labels, num_classes),
                reg_features=out.pooled[rows],
                reg_labels=gt_labels[best_gt[rows]],
                reg_targets=encode_deltas(boxes[rows], gt_boxes[best_gt[rows]]),
            )
        )
    return shards
