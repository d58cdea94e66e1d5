"""A small training loop with hooks (the shape of detectron2's ``TrainerBase`` / ``HookBase``).

:class:`Trainer` runs one ``step`` per iteration and calls its hooks around the loop and around
every step; everything else a run does (learning-rate schedule, log, checkpoints, Ctrl-C,
divergence, progress bar) is a hook (:mod:`detect.training.hooks`). Fine-tuning of SPP-net and
R-CNN (:func:`detect.training.finetune.finetune`) is this loop with a fine-tuning step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class HookBase:
    """Something done around training; each method is a no-op unless overridden.

    Called in the order of the trainer's hook list: :meth:`before_train` once, then per iteration
    :meth:`before_step`, the step, :meth:`after_step`, and :meth:`after_train` once at the end,
    also when a step or a hook raised (to release what :meth:`before_train` took). ``trainer`` is
    set by :class:`Trainer`; ``trainer.iter`` is the 0-based iteration in progress, so
    ``trainer.iter + 1`` iterations are complete in :meth:`after_step`.
    """

    trainer: Trainer

    def before_train(self) -> None:
        """Before the first iteration run by this call of :meth:`Trainer.train`."""

    def before_step(self) -> None:
        """Before the step of iteration ``trainer.iter``."""

    def after_step(self) -> None:
        """After the step of iteration ``trainer.iter``; its result is ``trainer.outcome``."""

    def after_train(self) -> None:
        """After the loop, finished or stopped by an exception."""


class Trainer:
    """Runs ``step(iteration)`` for ``iteration`` in ``start_iter .. max_iter - 1`` with hooks.

    Args:
        step: one training iteration (forward, backward, optimizer step); what it returns is kept
            in ``outcome`` for the hooks' :meth:`~HookBase.after_step`.
        hooks: called in this order at every point.
        start_iter: the first iteration (0, or the iteration of the checkpoint resumed).
        max_iter: the number of iterations of the whole run.
    """

    def __init__(
        self,
        step: Callable[[int], Any],
        hooks: Sequence[HookBase],
        start_iter: int,
        max_iter: int,
    ) -> None:
        self.step = step
        self.hooks = list(hooks)
        self.start_iter = start_iter
        self.max_iter = max_iter
        self.iter = start_iter
        self.outcome: Any = None
        for hook in self.hooks:
            hook.trainer = self

    def train(self) -> None:
        """Run the remaining iterations; ``iter`` is ``max_iter`` afterwards unless one raised."""
        self.iter = self.start_iter
        try:
            for hook in self.hooks:
                hook.before_train()
            while self.iter < self.max_iter:
                for hook in self.hooks:
                    hook.before_step()
                self.outcome = self.step(self.iter)
                for hook in self.hooks:
                    hook.after_step()
                self.iter += 1
        finally:
            for hook in self.hooks:
                hook.after_train()
