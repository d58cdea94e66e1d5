"""SPP-net and R-CNN forward passes of the DetectionModel (its two region poolers)."""

import numpy as np
import pytest
import torch

from detect.config import ModelConfig
from detect.errors import DetectError
from detect.models import build_detector
from detect.models.poolers import build_pooler, warp_crops
from detect.models.scales import resize_scale

CFG = ModelConfig(backbone="tiny", scales=(96,), fc_dims=(32, 32), rcnn_context=4)
BOXES = torch.tensor([[4.0, 6.0, 60.0, 50.0], [0.0, 0.0, 96.0, 80.0], [30.0, 30.0, 33.0, 34.0]])


@pytest.mark.parametrize("method", ["spp", "rcnn"])
def test_forward_shapes_and_gradients_reach_conv(method):
    model = build_detector(method, CFG, num_classes=3)
    image = np.random.randint(0, 256, (80, 120, 3), dtype=np.uint8)
    prepared, scale = model.prepare(image)
    out = model(prepared, BOXES * scale)
    bins = 64 * 50
    assert out.pooled.shape == (3, bins) and out.fc7.shape == (3, 32)
    assert out.cls_logits.shape == (3, 4) and out.bbox_deltas.shape == (3, 16)
    (out.cls_logits.sum() + out.bbox_deltas.sum()).backward()
    assert model.backbone.features[0].weight.grad.abs().sum() > 0


def test_prepare_resizes_and_normalises():
    model = build_detector("spp", ModelConfig(backbone="tiny", scales=(50,), max_size=90), 2)
    image = np.full((40, 100, 3), 255, dtype=np.uint8)
    prepared, scale = model.prepare(image)
    assert scale == pytest.approx(0.9) and prepared.shape == (3, 36, 90)  # capped by max_size
    prepared, scale = model.prepare(image, short_side=20)
    assert scale == 0.5 and prepared.shape == (3, 20, 50)
    expected = (1.0 - torch.tensor(model.backbone.mean)) / torch.tensor(model.backbone.std)
    torch.testing.assert_close(prepared[:, 0, 0], expected)
    rcnn = build_detector("rcnn", CFG, 2)
    assert rcnn.prepare(image)[0].shape == (3, 40, 100) and rcnn.prepare(image)[1] == 1.0
    with pytest.raises(DetectError, match="uint8 RGB"):
        model.prepare(np.zeros((5, 5), dtype=np.uint8))
    assert resize_scale(600, 800, 688, 2000) == pytest.approx(688 / 600)


def test_dedupe_gives_the_same_outputs_as_pooling_every_box():
    model = build_detector("spp", CFG, 2).eval()
    prepared, _ = model.prepare(np.random.randint(0, 256, (96, 128, 3), dtype=np.uint8))
    boxes = torch.tensor([[1, 1, 60, 60], [2, 3, 61, 62], [1, 1, 60, 60], [40, 8, 120, 90.0]])
    out = model(prepared, boxes)
    feature_map = model.features(prepared)
    windows = model.pooler.windows(boxes, tuple(feature_map.shape[1:]))
    assert torch.equal(windows[0], windows[1])  # the first three share one window
    reference = model.head(model.pyramid(feature_map, windows))  # no de-duplication
    from_features = model.forward_features(feature_map, boxes)  # the fine-tuning entry point
    for ours, theirs, cached in zip(out, reference, from_features, strict=True):
        torch.testing.assert_close(ours, theirs)
        torch.testing.assert_close(cached, theirs)


