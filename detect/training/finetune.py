"""Fine-tuning of a :class:`detect.models.DetectionModel` (docs/method.md §6).

Modes (``finetune.mode``):

* ``end_to_end``: conv + fc trained together, gradients through the SPP max pooling (Fast R-CNN
  style; what the demo uses to train the small backbone from scratch).
* ``fc``: conv layers frozen; for SPP-net each image's conv feature map (per flip) is computed once
  under ``torch.no_grad`` and kept in memory (``finetune.cache_features``), so an epoch only costs
  pooling and the fc layers. For R-CNN the crops' conv runs without gradients every time.

Loss: softmax cross-entropy over K+1 classes + ``bbox_loss_weight`` x smooth-L1 (beta 1) on the
foreground windows' deltas of their own class, summed and divided by the number of windows
(Fast R-CNN). SGD with momentum and weight decay; lr multiplied by ``lr_gamma`` at each of
``lr_steps`` (:mod:`detect.training.schedule`).

The loop is a :class:`~detect.training.trainer.Trainer` running :class:`FinetuneStep`; the lr
schedule, the CSV log, checkpoints, Ctrl-C and divergence are its hooks
(:mod:`detect.training.hooks`).

Determinism / resume: the images of iteration ``i`` are a function of (seed, i) (a fresh
permutation per epoch), and the flips and window sampling of iteration ``i`` use a generator
seeded from (seed, i). Checkpoints store the model, the optimizer, the lr scheduler, the
iteration, the torch / numpy / python RNG states (dropout) and the log, so a resumed run ends
with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from detect.config import Config
from detect.data.images import read_image
from detect.models.heads import HeadOutput
from detect.ops.boxes import scale_boxes
from detect.structures import DetectionDataset
from detect.training.checkpoint import capture_rng_state, restore_rng_state, save_checkpoint
from detect.training.divergence import GoodCheckpointWriter
from detect.training.hooks import (
    CSVLog,
    CtrlC,
    DivergenceCheck,
    IterationCallback,
    LRSchedule,
    PeriodicCheckpoint,
    ProgressBar,
    StepOutcome,
    empty_sums,
)
from detect.training.sampling import (
    SampledRois,
    derived_generator,
    draw_scales,
    hflip_example,
    sample_rois,
)
from detect.training.schedule import step_lr_scheduler
from detect.training.trainer import Trainer

# finetune.mode: the fc layers on frozen conv features, or the whole network through the SPP layer.
FINETUNE_MODES = ("fc", "end_to_end")
_ORDER_KEY, _ITERATION_KEY = 1, 2  # separate random streams derived from the seed


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, num_images: int) -> tuple[int, ...]:
    generator = derived_generator(seed, _ORDER_KEY, epoch)
    return tuple(torch.randperm(num_images, generator=generator).tolist())


def image_order(seed: int, iteration: int, images_per_batch: int, num_images: int) -> list[int]:
    """Dataset indices used by 0-based ``iteration``: consecutive slots of per-epoch permutations."""
    indices = []
    for slot in range(iteration * images_per_batch, (iteration + 1) * images_per_batch):
        epoch, offset = divmod(slot, num_images)
        indices.append(_epoch_permutation(seed, epoch, num_images)[offset])
    return indices


def detection_loss(
    out: HeadOutput, labels: Tensor, targets: Tensor, bbox_loss_weight: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``(total, cls_loss, bbox_loss)`` for windows with ``labels (R,)`` (0 = bg), ``targets (R, 4)``."""
    cls_loss = F.cross_entropy(out.cls_logits, labels)
    fg = torch.nonzero(labels > 0).flatten()
    deltas = out.bbox_deltas.reshape(labels.shape[0], -1, 4)[fg, labels[fg]]
    bbox_loss = F.smooth_l1_loss(deltas, targets[fg], beta=1.0, reduction="sum")
    bbox_loss = bbox_loss / max(labels.shape[0], 1)
    return cls_loss + bbox_loss_weight * bbox_loss, cls_loss, bbox_loss


class _RegionForward:
    """The training forward pass for one mode: ``(key, image, boxes) -> HeadOutput``."""

    def __init__(self, model, mode: str, cache_features: bool) -> None:
        self.model = model
        self.mode = mode
        self.cache: dict[Any, Tensor] | None = {} if cache_features else None

    def _frozen_features(self, key: Any, image: Tensor) -> Tensor:
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        with torch.no_grad():
            feature_map = self.model.features(image)
        if self.cache is not None:
            self.cache[key] = feature_map
        return feature_map

    def __call__(self, key: Any, image: Tensor, boxes: Tensor) -> HeadOutput:
        model = self.model
        if self.mode == "end_to_end":
            return model(image, boxes)
        if model.method == "rcnn":
            with torch.no_grad():
                pooled = model.pooler.pool_crops(model, image, boxes)
            return model.head(pooled)
        return model.forward_features(self._frozen_features(key, image), boxes)


