"""Fine-tuning of a :class:`detect.models.DetectionModel` (docs/method.md §6).

Modes (``finetune.mode``):

* ``end_to_end``: conv + fc trained together, gradients through the SPP max pooling (Fast R-CNN
  style; what the demo uses to train the small backbone from scratch).
* ``fc``: conv layers frozen; for SPP-net each image's conv feature map (per flip and scale) is
  computed once under ``torch.no_grad`` and kept on disk under the run folder with a bounded RAM
  cache in front (``finetune.cache_features``, ``finetune.feature_cache_mb``:
  :mod:`detect.training.feature_cache`), so an epoch only costs pooling and the fc layers. For
  R-CNN the crops' conv runs without gradients every time.

Loss: softmax cross-entropy over K+1 classes + ``bbox_loss_weight`` x smooth-L1 (beta 1) on the
foreground windows' deltas of their own class, summed and divided by the number of windows
(Fast R-CNN). SGD with momentum and weight decay; lr multiplied by ``lr_gamma`` at each of
``lr_steps`` (:mod:`detect.training.schedule`).

The loop is a :class:`~detect.training.trainer.Trainer` running :class:`FinetuneStep`; the lr
schedule, the CSV log (with throughput), the progress bar, log lines with ETA, TensorBoard
scalars under ``<run folder>/tensorboard/``, checkpoints, Ctrl-C and divergence are its hooks
(:mod:`detect.training.hooks`).

Data: worker processes (``runtime.num_workers``) read, flip and resize each iteration's images
and sample its windows (:mod:`detect.training.batches`) while the network trains on the previous
one.

Determinism / resume: the images of iteration ``i`` are a function of (seed, i) (a fresh
permutation per epoch), and each image's flip, window sampling and dropout are drawn from
generators seeded from (seed, i, its position in the iteration), whatever the number of workers
or of torchrun processes (:mod:`detect.training.ddp`). Checkpoints store the model, the
optimizer, the lr scheduler, the iteration, the torch / numpy / python RNG states and the log, so
a resumed run ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from detect.config import Config
from detect.data.loader import load
from detect.distributed import rank, world_size
from detect.models.heads import HeadOutput
from detect.runtime import grad_scaler
from detect.scalars import TENSORBOARD_DIR
from detect.structures import DetectionDataset
from detect.training import ddp
from detect.training.batches import ImageWindows, IterationBatches
from detect.training.checkpoint import capture_rng_state, restore_rng_state, save_checkpoint
from detect.training.divergence import GoodCheckpointWriter
from detect.training.feature_cache import FOLDER_NAME, ConvMapCache, backbone_fingerprint
from detect.training.hooks import (
    CSVLog,
    CtrlC,
    DivergenceCheck,
    IterationCallback,
    IterationTimer,
    LRSchedule,
    PeriodicCheckpoint,
    StepOutcome,
    empty_sums,
    monitoring_hooks,
)
from detect.training.schedule import step_lr_scheduler
from detect.training.trainer import Trainer

# finetune.mode: the fc layers on frozen conv features, or the whole network through the SPP layer.
FINETUNE_MODES = ("fc", "end_to_end")


def detection_loss(
    out: HeadOutput,
    labels: Tensor,
    targets: Tensor,
    bbox_loss_weight: float,
    num_windows: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(total, cls_loss, bbox_loss)`` for windows with ``labels (R,)`` (0 = bg), ``targets (R, 4)``:
    each summed over the windows and divided by ``num_windows`` (default ``R``; under torchrun the
    windows of every rank: :mod:`detect.training.ddp`)."""
    count = max(labels.shape[0] if num_windows is None else num_windows, 1)
    cls_loss = F.cross_entropy(out.cls_logits, labels, reduction="sum") / count
    fg = torch.nonzero(labels > 0).flatten()
    deltas = out.bbox_deltas.reshape(labels.shape[0], -1, 4)[fg, labels[fg]]
    bbox_loss = F.smooth_l1_loss(deltas, targets[fg], beta=1.0, reduction="sum") / count
    return cls_loss + bbox_loss_weight * bbox_loss, cls_loss, bbox_loss