def test_rcnn_warp_against_hand_crops():
    image = torch.randn(3, 40, 50)
    # A 16x16 box warped to 16 with no context samples exactly the box's pixel centres.
    crop = warp_crops(image, torch.tensor([[10.0, 8.0, 26.0, 24.0]]), 16, 0)[0]
    torch.testing.assert_close(crop, image[:, 8:24, 10:26])
    # 16 px box, crop 24, context 4: the box is dilated by 4 px each side.
    crop = warp_crops(image, torch.tensor([[10.0, 8.0, 26.0, 24.0]]), 24, 4)[0]
    torch.testing.assert_close(crop, image[:, 4:28, 6:30])
    # At the border, the outside is the mean (0 in a normalised image).
    crop = warp_crops(image, torch.tensor([[0.0, 0.0, 16.0, 16.0]]), 24, 4)[0]
    torch.testing.assert_close(crop[:, 4:, 4:], image[:, 0:20, 0:20])
    assert crop[:, :4, :].abs().max() < 1e-5 and crop[:, :, :4].abs().max() < 1e-5
    # A 32x32 box warped to 16 samples between pixel pairs: bilinear = 2x2 averages.
    crop = warp_crops(image, torch.tensor([[2.0, 4.0, 34.0, 36.0]]), 16, 0)[0]
    expected = torch.nn.functional.avg_pool2d(image[None, :, 4:36, 2:34], 2)[0]
    torch.testing.assert_close(crop, expected)
    # Several boxes in one call give the same crops as one at a time.
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0], [5.0, 7.0, 45.0, 30.0], [20.0, 1.0, 22.0, 39.0]])
    together = warp_crops(image, boxes, 24, 4)
    for i in range(3):
        torch.testing.assert_close(together[i], warp_crops(image, boxes[i : i + 1], 24, 4)[0])


def test_rcnn_forward_is_the_head_on_each_crop():
    model = build_detector("rcnn", CFG, 2).eval()
    prepared, _ = model.prepare(np.random.randint(0, 256, (60, 70, 3), dtype=np.uint8))
    out = model(prepared, BOXES[:2])
    crop = warp_crops(prepared, BOXES[1:2], 128, 4)
    pooled = model.pyramid(model.backbone(crop)[0], torch.tensor([[0, 0, 7, 7]]))
    torch.testing.assert_close(out.cls_logits[1:2], model.head(pooled).cls_logits)


def test_build_errors():
    with pytest.raises(DetectError, match="unknown detection method"):
        build_detector("yolo", CFG, 2)
    with pytest.raises(DetectError, match="at least one class"):
        build_detector("spp", CFG, 0)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"scales": ()}, r"model.scales must be a non-empty list of positive sizes, got \(\)"),
        ({"scales": (96, 0)}, r"model.scales must be .* got \(96, 0\)"),
        ({"max_size": -1}, r"model.max_size must be >= 0"),
        ({"fc_dims": (0, 0)}, r"model.fc_dims must be a non-empty list of positive widths"),
        ({"fc_dims": ()}, r"model.fc_dims must be"),
        ({"dropout": 1.5}, r"model.dropout must be in \[0, 1\), got 1.5"),
        ({"dropout": -0.1}, r"model.dropout must be"),
        ({"svd_ranks": (0, 4)}, r"model.svd_ranks must be positive ranks"),
        ({"rcnn_crop_size": -1}, r"model.rcnn_crop_size must be >= 0"),
        ({"rcnn_context": -1}, r"model.rcnn_context must be >= 0"),
        ({"region_batch": 0}, r"model.region_batch must be >= 1, got 0"),
        ({"rcnn_batch": 0}, r"model.rcnn_batch must be >= 1, got 0"),
        ({"weights": "/nonexistent/w.pth", "scales": (0,)}, r"model.scales"),  # before weights
    ],
)
def test_bad_model_settings_name_the_key(change, message):
    from dataclasses import replace

    from detect.models.detection_model import check_model_config

    cfg = replace(CFG, **change)
    with pytest.raises(DetectError, match=message):
        check_model_config(cfg)
    with pytest.raises(DetectError, match=message):
        build_detector("spp", cfg, 2)


def test_the_pooler_is_injected_and_the_same_modules_run_either_way():
    spp = build_detector("spp", CFG, 2).eval()
    swapped = spp.with_pooler(build_pooler("rcnn", CFG, spp.backbone))
    assert swapped.method == "rcnn" and spp.method == "spp"
    assert swapped.backbone is spp.backbone and swapped.head is spp.head  # shared, not copied
    rcnn = build_detector("rcnn", CFG, 2).eval()
    rcnn.load_state_dict(spp.state_dict())
    image = np.random.randint(0, 256, (80, 120, 3), dtype=np.uint8)
    prepared, scale = rcnn.prepare(image)
    assert scale == 1.0 and swapped.prepare(image)[1] == 1.0
    with torch.no_grad():
        for ours, theirs in zip(swapped(prepared, BOXES), rcnn(prepared, BOXES), strict=True):
            torch.testing.assert_close(ours, theirs)
