"""Backbone geometry proved by a real forward pass, and weight loading."""

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from detect.config import ModelConfig
from detect.errors import DetectError
from detect.models import build_detector
from detect.models.backbones import build_backbone
from detect.models.weights import load_backbone


def _positive(backbone):
    """All-positive weights, zero biases: every cell whose receptive field holds the impulse lights."""
    with torch.no_grad():
        for module in backbone.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_((torch.rand_like(module.weight) + 0.5) / fan_in)
                module.bias.zero_()
    return backbone.eval()


# (backbone, image height, width): small images, a few feature cells each way.
GEOMETRY = [
    ("tiny", 64, 160),
    ("zf5", 64, 160),
    ("zf5_padded", 64, 160),
    ("zf5_padded_nolrn", 64, 160),
    ("alexnet", 64, 192),
    ("vgg16", 48, 144),
]


def _lit_cells(backbone, height, width, px, py):
    """``(h, w)`` bool: the conv5 cells that a one-pixel impulse at ``(px, py)`` lights."""
    image = torch.zeros(1, 3, height, width)
    image[0, :, py, px] = 1.0
    with torch.no_grad():
        return backbone(image)[0].amax(0) > 0


@pytest.mark.parametrize(("name", "height", "width"), GEOMETRY)
def test_impulse_lights_the_projected_cell(name, height, width):
    backbone = _positive(build_backbone(name))
    # The default projection ("auto") of a detector on this backbone.
    cfg = ModelConfig(backbone=name, fc_dims=(8,))
    model = build_detector("spp", cfg, 1, backbone=backbone).pooler
    assert ModelConfig().projection == "auto" and model.offsets == backbone.offsets
    assert backbone.stride == 16
    size, offset = backbone.receptive_field_size, backbone.offsets[0]
    for px, py in [(37, 21), (width // 2 + 3, height // 2), (width - 30, 30)]:
        lit = _lit_cells(backbone, height, width, px, py)
        cols = torch.nonzero(lit.any(0)).flatten()
        rows = torch.nonzero(lit.any(1)).flatten()
        # Lit cells = exactly those whose receptive field (centre offset + 16 i) holds the pixel.
        centres_x = offset + 16 * torch.arange(lit.shape[1])
        centres_y = offset + 16 * torch.arange(lit.shape[0])
        assert torch.equal(cols, torch.nonzero((centres_x - (px + 0.5)).abs() < size / 2).flatten())
        assert torch.equal(rows, torch.nonzero((centres_y - (py + 0.5)).abs() < size / 2).flatten())
        # The projection of the one-pixel box is the lit cell whose centre is nearest.
        box = torch.tensor([[px, py, px + 1, py + 1]], dtype=torch.float32)
        x0, y0, x1, y1 = model.windows(box, tuple(lit.shape))[0].tolist()
        assert (x0, y0) == (x1, y1)
        assert lit[y0, x0]
        assert abs(offset + 16 * x0 - (px + 0.5)) <= 8
        assert abs(offset + 16 * y0 - (py + 0.5)) <= 8
    # A larger box: the window is exactly the cells whose proven centres lie inside it.
    generator = torch.Generator().manual_seed(len(name))
    for _ in range(20):
        x1, x2 = sorted((torch.rand(2, generator=generator) * width).tolist())
        y1, y2 = sorted((torch.rand(2, generator=generator) * height).tolist())
        inside_x = torch.nonzero((centres_x > x1) & (centres_x < x2)).flatten()
        inside_y = torch.nonzero((centres_y > y1) & (centres_y < y2)).flatten()
        if inside_x.numel() == 0 or inside_y.numel() == 0:
            continue
        box = torch.tensor([[x1, y1, x2, y2]])
        window = model.windows(box, tuple(lit.shape))[0].tolist()
        expected = [inside_x[0], inside_y[0], inside_x[-1], inside_y[-1]]
        assert window == [int(v) for v in expected]


@pytest.mark.parametrize(
    ("name", "height", "width"), [g for g in GEOMETRY if g[0] in ("zf5", "alexnet")]
)
def test_literal_paper_projection_misses_unpadded_backbones(name, height, width):
    # Appendix A's formula taken literally puts cell i at 16 i: a one-pixel box lands on a cell
    # whose centre is more than half a cell away (zf5: 20.5 + 16 i, alexnet: 15.5 + 16 i).
    backbone = build_backbone(name)
    cfg = ModelConfig(backbone=name, fc_dims=(8,), projection="paper")
    paper = build_detector("spp", cfg, 1, backbone=backbone).pooler
    px, py = 37, 21
    map_size = tuple(_lit_cells(_positive(backbone), height, width, px, py).shape)
    x0 = paper.windows(torch.tensor([[px, py, px + 1, py + 1.0]]), map_size)[0, 0]
    assert abs(backbone.offsets[0] + 16 * int(x0) - (px + 0.5)) > 8


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


def test_zf5_layers_as_released():
    # model-defs/Zeiler_conv5.prototxt of the SPP-net release, layer by layer (Caffe names).
    features = build_backbone("zf5").features
    convs = {
        name: (m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0])
        for name, m in features.named_children()
        if isinstance(m, nn.Conv2d)
    }
    assert convs == {
        "conv1": (3, 96, 7, 2, 1),
        "conv2": (96, 256, 5, 2, 0),
        "conv3": (256, 384, 3, 1, 1),
        "conv4": (384, 384, 3, 1, 1),
        "conv5": (384, 256, 3, 1, 1),
    }
    order = [name for name, _ in features.named_children()]
    assert order == [
        *("conv1", "relu1", "norm1", "pool1", "conv2", "relu2", "norm2", "pool2"),
        *("conv3", "relu3", "conv4", "relu4", "conv5", "relu5"),
    ]
    for pool in (features.pool1, features.pool2):
        assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 0, True)
    for norm in (features.norm1, features.norm2):
        assert (norm.size, norm.alpha, norm.beta) == (3, 5e-5, 0.75)


