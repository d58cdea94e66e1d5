"""Where and in what precision the network runs: decided once, passed down (``runtime`` config).

* :func:`resolve_device` turns ``auto | cpu | cuda | cuda:N | mps`` into a ``torch.device``, or a
  one-line :class:`~detect.errors.DetectError` when that device is not on this machine.
* :func:`autocast` is the context every forward pass runs in: ``fp32`` (a no-op), ``bf16`` (CPU,
  CUDA, MPS) or ``fp16`` (CUDA, MPS) through ``torch.autocast``.
* :func:`grad_scaler` is the gradient scaler fp16 training needs (disabled otherwise).
* :func:`resolve_runtime` checks a whole ``runtime`` config section and resolves its device;
  :func:`runtime_overrides` hands a section on to a checkpoint being loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch

from detect.config import PRECISIONS, RuntimeConfig, check_values
from detect.errors import DetectError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device, what: str = "device") -> torch.device:
    """``"auto"``: CUDA when available, else Apple's MPS when available, else the CPU; any other
    value is a torch device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) that must exist
    on this machine. ``what`` names the setting in the one-line error."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DetectError(
            f"{what}: not a torch device: {device!r} (auto, cpu, cuda, cuda:N or mps)"
        ) from exc
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = resolved.index or 0
        if index >= count:
            raise DetectError(
                f"{what}: {device!r} is not available here "
                f"({count} CUDA device{'s' if count != 1 else ''} visible)"
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise DetectError(f"{what}: {device!r} is not available here (no Apple MPS backend)")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise DetectError(f"{what}: {device!r} is not supported (auto, cpu, cuda, cuda:N or mps)")
    return resolved


def check_precision(precision: str, device: torch.device) -> None:
    """A :class:`DetectError` when ``precision`` is unknown or cannot run on ``device``."""
    if precision not in PRECISIONS:
        raise DetectError(
            f"runtime.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    if precision == "fp16" and device.type == "cpu":
        raise DetectError("runtime.precision: fp16 needs a GPU (cuda or mps); use bf16 on the CPU")


@contextlib.contextmanager
def autocast(device: torch.device, precision: str = "fp32") -> Iterator[None]:
    """Run the enclosed forward passes in ``precision`` on ``device`` (``fp32``: unchanged)."""
    check_precision(precision, device)
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def resolve_runtime(cfg: RuntimeConfig) -> torch.device:
    """Check every ``runtime.*`` value (a one-line :class:`DetectError` naming the key and the
    value) and return the device ``runtime.device`` names on this machine."""
    checks = [
        (
            cfg.precision in PRECISIONS,
            "precision",
            cfg.precision,
            f"one of {', '.join(PRECISIONS)}",
        ),
        (cfg.num_workers >= 0, "num_workers", cfg.num_workers, ">= 0 (0 = the main process)"),
    ]
    check_values("runtime.", checks)
    device = resolve_device(cfg.device, "runtime.device")
    check_precision(cfg.precision, device)
    return device


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Float32 inside an :func:`autocast` region (scores, deltas and losses computed from float32
    copies of the network's outputs)."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def runtime_overrides(cfg: RuntimeConfig) -> list[str]:
    """``runtime.<key>=<value>`` overrides giving a checkpoint loaded with them (a checkpoint
    never brings its own runtime: :func:`detect.checkpoints.load_checkpoint`) this section."""
    return [f"runtime.{f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg)]
