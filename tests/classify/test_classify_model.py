"""The classifier takes images of any size and aspect ratio (docs/classification.md): the same
weights give a fixed-length SPP vector and class scores for each; the fixed-size baseline does
not."""

import numpy as np
import pytest
import torch

from detect.classify.evaluate import LoadedClassifier
from detect.classify.model import ImageClassifier, build_classifier
from detect.config import load_config
from detect.errors import DetectError
from detect.models.backbones import tiny

SIZES = [(224, 224), (180, 180), (160, 288), (300, 140), (97, 131)]


@pytest.mark.parametrize("bins", ["adaptive", "sliding"])
def test_same_weights_any_size_fixed_length(bins):
    model = ImageClassifier(tiny(), 4, levels=(1, 2, 3, 6), bins=bins, fc_dims=(32,)).eval()
    lengths = set()
    with torch.no_grad():
        for height, width in SIZES:
            image = torch.randn(1, 3, height, width)
            features = model.backbone(image)
            assert features.shape[-2:] == (-(-height // 16), -(-width // 16))  # stride 16
            pooled = model.pool(features)
            lengths.add(pooled.shape[1])
            # The level-1 bin is the global max of each channel, whatever the size.
            assert torch.equal(pooled[:, :64], features.amax(dim=(2, 3)))
            assert model(image).shape == (1, 4)
    assert lengths == {64 * (1 + 4 + 9 + 36)}


def test_fixed_size_network_takes_its_own_size_only():
    model = ImageClassifier(tiny(), 4, fc_dims=(32,), fixed=(224, 3, 2)).eval()
    # 224 -> 14x14 conv map -> 3x3/2 max-pool -> 6x6 cells of 64 channels.
    assert model.fc[0].in_features == 64 * 6 * 6
    assert model(torch.randn(2, 3, 224, 224)).shape == (2, 4)
    with pytest.raises(DetectError, match="takes 224x224 inputs only, got 180x240"):
        model(torch.randn(1, 3, 180, 240))


def test_full_images_batched_by_size_equal_one_at_a_time():
    cfg = load_config(None, ["model.backbone=tiny", "model.fc_dims=[16]", "classify.mode=single"])
    model = build_classifier(cfg, 3).eval()
    loaded = LoadedClassifier(model, ["a", "b", "c"], cfg, torch.device("cpu"), "fp32")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES + SIZES[:2]]
    batched = loaded.logits(images, "full")
    mean = torch.tensor(model.backbone.mean)[:, None, None]
    std = torch.tensor(model.backbone.std)[:, None, None]
    with torch.no_grad():
        for image, row in zip(images, batched, strict=True):
            tensor = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - mean) / std
            torch.testing.assert_close(row, model(tensor[None])[0], rtol=1e-4, atol=1e-5)


def test_bad_classify_values_name_the_key():
    for override, key in [
        ("classify.mode=stretch", "classify.mode"),
        ("classify.bins=odd", "classify.bins"),
        ("classify.variable_range=[300,200]", "classify.variable_range"),
        ("classify.crop_fraction=0", "classify.crop_fraction"),
    ]:
        cfg = load_config(None, ["model.backbone=tiny", override])
        with pytest.raises(DetectError, match=key):
            build_classifier(cfg, 2)
