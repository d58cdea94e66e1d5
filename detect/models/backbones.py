"""Convolutional backbones: ZF-5 (as released, and a padded variant), AlexNet, VGG16 (conv5, no
last max-pool) and ``tiny``.

Every backbone is a :class:`Backbone`: ``features`` is an ``nn.Sequential`` (for AlexNet and VGG16
with the same layer indices as torchvision's ``features``, so torchvision state dicts load into it)
and ``forward(x (N, 3, H, W)) -> (N, C, h, w)``. Each declares:

* ``stride`` S: the product of all strides (16 for every network here);
* ``offsets`` ``(left, right)``: the image x (continuous pixels) of the receptive-field centre of
  feature cell 0 (cell ``i`` is centred at ``offset + S * i``), used by the ``auto`` projection.
  Derived from the layer list by :func:`receptive_field`, and proved by a forward pass in
  ``tests/models/test_backbones.py`` (released ZF-5: 20.5 px, AlexNet 15.5, VGG16 8.0, ``zf5_padded``
  and ``tiny`` 0.5).
* ``out_channels``, ``mean`` / ``std`` (per RGB channel, for inputs in [0, 1]; ImageNet
  statistics, except ``zf5``: Caffe's 0-255 range) and ``crop_size``: the R-CNN warp size the network was designed for (224 / 227 / 128 for tiny).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from detect.errors import DetectError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Caffe models see 0-255 pixel values minus the mean pixel: std 1/255 for inputs in [0, 1].
CAFFE_STD = (1 / 255, 1 / 255, 1 / 255)


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


class WithinChannelLRN(nn.Module):
    """Caffe's LRN with ``norm_region: WITHIN_CHANNEL``: each value divided by a power of the
    mean square over its ``size x size`` spatial neighbourhood in its own channel,
    ``b = a / (1 + alpha / size^2 * sum_{size x size, zero padded} a^2) ^ beta``
    (Caffe averages the squares with a ``size`` x ``size`` average pool of pad ``(size - 1) // 2``,
    the padding counted in the divisor; Caffe's ``k`` is not used in this mode).
    ``(N, C, H, W) -> (N, C, H, W)``; ``size`` must be odd."""

    def __init__(self, size: int, alpha: float, beta: float) -> None:
        super().__init__()
        if size % 2 != 1:
            raise DetectError(f"LRN local_size: must be odd, got {size}")
        self.size, self.alpha, self.beta = size, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_square = nn.functional.avg_pool2d(
            x * x, self.size, stride=1, padding=self.size // 2, count_include_pad=True
        )
        return x * mean_square.mul_(self.alpha).add_(1.0).pow_(-self.beta)


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
        self.features = features
        self.set_channels_last(True)
        self.out_channels = out_channels
        self.crop_size = crop_size
        self.mean = mean
        self.std = std
        self.receptive_field_size, self.stride, centre = receptive_field(features)
        self.offsets = (centre, centre)

    def set_channels_last(self, channels_last: bool) -> None:
        """Run the convs in channels_last (NHWC: oneDNN's CPU convs and pools several times
        faster, notably conv1 with its 3 input channels and the 3x3/2 max-pools) or in the
        contiguous NCHW format (``runtime.channels_last``)."""
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.features.to(memory_format=self.memory_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` normalised images -> ``(N, out_channels, h, w)`` conv features."""
        return self.features(x.contiguous(memory_format=self.memory_format))


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def zf5() -> Backbone:
    """ZF-5 exactly as SPP-net released it (``model-defs/Zeiler_conv5.prototxt``), layer by layer,
    with Caffe's layer names as module names (``features.conv1.weight`` ...):

    conv1 96@7x7 stride 2 pad 1, relu1, norm1, pool1 3x3/2; conv2 256@5x5 stride 2 pad 0, relu2,
    norm2, pool2 3x3/2; conv3 384@3x3 pad 1, relu3; conv4 384@3x3 pad 1, relu4; conv5 256@3x3
    pad 1, relu5. norm = :class:`WithinChannelLRN` (local_size 3, alpha 5e-5, beta 0.75); pools
    round their output size up (Caffe, ``ceil_mode``). Stride 16; cell 0 is centred at 20.5 px.

    Inputs are what the Caffe model saw: 0-255 values minus the mean pixel (``std`` 1/255), so
    converted weights need no rescaling (docs/zf5.md: conversion and the layer-name mapping).
    """

    def norm() -> WithinChannelLRN:
        return WithinChannelLRN(3, alpha=5e-5, beta=0.75)

    features = nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(3, 96, 7, stride=2, padding=1)),
                ("relu1", nn.ReLU(inplace=True)),
                ("norm1", norm()),
                ("pool1", nn.MaxPool2d(3, 2, ceil_mode=True)),
                ("conv2", nn.Conv2d(96, 256, 5, stride=2, padding=0)),
                ("relu2", nn.ReLU(inplace=True)),
                ("norm2", norm()),
                ("pool2", nn.MaxPool2d(3, 2, ceil_mode=True)),
                ("conv3", nn.Conv2d(256, 384, 3, padding=1)),
                ("relu3", nn.ReLU(inplace=True)),
                ("conv4", nn.Conv2d(384, 384, 3, padding=1)),
                ("relu4", nn.ReLU(inplace=True)),
                ("conv5", nn.Conv2d(384, 256, 3, padding=1)),
                ("relu5", nn.ReLU(inplace=True)),
            ]
        )
    )
    return Backbone("zf5", features, out_channels=256, crop_size=224, std=CAFFE_STD)


def zf5_padded(lrn: bool = True) -> Backbone:
    """A ZF-5 variant padded by ``k // 2`` at every layer (cell 0 centred at 0.5 px, the paper's
    Appendix A geometry), with a cross-channel LRN (size 5, alpha 1e-4, beta 0.75) after the
    conv1 / conv2 pools when ``lrn``: conv1 96@7x7/2, pool 3x3/2, conv2 256@5x5/2, pool 3x3/2,
    conv3 384, conv4 384, conv5 256 (3x3/1), ReLU after each conv. Not loadable from the
    released Caffe weights (different layers and map sizes); ImageNet input statistics."""
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
    return Backbone("zf5_padded", features, out_channels=256, crop_size=224)


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
    "zf5_padded": zf5_padded,
    "zf5_padded_nolrn": lambda: zf5_padded(lrn=False),
    "alexnet": alexnet,
    "vgg16": vgg16,
    "tiny": tiny,
}


def build_backbone(name: str) -> Backbone:
    """A randomly initialised backbone by name (a key of :data:`BACKBONES`)."""
    if name not in BACKBONES:
        raise DetectError(f"model.backbone: unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[name]()
