"""The hooks of a fine-tuning run (:class:`~detect.training.trainer.Trainer`), one job each.

Every step returns a :class:`StepOutcome`. In the order :func:`detect.training.finetune.finetune`
lists them: :class:`IterationTimer` (wall-clock time per iteration, for throughput and ETA),
:class:`DivergenceCheck` (stop on a diverged loss, vouch for a held checkpoint),
:class:`LRSchedule` (step the lr scheduler), :class:`CSVLog` (average the losses, append a row
with the interval's throughput), the reporting hooks of :func:`monitoring_hooks`
(:class:`ProgressBar`, :class:`LogLine`, :class:`TensorBoardLog`), :class:`IterationCallback`,
:class:`CtrlC` (save and stop on Ctrl-C) and :class:`PeriodicCheckpoint`. The order matters in
:meth:`~HookBase.after_step`: a diverged step is neither logged nor saved, the reporting hooks
show the row just appended, and what Ctrl-C or a checkpoint saves already has the next
iteration's lr and this iteration's log row.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from detect.errors import Interrupted
from detect.scalars import scalar_writer
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


@dataclass(frozen=True)
class Throughput:
    """``iterations`` timed in ``seconds`` (wall clock), ``images_per_iteration`` images each."""

    iterations: int
    seconds: float
    images_per_iteration: int

    @property
    def seconds_per_iteration(self) -> float:
        """``nan`` when no iteration was timed."""
        return self.seconds / self.iterations if self.iterations else math.nan

    @property
    def images_per_second(self) -> float:
        """``nan`` when no time passed."""
        images = self.iterations * self.images_per_iteration
        return images / self.seconds if self.seconds > 0 else math.nan

    def as_row(self) -> dict[str, float]:
        """The CSV log's throughput columns, to 4 significant digits."""
        return {
            "images_per_s": float(f"{self.images_per_second:.4g}"),
            "s_per_iter": float(f"{self.seconds_per_iteration:.4g}"),
        }


