"""``train``: the whole training recipe of one run folder (the paper's, see docs/departures.md).

Stages: with ``proposals.method: rpn`` first the region proposal network
(:mod:`detect.training.rpn`), then fine-tuning (:mod:`detect.training.finetune`), then the SVMs
when ``svm.enabled``, then ridge box regression when ``bbox_reg.method == "ridge"``, then with
``rpn`` and ``proposals.rpn_shared`` the RPN head re-fitted on the detector's final conv layers
(Faster R-CNN's step 3; kept in the checkpoint as ``rpn_shared``). The run
folder gets ``config.yaml`` (the merged config), ``checkpoint.pt`` (rewritten atomically during
and after training), ``train_log.csv``, ``loss.png`` and, for ``rpn``, ``rpn.pt``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from detect.checkpoints import check_compatible, load_weights, read_checkpoint
from detect.config import Config, check_values, save_config
from detect.config_paths import with_absolute_paths, with_data_root
from detect.config_resume import resume_differences
from detect.distributed import barrier, is_main, process_group
from detect.errors import DetectError, Interrupted
from detect.models.detection_model import check_model_config
from detect.models.poolers import METHODS
from detect.runtime import resolve_runtime
from detect.structures import DetectionDataset
from detect.training import ddp
from detect.training.checkpoint import (
    check_resume_keys,
    initial_weights_differences,
    save_checkpoint,
)
from detect.training.finetune import FINETUNE_MODES, finetune
from detect.training.sampling import SCALE_DRAWS

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.csv"
LOSS_PLOT_NAME = "loss.png"
CONFIG_NAME = "config.yaml"


@dataclass
class TrainResult:
    """What a training run produced. ``final_loss`` is the mean loss of the last log interval."""

    out_dir: Path
    checkpoint: Path
    config_path: Path
    log_csv: Path
    loss_png: Path | None
    method: str
    class_names: tuple[str, ...]
    num_images: int
    iterations: int
    final_loss: float
    seconds: float
    stages: tuple[str, ...]


def validate_training_config(config: Config, method: str) -> None:
    """Reject settings the training code cannot run, naming the key and value."""
    from detect.training.rpn import head_layout

    checks = [
        (method in METHODS, "method", method, f"one of {list(METHODS)}"),
        (
            config.finetune.mode in FINETUNE_MODES,
            "finetune.mode",
            config.finetune.mode,
            f"one of {list(FINETUNE_MODES)}",
        ),
        (
            config.finetune.random_scale in SCALE_DRAWS,
            "finetune.random_scale",
            config.finetune.random_scale,
            f"one of {list(SCALE_DRAWS)}",
        ),
        (config.svm.feature in ("fc7", "pool"), "svm.feature", config.svm.feature, "fc7 or pool"),
        (
            config.bbox_reg.method in ("ridge", "learned"),
            "bbox_reg.method",
            config.bbox_reg.method,
            "ridge or learned",
        ),
        (
            config.finetune.iterations >= 0,
            "finetune.iterations",
            config.finetune.iterations,
            ">= 0",
        ),
        (
            config.finetune.images_per_batch >= 1,
            "finetune.images_per_batch",
            config.finetune.images_per_batch,
            ">= 1",
        ),
        (
            config.finetune.rois_per_image_batch >= 1,
            "finetune.rois_per_image_batch",
            config.finetune.rois_per_image_batch,
            ">= 1",
        ),
        (config.finetune.log_every >= 1, "finetune.log_every", config.finetune.log_every, ">= 1"),
        (
            config.finetune.checkpoint_every >= 1,
            "finetune.checkpoint_every",
            config.finetune.checkpoint_every,
            ">= 1",
        ),
        (
            0.0 <= config.finetune.fg_fraction <= 1.0,
            "finetune.fg_fraction",
            config.finetune.fg_fraction,
            "in [0, 1]",
        ),
        (config.finetune.lr > 0, "finetune.lr", config.finetune.lr, "> 0"),
        (
            config.finetune.feature_cache_mb >= 0,
            "finetune.feature_cache_mb",
            config.finetune.feature_cache_mb,
            ">= 0",
        ),
        (
            config.svm.max_active_negatives >= 0,
            "svm.max_active_negatives",
            config.svm.max_active_negatives,
            ">= 0 (0 = no cap)",
        ),
        (
            config.runtime.num_workers >= 0,
            "runtime.num_workers",
            config.runtime.num_workers,
            ">= 0 (0 = the main process)",
        ),
        (
            config.proposals.rpn_refit_iterations >= 0,
            "proposals.rpn_refit_iterations",
            config.proposals.rpn_refit_iterations,
            ">= 0 (0 = rpn_iterations)",
        ),
    ]
    check_values("config: ", checks)
    head_layout(config.proposals)  # the RPN head's keys, before step 1
    check_model_config(config.model)
    resolve_runtime(config.runtime)  # an unknown or absent device or precision, before any work
    check_frozen_backbone_is_trained(config)


def check_frozen_backbone_is_trained(config: Config) -> None:
    """Refuse fc-mode fine-tuning on a random backbone unless ``finetune.allow_random_backbone``.

    ``finetune.mode: fc`` keeps the conv layers as loaded; with ``model.weights: none`` (or empty)
    and no ``finetune.init_checkpoint`` they are random, and the fc layers, SVMs and box
    regressors would be trained on random conv features (docs/departures.md).
    """
    cfg = config.finetune
    random_backbone = config.model.weights in ("", "none") and not cfg.init_checkpoint
    if cfg.mode == "fc" and random_backbone and not cfg.allow_random_backbone:
        raise DetectError(
            f"config: model.weights is {config.model.weights!r} with finetune.mode 'fc': the "
            "frozen conv layers would stay random; give model.weights (imagenet or a state dict "
            "file) or finetune.init_checkpoint, use finetune.mode=end_to_end, or set "
            "finetune.allow_random_backbone=true if this is meant"
        )


def check_class_coverage(dataset: DetectionDataset) -> dict[str, int]:
    """Objects per class (difficult ones excluded); a class with none is a :class:`DetectError`."""
    if len(dataset) == 0:
        raise DetectError(f"data set {dataset.root}: split {dataset.split!r} has no images")
    counts = dict.fromkeys(dataset.class_names, 0)
    for ann in dataset.annotations:
        for label in ann.labels[~ann.difficult].tolist():
            counts[dataset.class_names[label]] += 1
    missing = [name for name, count in counts.items() if count == 0]
    if missing:
        raise DetectError(
            f"data set {dataset.root}: split {dataset.split!r} has no (non-difficult) objects of "
            f"class(es) {missing}; configured classes: {list(dataset.class_names)}. Remove them "
            "from data.classes or annotate some images."
        )
    return counts


# Config sections that do not change what training computes: a resumed run may differ in them.
# runtime (device, precision, workers) too, so that a run can be resumed on another machine;
# classify (the image classifier's; a detector reads a pretrained backbone via model.weights).
SECTIONS_NOT_TRAINED = ("test", "bench", "demo", "runtime", "classify")


def check_run_folder_use(checkpoint_path: Path, resume: bool, overwrite: bool) -> None:
    """A run folder that already holds ``checkpoint_path`` is only written with ``resume`` (go on
    with it) or ``overwrite`` (replace it); otherwise a :class:`DetectError` says which to use."""
    if resume and overwrite:
        raise DetectError("--resume and --overwrite contradict each other: give one of them")
    if checkpoint_path.exists() and not (resume or overwrite):
        raise DetectError(
            f"run folder {checkpoint_path.parent} already holds a run ({checkpoint_path}); "
            "continue it with --resume, train into another --out, or replace it with --overwrite"
        )


def _resume_payload(path: Path, config: Config, method: str) -> dict:
    if not path.is_file():
        raise DetectError(f"--resume: no checkpoint to resume at {path}")
    payload = read_checkpoint(path)
    check_resume_keys(payload, path)
    if payload["method"] != method:
        raise DetectError(
            f"checkpoint {path}: method is {payload['method']!r}, but this run asks for {method!r}"
        )
    differences = resume_differences(payload["config"], config, SECTIONS_NOT_TRAINED)
    differences += initial_weights_differences(payload.get("initial_weights"), config)
    if differences:
        raise DetectError(
            f"checkpoint {path}: --resume needs the same config as the interrupted run; "
            f"differences: {'; '.join(differences)}"
        )
    return payload


def train(
    config: Config,
    data_root: str | Path | None = None,
    out_dir: str | Path = "runs/train",
    method: str = "spp",
    resume: bool = False,
    on_iteration=None,
    overwrite: bool = False,
) -> TrainResult:
    """Train a detector on ``config.data.train_split`` and write the run folder ``out_dir``.

    Args:
        config: the experiment; ``data_root`` (when given) replaces ``config.data.root``.
            Relative paths in it are read from the current folder, and saved made absolute.
        method: ``"spp"`` (SPP-net) or ``"rcnn"`` (the per-crop baseline, same recipe).
        resume: continue the interrupted run in ``out_dir`` (same config required).
        overwrite: replace the run already in ``out_dir``; without it (or ``resume``), a folder
            holding a checkpoint is refused before anything is written.
        on_iteration: optional callback with the number of completed fine-tuning iterations.

    Raises:
        DetectError: bad config values, a class without objects, classes or backbone that differ
            from ``finetune.init_checkpoint`` or the checkpoint being resumed, a diverging loss.
        Interrupted: Ctrl-C, saying what was kept (:func:`_what_ctrl_c_kept`).

    Under torchrun the processes train together (:mod:`detect.training.ddp`): proposals and
    region features computed in shards, fine-tuning with DistributedDataParallel on the same
    global batches as one process; rank 0 alone writes the run folder (which every rank must
    be able to read: a shared file system across machines).
    """
    with process_group(resolve_runtime(config.runtime)):
        return _train(config, data_root, out_dir, method, resume, on_iteration, overwrite)


def _train(config, data_root, out_dir, method, resume, on_iteration, overwrite) -> TrainResult:
    from detect.data import load_dataset
    from detect.models import build_detector
    from detect.models.rpn import SHARED_KEY
    from detect.proposals.dense import with_window_shapes
    from detect.training.rpn import ensure_rpn, refit_shared_head, with_rpn_weights
    from detect.visualize import plot_loss_curve

    started = time.perf_counter()
    validate_training_config(config, method)
    if data_root is not None:
        config = with_data_root(config, data_root)
    config = with_absolute_paths(config)  # the saved config must mean the same files anywhere
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DetectError(f"run folder {out_dir}: exists and is not a folder")
    checkpoint_path = out_dir / CHECKPOINT_NAME
    check_run_folder_use(checkpoint_path, resume, overwrite)
    log_path, config_path = out_dir / LOG_NAME, out_dir / CONFIG_NAME

    data = config.data
    dataset = load_dataset(
        data.root,
        data.train_split,
        data.classes,
        data.image_dir,
        data.strict_boxes,
        max_image_pixels=data.max_image_pixels,
    )
    counts = check_class_coverage(dataset)
    log.info("training on %d images of %s: %s", len(dataset), data.root, counts)
    # dense proposals: window shapes fitted to the training boxes, kept in the saved config
    proposal_cfg = with_window_shapes(config.proposals, dataset, config.seed)
    # rpn proposals: the network trained into the run folder (or the given file), in the config
    proposal_cfg = with_rpn_weights(proposal_cfg, out_dir)
    config = dataclasses.replace(config, proposals=proposal_cfg)
    payload = _resume_payload(checkpoint_path, config, method) if resume else None
    class_names = dataset.class_names
    init = None
    if payload is not None:
        check_compatible(payload, checkpoint_path, class_names, config.model.backbone)
    elif config.finetune.init_checkpoint:
        init = read_checkpoint(config.finetune.init_checkpoint)
        check_compatible(init, config.finetune.init_checkpoint, class_names, config.model.backbone)

    rpn = None
    if config.proposals.method == "rpn":  # the RPN stage: before the proposals it computes
        with _what_ctrl_c_kept("rpn", checkpoint_path):
            rpn = ensure_rpn(config, dataset, out_dir, resume)
    with _what_ctrl_c_kept("proposals", checkpoint_path):  # every rank checked the run folder
        proposals = ddp.shared_proposals(dataset, config.proposals, data.max_image_pixels)

    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    model = build_detector(method, config.model, len(class_names))
    if rpn is not None and rpn.backbone.name == config.model.backbone:
        # the detector starts from the RPN-trained conv layers (docs/method.md §5)
        model.backbone.load_state_dict(rpn.backbone.state_dict())
    if payload is not None:
        load_weights(model, payload["model"], checkpoint_path)
    elif init is not None:
        load_weights(model, init["model"], config.finetune.init_checkpoint)
    model.use_runtime(config.runtime)
    if is_main():  # under torchrun rank 0 alone writes the run folder
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, config_path)

    stages = ["finetune"]
    if payload is not None and payload.get("stage") == "done":
        log.info("checkpoint %s is already complete; nothing to resume", checkpoint_path)
        rows = payload["log"]["rows"]
    else:
        with _what_ctrl_c_kept("finetune", checkpoint_path):
            result = finetune(
                model, dataset, proposals, config, checkpoint_path, log_path, payload, on_iteration
            )
        rows = result.rows
        extras: dict = {"stage": "done", "iteration": config.finetune.iterations}
        extras["log"] = {"rows": rows, "sums": {}}
        with _what_ctrl_c_kept("linear", checkpoint_path):
            if config.svm.enabled or config.bbox_reg.method == "ridge":
                extras.update(_train_linear_models(model, dataset, proposals, config, out_dir))
                stages += [s for s in ("svm", "ridge") if extras.get(s) is not None]
            if rpn is not None and config.proposals.rpn_shared and is_main():
                # Faster R-CNN's step 3: the RPN head on the detector's final, frozen conv layers
                log.info("fitting the RPN head on the detector's conv layers (shared at test time)")
                shared = refit_shared_head(config, dataset, model.backbone, rpn)
                extras[SHARED_KEY] = shared.payload()
                stages.append("rpn_shared")
            if is_main():
                save_checkpoint(checkpoint_path, model, class_names, config, extras)

    plot = rows and is_main()
    loss_png = plot_loss_curve(log_path, out_dir / LOSS_PLOT_NAME) if plot else None
    return TrainResult(
        out_dir=out_dir,
        checkpoint=checkpoint_path,
        config_path=config_path,
        log_csv=log_path,
        loss_png=loss_png,
        method=method,
        class_names=tuple(class_names),
        num_images=len(dataset),
        iterations=config.finetune.iterations,
        final_loss=rows[-1]["loss"] if rows else float("nan"),
        seconds=time.perf_counter() - started,
        stages=tuple(stages),
    )


@contextlib.contextmanager
def _what_ctrl_c_kept(stage: str, checkpoint_path: Path):
    """Turn Ctrl-C during ``stage`` (``rpn``, ``proposals``, ``finetune`` or ``linear``: the SVMs /
    ridge) into :class:`Interrupted` saying truthfully what is on disk and how to continue."""
    try:
        yield
    except KeyboardInterrupt as exc:
        said = f" ({exc})" if isinstance(exc, Interrupted) and str(exc) else ""
        if stage == "rpn":
            kept = (
                "while training the RPN, before the detector; no checkpoint was written by this "
                "run: run the same command again to train the RPN and the detector"
            )
        elif stage == "proposals":
            kept = (
                f"while computing proposals, before any training{said}; no checkpoint was "
                "written by this run: run the same command again to finish the proposals and train"
            )
        elif stage == "finetune":
            where = said or f" in {checkpoint_path}"
            kept = (
                f"during fine-tuning; the last checkpoint saved is kept{where}: "
                "continue with the same command plus --resume"
            )
        else:
            kept = (
                f"after fine-tuning, while fitting the SVMs / box regressor / shared RPN head; "
                f"{checkpoint_path} keeps the finished fine-tuning: continue with the same "
                "command plus --resume"
            )
        raise Interrupted(kept) from exc


REGION_FEATURES_DIR = "region_features"


def _train_linear_models(model, dataset, proposals, config: Config, out_dir: Path) -> dict:
    """Extract region features once (one shard per image under ``out_dir/region_features``,
    removed afterwards), then fit the SVMs and / or the ridge regressor reading them back."""
    import shutil

    from detect.training.bbox_reg import train_ridge
    from detect.training.features import extract_region_features
    from detect.training.finetune import conv_map_cache
    from detect.training.svm import train_svms

    folder = out_dir / REGION_FEATURES_DIR
    # fc mode: the maps fine-tuning stored (one pass: none stored or kept in RAM here)
    conv_maps = conv_map_cache(model, config, out_dir, read_only=True)
    if is_main():
        shutil.rmtree(folder, ignore_errors=True)  # an interrupted run's shards
    barrier()

    def extract(images: DetectionDataset, where: Path):
        return extract_region_features(
            model,
            images,
            proposals,
            svm_feature=config.svm.feature,
            min_iou=config.bbox_reg.min_iou,
            max_negatives_per_image=config.svm.max_negatives_per_image,
            seed=config.seed,
            max_image_pixels=config.data.max_image_pixels,
            folder=where,
            num_workers=config.runtime.num_workers,
            conv_maps=conv_maps,
        )

    # under torchrun each rank extracts its shard of the images; rank 0 fits on them all
    features = ddp.sharded_region_features(extract, dataset, folder)
    if features is None:
        return {}
    num_classes = len(dataset.class_names)
    extras: dict = {"svm": None, "ridge": None}
    if config.svm.enabled:
        extras["svm"] = train_svms(features, num_classes, config.svm, config.seed).state_dict()
    if config.bbox_reg.method == "ridge":
        extras["ridge"] = train_ridge(features, num_classes, config.bbox_reg).state_dict()
    shutil.rmtree(folder, ignore_errors=True)
    return extras
