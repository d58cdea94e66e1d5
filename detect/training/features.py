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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from detect.data.images import DEFAULT_MAX_IMAGE_PIXELS, read_image
from detect.ops.boxes import box_iou, encode_deltas
from detect.structures import DetectionDataset


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
) -> RegionFeatures:
    """Run ``model`` (a :class:`detect.models.DetectionModel`) over every image of ``dataset``,
    each region pooled as test time pools it (:meth:`~detect.models.DetectionModel.region_outputs`).

    Args:
        proposals: image_id -> ``(R, 4)`` xyxy original pixels.
        svm_feature: ``"fc7"`` or ``"pool"`` (``out.pooled``): what the SVM rows hold.
        max_negatives_per_image: keep at most this many random proposals per image in the SVM
            pool (ground-truth boxes always stay) (0 = all; bounds memory on large data sets).
    """
    model.eval()
    num_classes = len(dataset.class_names)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[Tensor]] = {k: [] for k in RegionFeatures.__dataclass_fields__}
    for ann in tqdm(dataset.annotations, desc="region features", unit="img", leave=False):
        keep = ~ann.difficult  # difficult objects are neither positives nor regression rows
        gt_boxes, gt_labels = ann.boxes[keep], ann.labels[keep]
        props = proposals[ann.image_id].reshape(-1, 4).float()
        boxes = torch.cat([gt_boxes, props])
        out = model.region_outputs(read_image(ann.path, max_image_pixels), boxes)
        feats = out.fc7 if svm_feature == "fc7" else out.pooled
        num_gt = gt_boxes.shape[0]

        parts["gt_features"].append(feats[:num_gt])
        parts["gt_labels"].append(gt_labels)
        pool_rows = torch.arange(num_gt, boxes.shape[0])
        if 0 < max_negatives_per_image < pool_rows.numel():
            chosen = rng.choice(pool_rows.numel(), max_negatives_per_image, replace=False)
            pool_rows = pool_rows[torch.from_numpy(np.sort(chosen))]
        pool_rows = torch.cat([torch.arange(num_gt), pool_rows])
        parts["pool_features"].append(feats[pool_rows])
        parts["pool_class_iou"].append(
            class_ious(boxes[pool_rows], gt_boxes, gt_labels, num_classes)
        )

        if num_gt:
            best_iou, best_gt = box_iou(boxes, gt_boxes).max(dim=1)
            rows = torch.nonzero(best_iou >= min_iou).flatten()
            parts["reg_features"].append(out.pooled[rows])
            parts["reg_labels"].append(gt_labels[best_gt[rows]])
            parts["reg_targets"].append(encode_deltas(boxes[rows], gt_boxes[best_gt[rows]]))
    dims = {
        "gt_features": feats.shape[1],
        "pool_features": feats.shape[1],
        "pool_class_iou": num_classes,
        "reg_features": out.pooled.shape[1],
        "reg_targets": 4,
    }

    def joined(name: str, chunks: list[Tensor]) -> Tensor:
        if chunks:
            return torch.cat(chunks)
        if name in dims:
            return torch.zeros((0, dims[name]))
        return torch.zeros(0, dtype=torch.int64)

    return RegionFeatures(**{name: joined(name, chunks) for name, chunks in parts.items()})
