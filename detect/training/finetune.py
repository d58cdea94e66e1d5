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
``lr_steps``.

Determinism / resume: the images of iteration ``i`` are a function of (seed, i) (a fresh
permutation per epoch), and the flips and window sampling of iteration ``i`` use a generator
seeded from (seed, i). Checkpoints store the model, the optimizer, the iteration, the torch /
numpy / python RNG states (dropout) and the log, so a resumed run ends with exactly the weights
of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from detect.config import Config, FinetuneConfig
from detect.data.images import read_image
from detect.errors import Interrupted
from detect.models.heads import HeadOutput
from detect.ops.boxes import scale_boxes
from detect.structures import DetectionDataset
from detect.training.checkpoint import capture_rng_state, restore_rng_state, save_checkpoint
from detect.training.divergence import GoodCheckpointWriter, divergence_reason
from detect.training.sampling import (
    SampledRois,
    derived_generator,
    draw_scales,
    hflip_example,
    sample_rois,
)
from detect.training.trainlog import write_log_csv

log = logging.getLogger(__name__)

MODES = ("fc", "end_to_end")
_ORDER_KEY, _ITERATION_KEY = 1, 2  # separate random streams derived from the seed


def learning_rate(iteration: int, cfg: FinetuneConfig) -> float:
    """lr of 0-based ``iteration``: ``lr * lr_gamma ** (number of lr_steps <= iteration)``."""
    return cfg.lr * cfg.lr_gamma ** sum(iteration >= step for step in cfg.lr_steps)


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


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[dict]:
    """Turn the first Ctrl-C into a request honoured between iterations (a second one aborts)."""
    state = {"requested": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        if state["requested"]:
            raise KeyboardInterrupt
        state["requested"] = True
        log.warning("interrupted: saving a checkpoint after this iteration (Ctrl-C again aborts)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


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
    """Fine-tune ``model`` in place for ``config.finetune.iterations`` iterations.

    Args:
        model: a Detector whose classes are ``dataset.class_names``.
        proposals: image_id -> ``(R, 4)`` xyxy original pixels.
        checkpoint_path: written (atomically) at iteration 0, every ``checkpoint_every``
            iterations (once the next loss shows those weights are good:
            :class:`~detect.training.divergence.GoodCheckpointWriter`), at the end, and on Ctrl-C.
        log_path: the CSV log, rewritten every ``log_every`` iterations.
        resume_state: the payload of a checkpoint of this run (its weights already loaded into
            ``model``): training continues from its iteration with its optimizer/RNG/log state.
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
    forward = _RegionForward(model, cfg.mode, cfg.cache_features)
    rows: list[dict] = []
    sums = {"loss": 0.0, "cls_loss": 0.0, "bbox_loss": 0.0, "count": 0}
    start = 0
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        restore_rng_state(resume_state["rng"])
        rows, sums = list(resume_state["log"]["rows"]), dict(resume_state["log"]["sums"])
        start = int(resume_state["iteration"])
    # The run's first loss, the scale for an exploding one (detect.training.divergence).
    first_loss = (resume_state or {}).get("log", {}).get("first_loss")

    def state(completed: int) -> dict:
        """A checkpoint's extras after ``completed`` iterations: copies, as training goes on."""
        return {
            "stage": "finetune",
            "iteration": completed,
            "model": {key: value.detach().clone() for key, value in model.state_dict().items()},
            "optimizer": copy.deepcopy(optimizer.state_dict()),
            "rng": capture_rng_state(),
            "log": {"rows": list(rows), "sums": dict(sums), "first_loss": first_loss},
        }

    checkpoints = GoodCheckpointWriter(
        lambda extras: save_checkpoint(checkpoint_path, model, dataset.class_names, config, extras),
        checkpoint_path,
        start,
    )
    if resume_state is None:
        checkpoints.write(state(0))
        write_log_csv(log_path, rows)  # the header, so the file exists even for 0 iterations
    rois_per_image = max(1, cfg.rois_per_image_batch // cfg.images_per_batch)
    started = time.perf_counter()
    bar = tqdm(range(start, cfg.iterations), initial=start, total=cfg.iterations, desc="fine-tune")
    with _deferred_interrupt() as interrupt, bar:
        for iteration in bar:
            lr = learning_rate(iteration, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            generator = derived_generator(config.seed, _ITERATION_KEY, iteration)
            outputs, labels, targets = [], [], []
            for index in image_order(config.seed, iteration, cfg.images_per_batch, len(dataset)):
                ann = dataset[index]
                keep = ~ann.difficult
                image = read_image(ann.path, config.data.max_image_pixels)
                boxes, gt_boxes = proposals[ann.image_id].reshape(-1, 4), ann.boxes[keep]
                flip = cfg.flip and bool(torch.rand(1, generator=generator) < 0.5)
                if flip:
                    image, boxes, gt_boxes = hflip_example(image, boxes, gt_boxes)
                tensor, scale = model.prepare(image)
                rois = sample_rois(
                    scale_boxes(boxes, scale),
                    scale_boxes(gt_boxes, scale),
                    ann.labels[keep],
                    rois_per_image,
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
                    outputs.append(forward((ann.image_id, flip, short_side), image_k, windows))
                    labels.append(rois.labels[index])
                    targets.append(rois.targets[index])
            if outputs:
                out = HeadOutput(*(torch.cat(parts) for parts in zip(*outputs, strict=True)))
                loss, cls_loss, bbox_loss = detection_loss(
                    out, torch.cat(labels), torch.cat(targets), cfg.bbox_loss_weight
                )
                reason = divergence_reason(loss.item(), first_loss)
                if reason:
                    raise checkpoints.diverged(iteration + 1, f"{reason} (lr {lr:g})")
                first_loss = loss.item() if first_loss is None else first_loss
                checkpoints.vouch()  # a held checkpoint's weights just gave this good loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                sums["loss"] += loss.item()
                sums["cls_loss"] += cls_loss.item()
                sums["bbox_loss"] += bbox_loss.item()
                sums["count"] += 1
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2g}", refresh=False)
            completed = iteration + 1
            if completed % cfg.log_every == 0 or completed == cfg.iterations:
                count = max(sums["count"], 1)
                rows.append(
                    {
                        "iteration": completed,
                        "loss": sums["loss"] / count,
                        "cls_loss": sums["cls_loss"] / count,
                        "bbox_loss": sums["bbox_loss"] / count,
                        "lr": lr,
                    }
                )
                sums = {"loss": 0.0, "cls_loss": 0.0, "bbox_loss": 0.0, "count": 0}
                write_log_csv(log_path, rows)
            if on_iteration is not None:
                on_iteration(completed)
            if interrupt["requested"]:
                checkpoints.write(state(completed))
                log.warning("checkpoint saved at iteration %d: %s", completed, checkpoint_path)
                raise Interrupted(f"checkpoint {checkpoint_path} saved at iteration {completed}")
            if completed == cfg.iterations:
                checkpoints.write(state(completed))
            elif completed % cfg.checkpoint_every == 0:
                checkpoints.propose(state(completed))  # written once the next loss vouches for it
    if start >= cfg.iterations and rows:
        write_log_csv(log_path, rows)
    final_loss = rows[-1]["loss"] if rows else math.nan
    return FinetuneResult(cfg.iterations, final_loss, rows, time.perf_counter() - started)
