"""Convolutional backbones: ZF-5, AlexNet, VGG16 (conv5, no last max-pool) and ``tiny``.

Every backbone is a :class:`Backbone`: ``features`` is an ``nn.Sequential`` (for AlexNet and VGG16
with the same layer indices as torchvision's ``features``, so torchvision state dicts load into it)
and ``forward(x (N, 3, H, W)) -> (N, C, h, w)``. Each declares:

* ``stride`` S: the product of all strides (16 for every network here, as in SPEC.md §3);
* ``offsets`` ``(left, right)``: the image x (continuous pixels) of the receptive-field centre of
  feature cell 0, used by the ``"offsets"`` projection mode (cell ``i`` is centred at
  ``offset + S * i``). Derived from the layer list by :func:`receptive_field`, and proved by a
  forward pass in ``tests/test_backbones.py``. (The SPP-net reference code's ZF-5 had no conv
  padding, hence its 6.5 / 3.5; ours pads every layer by ``k // 2`` so its centre is pixel 0.)
* ``out_channels``, ``mean`` / ``std`` (per RGB channel, for inputs in [0, 1]; ImageNet statistics)
  and ``crop_size``: the R-CNN warp size the network was designed for (224 / 227 / 128 for tiny).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from detect.errors import DetectError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def receptive_field(layers: nn.Sequential) -> tuple[int, int, float]:
    """``(size, jump, centre0)`` of the output cells of ``layers`` (conv and max-pool only count).

    ``jump`` is the total stride; output cell ``i`` sees input pixel indices
    ``[start + jump * i, start + jump * i + size)`` and its centre, in continuous pixel
    coordinates (pixel ``p`` covers ``[p, p + 1)``), is ``centre0 + jump * i``.
    """
    size, jump, start = 1, 1, 0.0
    for layer in layers:
        if isinstance(layer, nn.Conv2d | nn.MaxPool2d):
            kernel, stride, padding = (
                _first(layer.kernel_size),
                _first(layer.stride),
                _first(layer.padding),
            )
            start += jump * (0 - padding)
            size += (kernel - 1) * jump
            jump *= stride
    return size, jump, start + size / 2.0


class LocalResponseNorm(nn.LocalResponseNorm):
    """``nn.LocalResponseNorm`` (same formula and parameters) computed by summing ``size``
    channel-shifted views of ``x^2``: about 4x faster on the CPU than torch's ``avg_pool3d`` route.
    ``b_c = a_c / (k + alpha / n * sum_{c' in window(c)} a_{c'}^2) ^ beta``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels, size = x.shape[1], self.size
        padded = nn.functional.pad(x * x, (0, 0, 0, 0, size // 2, (size - 1) // 2))
        total = padded[:, 0:channels].clone()
        for shift in range(1, size):
            total += padded[:, shift : shift + channels]
        return x / total.mul_(self.alpha / size).add_(self.k).pow_(self.beta)


def _first(value) -> int:
    return int(value[0] if isinstance(value, tuple) else value)


class Backbone(nn.Module):
    """A conv feature extractor with the geometry the projection needs (see module docstring)."""

    def __init__(
        self,
        name: str,
        features: nn.Sequential,
        out_channels: int,
        crop_size: int,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.name = name
        # channels_last (NHWC) makes oneDNN's CPU convs and pools several times faster here,
        # notably conv1 (3 input channels) and the 3x3/2 max-pools.
        self.features = features.to(memory_format=torch.channels_last)
        self.out_channels = out_channels
        self.crop_size = crop_size
        self.mean = mean
        self.std = std
        self.receptive_field_size, self.stride, centre = receptive_field(features)
        self.offsets = (centre, centre)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` normalised images -> ``(N, out_channels, h, w)`` conv features."""
        return self.features(x.contiguous(memory_format=torch.channels_last))


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def zf5(lrn: bool = True) -> Backbone:
    """ZF-5 as in SPP-net (Zeiler & Fergus "fast" model): conv1 96@7x7/2, pool 3x3/2,
    conv2 256@5x5/2, pool 3x3/2, conv3 384, conv4 384, conv5 256 (3x3/1). ReLU after each conv;
    local response normalisation (size 5, alpha 1e-4, beta 0.75, as in Caffe) after conv1/conv2
    pools when ``lrn`` (the paper's choice; set False for a slightly faster network).
    All layers are padded by ``k // 2`` so the total stride is exactly 16."""
    norm: Callable[[], nn.Module] = (
        (lambda: LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)) if lrn else nn.Identity
    )
    features = nn.Sequential(
        _conv(3, 96, 7, 2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, padding=1),
        norm(),
        _conv(96, 256, 5, 2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, padding=1),
        norm(),
        _conv(256, 384, 3),
        nn.ReLU(inplace=True),
        _conv(384, 384, 3),
        nn.ReLU(inplace=True),
        _conv(384, 256, 3),
        nn.ReLU(inplace=True),
    )
    return Backbone("zf5", features, out_channels=256, crop_size=224)


def alexnet() -> Backbone:
    """torchvision's AlexNet ``features`` without the last max-pool (conv5: 256 channels, S=16)."""
    layers = [
        nn.Conv2d(3, 64, 11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(inplace=True),
    ]  # torchvision.models.AlexNet().features[:-1], same indices (tested)
    return Backbone("alexnet", nn.Sequential(*layers), out_channels=256, crop_size=227)


def vgg16() -> Backbone:
    """torchvision's VGG16 ``features`` up to conv5_3 + ReLU (no last max-pool; 512 channels)."""
    from torchvision.models.vgg import cfgs, make_layers

    layers = list(make_layers(cfgs["D"]).children())[:-1]  # = torchvision vgg16().features[:-1]
    return Backbone("vgg16", nn.Sequential(*layers), out_channels=512, crop_size=224)


def tiny() -> Backbone:
    """A small fast network for tests and the demo: five 3x3 convs (4 of stride 2) with
    BatchNorm and ReLU, 32-128 channels (64 out), stride 16. R-CNN crop size 128 (8x8 cells): with
    fc_dims (256, 256) that keeps the FLOP-bound R-CNN/SPP ratio above 20x on ~300 px images."""
    widths = (32, 64, 128, 128, 64)
    strides = (2, 2, 2, 2, 1)
    layers: list[nn.Module] = []
    cin = 3
    for cout, stride in zip(widths, strides, strict=True):
        layers += [_conv(cin, cout, 3, stride), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        cin = cout
    return Backbone("tiny", nn.Sequential(*layers), out_channels=cin, crop_size=128)


BACKBONES: dict[str, Callable[[], Backbone]] = {
    "zf5": zf5,
    "zf5_nolrn": lambda: zf5(lrn=False),
    "alexnet": alexnet,
    "vgg16": vgg16,
    "tiny": tiny,
}


def build_backbone(name: str) -> Backbone:
    """A randomly initialised backbone by name (``zf5``, ``zf5_nolrn``, ``alexnet``, ``vgg16``, ``tiny``)."""
    if name not in BACKBONES:
        raise DetectError(f"model.backbone: unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[name]()
