"""R-CNN region features for the SVMs / ridge run the backbone in bounded batches."""

from __future__ import annotations

import numpy as np
import torch

from detect.config import ModelConfig
from detect.data.images import read_image, write_image
from detect.models import build_detector
from detect.structures import Annotation, DetectionDataset
from detect.training.features import extract_region_features


def tiny_split(tmp_path, num_images: int = 2, num_proposals: int = 37):
    """Noise images 48x64 with one ground-truth box each and random proposals."""
    rng = np.random.default_rng(0)
    annotations, proposals = [], {}
    for index in range(num_images):
        path = tmp_path / f"{index}.png"
        write_image(path, rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        annotations.append(Annotation(str(index), path, 64, 48, [[8.0, 6.0, 40.0, 30.0]], [0]))
        corners = rng.uniform(0, 40, (num_proposals, 2))
        sizes = rng.uniform(6, 24, (num_proposals, 2))
        proposals[str(index)] = torch.tensor(
            np.hstack([corners, corners + sizes]), dtype=torch.float32
        )
    return DetectionDataset("t", tmp_path, "train", ("a",), annotations), proposals


def test_rcnn_region_features_run_the_backbone_in_rcnn_batch_crops(tmp_path):
    dataset, proposals = tiny_split(tmp_path)
    cfg = ModelConfig(
        backbone="tiny", scales=(48,), pyramid_levels=(1, 2), fc_dims=(16, 16), rcnn_batch=16
    )
    model = build_detector("rcnn", cfg, 1).eval()
    batches: list[int] = []
    model.backbone.register_forward_hook(
        lambda module, inputs, output: batches.append(len(inputs[0]))
    )

    features = extract_region_features(model, dataset, proposals, svm_feature="fc7").joined()

    # 1 ground-truth box + 37 proposals = 38 crops per image: batches 16, 16, 6 for each image
    # (all 38 at once before), so memory is bounded by model.rcnn_batch crops.
    assert batches == [16, 16, 6, 16, 16, 6]
    # The same fc7 rows as every box of an image in one batch (the model's unbatched forward).
    with torch.no_grad():
        expected = []
        for ann in dataset.annotations:
            image, _ = model.prepare(read_image(ann.path))
            boxes = torch.cat([ann.boxes, proposals[ann.image_id]])
            expected.append(model(image, boxes).fc7)
    torch.testing.assert_close(features.pool_features, torch.cat(expected), rtol=1e-4, atol=1e-5)


def test_rcnn_region_features_of_an_image_without_boxes(tmp_path):
    # No ground truth and no proposals: one empty batch, rows of the right widths (16-d fc7).
    dataset, _ = tiny_split(tmp_path, num_images=1)
    dataset.annotations[0] = Annotation("0", dataset.annotations[0].path, 64, 48, [], [])
    cfg = ModelConfig(backbone="tiny", scales=(48,), pyramid_levels=(1, 2), fc_dims=(16, 16))
    model = build_detector("rcnn", cfg, 1).eval()
    features = extract_region_features(model, dataset, {"0": torch.zeros(0, 4)}).joined()
    assert features.pool_features.shape == (0, 16) and features.gt_features.shape == (0, 16)