def test_zf5_conv5_map_size_and_cell_centre_by_hand():
    # 688 x 917 input. conv: floor((n + 2 pad - k) / s) + 1; Caffe pool: ceil((n - k) / s) + 1.
    # conv1 (k7 s2 p1): floor(683 / 2) + 1 = 342, floor(912 / 2) + 1 = 457
    # pool1 (k3 s2):    ceil(339 / 2) + 1 = 171,  ceil(454 / 2) + 1 = 228
    # conv2 (k5 s2 p0): floor(166 / 2) + 1 = 84,  floor(223 / 2) + 1 = 112
    # pool2 (k3 s2):    ceil(81 / 2) + 1 = 42,    ceil(109 / 2) + 1 = 56
    # conv3-5 (k3 p1) keep 42 x 56.
    backbone = build_backbone("zf5").to("meta")  # shapes only: no arithmetic
    assert tuple(backbone(torch.zeros(1, 3, 688, 917, device="meta")).shape) == (1, 256, 42, 56)
    # Cell 0's receptive field (first pixel, size) layer by layer, from (0, 1), jump 1:
    # conv1 (-1, 7) j2, pool1 (-1, 11) j4, conv2 (-1, 27) j8, pool2 (-1, 43) j16,
    # conv3 (-17, 75), conv4 (-33, 107), conv5 (-49, 139): centre -49 + 139 / 2 = 20.5
    # (1-based pixel 21: the released spp_config's offset0 = 21). The impulse test proves it.
    backbone = build_backbone("zf5")
    assert (backbone.stride, backbone.offsets, backbone.receptive_field_size) == (
        16,
        (20.5, 20.5),
        139,
    )


def test_within_channel_lrn_matches_caffe_brute_force():
    from detect.models.backbones import WithinChannelLRN

    x = torch.randn(2, 3, 5, 6) * 30
    alpha, beta, n = 5e-3, 0.75, 3
    ours = WithinChannelLRN(n, alpha=alpha, beta=beta)(x)
    expected = torch.empty_like(x)
    for b, c, i, j in np.ndindex(*x.shape):
        # Caffe: scale = 1 + alpha / n^2 * sum of squares over the n x n zero-padded window.
        window = x[b, c, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]
        scale = 1 + alpha / n**2 * float((window**2).sum())
        expected[b, c, i, j] = x[b, c, i, j] * scale**-beta
    torch.testing.assert_close(ours, expected)
    with pytest.raises(DetectError, match="odd"):
        WithinChannelLRN(4, alpha=alpha, beta=beta)
