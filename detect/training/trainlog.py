"""The training log: a CSV file of rows (iteration, loss, cls_loss, bbox_loss, lr, images_per_s,
s_per_iter), one appended per logged interval, never rewritten while training runs.

``images_per_s`` and ``s_per_iter`` are the interval's throughput (wall clock, the hooks'
work included); the rows of a checkpoint written before they were logged have ``nan`` there, so
a resumed run's file keeps one header. The loss-curve PNG is drawn from this file by
:func:`detect.visualize.plot_loss_curve`.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from detect.files import atomic_write_text

LOG_FIELDS = ("iteration", "loss", "cls_loss", "bbox_loss", "lr", "images_per_s", "s_per_iter")


def csv_text(rows: list[dict], fields: tuple[str, ...] = LOG_FIELDS, header: bool = True) -> str:
    """``rows`` as CSV text with the columns ``fields`` (a row's missing field: ``nan``), the
    header line first when ``header``; the text of every training log (detection and
    classification)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, math.nan) for key in fields})
    return buffer.getvalue()


def start_log_csv(path: Path, rows: list[dict]) -> None:
    """Make ``path`` hold the header and ``rows`` (dicts keyed by :data:`LOG_FIELDS`: those of the
    checkpoint a run starts from, none for a fresh run) and nothing after them.

    A file that begins with exactly those lines (a resumed run's own log, perhaps with rows past
    its checkpoint, or a half-written last line) is cut after them, its earlier bytes untouched;
    any other file (also one with an older header) is replaced atomically. A row without a field
    (a checkpoint's row from before the throughput columns) gets ``nan`` there.
    """
    path = Path(path)
    expected = csv_text(rows)
    try:
        current = path.read_bytes()
    except FileNotFoundError:
        current = None
    if current is not None and current.startswith(expected.encode()):
        if len(current) > len(expected.encode()):
            os.truncate(path, len(expected.encode()))
    else:
        atomic_write_text(path, expected)


def append_log_row(path: Path, row: dict) -> None:
    """Append one row (a dict keyed by :data:`LOG_FIELDS`) to the log ``path``."""
    with open(path, "a", encoding="utf-8", newline="") as handle:
        handle.write(csv_text([row], header=False))
