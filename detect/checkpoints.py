"""Reading checkpoints: checks, the model rebuilt from one, and its region scorer.

A checkpoint is one ``torch.save`` file (loadable with ``torch.load(weights_only=True)``) holding
a dict::

    format        "detect-checkpoint-v1"
    version       detect.__version__ that wrote it
    method        "spp" | "rcnn"
    class_names   [K names], no background
    config        merged config (detect.config.config_to_dict)
    initial_weights  {"model.weights" / "finetune.init_checkpoint": sha256} of the files the
                  run started from (detect.training.checkpoint.initial_weights_digests):
                  --resume refuses when such a path now holds other bytes
    model         DetectionModel state dict
    stage         "finetune" (in progress or finished) | "done"
    iteration     fine-tuning iterations completed
    svm / ridge   SVM and ridge parameters when trained (detect.models.scoring.SVMModel /
                  RidgeRegressor state dicts)
    rpn_shared    with proposals.method rpn and rpn_shared: the RPN head fitted on this
                  model's final conv layers (detect.models.rpn.SharedRPN.payload); at test
                  time it proposes from the model's own conv map
    optimizer, lr_scheduler, rng, log   resume state while fine-tuning: the optimizer's and
                  the lr scheduler's state dicts, torch/numpy/python RNG states, the CSV log
                  rows, the partial interval sums and the run's first loss

Training writes it (:mod:`detect.training.checkpoint`); everything that uses a trained model reads
it here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from detect.config import Config, apply_overrides
from detect.errors import DetectError
from detect.files import load_torch_file
from detect.models.detection_model import DetectionModel, build_detector
from detect.models.poolers import METHODS
from detect.models.postprocess import check_test_config
from detect.models.rpn import SHARED_KEY, SharedRPN
from detect.models.scoring import (
    RegionScorer,
    RidgeRegressor,
    RidgeScorer,
    SoftmaxScorer,
    SVMModel,
    SVMScorer,
)

CHECKPOINT_FORMAT = "detect-checkpoint-v1"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, with a clear error for missing or foreign files."""
    path = Path(path)
    payload = load_torch_file(path, "checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DetectError(f"checkpoint {path}: not a {CHECKPOINT_FORMAT} file")
    check_payload_keys(payload, path)
    return payload


def check_payload_keys(payload: dict[str, Any], path: str | Path) -> None:
    """Raise :class:`DetectError` naming the file and the key when a checkpoint dict lacks a key
    every use needs (``method``, ``class_names``, ``config`` with its ``model`` section and
    backbone, ``model`` weights) or holds a value of the wrong type there."""
    from detect.data.names import check_class_names

    config = payload.get("config")
    model_section = config.get("model") if isinstance(config, dict) else None
    required = (
        ("method", payload.get("method") in METHODS, " or ".join(map(repr, METHODS))),
        ("class_names", isinstance(payload.get("class_names"), list), "a list of class names"),
        ("config", isinstance(config, dict), "the run's config"),
        ("config.model", isinstance(model_section, dict), "the model section"),
        (
            "config.model.backbone",
            isinstance(model_section, dict) and isinstance(model_section.get("backbone"), str),
            "a backbone name",
        ),
        ("model", isinstance(payload.get("model"), dict), "the model weights"),
    )
    for key, ok, expected in required:
        if not ok:
            raise DetectError(f"checkpoint {path}: missing or bad {key!r} (expected {expected})")
    check_class_names(payload["class_names"], f"checkpoint {path}: class_names")


def check_compatible(
    payload: dict[str, Any],
    path: str | Path,
    expected_classes: tuple[str, ...] | list[str] | None = None,
    expected_backbone: str | None = None,
) -> None:
    """Raise :class:`DetectError` naming the file and both values when classes or backbone differ."""
    classes = list(payload["class_names"])
    if expected_classes is not None and classes != list(expected_classes):
        raise DetectError(
            f"checkpoint {path}: trained for classes {classes}, but the data/config has "
            f"{list(expected_classes)}"
        )
    backbone = payload["config"]["model"]["backbone"]
    if expected_backbone is not None and backbone != expected_backbone:
        raise DetectError(
            f"checkpoint {path}: backbone is {backbone!r}, but the config asks for "
            f"{expected_backbone!r}"
        )


def load_weights(model: torch.nn.Module, state: dict[str, Any], path: str | Path) -> None:
    """Load a state dict into ``model``; a mismatch is a :class:`DetectError`, not a traceback."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise DetectError(
            f"checkpoint {path}: weights do not fit this model ({' '.join(first)})"
        ) from exc


@dataclass
class LoadedCheckpoint:
    """A ready-to-run model (eval mode) with its classes, config and region scorer."""

    model: DetectionModel
    class_names: tuple[str, ...]
    config: Config
    scorer: RegionScorer
    method: str
    payload: dict[str, Any]


def build_scorer(
    payload: dict[str, Any],
    config: Config,
    path: str | Path = "checkpoint",
    device: torch.device | str = "cpu",
) -> RegionScorer:
    """The RegionScorer selected by ``config.test.classifier`` and ``config.bbox_reg.method``.

    ``softmax`` uses the network's classifier, ``svm`` the checkpoint's SVMs; deltas come from the
    ridge regressor when ``bbox_reg.method == "ridge"`` and the checkpoint has one, else from the
    learned layer. SVM and ridge parameters are put on ``device`` (the model's).
    """
    ridge = None
    if config.bbox_reg.method == "ridge" and payload.get("ridge") is not None:
        ridge = RidgeRegressor.from_state_dict(payload["ridge"]).to(device)
    classifier = config.test.classifier
    if classifier == "svm":
        if payload.get("svm") is None:
            raise DetectError(
                f"checkpoint {path}: test.classifier is 'svm' but the checkpoint has no SVMs "
                "(train with svm.enabled: true)"
            )
        return SVMScorer(SVMModel.from_state_dict(payload["svm"]).to(device), deltas_from=ridge)
    if classifier != "softmax":
        raise DetectError(f"config: test.classifier must be softmax or svm, got {classifier!r}")
    return RidgeScorer(SoftmaxScorer(), ridge) if ridge is not None else SoftmaxScorer()


def shared_rpn(
    payload: dict[str, Any], config: Config, model: DetectionModel, path: str | Path
) -> SharedRPN | None:
    """The checkpoint's RPN head fitted on its detector's conv layers (entry ``rpn_shared``) on
    ``model``'s backbone with ``config.proposals``' test-time settings, when the config asks for
    it (``proposals.method`` rpn and ``proposals.rpn_shared``); else None (proposals computed
    apart: the RPN of ``proposals.rpn_weights`` on its own backbone, or another method)."""
    from detect.proposals.learned import shared_settings

    cfg = config.proposals
    if cfg.method != "rpn" or not cfg.rpn_shared or SHARED_KEY not in payload:
        return None
    return SharedRPN.from_payload(
        payload[SHARED_KEY], model.backbone, f"checkpoint {path}", **shared_settings(cfg)
    )


def load_checkpoint(
    path: str | Path,
    expected_classes: tuple[str, ...] | list[str] | None = None,
    method: str | None = None,
    overrides: list[str] | None = None,
    expected_backbone: str | None = None,
) -> LoadedCheckpoint:
    """Rebuild the detector saved in ``path`` (eval mode, SVD-compressed per the config) and its
    scorer, ready for :meth:`detect.models.DetectionModel.detect`, on the device and in the
    precision of the ``runtime`` section (:meth:`~detect.models.DetectionModel.use_runtime`):
    the defaults (``auto``, ``fp32``) with ``overrides`` applied, never the saved one, which
    describes the machine that trained the model.

    Args:
        expected_classes: when given, a checkpoint for other classes is a :class:`DetectError`.
        method: ``"spp"`` or ``"rcnn"`` to run the saved weights through the other forward path
            (same backbone and head); default the checkpoint's own method.
        overrides: ``section.key=value`` changes to the saved config (e.g. ``test.classifier=svm``).
        expected_backbone: when given, a checkpoint of another backbone is a :class:`DetectError`.
    """

    payload = read_checkpoint(path)
    check_compatible(payload, path, expected_classes, expected_backbone)
    values = copy.deepcopy(payload["config"])
    values.pop("runtime", None)
    config = apply_overrides(values, list(overrides or []), f"checkpoint {path} config")
    class_names = tuple(payload["class_names"])
    method = method or payload["method"]
    # The checkpoint's weights replace the backbone's, so the initial weights the run started
    # from (weights: imagenet or a file, perhaps absent on this machine) are not read.
    model = build_detector(method, replace(config.model, weights="none"), len(class_names))
    load_weights(model, payload["model"], path)
    model.compress_svd()  # test-time truncated SVD of fc6/fc7 when model.svd_ranks is set
    model.use_runtime(config.runtime).eval()
    model.use_shared_rpn(shared_rpn(payload, config, model, path))
    check_test_config(config.test)
    scorer = build_scorer(payload, config, path, model.device)
    return LoadedCheckpoint(model, class_names, config, scorer, method, payload)
