"""Where and in what precision the network runs: decided once, passed down (``runtime`` config).

* :func:`resolve_device` turns ``auto | cpu | cuda | cuda:N | mps`` into a ``torch.device``, or a
  one-line :class:`~detect.errors.DetectError` when that device is not on this machine.
* :func:`autocast` is the context every forward pass runs in: ``fp32`` (a no-op), ``bf16`` (CPU,
  CUDA, MPS) or ``fp16`` (CUDA, MPS) through ``torch.autocast``.
* :func:`grad_scaler` is the gradient scaler fp16 training needs (disabled otherwise).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from detect.errors import DetectError

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"``: CUDA when available, else Apple's MPS when available, else the CPU; any other
    value is a torch device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) that must exist
    on this machine."""
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
            f"device: not a torch device: {device!r} (auto, cpu, cuda, cuda:N or mps)"
        ) from exc
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = resolved.index or 0
        if index >= count:
            raise DetectError(
                f"device: {device!r} is not available here "
                f"({count} CUDA device{'s' if count != 1 else ''} visible)"
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise DetectError(f"device: {device!r} is not available here (no Apple MPS backend)")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise DetectError(f"device: {device!r} is not supported (auto, cpu, cuda, cuda:N or mps)")
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
