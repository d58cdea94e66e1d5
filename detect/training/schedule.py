"""The fine-tuning learning-rate schedule: ``finetune.lr`` multiplied by ``finetune.lr_gamma`` at
each of ``finetune.lr_steps`` (docs/method.md §6), as a ``torch.optim.lr_scheduler.LambdaLR``
stepped once per iteration, whose state a checkpoint keeps so that a resumed run continues it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch


def step_factor(iteration: int, steps: Sequence[int], gamma: float) -> float:
    """The lr multiplier of 0-based ``iteration``: ``gamma ** (number of steps <= iteration)``."""
    return gamma ** sum(iteration >= step for step in steps)


def step_lr_scheduler(
    optimizer: torch.optim.Optimizer, steps: Sequence[int], gamma: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler that sets the lr of iteration ``i`` to ``initial lr * step_factor(i, ...)``
    (one multiplication from the initial lr, never a product of earlier lrs) once it has been
    stepped ``i`` times; created, it sets iteration 0's."""
    factor = functools.partial(step_factor, steps=tuple(steps), gamma=gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