def _windows_by_scale(
    model, image, prepared: tuple[Tensor, float], rois: SampledRois, per: str, generator
) -> Iterator[tuple[int, Tensor, Tensor, Tensor]]:
    """An image's sampled windows grouped by the scale they are pooled at in this iteration:
    ``(short_side, prepared image (3, H', W'), windows (n, 4) xyxy in its pixels, index (n,)
    into rois)``.

    ``prepared`` is ``model.prepare(image)`` (``model.cfg.scales[0]``), the scale of
    ``rois.boxes``. SPP-net with several ``model.scales``: each window's scale is drawn by
    :func:`draw_scales` (``finetune.random_scale``: per window, as the released code, or per
    image); test-time scale choice is for the SVM / ridge features, not fine-tuning. R-CNN warps
    crops from the original image: one group.
    """
    scales = model.cfg.scales if model.method == "spp" else model.cfg.scales[:1]
    draws = draw_scales(rois.boxes.shape[0], len(scales), per, generator)
    base_scale = prepared[1]
    for k, short_side in enumerate(scales):
        index = torch.nonzero(draws == k).flatten()
        if index.numel() == 0:
            continue
        tensor, scale = prepared if k == 0 else model.prepare(image, short_side)
        yield short_side, tensor, rois.boxes[index] * (scale / base_scale), index


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
    differs): the iteration's images (:func:`image_order`), flips and sampled windows, the
    forward pass, :func:`detection_loss`, backward and one optimizer step.

    Args:
        model: the detection model being trained (its trainable parameters are ``optimizer``'s).
        proposals: image_id -> ``(R, 4)`` xyxy original pixels.
    """

    def __init__(
        self,
        model,
        dataset: DetectionDataset,
        proposals: dict[str, Tensor],
        config: Config,
        optimizer: torch.optim.Optimizer,
    ) -> None:
        self.model = model
        self.dataset = dataset
        self.proposals = proposals
        self.config = config
        self.optimizer = optimizer
        self.forward = _RegionForward(model, config.finetune.mode, config.finetune.cache_features)
        cfg = config.finetune
        self.rois_per_image = max(1, cfg.rois_per_image_batch // cfg.images_per_batch)

    def __call__(self, iteration: int) -> StepOutcome:
        """Train on 0-based ``iteration``'s windows at the optimizer's current lr."""
        cfg, model = self.config.finetune, self.model
        lr = self.optimizer.param_groups[0]["lr"]
        generator = derived_generator(self.config.seed, _ITERATION_KEY, iteration)
        outputs, labels, targets = [], [], []
        for index in image_order(
            self.config.seed, iteration, cfg.images_per_batch, len(self.dataset)
        ):
            ann = self.dataset[index]
            keep = ~ann.difficult
            image = read_image(ann.path, self.config.data.max_image_pixels)
            boxes, gt_boxes = self.proposals[ann.image_id].reshape(-1, 4), ann.boxes[keep]
            flip = cfg.flip and bool(torch.rand(1, generator=generator) < 0.5)
            if flip:
                image, boxes, gt_boxes = hflip_example(image, boxes, gt_boxes)
            tensor, scale = model.prepare(image)
            rois = sample_rois(
                scale_boxes(boxes, scale),
                scale_boxes(gt_boxes, scale),
                ann.labels[keep],
                self.rois_per_image,
                generator,
                cfg.fg_fraction,
                cfg.fg_iou,
                cfg.bg_iou_low,
                cfg.bg_iou_high,
            )
            if rois.boxes.shape[0] == 0:
                continue
            for short_side, image_k, windows, index in _windows_by_scale(
                model, image, (tensor, scale), rois, cfg.random_scale, generator
            ):
                outputs.append(self.forward((ann.image_id, flip, short_side), image_k, windows))
                labels.append(rois.labels[index])
                targets.append(rois.targets[index])
        if not outputs:
            return StepOutcome(lr, None)
        out = HeadOutput(*(torch.cat(parts) for parts in zip(*outputs, strict=True)))
        loss, cls_loss, bbox_loss = detection_loss(
            out, torch.cat(labels), torch.cat(targets), cfg.bbox_loss_weight
        )
        losses = {"loss": loss.item(), "cls_loss": cls_loss.item(), "bbox_loss": bbox_loss.item()}
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
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
    rows, sums, first_loss, start = [], empty_sums(), None, 0
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["lr_scheduler"])
        restore_rng_state(resume_state["rng"])
        saved_log = resume_state["log"]
        rows, sums = list(saved_log["rows"]), dict(saved_log["sums"])
        first_loss = saved_log.get("first_loss")
        start = int(resume_state["iteration"])

    writer = GoodCheckpointWriter(
        lambda extras: save_checkpoint(checkpoint_path, model, dataset.class_names, config, extras),
        checkpoint_path,
        start,
    )
    divergence = DivergenceCheck(writer, first_loss)
    csv_log = CSVLog(log_path, cfg.log_every, rows, sums)

    def snapshot(completed: int) -> dict:
        """A checkpoint's extras after ``completed`` iterations: copies, as training goes on."""
        return {
            "stage": "finetune",
            "iteration": completed,
            "model": {key: value.detach().clone() for key, value in model.state_dict().items()},
            "optimizer": copy.deepcopy(optimizer.state_dict()),
            "lr_scheduler": copy.deepcopy(scheduler.state_dict()),
            "rng": capture_rng_state(),
            "log": {
                "rows": list(csv_log.rows),
                "sums": dict(csv_log.sums),
                "first_loss": divergence.first_loss,
            },
        }

    hooks = [
        divergence,
        LRSchedule(scheduler),
        csv_log,
        ProgressBar("fine-tune"),
        *([IterationCallback(on_iteration)] if on_iteration is not None else []),
        CtrlC(writer, snapshot),
        PeriodicCheckpoint(writer, snapshot, cfg.checkpoint_every, resume_state is None),
    ]
    step = FinetuneStep(model, dataset, proposals, config, optimizer)
    started = time.perf_counter()
    Trainer(step, hooks, start, cfg.iterations).train()
    final_loss = csv_log.rows[-1]["loss"] if csv_log.rows else math.nan
    return FinetuneResult(cfg.iterations, final_loss, csv_log.rows, time.perf_counter() - started)