class _RegionForward:
    """The training forward pass for one mode: ``(image, short_side, prepared, windows) ->
    HeadOutput`` for an :class:`ImageWindows` ``image`` and its ``prepared (3, H', W')`` image
    at ``short_side``.

    Args:
        cache: the frozen conv maps (fc-mode SPP-net with ``finetune.cache_features``; None:
            computed every time).
    """

    def __init__(self, model, mode: str, cache: ConvMapCache | None) -> None:
        self.model = model
        self.mode = mode
        self.cache = cache

    def _frozen_features(self, image: ImageWindows, short_side: int, prepared: Tensor) -> Tensor:
        def compute() -> Tensor:
            with torch.no_grad():
                return self.model.features(prepared)

        if self.cache is None:
            return compute()
        return self.cache.get(image.digest, image.flip, short_side, compute)

    def __call__(
        self, image: ImageWindows, short_side: int, prepared: Tensor, windows: Tensor
    ) -> HeadOutput:
        """The head's outputs in float32 (the network runs in ``runtime.precision``)."""
        with self.model.autocast():
            out = self._forward(image, short_side, prepared, windows.to(self.model.device))
        return out.to(torch.float32)

    def _forward(
        self, image: ImageWindows, short_side: int, prepared: Tensor, windows: Tensor
    ) -> HeadOutput:
        model = self.model
        if self.mode == "end_to_end":
            return model(prepared, windows)
        if model.method == "rcnn":
            with torch.no_grad():
                pooled = model.pooler.pool_crops(model, prepared, windows)
            return model.head(pooled)
        return model.forward_features(self._frozen_features(image, short_side, prepared), windows)


def conv_map_cache(
    model, config: Config, run_dir: Path | None, read_only: bool = False
) -> ConvMapCache | None:
    """The cache of frozen conv maps under ``run_dir/features`` (fc-mode SPP-net with
    ``finetune.cache_features``; None otherwise); ``read_only``: a single pass over the data
    that reads the stored maps and neither stores nor keeps in RAM those it computes."""
    cfg = config.finetune
    if cfg.mode != "fc" or model.method != "spp" or not cfg.cache_features:
        return None
    device = next(model.parameters()).device
    folder = run_dir / FOLDER_NAME if run_dir is not None else None
    runtime = config.runtime
    fingerprint = backbone_fingerprint(model, f"{runtime.precision}|{runtime.channels_last}")
    budget = 0 if read_only else cfg.feature_cache_mb
    return ConvMapCache(folder, fingerprint, budget, device, read_only)


@dataclass
class FinetuneResult:
    """``final_loss``: mean loss of the last logged interval; ``rows``: the CSV log rows."""

    iterations: int
    final_loss: float
    rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _set_trainable(model, mode: str) -> list[torch.nn.Parameter]:
    model.train()
    if mode == "fc":
        model.backbone.eval()
        for parameter in model.backbone.parameters():
            parameter.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


