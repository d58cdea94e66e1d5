"""Fine-tuning as several processes (``torchrun``): DistributedDataParallel, with the result of one.

Each iteration's global batch is the images of :func:`~detect.training.batches.image_order`
``(seed, i)``; rank ``r`` of ``W`` trains on those at positions ``r, r + W, ...``
(:class:`~detect.training.batches.IterationBatches` ``shard``). What an image contributes depends
only on ``(seed, i, position)``: its flip, windows and scale draws come from a generator seeded by
them, and so does its dropout (:func:`image_dropout_rng`). The loss of one process is the sum over the
batch's windows divided by their number; a rank's loss is the sum over its own windows divided by
the number of windows of all ranks, times ``W`` (:class:`BatchLoss`), so that DDP's averaging of
the gradients over the ranks gives exactly the single-process gradient of the same global batch,
and after ``K`` iterations the weights are those of one process, to float rounding. The logged
losses are summed over the ranks first, so every rank sees (and judges divergence by) the loss of
the whole batch.

Batch-norm layers (the ``tiny`` backbone) normalise each pass by its own statistics, so their
gradients follow the same rule; their running statistics are replayed in position order from
every rank's passes (:class:`RunningStats`), so they too are those of one process.

Rank 0 alone logs, draws the progress bar and writes checkpoints (:func:`rank_hooks`); the other
ranks keep only what changes training (the lr schedule, the divergence stop) and leave Ctrl-C to
rank 0, whose checkpoint is written at an iteration every rank completed. Around fine-tuning,
missing proposals are computed in shards (:func:`shared_proposals`) and the region features of
the SVMs and the ridge regressor are extracted in shards and gathered on rank 0
(:func:`sharded_region_features`). One process: no DDP, no collective, the same code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from detect.config import ProposalConfig
from detect.distributed import (
    all_gather_object,
    all_reduce_sum,
    barrier,
    gather_to_main,
    is_distributed,
    is_main,
    rank,
    this_shard,
    world_size,
)
from detect.models.heads import HeadOutput
from detect.structures import DetectionDataset
from detect.training.batches import ImageWindows
from detect.training.hooks import DivergenceCheck, LRSchedule
from detect.training.sampling import derived_generator
from detect.training.trainer import HookBase

log = logging.getLogger(__name__)

DROPOUT_KEY = 3  # a random stream of its own, derived from the seed (batches uses 1 and 2)


@contextlib.contextmanager
def image_dropout_rng(
    seed: int, iteration: int, position: int, device: torch.device
) -> Iterator[None]:
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


class RunningStats:
    """Batch-norm running statistics as one process updates them, under torchrun.

    In training a batch-norm layer normalises each forward pass (one image here) by that pass's
    own statistics, so the ranks' gradients add up to one process's; but each rank would update
    its running mean / variance with its own images only. This records every training pass's
    batch mean and unbiased variance with the image's position (:meth:`at`), and at the end of
    the iteration (:meth:`iteration`) every rank restores the running statistics it started from
    and replays the updates of all ranks' passes in the order of the positions, as one process
    runs them. Nothing is recorded for one process (or a model without batch norm).
    """

    def __init__(self, model: nn.Module) -> None:
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.norms = [m for m in norms if m.track_running_stats] if is_distributed() else []
        self.position = 0
        self.records: list[tuple] = []
        for index, norm in enumerate(self.norms):
            norm.register_forward_pre_hook(functools.partial(self._record, index))

    def _record(self, index: int, module: nn.Module, inputs: tuple) -> None:
        if not module.training:
            return
        x = inputs[0].detach().float()
        dims = [0, *range(2, x.dim())]  # all but the channels
        mean, var = x.mean(dims).cpu(), x.var(dims, unbiased=True).cpu()
        self.records.append((self.position, len(self.records), index, mean, var))

    def at(self, position: int) -> None:
        """The passes that follow are of the image at ``position`` of the iteration's order."""
        self.position = position

    @contextlib.contextmanager
    def iteration(self) -> Iterator[None]:
        """Around one iteration's forward passes: afterwards, the running statistics are those
        of one process running every rank's passes in position order."""
        start = [
            (n.running_mean.clone(), n.running_var.clone(), n.num_batches_tracked.clone())
            for n in self.norms
        ]
        self.records = []
        yield
        if not self.norms:
            return
        everyone = [record for part in all_gather_object(self.records) for record in part]
        # New tensors, not in-place updates: autograd keeps the ones this iteration's passes used.
        replayed = [[mean.clone(), var.clone(), tracked.clone()] for mean, var, tracked in start]
        with torch.no_grad():
            for _position, _order, index, mean, var in sorted(everyone, key=lambda r: r[:2]):
                state = replayed[index]
                state[2] += 1
                momentum = self.norms[index].momentum
                factor = momentum if momentum is not None else 1.0 / float(state[2])
                state[0] = state[0] * (1 - factor) + mean.to(state[0].device) * factor
                state[1] = state[1] * (1 - factor) + var.to(state[1].device) * factor
        for norm, (mean, var, tracked) in zip(self.norms, replayed, strict=True):
            norm.running_mean, norm.running_var, norm.num_batches_tracked = mean, var, tracked


