"""The hooks of a fine-tuning run (:class:`~detect.training.trainer.Trainer`), one job each.

Every step returns a :class:`StepOutcome`. In the order :func:`detect.training.finetune.finetune`
lists them: :class:`DivergenceCheck` (stop on a diverged loss, vouch for a held checkpoint),
:class:`LRSchedule` (step the lr scheduler), :class:`CSVLog` (average the losses, append a row),
:class:`ProgressBar`, :class:`IterationCallback`, :class:`CtrlC` (save and stop on Ctrl-C) and
:class:`PeriodicCheckpoint`. The order matters in :meth:`~HookBase.after_step`: a diverged step
is neither logged nor saved, and what Ctrl-C or a checkpoint saves already has the next
iteration's lr and this iteration's log row.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from detect.errors import Interrupted
from detect.training.divergence import GoodCheckpointWriter, divergence_reason
from detect.training.trainer import HookBase
from detect.training.trainlog import append_log_row, start_log_csv

log = logging.getLogger(__name__)

LOSS_NAMES = ("loss", "cls_loss", "bbox_loss")

#: A checkpoint's extras after the given number of completed iterations (copies of the state).
Snapshot = Callable[[int], dict[str, Any]]


@dataclass(frozen=True)
class StepOutcome:
    """What one training step did: the ``lr`` it used and its ``losses`` (floats keyed by
    :data:`LOSS_NAMES`; ``loss`` is the total), or ``None`` when no window was sampled and the
    weights were not updated."""

    lr: float
    losses: dict[str, float] | None


class DivergenceCheck(HookBase):
    """Stops training at a diverged loss (:func:`~detect.training.divergence.divergence_reason`),
    naming the checkpoint kept; a good loss vouches for the checkpoint held by ``writer``.

    ``first_loss``: the run's first loss so far (``None`` before the first step), the scale of an
    exploding one; a checkpoint keeps it so that a resumed run judges by the same scale.
    """

    def __init__(self, writer: GoodCheckpointWriter, first_loss: float | None) -> None:
        self.writer = writer
        self.first_loss = first_loss

    def after_step(self) -> None:
        outcome: StepOutcome = self.trainer.outcome
        if outcome.losses is None:
            return
        loss = outcome.losses["loss"]
        reason = divergence_reason(loss, self.first_loss)
        if reason:
            raise self.writer.diverged(self.trainer.iter + 1, f"{reason} (lr {outcome.lr:g})")
        if self.first_loss is None:
            self.first_loss = loss
        self.writer.vouch()  # the held checkpoint's weights just gave this good loss


class LRSchedule(HookBase):
    """Steps ``scheduler`` after every iteration, so the next one runs at its lr."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        self.scheduler = scheduler

    def after_step(self) -> None:
        self.scheduler.step()


class CSVLog(HookBase):
    """Appends a row to the CSV log ``path`` every ``every`` iterations and at the last one: the
    mean of each of :data:`LOSS_NAMES` over the interval's steps, and the lr of its last one.

    ``rows`` and ``sums`` (the running interval: each loss summed, and ``count``) are where a
    resumed run left them; the file is first cut back to ``rows``
    (:func:`~detect.training.trainlog.start_log_csv`), then only appended to.
    """

    def __init__(self, path: Path, every: int, rows: list[dict], sums: dict[str, float]) -> None:
        self.path = path
        self.every = every
        self.rows = rows
        self.sums = sums

    def before_train(self) -> None:
        start_log_csv(self.path, self.rows)

    def after_step(self) -> None:
        outcome: StepOutcome = self.trainer.outcome
        if outcome.losses is not None:
            for name in LOSS_NAMES:
                self.sums[name] += outcome.losses[name]
            self.sums["count"] += 1
        completed = self.trainer.iter + 1
        if completed % self.every == 0 or completed == self.trainer.max_iter:
            count = max(self.sums["count"], 1)
            row = {"iteration": completed}
            row.update({name: self.sums[name] / count for name in LOSS_NAMES})
            row["lr"] = outcome.lr
            self.rows.append(row)
            self.sums = empty_sums()
            append_log_row(self.path, row)


def empty_sums() -> dict[str, float]:
    """The running sums of a log interval that has not started."""
    return {**dict.fromkeys(LOSS_NAMES, 0.0), "count": 0}


class ProgressBar(HookBase):
    """A tqdm bar over the run's iterations, showing the last loss and lr."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar: tqdm | None = None

    def before_train(self) -> None:
        trainer = self.trainer
        self.bar = tqdm(total=trainer.max_iter, initial=trainer.start_iter, desc=self.desc)

    def after_step(self) -> None:
        outcome: StepOutcome = self.trainer.outcome
        if outcome.losses is not None:
            loss = outcome.losses["loss"]
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{outcome.lr:.2g}", refresh=False)
        self.bar.update(1)

    def after_train(self) -> None:
        if self.bar is not None:
            self.bar.close()


class IterationCallback(HookBase):
    """Calls ``callback`` with the number of completed iterations after each one."""

    def __init__(self, callback: Callable[[int], None]) -> None:
        self.callback = callback

    def after_step(self) -> None:
        self.callback(self.trainer.iter + 1)


class CtrlC(HookBase):
    """Turns the first Ctrl-C into a request honoured after the iteration in progress: the state
    then (``snapshot``) is saved through ``writer`` and :class:`~detect.errors.Interrupted` says
    which iteration it holds. A second Ctrl-C aborts at once (``KeyboardInterrupt``). Outside the
    main thread, where no signal handler can be set, Ctrl-C is left alone."""

    def __init__(self, writer: GoodCheckpointWriter, snapshot: Snapshot) -> None:
        self.writer = writer
        self.snapshot = snapshot
        self.requested = False
        self._installed = False
        self._previous: Any = None

    def before_train(self) -> None:
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupted: saving a checkpoint after this iteration (Ctrl-C again aborts)")

    def after_step(self) -> None:
        if not self.requested:
            return
        completed = self.trainer.iter + 1
        self.writer.write(self.snapshot(completed))
        log.warning("checkpoint saved at iteration %d: %s", completed, self.writer.path)
        raise Interrupted(f"checkpoint {self.writer.path} saved at iteration {completed}")

    def after_train(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False


class PeriodicCheckpoint(HookBase):
    """Saves ``snapshot`` through ``writer``: at the start when ``save_start`` (a fresh run), at
    the last iteration, and every ``period`` iterations once the next loss vouches for those
    weights (:meth:`~detect.training.divergence.GoodCheckpointWriter.propose`)."""

    def __init__(
        self, writer: GoodCheckpointWriter, snapshot: Snapshot, period: int, save_start: bool
    ) -> None:
        self.writer = writer
        self.snapshot = snapshot
        self.period = period
        self.save_start = save_start

    def before_train(self) -> None:
        if self.save_start:
            self.writer.write(self.snapshot(self.trainer.start_iter))

    def after_step(self) -> None:
        completed = self.trainer.iter + 1
        if completed == self.trainer.max_iter:
            self.writer.write(self.snapshot(completed))
        elif completed % self.period == 0:
            self.writer.propose(self.snapshot(completed))  # written once the next loss vouches