class FinetuneStep:
    """One fine-tuning iteration, the same for SPP-net and R-CNN (only the region forward
    differs): the iteration's images, flips and sampled windows (:class:`IterationBatches`, read
    ahead by ``runtime.num_workers`` worker processes), the forward pass,
    :func:`detection_loss`, backward and one optimizer step.

    Args:
        model: the detection model being trained (its trainable parameters are ``optimizer``'s).
        proposals: image_id -> ``(R, 4)`` xyxy original pixels.
        cache: fc-mode SPP-net's frozen conv maps (:func:`conv_map_cache`), or None.
    """

    def __init__(
        self,
        model,
        dataset: DetectionDataset,
        proposals: dict[str, Tensor],
        config: Config,
        optimizer: torch.optim.Optimizer,
        cache: ConvMapCache | None = None,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.optimizer = optimizer
        # fp16: the loss scaled before backward, steps with inf/NaN gradients skipped.
        self.scaler = scaler or grad_scaler(model.device, "fp32")
        self.forward = _RegionForward(model, config.finetune.mode, cache)
        shard = (rank(), world_size())  # this rank's images of each iteration (all: one process)
        self.batches = IterationBatches(dataset, proposals, config, model.pooler, model.cfg, shard)
        self.loss = ddp.wrap(ddp.BatchLoss(model, self.forward, self._loss, config.seed))
        self._loaded: Iterator | None = None
        self._next = 0

    def _loss(self, out: HeadOutput, labels: Tensor, targets: Tensor, num_windows: float):
        weight = self.config.finetune.bbox_loss_weight
        device = self.model.device
        return detection_loss(out, labels.to(device), targets.to(device), weight, num_windows)

    def _inputs(self, iteration: int) -> list[ImageWindows]:
        """Iteration ``iteration``'s images, from the loader started at the first one asked."""
        if self._loaded is None or iteration != self._next:
            self.close()
            device = next(self.model.parameters()).device
            keys = range(iteration, max(iteration + 1, self.config.finetune.iterations))
            workers = self.config.runtime.num_workers
            self._loaded = load(self.batches, keys, workers, device.type == "cuda")
        loaded_iteration, images = next(self._loaded)
        assert loaded_iteration == iteration, (loaded_iteration, iteration)
        self._next = iteration + 1
        return images

    def close(self) -> None:
        """Stop the loader's worker processes (a later call starts them again)."""
        if self._loaded is not None:
            self._loaded.close()
            self._loaded = None

    def __call__(self, iteration: int) -> StepOutcome:
        """Train on 0-based ``iteration``'s windows at the optimizer's current lr."""
        lr = self.optimizer.param_groups[0]["lr"]
        loss, parts = self.loss(self._inputs(iteration), iteration)
        if loss is None:  # no window sampled on any rank
            return StepOutcome(lr, None)
        cls_loss, bbox_loss = parts
        total = cls_loss + self.config.finetune.bbox_loss_weight * bbox_loss
        losses = {"loss": total, "cls_loss": cls_loss, "bbox_loss": bbox_loss}
        self.optimizer.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return StepOutcome(lr, losses)


def finetune(
    model,
    dataset: DetectionDataset,
    proposals: dict[str, Tensor],
    config: Config,
    checkpoint_path: Path,
    log_path: Path,
    resume_state: dict | None = None,
    on_iteration: Callable[[int], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` in place for ``config.finetune.iterations`` iterations: a
    :class:`~detect.training.trainer.Trainer` running :class:`FinetuneStep` with the hooks of
    :mod:`detect.training.hooks`.

    Args:
        model: a DetectionModel whose classes are ``dataset.class_names``.
        proposals: image_id -> ``(R, 4)`` xyxy original pixels.
        checkpoint_path: written (atomically) at iteration 0, every ``checkpoint_every``
            iterations (once the next loss shows those weights are good:
            :class:`~detect.training.divergence.GoodCheckpointWriter`), at the end, and on Ctrl-C.
        log_path: the CSV log, a row appended every ``log_every`` iterations.
        resume_state: the payload of a checkpoint of this run (its weights already loaded into
            ``model``): training continues from its iteration with its optimizer, lr scheduler,
            RNG and log state.
        on_iteration: called with the number of completed iterations after each one.

    Raises:
        DetectError: when the loss explodes or becomes NaN or infinite, or a weight does
            (:mod:`detect.training.divergence`); the last good checkpoint is kept and named.
        Interrupted: after saving a checkpoint, when the user pressed Ctrl-C.
    """
    cfg = config.finetune
    parameters = _set_trainable(model, cfg.mode)
    optimizer = torch.optim.SGD(
        parameters, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    scheduler = step_lr_scheduler(optimizer, cfg.lr_steps, cfg.lr_gamma)
    scaler = grad_scaler(model.device, config.runtime.precision)
    rows, sums, first_loss, start = [], empty_sums(), None, 0
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        if scaler.is_enabled() and resume_state.get("grad_scaler"):
            scaler.load_state_dict(resume_state["grad_scaler"])
        scheduler.load_state_dict(resume_state["lr_scheduler"])
        restore_rng_state(resume_state["rng"])
        saved_log = resume_state["log"]
        rows, sums = list(saved_log["rows"]), dict(saved_log["sums"])
        first_loss = saved_log.get("first_loss")
        start = int(resume_state["iteration"])
        ddp.note_resumed_world_size(resume_state.get("world_size"), checkpoint_path)

    writer = GoodCheckpointWriter(
        lambda extras: save_checkpoint(checkpoint_path, model, dataset.class_names, config, extras),
        checkpoint_path,
        start,
    )
    divergence = DivergenceCheck(writer, first_loss)
    timer = IterationTimer(cfg.images_per_batch)
    csv_log = CSVLog(log_path, cfg.log_every, rows, sums, timer)

    def snapshot(completed: int) -> dict:
        """A checkpoint's extras after ``completed`` iterations: copies, as training goes on."""
        return {
            "stage": "finetune",
            "iteration": completed,
            "model": {key: value.detach().clone() for key, value in model.state_dict().items()},
            "optimizer": copy.deepcopy(optimizer.state_dict()),
            "lr_scheduler": copy.deepcopy(scheduler.state_dict()),
            "rng": capture_rng_state(),
            "world_size": world_size(),
            **({"grad_scaler": scaler.state_dict()} if scaler.is_enabled() else {}),
            "log": {
                "rows": list(csv_log.rows),
                "sums": dict(csv_log.sums),
                "first_loss": divergence.first_loss,
            },
        }

    run_dir = checkpoint_path.parent
    hooks = [
        timer,
        divergence,
        LRSchedule(scheduler),
        csv_log,
        *monitoring_hooks(csv_log, timer, "fine-tune", run_dir / TENSORBOARD_DIR),
        *([IterationCallback(on_iteration)] if on_iteration is not None else []),
        CtrlC(writer, snapshot),
        PeriodicCheckpoint(writer, snapshot, cfg.checkpoint_every, resume_state is None),
    ]
    cache = conv_map_cache(model, config, run_dir)
    step = FinetuneStep(model, dataset, proposals, config, optimizer, cache, scaler)
    started = time.perf_counter()
    try:
        Trainer(step, ddp.rank_hooks(hooks), start, cfg.iterations).train()
    finally:
        step.close()
    final_loss = csv_log.rows[-1]["loss"] if csv_log.rows else math.nan
    return FinetuneResult(cfg.iterations, final_loss, csv_log.rows, time.perf_counter() - started)
