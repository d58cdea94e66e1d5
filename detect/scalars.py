"""TensorBoard scalars, when the optional ``tensorboard`` package is installed.

``pip install 'detect[tensorboard]'`` adds it. Training writes its loss terms, learning rate and
throughput under ``<run folder>/tensorboard/`` (:class:`detect.training.hooks.TensorBoardLog`) and
``detect eval`` its AP under ``<eval folder>/tensorboard/``, so ``tensorboard --logdir runs/NAME``
shows both. Without the package nothing is written and one info line (once per process) says that
the scalars are off; nothing fails. Event files are appended as they are written (like the CSV log), not replaced
atomically.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"  # the folder name under a run or eval folder


@functools.cache
def summary_writer_class() -> Any | None:
    """``torch.utils.tensorboard.SummaryWriter``, or ``None`` when tensorboard is not installed
    (said in one info line, the first time)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info(
            "TensorBoard scalars off: the tensorboard package is not installed "
            "(pip install 'detect[tensorboard]')"
        )
        return None
    return SummaryWriter


def scalar_writer(log_dir: Path, purge_step: int | None = None) -> Any | None:
    """A ``SummaryWriter`` on ``log_dir``, or ``None`` when tensorboard is not installed.

    ``purge_step``: TensorBoard hides the events of earlier writers of the folder at this step and
    later (a resumed run rewrites the iterations after its checkpoint; a fresh run hides all).
    """
    writer_class = summary_writer_class()
    return None if writer_class is None else writer_class(str(log_dir), purge_step=purge_step)


def write_scalars(log_dir: Path, scalars: Mapping[str, float], step: int) -> bool:
    """Write the finite values of ``scalars`` (tag -> value) at ``step`` into ``log_dir``; False
    when tensorboard is not installed (nothing written)."""
    writer = scalar_writer(log_dir)
    if writer is None:
        return False
    with writer:
        for tag, value in scalars.items():
            if math.isfinite(value):
                writer.add_scalar(tag, value, step)
    return True
