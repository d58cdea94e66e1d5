"""SVM / box-regression features of training: each box at the scale test time pools it from."""

import numpy as np
import torch

from detect.config import ModelConfig
from detect.data.images import read_image, write_image
from detect.models import build_detector
from detect.ops.boxes import box_iou
from detect.structures import Annotation, DetectionDataset
from detect.training.features import extract_region_features

SCALES = (60, 480)  # shorter sides of a 240 x 320 image: factors 0.25 and 2


def _test_time_scale(box) -> int:
    """Brute force: the shorter side at which the box's area is closest to 224 x 224."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    return min(SCALES, key=lambda side: abs(area * (side / 240) ** 2 - 224**2))


def test_svm_and_ridge_features_use_the_test_time_scale(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "a.png"
    write_image(path, rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    gt = [[20.0, 20.0, 220.0, 220.0], [250.0, 30.0, 300.0, 80.0]]
    proposals = [
        [22.0, 18.0, 224.0, 221.0],  # area 40804: 2550 at x0.25 vs 652864 at x2 -> 60
        [252.0, 28.0, 298.0, 83.0],  # area 2530: 158 vs 40480 -> 480
        [100.0, 100.0, 140.0, 150.0],  # area 2000 -> 480
        [0.0, 0.0, 320.0, 240.0],  # area 76800 -> 60
    ]
    boxes = gt + proposals
    assert {_test_time_scale(b) for b in boxes} == set(SCALES)  # both scales are exercised
    dataset = DetectionDataset(
        "t",
        tmp_path,
        "train",
        ("x", "y"),
        [Annotation("a", path, 320, 240, torch.tensor(gt), [0, 1])],
    )
    cfg = ModelConfig(backbone="tiny", scales=SCALES, max_size=0, fc_dims=(16, 16))
    model = build_detector("spp", cfg, num_classes=2).eval()
    features = extract_region_features(
        model, dataset, {"a": torch.tensor(proposals)}, svm_feature="fc7", min_iou=0.6
    ).joined()

    image = read_image(path)
    expected_fc7, expected_pooled = [], []
    with torch.no_grad():
        for box in boxes:  # one box at a time, at its own scale
            prepared, scale = model.prepare(image, _test_time_scale(box))
            out = model(prepared, torch.tensor([box]) * scale)
            expected_fc7.append(out.fc7[0])
            expected_pooled.append(out.pooled[0])
    torch.testing.assert_close(features.gt_features, torch.stack(expected_fc7[:2]))
    torch.testing.assert_close(features.pool_features, torch.stack(expected_fc7))
    best_iou = box_iou(torch.tensor(boxes), torch.tensor(gt)).max(dim=1).values
    rows = [i for i in range(len(boxes)) if best_iou[i] >= 0.6]
    assert rows == [0, 1, 2, 3]  # the ground truths and the two proposals on them
    torch.testing.assert_close(
        features.reg_features, torch.stack([expected_pooled[i] for i in rows])
    )
