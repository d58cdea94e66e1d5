"""The training log: CSV rows (iteration, loss, cls_loss, bbox_loss, lr), rewritten atomically.

The loss-curve PNG is drawn from this file by :func:`detect.visualize.plot_loss_curve`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from detect.files import atomic_write_text

LOG_FIELDS = ("iteration", "loss", "cls_loss", "bbox_loss", "lr")


def write_log_csv(path: Path, rows: list[dict]) -> None:
    """Write all rows (dicts keyed by :data:`LOG_FIELDS`) atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row[key] for key in LOG_FIELDS})
    atomic_write_text(Path(path), buffer.getvalue())
