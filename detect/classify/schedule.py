"""The input size of every training batch, per mode (SPP-net paper, section 2.3).

* ``fixed`` (a) and ``single`` (b): ``sizes[0]`` (224) always;
* ``multi`` (c): one size per epoch, ``sizes`` in turn (224, 180, 224, ...): the same regions,
  resized, through the same weights;
* ``variable`` (d): each batch at a size drawn uniformly in ``variable_range`` (inclusive).

Deterministic in ``(seed, epoch)``, so a resumed run repeats the sizes of an uninterrupted one.
"""

from __future__ import annotations

import numpy as np

from detect.config import ClassifyConfig


def batch_sizes(cfg: ClassifyConfig, epoch: int, num_batches: int, seed: int) -> list[int]:
    """The input side (square inputs) of each of the ``num_batches`` batches of ``epoch``
    (0-based)."""
    if cfg.mode == "multi":
        return [int(cfg.sizes[epoch % len(cfg.sizes)])] * num_batches
    if cfg.mode == "variable":
        low, high = cfg.variable_range
        rng = np.random.default_rng([seed, epoch, 1])
        return [int(v) for v in rng.integers(low, high + 1, num_batches)]
    return [int(cfg.sizes[0])] * num_batches