class BatchLoss(nn.Module):
    """``images -> (loss to backpropagate, [cls_loss, bbox_loss] of the global batch)`` for one
    rank's :class:`ImageWindows` of one iteration; ``(None, None)`` when no rank sampled a window.

    Args:
        model: the detection model (its parameters are this module's: DDP wraps this module).
        forward: ``(image, short_side, prepared, windows) -> HeadOutput``, the training forward
            pass of the fine-tuning mode.
        loss: ``(out, labels, targets, num_windows) -> (total, cls, bbox)``, each a sum over the
            given windows divided by ``num_windows``.
        seed: the run's seed (dropout per image: :func:`image_dropout_rng`).
    """

    def __init__(self, model: nn.Module, forward, loss, seed: int) -> None:
        super().__init__()
        self.model = model
        self.region_forward = forward
        self.loss = loss
        self.seed = seed
        self.running_stats = RunningStats(model)

    def forward(self, images: Sequence[ImageWindows], iteration: int):
        model, stats = self.model, self.running_stats
        outputs, labels, targets = [], [], []
        with stats.iteration():
            for image in images:
                stats.at(image.position)
                with image_dropout_rng(self.seed, iteration, image.position, model.device):
                    for group in image.groups:
                        prepared = model.normalise(group.image.numpy())
                        forward = self.region_forward(
                            image, group.short_side, prepared, group.windows
                        )
                        outputs.append(forward)
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

    cuda = module.model.device.type == "cuda"
    device_ids = [torch.cuda.current_device()] if cuda else None  # this rank's GPU
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


def shared_proposals(dataset: DetectionDataset, cfg: ProposalConfig, max_image_pixels: int):
    """:func:`~detect.proposals.load_or_compute_proposals` for every image of ``dataset``, the
    missing ones computed by the ranks in shards (each rank its :func:`this_shard` of the images,
    into the shared ``cfg.cache_dir``) before every rank loads them all from the cache. Also the
    point every rank passes before rank 0 writes into the run folder."""
    from detect.proposals import load_or_compute_proposals

    if is_distributed() and cfg.cache_dir and not cfg.import_file:
        shard = dataclasses.replace(dataset, annotations=this_shard(dataset.annotations))
        load_or_compute_proposals(shard, cfg, max_image_pixels=max_image_pixels)
    barrier()
    return load_or_compute_proposals(dataset, cfg, max_image_pixels=max_image_pixels)


def sharded_region_features(extract, dataset: DetectionDataset, folder: Path):
    """Region features of every image of ``dataset`` (:class:`RegionFeatureShards`, in the
    data set's order) on rank 0, each rank extracting its :func:`this_shard` of the images into
    ``folder/rank<r>`` (a folder every rank can read: the run folder); None on the other ranks.

    Args:
        extract: ``(dataset, folder) -> RegionFeatureShards`` of those images, one shard each.
    """
    from detect.training.features import RegionFeatureShards

    if not is_distributed():
        return extract(dataset, folder)
    mine = dataclasses.replace(dataset, annotations=this_shard(dataset.annotations))
    shards = extract(mine, folder / f"rank{rank()}").shards
    gathered = gather_to_main(shards)
    if gathered is None:
        return None
    merged = RegionFeatureShards(folder)
    count = len(gathered)  # image i is image i // count of rank i % count (round robin)
    merged.shards = [gathered[i % count][i // count] for i in range(len(dataset))]
    return merged
