"""Backbone geometry proved by a real forward pass, and weight loading."""

import pytest
import torch
import torchvision
from torch import nn

from detect.errors import DetectError
from detect.models.backbones import build_backbone
from detect.models.spp import project_boxes
from detect.models.weights import load_backbone, torchvision_cache_file


def _positive(backbone):
    """All-positive weights, zero biases: every cell whose receptive field holds the impulse lights."""
    with torch.no_grad():
        for module in backbone.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_((torch.rand_like(module.weight) + 0.5) / fan_in)
                module.bias.zero_()
    return backbone.eval()


@pytest.mark.parametrize(
    ("name", "height", "width"),
    [("tiny", 64, 160), ("zf5", 64, 160), ("alexnet", 64, 192), ("vgg16", 48, 144)],
)
def test_impulse_lights_the_projected_cell(name, height, width):
    backbone = _positive(build_backbone(name))
    assert backbone.stride == 16
    size, offset = backbone.receptive_field_size, backbone.offsets[0]
    for px, py in [(37, 21), (width // 2 + 3, height // 2), (width - 30, 30)]:
        image = torch.zeros(1, 3, height, width)
        image[0, :, py, px] = 1.0
        with torch.no_grad():
            lit = backbone(image)[0].amax(0) > 0  # (h, w)
        cols = torch.nonzero(lit.any(0)).flatten()
        rows = torch.nonzero(lit.any(1)).flatten()
        # Lit cells = exactly those whose receptive field (centre offset + 16 i) holds the pixel.
        centres_x = offset + 16 * torch.arange(lit.shape[1])
        centres_y = offset + 16 * torch.arange(lit.shape[0])
        assert torch.equal(cols, torch.nonzero((centres_x - (px + 0.5)).abs() < size / 2).flatten())
        assert torch.equal(rows, torch.nonzero((centres_y - (py + 0.5)).abs() < size / 2).flatten())
        # The "offsets" projection of the one-pixel box is the lit cell whose centre is nearest.
        box = torch.tensor([[px, py, px + 1, py + 1]], dtype=torch.float32)
        x0, y0, x1, y1 = project_boxes(box, 16, tuple(lit.shape), backbone.offsets)[0].tolist()
        assert (x0, y0) == (x1, y1)
        assert lit[y0, x0]
        assert abs(offset + 16 * x0 - (px + 0.5)) <= 8
        assert abs(offset + 16 * y0 - (py + 0.5)) <= 8


def test_declared_channels_and_torchvision_layouts():
    for name, channels in [("tiny", 64), ("zf5", 256), ("alexnet", 256), ("vgg16", 512)]:
        backbone = build_backbone(name)
        assert backbone.out_channels == channels
        with torch.no_grad():
            assert backbone(torch.zeros(1, 3, 64, 64)).shape[1] == channels
    for name, model in [
        ("alexnet", torchvision.models.alexnet),
        ("vgg16", torchvision.models.vgg16),
    ]:
        reference = model(weights=None).features
        keys = {k: v.shape for k, v in reference.state_dict().items()}
        ours = {
            k.removeprefix("features."): v.shape
            for k, v in build_backbone(name).state_dict().items()
        }
        assert ours == keys  # the last layer torchvision has is the max-pool we drop


def test_unknown_backbone():
    with pytest.raises(DetectError, match="unknown backbone 'resnet'"):
        build_backbone("resnet")


def test_imagenet_weights_missing_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert torchvision_cache_file("alexnet") == expected
    with pytest.raises(DetectError, match=str(expected)):
        load_backbone("alexnet", "imagenet")
    with pytest.raises(DetectError, match="no ImageNet weights"):
        load_backbone("zf5", "imagenet")


def test_imagenet_weights_from_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.alexnet(weights=None)
    path = torchvision_cache_file("alexnet")
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    backbone = load_backbone("alexnet", "imagenet")
    torch.testing.assert_close(backbone.features[3].weight, reference.features[3].weight)


def test_weights_from_path_and_mismatch(tmp_path):
    source = build_backbone("tiny")
    path = tmp_path / "tiny.pth"
    torch.save(source.state_dict(), path)
    loaded = load_backbone("tiny", str(path))
    torch.testing.assert_close(loaded.features[0].weight, source.features[0].weight)
    with pytest.raises(DetectError, match="does not fit backbone 'zf5'"):
        load_backbone("zf5", str(path))
    with pytest.raises(DetectError, match="not found"):
        load_backbone("tiny", str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(DetectError, match="cannot read"):
        load_backbone("tiny", str(tmp_path / "junk.pth"))


def test_fast_local_response_norm_matches_torch():
    from detect.models.backbones import LocalResponseNorm

    x = torch.randn(2, 11, 5, 6) * 5
    for size in (3, 4, 5):
        ours = LocalResponseNorm(size, alpha=1e-3, beta=0.75, k=2.0)(x)
        torch.testing.assert_close(ours, nn.LocalResponseNorm(size, 1e-3, 0.75, 2.0)(x))
