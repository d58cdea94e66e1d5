"""Training the image classifier (``detect classify train``), one epoch at a time, resumable.

Every epoch sees each training sample once, in an order drawn from ``(seed, epoch)``, as a
random square region (``classify.crop_fraction`` of the shorter side, flipped at random) resized
to the batch's input size (:mod:`detect.classify.schedule`). Cross-entropy, SGD with momentum and
weight decay, the lr multiplied by ``classify.lr_gamma`` after each epoch in ``classify.lr_steps``.

A checkpoint (``OUT/checkpoint.pt``, written atomically after every epoch) holds::

    format       "detect-classifier-v1"
    version      detect.__version__
    class_names  [K names]
    config       the merged config (detect.config.config_to_dict)
    model        ImageClassifier state dict (its ``backbone.features.*`` entries are what
                 ``model.weights: PATH`` loads into a detector's backbone)
    epoch        epochs completed; optimizer: its state dict; log: the rows of train_log.csv

``--resume`` continues after the last completed epoch and gives the same weights as an
uninterrupted run (the sample order, regions, sizes and dropout are drawn from ``(seed, epoch)``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from detect import __version__
from detect.classify.data import Sample, read_image_folder, training_view
from detect.classify.model import ImageClassifier, build_classifier
from detect.classify.schedule import batch_sizes
from detect.config import Config, config_to_dict, save_config
from detect.config_resume import resume_differences
from detect.errors import DetectError, Interrupted
from detect.files import atomic_torch_save, atomic_write_text, load_torch_file
from detect.models.inputs import normalised_tensor
from detect.runtime import autocast, grad_scaler, resolve_device
from detect.training.trainlog import csv_text

log = logging.getLogger(__name__)

CLASSIFIER_FORMAT = "detect-classifier-v1"
EPOCH_LOG_FIELDS = ("epoch", "sizes", "loss", "train_error", "lr", "seconds")


CACHE_BYTES = 512 * 2**20  # decoded training images kept in memory (per process), at most


class _Regions(Dataset):
    """Item ``(index, size, epoch)`` -> ``(3, size, size)`` tensor of a random training region of
    sample ``index`` and its label; the region and flip are drawn from ``(seed, epoch, index)``.
    Decoded images are kept in memory up to :data:`CACHE_BYTES` (a small set is decoded once)."""

    def __init__(self, samples: list[Sample], cfg: Config, mean, std) -> None:
        self.samples, self.cfg, self.mean, self.std = samples, cfg, mean, std
        self.cache: dict[int, np.ndarray] = {}
        self.cached_bytes = 0

    def _image(self, index: int) -> np.ndarray:
        if index in self.cache:
            return self.cache[index]
        image = self.samples[index].load(self.cfg.data.max_image_pixels)
        if self.cached_bytes + image.nbytes <= CACHE_BYTES:
            self.cache[index] = image
            self.cached_bytes += image.nbytes
        return image

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        index, size, epoch = item
        sample = self.samples[index]
        rng = np.random.default_rng([self.cfg.seed, epoch, index, 2])
        image = self._image(index)
        c = self.cfg.classify
        view = training_view(image, size, c.crop_fraction, c.flip, rng)
        return normalised_tensor(view, self.mean, self.std), sample.label


def epoch_batches(cfg: Config, num_samples: int, epoch: int) -> list[list[tuple[int, int, int]]]:
    """The batches of ``epoch``: lists of ``(sample index, input size, epoch)``, the samples in
    the epoch's order, each batch at its size (:func:`detect.classify.schedule.batch_sizes`); a
    last partial batch is kept."""
    order = np.random.default_rng([cfg.seed, epoch, 0]).permutation(num_samples)
    size = cfg.classify.batch_size
    chunks = [order[i : i + size] for i in range(0, num_samples, size)]
    sizes = batch_sizes(cfg.classify, epoch, len(chunks), cfg.seed)
    return [[(int(i), s, epoch) for i in chunk] for chunk, s in zip(chunks, sizes, strict=True)]


@dataclass
class ClassifierRun:
    """What :func:`train_classifier` wrote: the checkpoint, the log and the class names."""

    checkpoint: Path
    log_csv: Path
    class_names: list[str]
    rows: list[dict]


def _start(cfg: Config, out: Path, resume: bool, overwrite: bool) -> dict | None:
    """The checkpoint to resume from (None: a fresh run), refusing to overwrite a run silently."""
    path = out / "checkpoint.pt"
    if resume:
        if not path.is_file():
            raise DetectError(f"--resume: no checkpoint {path} to continue")
        payload = read_classifier_checkpoint(path)
        # runtime: the device may change; the same rules as the detector's --resume otherwise.
        differences = resume_differences(payload["config"], cfg, ("runtime",))
        if differences:
            raise DetectError(
                f"--resume: {path} was trained with another config ({'; '.join(differences)}); "
                f"use the saved {out / 'config.yaml'} (--config) or --overwrite"
            )
        return payload
    if path.exists() and not overwrite:
        raise DetectError(f"{out} already holds a run ({path}); use --resume or --overwrite")
    return None


def read_classifier_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict (see the module docstring), checked; one-line errors name the file."""
    payload = load_torch_file(path, "classifier checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != CLASSIFIER_FORMAT:
        raise DetectError(f"classifier checkpoint {path}: not a {CLASSIFIER_FORMAT} file")
    for key in ("class_names", "config", "model", "epoch", "log"):
        if key not in payload:
            raise DetectError(f"classifier checkpoint {path}: missing {key!r}")
    return payload


def train_classifier(
    cfg: Config,
    out_dir: str | Path,
    samples: list[Sample] | None = None,
    class_names: list[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ClassifierRun:
    """Train the classifier of ``cfg`` into ``out_dir`` (checkpoint, ``config.yaml``,
    ``train_log.csv``).

    Args:
        samples, class_names: the training set; default: the ImageFolder
            ``classify.root/classify.train_split``.
        resume: continue the run in ``out_dir``; overwrite: replace it.
    """
    out = Path(out_dir)
    if samples is None:
        class_names, samples = read_image_folder(cfg.classify.root, cfg.classify.train_split)
    assert class_names is not None
    device = resolve_device(cfg.runtime.device)
    precision = cfg.runtime.precision
    payload = _start(cfg, out, resume, overwrite)
    torch.manual_seed(cfg.seed)  # the initial weights
    model = build_classifier(cfg, len(class_names))
    if payload is not None:
        model.load_state_dict(payload["model"])
    model.to(device)
    c = cfg.classify
    optimizer = torch.optim.SGD(
        model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay
    )
    start_epoch, rows = 0, []
    if payload is not None:
        optimizer.load_state_dict(payload["optimizer"])
        start_epoch, rows = int(payload["epoch"]), list(payload["log"])
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    log_csv = out / "train_log.csv"
    backbone = model.backbone
    data = _Regions(samples, cfg, backbone.mean, backbone.std)
    scaler = grad_scaler(device, precision)
    for epoch in range(start_epoch, c.epochs):
        lr = c.lr * c.lr_gamma ** sum(epoch >= step for step in c.lr_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout: the same on resume
        batches = epoch_batches(cfg, len(samples), epoch)
        loader = DataLoader(data, batch_sampler=batches, num_workers=cfg.runtime.num_workers)
        model.train()
        start, loss_sum, wrong, seen = time.perf_counter(), 0.0, 0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{c.epochs}", disable=not progress)
        try:
            for images, labels in bar:
                images, labels = images.to(device), labels.to(device)
                with autocast(device, precision):
                    logits = model(images)
                loss = torch.nn.functional.cross_entropy(logits.float(), labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                if not torch.isfinite(loss):
                    raise DetectError(
                        f"classify: the loss became {loss.item()} in epoch {epoch + 1}; lower "
                        f"classify.lr (now {c.lr})"
                    )
                loss_sum += loss.item() * len(labels)
                wrong += int((logits.argmax(1) != labels).sum())
                seen += len(labels)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", error=f"{wrong / seen:.3f}")
        except KeyboardInterrupt as exc:
            kept = f"epoch {epoch} kept in {out / 'checkpoint.pt'}" if epoch else "nothing kept"
            raise Interrupted(f"{kept}; --resume continues") from exc
        finally:
            bar.close()
        sizes = sorted({b[0][1] for b in batches})
        rows.append(
            {
                "epoch": epoch + 1,
                "sizes": " ".join(map(str, sizes)),
                "loss": round(loss_sum / seen, 6),
                "train_error": round(wrong / seen, 6),
                "lr": lr,
                "seconds": round(time.perf_counter() - start, 3),
            }
        )
        _save(out / "checkpoint.pt", model, optimizer, class_names, cfg, epoch + 1, rows)
        atomic_write_text(log_csv, csv_text(rows, EPOCH_LOG_FIELDS))
    atomic_write_text(log_csv, csv_text(rows, EPOCH_LOG_FIELDS))
    return ClassifierRun(out / "checkpoint.pt", log_csv, list(class_names), rows)


def _save(
    path: Path,
    model: ImageClassifier,
    optimizer: torch.optim.Optimizer,
    class_names: list[str],
    cfg: Config,
    epoch: int,
    rows: list[dict],
) -> None:
    payload = {
        "format": CLASSIFIER_FORMAT,
        "version": __version__,
        "class_names": list(class_names),
        "config": config_to_dict(cfg),
        "model": {key: value.cpu() for key, value in model.state_dict().items()},
        "epoch": epoch,
        "optimizer": optimizer.state_dict(),
        "log": rows,
    }
    atomic_torch_save(payload, path)
