"""Fine-tuning as several processes (``torchrun``): DistributedDataParallel, with the result of one.

Each iteration's global batch is the images of :func:`~detect.training.batches.image_order`
``(seed, i)``; rank ``r`` of ``W`` trains on those at positions ``r, r + W, ...``
(:class:`~detect.training.batches.IterationBatches` ``shard``). What an image contributes depends
only on ``(seed, i, position)``: its flip, windows and scale draws come from a generator seeded by
them, and so does its dropout (:func:`image_rng`). The loss of one process is the sum over the
batch's windows divided by their number; a rank's loss is the sum over its own windows divided by
the number of windows of all ranks, times ``W`` (:class:`BatchLoss`), so that DDP's averaging of
the gradients over the ranks gives exactly the single-process gradient of the same global batch,
and after ``K`` iterations the weights are those of one process, to float rounding. The logged
losses are summed over the ranks first, so every rank sees (and judges divergence by) the loss of
the whole batch.

Rank 0 alone logs, draws the progress bar and writes checkpoints (:func:`rank_hooks`); the other
ranks keep only what changes training (the lr schedule, the divergence stop) and leave Ctrl-C to
rank 0, whose checkpoint is written at an iteration every rank completed. One process: no DDP, no
collective, the same code.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from detect.distributed import all_reduce_sum, is_main, world_size
from detect.models.heads import HeadOutput
from detect.training.batches import ImageWindows
from detect.training.hooks import DivergenceCheck, LRSchedule
from detect.training.sampling import derived_generator
from detect.training.trainer import HookBase

log = logging.getLogger(__name__)

DROPOUT_KEY = 3  # a random stream of its own, derived from the seed (batches uses 1 and 2)


@contextlib.contextmanager
def image_rng(seed: int, iteration: int, position: int, device: torch.device) -> Iterator[None]:
    """Run the enclosed forward pass (its dropout) with torch's default generator of ``device``
    seeded from ``(seed, iteration, position)``; the generator's state is restored afterwards."""
    value = int(derived_generator(seed, DROPOUT_KEY, iteration, position).initial_seed())
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        if cuda:
            torch.cuda.manual_seed(value)  # the current device: this rank's
        else:
            torch.default_generator.manual_seed(value)
        yield


class BatchLoss(nn.Module):
    """``images -> (loss to backpropagate, [cls_loss, bbox_loss] of the global batch)`` for one
    rank's :class:`ImageWindows` of one iteration; ``(None, None)`` when no rank sampled a window.

    Args:
        model: the detection model (its parameters are this module's: DDP wraps this module).
        forward: ``(image, short_side, prepared, windows) -> HeadOutput``, the training forward
            pass of the fine-tuning mode.
        loss: ``(out, labels, targets, num_windows) -> (total, cls, bbox)``, each a sum over the
            given windows divided by ``num_windows``.
        seed: the run's seed (dropout per image: :func:`image_rng`).
    """

    def __init__(self, model: nn.Module, forward, loss, seed: int) -> None:
        super().__init__()
        self.model = model
        self.region_forward = forward
        self.loss = loss
        self.seed = seed

    def forward(self, images: Sequence[ImageWindows], iteration: int):
        model = self.model
        outputs, labels, targets = [], [], []
        for image in images:
            with image_rng(self.seed, iteration, image.position, model.device):
                for group in image.groups:
                    prepared = model.normalise(group.image.numpy())
                    windows = group.windows
                    outputs.append(self.region_forward(image, group.short_side, prepared, windows))
                    labels.append(group.labels)
                    targets.append(group.targets)
        local = sum(part.shape[0] for part in labels)
        total = float(all_reduce_sum(torch.tensor([float(local)], device=model.device)))
        if total == 0:
            return None, None
        if not outputs:  # other ranks have windows: join DDP's gradient averaging with zeros
            trainable = [p for p in self.parameters() if p.requires_grad]
            zero = sum(p.sum() for p in trainable) * 0.0
            parts = torch.zeros(2, device=model.device)
            return zero, all_reduce_sum(parts).tolist()
        out = HeadOutput(*(torch.cat(parts) for parts in zip(*outputs, strict=True)))
        loss, cls_loss, bbox_loss = self.loss(out, torch.cat(labels), torch.cat(targets), total)
        parts = torch.stack([cls_loss.detach(), bbox_loss.detach()]).float()
        return loss * world_size(), all_reduce_sum(parts).tolist()


def wrap(module: BatchLoss) -> nn.Module:
    """``module`` in DistributedDataParallel when this is one of several processes (the process
    group started: :func:`detect.distributed.process_group`), else itself. DDP copies rank 0's
    weights to every rank when it starts."""
    if world_size() == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device = module.model.device
    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False)


class IgnoreCtrlC(HookBase):
    """Ignore Ctrl-C during training on a rank other than 0 (torchrun's processes all receive
    it): rank 0 saves the checkpoint and stops the run, and torchrun ends the others."""

    def __init__(self) -> None:
        self._previous = None

    def before_train(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def after_train(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def rank_hooks(hooks: Sequence[HookBase]) -> list[HookBase]:
    """The hooks this rank runs: all of them on rank 0; elsewhere only those that change what is
    trained or when it stops (:class:`LRSchedule`, :class:`DivergenceCheck`, whose checkpoint
    writer writes on rank 0 only), and :class:`IgnoreCtrlC`."""
    if is_main():
        return list(hooks)
    return [h for h in hooks if isinstance(h, (DivergenceCheck, LRSchedule))] + [IgnoreCtrlC()]


def note_resumed_world_size(saved_world_size: int | None, path) -> None:
    """Say in one line (rank 0) when the checkpoint ``path``, saved by ``saved_world_size``
    processes (None: a checkpoint from before the record, taken as 1), is resumed by another
    number of processes."""
    saved = saved_world_size or 1
    if saved != world_size() and is_main():
        log.warning(
            "resuming %s, saved by %d process(es), with %d: each iteration still trains on the "
            "same global batch (finetune.images_per_batch), so training goes on as it would have",
            path,
            saved,
            world_size(),
        )
