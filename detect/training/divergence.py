"""When fine-tuning has diverged, and which weights may be kept as the last good checkpoint.

A loss *explodes* when it is not finite or exceeds ``EXPLOSION_FACTOR`` times the run's first
loss (taken as at least 1, so a run starting from a near-perfect checkpoint is not stopped by a
small rise). Fine-tuning stops at such a loss, and keeps as good only a checkpoint whose weights
are all finite and gave a finite, non-exploding loss (see :class:`GoodCheckpointWriter`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from detect.errors import DetectError

EXPLOSION_FACTOR = 100.0


def divergence_reason(loss: float, first_loss: float | None) -> str:
    """Why ``loss`` means training diverged, or ``""`` when it does not. ``first_loss``: the
    run's first finite loss (None before there is one)."""
    if not math.isfinite(loss):
        return f"the loss is {loss}"
    bound = EXPLOSION_FACTOR * max(first_loss if first_loss is not None else loss, 1.0)
    if loss > bound:
        return (
            f"the loss {loss:.4g} exploded (over {EXPLOSION_FACTOR:g}x the first loss "
            f"{first_loss if first_loss is not None else loss:.4g})"
        )
    return ""


def first_non_finite(state: dict[str, Tensor]) -> str | None:
    """Name of the first floating-point tensor of ``state`` holding a NaN or an infinity."""
    for name, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name
    return None


class GoodCheckpointWriter:
    """Writes fine-tuning checkpoints, keeping on disk only weights known to be good.

    A periodic checkpoint is held back (:meth:`propose`) until the next loss, computed with its
    very weights, is finite and not exploding (:meth:`vouch`): one SGD step can blow the weights up
    while the loss before it looked fine, and a checkpoint written right then would be resumed into
    the same divergence. :meth:`write` saves at once (start, end, Ctrl-C). Either way, weights with
    a NaN or an infinity are never written: that is a :meth:`diverged` error.

    Args:
        write: saves a checkpoint's extras (``iteration``, ``model`` state dict, ...) to disk.
        path: the checkpoint file, for messages.
        iteration: the iteration of the checkpoint already on disk.
    """

    def __init__(self, write: Callable[[dict[str, Any]], None], path: Path, iteration: int) -> None:
        self._write = write
        self.path = path
        self.kept_iteration = iteration
        self._pending: dict[str, Any] | None = None

    def write(self, extras: dict[str, Any]) -> None:
        """Save ``extras`` now (their ``model`` weights checked finite first)."""
        self._check_finite(extras)
        self._write(extras)
        self.kept_iteration = int(extras["iteration"])
        self._pending = None

    def propose(self, extras: dict[str, Any]) -> None:
        """Hold ``extras`` (a copy of the current state) until :meth:`vouch`."""
        self._check_finite(extras)
        self._pending = extras

    def vouch(self) -> None:
        """The weights of the held checkpoint just gave a good loss: write it."""
        if self._pending is not None:
            self.write(self._pending)

    def diverged(self, iteration: int, reason: str) -> DetectError:
        """The error for a divergence seen at 1-based ``iteration``, naming the checkpoint kept."""
        return DetectError(
            f"fine-tuning diverged at iteration {iteration}: {reason}; stopped, and the last good "
            f"checkpoint {self.path} (iteration {self.kept_iteration}) is kept. "
            "Lower finetune.lr or check the data."
        )

    def _check_finite(self, extras: dict[str, Any]) -> None:
        bad = first_non_finite(extras["model"])
        if bad is not None:
            raise self.diverged(int(extras["iteration"]), f"weight {bad} is not finite")
