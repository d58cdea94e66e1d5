"""DetectionModel.detect (multi-scale SPP-net, batched R-CNN) and post-processing against
independent computations."""

from dataclasses import replace

import numpy as np
import torch
import torchvision

from detect.config import ModelConfig
from detect.config import TestConfig as PostConfig  # not named Test*: pytest would collect it
from detect.models import build_detector
from detect.models.postprocess import postprocess
from detect.models.scales import choose_scales
from detect.models.stage_timer import StageTimer
from detect.ops.boxes import decode_deltas

CFG = ModelConfig(backbone="tiny", scales=(160, 320), fc_dims=(32, 32), rcnn_context=4)


def test_choose_scales_hand_example():
    boxes = torch.tensor([[0, 0, 224, 224], [0, 0, 100, 100], [0, 0, 600, 600.0]])
    # scaled areas at factors 0.5 / 1 / 2: 224^2 -> 1; 100^2 -> 2500, 1e4, 4e4 (4e4 nearest 50176);
    # 600^2 -> 9e4 (|9e4 - 50176| = 39824), 3.6e5, 1.44e6 -> 0.
    assert choose_scales(boxes, [0.5, 1.0, 2.0]).tolist() == [1, 2, 0]


def _brute_force_postprocess(scores, boxes, height, width, cfg):
    kept = []
    for k in range(scores.shape[1]):
        mask = scores[:, k] > cfg.score_threshold
        class_boxes = boxes[mask, k].clone()
        class_boxes[:, 0::2] = class_boxes[:, 0::2].clamp(0, width)
        class_boxes[:, 1::2] = class_boxes[:, 1::2].clamp(0, height)
        class_scores = scores[mask, k]
        keep = torchvision.ops.nms(class_boxes, class_scores, cfg.nms_iou)[: cfg.top_per_class]
        kept += [(float(class_scores[i]), k, class_boxes[i]) for i in keep]
    kept.sort(key=lambda item: -item[0])
    return kept[: cfg.max_per_image]


def test_postprocess_matches_per_class_loop():
    generator = torch.Generator().manual_seed(3)
    count, classes, height, width = 300, 4, 120, 160
    xy = torch.rand(count, classes, 2, generator=generator) * torch.tensor([180.0, 140.0]) - 10
    wh = torch.rand(count, classes, 2, generator=generator) * 60 + 2
    boxes = torch.cat([xy, xy + wh], dim=2)
    scores = torch.rand(count, classes, generator=generator)
    for cfg in [
        PostConfig(),
        PostConfig(score_threshold=0.3, top_per_class=5, max_per_image=12),
        PostConfig(nms_iou=0.7, top_per_class=100, max_per_image=30),
    ]:
        ours = postprocess(scores, boxes, height, width, cfg)
        expected = _brute_force_postprocess(scores, boxes, height, width, cfg)
        assert len(ours) == len(expected)
        assert ours.scores.tolist() == [s for s, _, _ in expected]
        assert ours.labels.tolist() == [k for _, k, _ in expected]
        torch.testing.assert_close(ours.boxes, torch.stack([b for _, _, b in expected]))


def test_no_proposals_gives_empty_detections():
    model = build_detector("spp", CFG, 2)
    image = np.zeros((50, 60, 3), dtype=np.uint8)
    assert len(model.detect(image, torch.zeros((0, 4)), PostConfig())) == 0


def _expected(model, image, proposals, short_side):
    prepared, scale = model.prepare(image, short_side)
    out = model(prepared, proposals * scale)
    return torch.softmax(out.cls_logits, 1)[:, 1:], out.bbox_deltas[:, 4:]


