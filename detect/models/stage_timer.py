"""Wall-clock seconds per named stage of detection, and counters (read by ``detect bench``)."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator


class StageTimer:
    """Accumulated seconds per stage and counts, filled by the model's test-time path.

    Stages: ``conv`` (resize + backbone; R-CNN: backbone on crops), ``warp`` (R-CNN crops),
    ``pool``, ``fc`` (head + scorer), ``post`` (decode, clip, NMS). Counters: ``regions``,
    ``windows`` (distinct windows after projection, SPP-net only).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Add the seconds spent inside the ``with`` block to stage ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start
