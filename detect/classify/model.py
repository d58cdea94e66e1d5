"""The image classifier: a backbone, image-level SPP (or the fixed-size baseline's fixed pooling),
fc layers and a softmax classifier (SPP-net paper, sections 2-3; docs/classification.md).

With SPP the network takes an image of any size and aspect ratio: the conv map ``(C, h, w)`` is
pooled into ``sum(n * n)`` bins per channel whatever ``h`` and ``w`` are, so the fc layers always
see ``C * sum(n * n)`` values. The fixed-size baseline (mode ``fixed``) max-pools the map with a
fixed window and stride instead, so its fc layers only fit the one input size it was built for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detect.config import Config, check_values
from detect.errors import DetectError
from detect.models.backbones import Backbone
from detect.models.spp import BIN_RULES, image_pyramid_pool
from detect.models.weights import load_backbone

MODES = ("fixed", "single", "multi", "variable")


class ImageClassifier(nn.Module):
    """``(N, 3, H, W)`` normalised images -> ``(N, K)`` class logits.

    Args:
        backbone: conv layers (``forward`` -> ``(N, C, h, w)``).
        num_classes: K.
        levels: pyramid levels, e.g. ``(1, 2, 3, 6)``.
        bins: ``adaptive`` or ``sliding`` (:func:`detect.models.spp.image_pyramid_pool`).
        fc_dims: hidden fc layer widths (ReLU + dropout after each).
        dropout: dropout probability after each hidden fc layer.
        fixed: ``None`` for SPP, else ``(input size, window, stride)`` of the fixed-size baseline:
            one max-pool of that window and stride, for inputs of that size only.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        levels: Sequence[int] = (1, 2, 3, 6),
        bins: str = "sliding",
        fc_dims: Sequence[int] = (4096, 4096),
        dropout: float = 0.5,
        fixed: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.levels = tuple(int(n) for n in levels)
        self.bins = bins
        self.fixed = fixed
        if fixed is None:
            pooled = backbone.out_channels * sum(n * n for n in self.levels)
        else:
            with torch.no_grad():
                probe = backbone.eval()(torch.zeros(1, 3, fixed[0], fixed[0]))
            backbone.train()
            pooled = self._fixed_pool(probe).shape[1]
        dims = [pooled, *fc_dims]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.fc = nn.Sequential(*layers)
        nn.init.normal_(self.fc[-1].weight, std=0.01)
        nn.init.zeros_(self.fc[-1].bias)

    def _fixed_pool(self, features: Tensor) -> Tensor:
        _size, window, stride = self.fixed
        return F.max_pool2d(features, window, stride).flatten(1)

    def pool(self, features: Tensor) -> Tensor:
        """``(N, C, h, w)`` conv maps -> ``(N, D)`` fixed-length vectors (D does not depend on
        ``h``, ``w`` with SPP; the fixed baseline refuses other sizes than its own)."""
        if self.fixed is None:
            return image_pyramid_pool(features, self.levels, self.bins)
        return self._fixed_pool(features)

    def forward(self, images: Tensor) -> Tensor:
        if self.fixed is not None and tuple(images.shape[-2:]) != (self.fixed[0],) * 2:
            raise DetectError(
                f"classify: the fixed-size network (mode fixed) takes {self.fixed[0]}x"
                f"{self.fixed[0]} inputs only, got {images.shape[-2]}x{images.shape[-1]}"
            )
        return self.fc(self.pool(self.backbone(images)))


def check_classify_config(cfg: Config) -> None:
    """One-line :class:`DetectError` naming the first bad ``classify.*`` value."""
    c = cfg.classify
    variable = c.variable_range
    check_values(
        "classify.",
        [
            (c.mode in MODES, "mode", c.mode, f"one of {list(MODES)}"),
            (c.bins in BIN_RULES, "bins", c.bins, f"one of {list(BIN_RULES)}"),
            (len(c.sizes) >= 1 and min(c.sizes) >= 16, "sizes", c.sizes, "sizes of at least 16"),
            (
                len(variable) == 2 and 16 <= variable[0] <= variable[1],
                "variable_range",
                variable,
                "[low, high] with 16 <= low <= high",
            ),
            (0 < c.crop_fraction <= 1, "crop_fraction", c.crop_fraction, "in (0, 1]"),
            (
                len(c.fixed_pool) == 2 and min(c.fixed_pool) >= 1,
                "fixed_pool",
                c.fixed_pool,
                "[window, stride], both >= 1",
            ),
            (c.test_size >= 16, "test_size", c.test_size, "at least 16"),
            (c.epochs >= 1, "epochs", c.epochs, "at least 1"),
            (c.batch_size >= 1, "batch_size", c.batch_size, "at least 1"),
            (c.lr > 0, "lr", c.lr, "positive"),
        ],
    )


def build_classifier(cfg: Config, num_classes: int, weights: str | None = None) -> ImageClassifier:
    """The classifier of ``cfg`` (``model.backbone``, ``model.pyramid_levels``,
    ``model.fc_dims``, ``model.dropout``, ``classify.*``) for ``num_classes`` classes; the
    backbone starts from ``weights`` (default ``model.weights``: none, imagenet or a file)."""
    check_classify_config(cfg)
    c = cfg.classify
    backbone = load_backbone(cfg.model.backbone, cfg.model.weights if weights is None else weights)
    fixed = (c.sizes[0], *c.fixed_pool) if c.mode == "fixed" else None
    return ImageClassifier(
        backbone,
        num_classes,
        levels=cfg.model.pyramid_levels,
        bins=c.bins,
        fc_dims=cfg.model.fc_dims,
        dropout=cfg.model.dropout,
        fixed=fixed,
    )