class IterationTimer(HookBase):
    """Wall-clock time of the iterations this call of ``train`` runs, the hooks' work included
    (checkpoints, log): per log interval (:meth:`take_interval`), in all (:meth:`total`) and the
    remaining time at that pace (:meth:`eta`). First in the hook list, so that the others read
    the time of the iteration just done.

    Args:
        images_per_iteration: images in one iteration (``finetune.images_per_batch``).
        clock: seconds, monotonic (``time.perf_counter``; tests pass a fake).
    """

    def __init__(
        self, images_per_iteration: int, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.images_per_iteration = images_per_iteration
        self.clock = clock
        self.started = self.last = 0.0
        self.timed = 0
        self._interval = (0, 0.0)

    def before_train(self) -> None:
        self.started = self.last = self.clock()
        self.timed = 0
        self._interval = (0, 0.0)

    def after_step(self) -> None:
        now = self.clock()
        iterations, seconds = self._interval
        self._interval = (iterations + 1, seconds + now - self.last)
        self.timed += 1
        self.last = now

    def take_interval(self) -> Throughput:
        """The iterations timed since the last call (or the start), and start a new interval."""
        iterations, seconds = self._interval
        self._interval = (0, 0.0)
        return Throughput(iterations, seconds, self.images_per_iteration)

    def total(self) -> Throughput:
        """Every iteration timed so far by this call of ``train``."""
        return Throughput(self.timed, self.last - self.started, self.images_per_iteration)

    def eta(self) -> float:
        """Seconds left for the iterations after the one just done, at the mean pace so far
        (``nan`` before the first)."""
        remaining = self.trainer.max_iter - (self.trainer.iter + 1)
        return remaining * self.total().seconds_per_iteration


class CSVLog(HookBase):
    """Appends a row to the CSV log ``path`` every ``every`` iterations and at the last one: the
    mean of each of :data:`LOSS_NAMES` over the interval's steps, the lr of its last one and,
    with a ``timer``, the interval's throughput (:meth:`Throughput.as_row`).

    ``rows`` and ``sums`` (the running interval: each loss summed, and ``count``) are where a
    resumed run left them; the file is first cut back to ``rows``
    (:func:`~detect.training.trainlog.start_log_csv`), then only appended to.
    """

    def __init__(
        self,
        path: Path,
        every: int,
        rows: list[dict],
        sums: dict[str, float],
        timer: IterationTimer | None = None,
    ) -> None:
        self.path = path
        self.every = every
        self.rows = rows
        self.sums = sums
        self.timer = timer

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
            if self.timer is not None:
                row.update(self.timer.take_interval().as_row())
            self.rows.append(row)
            self.sums = empty_sums()
            append_log_row(self.path, row)


def empty_sums() -> dict[str, float]:
    """The running sums of a log interval that has not started."""
    return {**dict.fromkeys(LOSS_NAMES, 0.0), "count": 0}


class ProgressBar(HookBase):
    """A tqdm bar over the run's iterations (its rate and ETA), showing the last loss, the lr and
    the images per second so far; log lines print above it while it runs."""

    def __init__(self, desc: str, timer: IterationTimer) -> None:
        self.desc = desc
        self.timer = timer
        self.bar: tqdm | None = None
        self.postfix: dict[str, str] = {}
        self._redirect = contextlib.ExitStack()

    def before_train(self) -> None:
        trainer = self.trainer
        self._redirect.enter_context(logging_redirect_tqdm())
        self.bar = tqdm(total=trainer.max_iter, initial=trainer.start_iter, desc=self.desc)

    def after_step(self) -> None:
        outcome: StepOutcome = self.trainer.outcome
        if outcome.losses is not None:  # a step without windows keeps the last loss shown
            self.postfix.update(loss=f"{outcome.losses['loss']:.4f}", lr=f"{outcome.lr:.2g}")
        self.postfix["img/s"] = f"{self.timer.total().images_per_second:.3g}"
        self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.update(1)

    def after_train(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self._redirect.close()


class _RowReader(HookBase):
    """Base of the hooks that report each row ``source`` (a :class:`CSVLog`, earlier in the hook
    list) appends: :meth:`report` is called once per new row."""

    def __init__(self, source: CSVLog) -> None:
        self.source = source
        self.seen = 0

    def before_train(self) -> None:
        self.seen = len(self.source.rows)  # a resumed run's rows were reported by its first run

    def after_step(self) -> None:
        for row in self.source.rows[self.seen :]:
            self.report(row)
        self.seen = len(self.source.rows)

    def report(self, row: dict) -> None:
        """Report one log row (keyed by :data:`~detect.training.trainlog.LOG_FIELDS`)."""


def _duration(seconds: float) -> str:
    return tqdm.format_interval(seconds) if math.isfinite(seconds) else "?"


class LogLine(_RowReader):
    """An info line per log row: the iteration, losses, lr, images/s, s/iteration and ETA; at
    the end, the totals of the iterations this call ran."""

    def __init__(self, source: CSVLog, timer: IterationTimer) -> None:
        super().__init__(source)
        self.timer = timer

    def report(self, row: dict) -> None:
        log.info(
            "iteration %d/%d: loss %.4f (cls %.4f, bbox %.4f), lr %.3g, %.3g images/s, "
            "%.3g s/iteration, ETA %s",
            row["iteration"],
            self.trainer.max_iter,
            row["loss"],
            row["cls_loss"],
            row["bbox_loss"],
            row["lr"],
            row.get("images_per_s", math.nan),
            row.get("s_per_iter", math.nan),
            _duration(self.timer.eta()),
        )

    def after_train(self) -> None:
        total = self.timer.total()
        if total.iterations:
            log.info(
                "fine-tuning: %d iterations (%d images) in %s: %.3g images/s, %.3g s/iteration",
                total.iterations,
                total.iterations * total.images_per_iteration,
                _duration(total.seconds),
                total.images_per_second,
                total.seconds_per_iteration,
            )


class TensorBoardLog(_RowReader):
    """Each log row as TensorBoard scalars under ``log_dir`` (``train/loss``, ``train/cls_loss``,
    ``train/bbox_loss``, ``train/lr``, ``train/images_per_s``, ``train/s_per_iter`` at the row's
    iteration), when tensorboard is installed (:func:`detect.scalars.scalar_writer`; otherwise
    one info line and nothing). A resumed run hides what an earlier writer logged after its
    checkpoint."""

    def __init__(self, source: CSVLog, log_dir: Path) -> None:
        super().__init__(source)
        self.log_dir = log_dir
        self.writer: Any = None

    def before_train(self) -> None:
        super().before_train()
        # Rows are logged at the number of completed iterations: this run's are start_iter + 1 on.
        self.writer = scalar_writer(self.log_dir, purge_step=self.trainer.start_iter + 1)

    def report(self, row: dict) -> None:
        if self.writer is None:
            return
        for name in (*LOSS_NAMES, "lr", "images_per_s", "s_per_iter"):
            value = row.get(name, math.nan)
            if math.isfinite(value):
                self.writer.add_scalar(f"train/{name}", value, row["iteration"])

    def after_train(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def monitoring_hooks(
    csv_log: CSVLog, timer: IterationTimer, desc: str, tensorboard_dir: Path
) -> list[HookBase]:
    """The hooks that only report, to go right after ``csv_log`` in the hook list: the progress
    bar, the periodic log line and TensorBoard scalars (under torchrun, rank 0's alone:
    :func:`detect.training.ddp.rank_hooks` leaves them out elsewhere)."""
    return [
        ProgressBar(desc, timer),
        LogLine(csv_log, timer),
        TensorBoardLog(csv_log, tensorboard_dir),
    ]


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