def test_multiscale_spp_scores_equal_forward_at_chosen_scale():
    model = build_detector("spp", replace(CFG, region_batch=3), 2).eval()
    image = np.random.randint(0, 256, (90, 120, 3), dtype=np.uint8)
    proposals = torch.tensor(
        [[0, 0, 120, 90], [10, 10, 40, 40], [10, 10, 40, 40], [5, 50, 100, 89], [60, 2, 70, 12.0]]
    )
    cfg = PostConfig(score_threshold=0.0, nms_iou=1.0, top_per_class=1000, max_per_image=1000)
    timer = StageTimer()
    detections = model.detect(image, proposals, cfg, timer=timer)
    factors = [160 / 90, 320 / 90]
    choice = choose_scales(proposals, factors)
    assert set(choice.tolist()) == {0, 1}
    scores, deltas = torch.zeros(5, 2), torch.zeros(5, 8)
    with torch.no_grad():
        for k, short_side in enumerate((160, 320)):
            rows = choice == k
            scores[rows], deltas[rows] = _expected(model, image, proposals[rows], short_side)
    boxes = decode_deltas(proposals, deltas).reshape(5, 2, 4)
    expected = postprocess(scores, boxes, 90, 120, cfg)
    torch.testing.assert_close(detections.scores, expected.scores)
    torch.testing.assert_close(detections.boxes, expected.boxes)
    assert timer.counts["regions"] == 5 and timer.counts["windows"] <= 4
    assert {"conv", "pool", "fc", "post"} <= set(timer.seconds)


def test_test_scales_replace_the_training_scales():
    """``test.scales`` is where SPP-net detects (here one scale, 320: every box pooled from the
    320 map), whatever ``model.scales`` it was trained at; an explicit ``scales`` wins over both."""
    model = build_detector("spp", CFG, 2).eval()
    image = np.random.randint(0, 256, (90, 120, 3), dtype=np.uint8)
    proposals = torch.tensor([[0, 0, 120, 90], [10, 10, 40, 40], [60, 2, 70, 12.0]])
    cfg = PostConfig(score_threshold=0.0, nms_iou=1.0, top_per_class=1000, max_per_image=1000)
    with torch.no_grad():
        scores, deltas = _expected(model, image, proposals, 320)
    expected = postprocess(scores, decode_deltas(proposals, deltas).reshape(3, 2, 4), 90, 120, cfg)
    for detections in [
        model.detect(image, proposals, replace(cfg, scales=(320,))),
        model.detect(image, proposals, replace(cfg, scales=(160,)), scales=(320,)),
    ]:
        torch.testing.assert_close(detections.scores, expected.scores)
        torch.testing.assert_close(detections.boxes, expected.boxes)
    default = model.detect(image, proposals, cfg)  # model.scales (160, 320): box 0 at 160
    assert not torch.equal(default.scores.sort().values, expected.scores.sort().values)


def test_rcnn_batched_scores_equal_forward():
    model = build_detector("rcnn", replace(CFG, rcnn_batch=2), 2).eval()
    image = np.random.randint(0, 256, (70, 90, 3), dtype=np.uint8)
    proposals = torch.tensor([[0, 0, 90, 70], [10, 10, 40, 40], [5, 30, 80, 69.0]])
    cfg = PostConfig(score_threshold=0.0, nms_iou=1.0, bbox_reg=False)
    detections = model.detect(image, proposals, cfg)
    with torch.no_grad():
        scores, _ = _expected(model, image, proposals, None)
    boxes = proposals[:, None, :].expand(3, 2, 4)
    expected = postprocess(scores, boxes, 70, 90, cfg)
    torch.testing.assert_close(detections.scores, expected.scores)
    torch.testing.assert_close(detections.boxes, expected.boxes)
    assert not model.training


def test_bad_post_processing_settings_name_the_key():
    import pytest

    from detect.errors import DetectError
    from detect.models.postprocess import check_test_config

    check_test_config(PostConfig())
    for change, message in [
        ({"nms_iou": -1.0}, r"test.nms_iou must be in \[0, 1\], got -1.0"),
        ({"nms_iou": 1.5}, r"test.nms_iou must be"),
        ({"top_per_class": 0}, r"test.top_per_class must be >= 1, got 0"),
        ({"max_per_image": 0}, r"test.max_per_image must be >= 1, got 0"),
        ({"scales": (448, 0)}, r"test.scales must be positive sizes, got \(448, 0\)"),
    ]:
        with pytest.raises(DetectError, match=message):
            check_test_config(replace(PostConfig(), **change))
