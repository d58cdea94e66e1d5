"""Writing checkpoints, and the resume state they carry (RNG states).

A checkpoint is one ``torch.save`` file holding everything needed to use or resume a model; its
contents are listed in :mod:`detect.checkpoints`, which reads it. Written atomically
(:func:`detect.files.atomic_torch_save`), so an interrupted write never replaces the last good
checkpoint.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detect import __version__
from detect.checkpoints import CHECKPOINT_FORMAT
from detect.config import Config, config_to_dict
from detect.config_paths import PATH_SETTINGS
from detect.errors import DetectError
from detect.files import atomic_torch_save, file_sha256

# The settings naming a file a run starts from: its bytes are part of what the run trained.
INITIAL_WEIGHTS_SETTINGS = (("model", "weights"), ("finetune", "init_checkpoint"))


@functools.lru_cache(maxsize=8)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    return file_sha256(path, "initial weights")


def _starting_files(config: Config) -> dict[str, Path]:
    """``{"model.weights": path, "finetune.init_checkpoint": path}`` (resolved) for the settings
    of :data:`INITIAL_WEIGHTS_SETTINGS` that name a file that exists."""
    files = {}
    for section, key in INITIAL_WEIGHTS_SETTINGS:
        value = getattr(getattr(config, section), key)
        if value and value not in PATH_SETTINGS[(section, key)] and Path(value).is_file():
            files[f"{section}.{key}"] = Path(value).resolve()
    return files


def initial_weights_digests(config: Config) -> dict[str, str]:
    """``{"model.weights": sha256, "finetune.init_checkpoint": sha256}`` of the files ``config``
    starts training from (settings that name no file, and files that are gone, are left out).
    A checkpoint keeps them so that ``--resume`` can tell when the same path now holds other
    weights (the demo's pretrained backbone and R-CNN's SPP-net checkpoint are rewritten in
    place when their own runs change)."""
    digests = {}
    for name, path in _starting_files(config).items():
        stat = path.stat()
        digests[name] = _sha256(str(path), stat.st_mtime_ns, stat.st_size)
    return digests


def initial_weights_differences(saved: dict[str, str] | None, config: Config) -> list[str]:
    """``"model.weights: ..."`` for each starting file recorded in a checkpoint (``saved``, from
    :func:`initial_weights_digests`; None for checkpoints older than the record) whose file now
    holds other bytes. A file that is gone cannot be compared and is not reported."""
    files, current = _starting_files(config), initial_weights_digests(config)
    return [
        f"{name}: {files[name]} holds other weights than the run started from "
        f"(sha256 {digest[:12]} -> {current[name][:12]})"
        for name, digest in sorted((saved or {}).items())
        if name in current and current[name] != digest
    ]


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    class_names: tuple[str, ...] | list[str],
    config: Config,
    extras: dict[str, Any] | None = None,
) -> None:
    """Write ``model`` (a :class:`detect.models.DetectionModel`) with its class names, config and ``extras`` atomically.
    A ``model`` entry of ``extras`` (a state dict copied earlier) replaces the current weights.
    The weights are saved on the CPU in float32, whatever the device and precision trained in."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": __version__,
        "method": model.method,
        "class_names": list(class_names),
        "config": config_to_dict(config),
        "initial_weights": initial_weights_digests(config),
        "model": model.state_dict(),
        **(extras or {}),
    }
    payload["model"] = {
        key: value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype)
        for key, value in payload["model"].items()
    }
    atomic_torch_save(payload, Path(path))


def check_resume_keys(payload: dict[str, Any], path: str | Path) -> None:
    """Raise :class:`DetectError` naming the file and the key when a checkpoint lacks what
    ``--resume`` reads: ``stage`` and ``log.rows`` always; while fine-tuning (stage
    ``"finetune"``) also ``iteration``, ``optimizer``, ``lr_scheduler``, ``rng`` and
    ``log.sums``."""
    stage, log = payload.get("stage"), payload.get("log")
    required = [
        ("stage", stage in ("finetune", "done"), "'finetune' or 'done'"),
        ("log", isinstance(log, dict), "the training log"),
        ("log.rows", isinstance(log, dict) and isinstance(log.get("rows"), list), "a list"),
    ]
    if stage == "finetune":
        iteration = payload.get("iteration")
        required += [
            ("iteration", isinstance(iteration, int) and iteration >= 0, "an integer >= 0"),
            ("optimizer", isinstance(payload.get("optimizer"), dict), "the optimizer state"),
            (
                "lr_scheduler",
                isinstance(payload.get("lr_scheduler"), dict),
                "the lr scheduler state",
            ),
            ("rng", isinstance(payload.get("rng"), dict), "the random generator states"),
            ("log.sums", isinstance(log, dict) and isinstance(log.get("sums"), dict), "a dict"),
        ]
    for key, ok, expected in required:
        if not ok:
            raise DetectError(
                f"checkpoint {path}: cannot resume: missing or bad {key!r} (expected {expected})"
            )


def capture_rng_state() -> dict[str, Any]:
    """torch, numpy and python ``random`` global RNG states in a weights-only-loadable form, and
    the CUDA devices' (dropout on a GPU draws from them) once CUDA is in use."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    cuda = {"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_initialized() else {}
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_version, list(py_internal), py_gauss],
        **cuda,
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
