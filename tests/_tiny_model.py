"""A tiny untrained SPP-net checkpoint and a photo-like scene, for tests of the commands and the
Python API that need a model but not a trained one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detect.config import Config, ModelConfig, ProposalConfig
from detect.models import build_detector
from detect.training.checkpoint import save_checkpoint


def save_tiny_checkpoint(
    path: Path, class_names=("circle", "square"), cache_dir: Path | None = None
) -> Path:
    """Save a random `tiny` SPP-net (scale 96, fc 16-16, at most 30 proposals; proposals cached in
    ``cache_dir``, else the config's default folder) of ``class_names`` at ``path``; returns
    ``path``."""
    proposals = ProposalConfig(max_proposals=30)
    if cache_dir is not None:
        proposals = ProposalConfig(cache_dir=str(cache_dir), max_proposals=30)
    config = Config(
        model=ModelConfig(backbone="tiny", scales=(96,), fc_dims=(16, 16), rcnn_context=4),
        proposals=proposals,
    )
    model = build_detector("spp", config.model, len(class_names))
    save_checkpoint(path, model, tuple(class_names), config)
    return path


def red_box_scene() -> np.ndarray:
    """A 100x140 dark noise image (seed 0) with a red box at x 30-90, y 20-70: (H, W, 3) uint8."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (100, 140, 3)).astype(np.uint8)
    image[20:70, 30:90] = (220, 30, 30)
    return image
