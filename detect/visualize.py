"""Pictures: detections drawn on images (OpenCV), PR / recall / loss curves (matplotlib, Agg).

Plots use matplotlib's object-oriented API with the Agg canvas, so no GUI backend is needed and the
global pyplot state is never touched. Images are ``(H, W, 3)`` uint8 RGB; boxes are xyxy 0-based
continuous pixels (a box ``(3, 0, 10, 5)`` covers pixel columns 3..9 and rows 0..4).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from detect.errors import DetectError
from detect.files import atomic_path
from detect.structures import Annotation, Detections

# Distinct, saturated RGB colours (Tableau 10 and its light variants), one per class index.
_PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
)


def class_colour(label: int) -> tuple[int, int, int]:
    """The RGB colour used for class index ``label`` (distinct for the first 20 classes)."""
    return _PALETTE[int(label) % len(_PALETTE)]


def _pixel_rect(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int] | None:
    """Inclusive pixel corners ``(c1, r1, c2, r2)`` of a continuous xyxy box, clipped; None if empty."""
    x1, y1, x2, y2 = (float(v) for v in box)
    c1, r1 = max(int(round(x1)), 0), max(int(round(y1)), 0)
    c2, r2 = min(int(round(x2)) - 1, width - 1), min(int(round(y2)) - 1, height - 1)
    if c2 < c1 or r2 < r1:
        return None
    return c1, r1, c2, r2


def _dashed_rectangle(
    image: np.ndarray, rect: tuple[int, int, int, int], colour: tuple[int, int, int], dash: int = 5
) -> None:
    """Draw a 1-px dashed rectangle in place (``rect`` inclusive pixel corners)."""
    c1, r1, c2, r2 = rect
    for start in range(c1, c2 + 1, 2 * dash):
        end = min(start + dash - 1, c2)
        image[r1, start : end + 1] = colour
        image[r2, start : end + 1] = colour
    for start in range(r1, r2 + 1, 2 * dash):
        end = min(start + dash - 1, r2)
        image[start : end + 1, c1] = colour
        image[start : end + 1, c2] = colour


def _label(
    image: np.ndarray, text: str, c1: int, r1: int, colour: tuple[int, int, int], scale: float
) -> None:
    """Text on a filled tag of the box colour just above (or inside) the box's top-left corner."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), baseline = cv2.getTextSize(text, font, scale, 1)
    top = r1 - th - baseline - 2 if r1 - th - baseline - 2 >= 0 else r1
    c1 = min(c1, max(image.shape[1] - tw - 2, 0))
    cv2.rectangle(image, (c1, top), (c1 + tw + 2, top + th + baseline + 2), colour, -1)
    text_colour = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
    cv2.putText(image, text, (c1 + 1, top + th + 1), font, scale, text_colour, 1, cv2.LINE_AA)


def draw_detections(
    image: np.ndarray,
    detections: Detections,
    class_names: Sequence[str],
    score_threshold: float = 0.5,
    ground_truth: Annotation | None = None,
) -> np.ndarray:
    """Draw detections (and optionally the ground truth) on a copy of an image.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        detections: boxes ``(N, 4)`` xyxy 0-based continuous pixels of ``image``, scores, labels.
        class_names: names indexed by the labels.
        score_threshold: detections scoring below it are not drawn.
        ground_truth: when given, its boxes are drawn as thin dashed rectangles in the class colour
            (difficult ones in grey).

    Returns:
        ``(H, W, 3)`` uint8 RGB: detections as 2-px rectangles with a ``"name 0.97"`` tag, one colour
        per class, the highest-scoring drawn last (on top).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DetectError(
            f"draw_detections: expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}"
        )
    canvas = np.ascontiguousarray(image.copy())
    height, width = canvas.shape[:2]
    scale = max(0.35, min(height, width) / 700)
    thickness = max(1, round(min(height, width) / 250))
    if ground_truth is not None:
        for box, label, difficult in zip(
            ground_truth.boxes.tolist(),
            ground_truth.labels.tolist(),
            ground_truth.difficult.tolist(),
            strict=True,
        ):
            rect = _pixel_rect(box, height, width)
            if rect is not None:
                _dashed_rectangle(
                    canvas, rect, (160, 160, 160) if difficult else class_colour(label)
                )
    keep = detections.scores >= score_threshold
    order = detections.scores[keep].argsort()  # ascending: the best end up on top
    boxes, scores, labels = (
        t[keep][order].tolist() for t in (detections.boxes, detections.scores, detections.labels)
    )
    for box, score, label in zip(boxes, scores, labels, strict=True):
        rect = _pixel_rect(box, height, width)
        if rect is None:
            continue
        colour = class_colour(label)
        c1, r1, c2, r2 = rect
        cv2.rectangle(canvas, (c1, r1), (c2, r2), colour, thickness, cv2.LINE_8)
        _label(canvas, f"{class_names[label]} {score:.2f}", c1, r1, colour, scale)
    return canvas


def make_grid(images: Sequence[np.ndarray], cols: int, pad: int = 4, fill: int = 255) -> np.ndarray:
    """Tile ``(H_i, W_i, 3)`` uint8 images row by row into one ``(H, W, 3)`` uint8 picture.

    Each cell is as large as the largest image; images sit at the cell's top-left, ``pad`` pixels
    of ``fill`` separate the cells and surround the grid.
    """
    if not images:
        raise DetectError("make_grid: no images")
    if cols < 1:
        raise DetectError(f"make_grid: cols must be >= 1, got {cols}")
    cols = min(cols, len(images))
    rows = math.ceil(len(images) / cols)
    cell_h = max(image.shape[0] for image in images)
    cell_w = max(image.shape[1] for image in images)
    grid = np.full(
        (rows * (cell_h + pad) + pad, cols * (cell_w + pad) + pad, 3), fill, dtype=np.uint8
    )
    for index, image in enumerate(images):
        row, col = divmod(index, cols)
        top, left = pad + row * (cell_h + pad), pad + col * (cell_w + pad)
        grid[top : top + image.shape[0], left : left + image.shape[1]] = image
    return grid


def _save(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` atomically (format from the suffix, PNG without one), creating folders."""
    path = Path(path)
    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix[1:] or "png", dpi=100)
    return path


def plot_pr_curves(
    precision: Mapping[str, np.ndarray],
    recall: Mapping[str, np.ndarray],
    ap: Mapping[str, float],
    path: str | Path,
    title: str = "precision-recall",
) -> Path:
    """One PNG with a precision-recall curve per class; the legend gives each class's AP.

    Args:
        precision, recall: per class, ``(D,)`` arrays over the detections ranked by score (as
            returned by :func:`detect.evaluation.voc_ap.evaluate_voc`); a class with no detections
            may have empty arrays (it is listed in the legend only).
        ap: per class AP; the title gets the mean.
        path: the PNG to write (folders are created).
    """
    figure = Figure(figsize=(6.4, 4.8))
    axes = figure.add_subplot()
    for index, name in enumerate(ap):
        rec = np.asarray(recall.get(name, []), dtype=float)
        prec = np.asarray(precision.get(name, []), dtype=float)
        colour = np.array(class_colour(index)) / 255
        axes.plot(rec, prec, color=colour, linewidth=1.5, label=f"{name} (AP {ap[name]:.3f})")
    mean = float(np.mean(list(ap.values()))) if ap else float("nan")
    axes.set(xlim=(0, 1.0), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    axes.set_title(f"{title} (mAP {mean:.3f})")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize="small")
    figure.tight_layout()
    return _save(figure, path)


def plot_curves(
    x: Sequence[float],
    ys: Mapping[str, Sequence[float]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """One PNG with a line per entry of ``ys`` (each as long as ``x``), e.g. proposal recall at
    IoU 0.5 / 0.7 / AR against the number of proposals (``logx=True``, see
    :func:`detect.proposals.recall.save_recall_plot`); ``ylim`` fixes the y range."""
    figure = Figure(figsize=(6.4, 4.8))
    axes = figure.add_subplot()
    for index, (label, values) in enumerate(ys.items()):
        if len(values) != len(x):
            raise DetectError(
                f"plot_curves: {label!r} has {len(values)} values for {len(x)} x values"
            )
        colour = np.array(class_colour(index)) / 255
        axes.plot(list(x), list(values), marker="o", markersize=3, color=colour, label=label)
    if logx:
        axes.set_xscale("log")
    if ylim is not None:
        axes.set_ylim(*ylim)
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(alpha=0.3, which="both")
    if ys:
        axes.legend(fontsize="small")
    figure.tight_layout()
    return _save(figure, path)


def _read_log(source: str | Path) -> dict[str, list[float]]:
    source = Path(source)
    try:
        with source.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise DetectError(f"training log {source}: cannot read: {exc}") from exc
    if not rows or "iteration" not in rows[0] or "loss" not in rows[0]:
        raise DetectError(
            f"training log {source}: expected a CSV with columns iteration, loss[, lr]"
        )
    columns: dict[str, list[float]] = {name: [] for name in rows[0]}
    for number, row in enumerate(rows, start=2):
        for name in columns:
            try:
                columns[name].append(float(row[name]))
            except (TypeError, ValueError) as exc:
                raise DetectError(
                    f"training log {source}: line {number}: {name} is not a number: {row[name]!r}"
                ) from exc
    return columns


def plot_loss_curve(
    source: str | Path | Mapping[str, Sequence[float]], path: str | Path, title: str = "training"
) -> Path:
    """PNG of the training loss (and learning rate on a log right axis) against iteration.

    Args:
        source: a CSV with a header (``iteration``, ``loss``, optional ``lr`` and any other loss
            columns such as ``cls_loss``, ``bbox_loss``: the columns named ``*loss`` are drawn;
            others, such as the throughput, are not), or a mapping of the same columns to lists.
        path: the PNG to write.
    """
    columns = (
        _read_log(source)
        if isinstance(source, str | Path)
        else {k: list(v) for k, v in source.items()}
    )
    if "iteration" not in columns or "loss" not in columns:
        raise DetectError(
            f"plot_loss_curve: need 'iteration' and 'loss' columns, got {list(columns)}"
        )
    iterations = columns["iteration"]
    figure = Figure(figsize=(6.4, 4.0))
    axes = figure.add_subplot()
    losses = [name for name in columns if name.endswith("loss")]
    for index, name in enumerate(losses):
        width = 1.8 if name == "loss" else 1.0
        colour = np.array(class_colour(index)) / 255
        axes.plot(iterations, columns[name], color=colour, linewidth=width, label=name)
    axes.set(xlabel="iteration", ylabel="loss", title=title)
    axes.grid(alpha=0.3)
    if "lr" in columns:
        lr_axes = axes.twinx()
        lr_axes.plot(
            iterations, columns["lr"], color="black", linestyle="--", linewidth=1, label="lr"
        )
        if min(columns["lr"], default=0) > 0:
            lr_axes.set_yscale("log")
        lr_axes.set_ylabel("learning rate")
        lr_axes.legend(loc="upper center", fontsize="small")
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    return _save(figure, path)


def plot_fp_types(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], labels: Sequence[str], path: str | Path
) -> Path:
    """The share of each false-positive type among a class's top-ranked false positives, stacked,
    against their number (log axis), one panel per class: the figure of Hoiem et al.'s analysis
    that the R-CNN and SPP-net papers show.

    Args:
        curves: class name -> ``(n (P,), fractions (P, T))``: the shares among the first ``n``
            false positives (rows sum to 1), ``n`` increasing to the class's number of false
            positives (:func:`detect.evaluation.error_analysis.fp_type_fractions`, perhaps at
            fewer points).
        labels: the ``T`` type names, bottom of the stack first.
        path: the PNG to write.
    """
    cols = min(len(curves), 4) or 1
    rows = max(math.ceil(len(curves) / cols), 1)
    figure = Figure(figsize=(3.2 * cols, 2.6 * rows + 0.6))
    colours = [np.array(class_colour(index)) / 255 for index in range(len(labels))]
    for index, (name, (n, fractions)) in enumerate(curves.items()):
        axes = figure.add_subplot(rows, cols, index + 1)
        axes.set_title(f"{name} ({int(n[-1]) if len(n) else 0} FP)", fontsize="medium")
        axes.set(ylim=(0, 100), xlabel="top false positives", ylabel="percentage of each type")
        if len(n) == 0:
            axes.text(0.5, 0.5, "no false positives", ha="center", transform=axes.transAxes)
            continue
        axes.stackplot(n, 100 * np.asarray(fractions).T, colors=colours, step="post")
        axes.set_xscale("log")
        axes.set_xlim(1, max(int(n[-1]), 2))
        axes.minorticks_off()  # drawing 20 panels' minor log ticks takes seconds
    figure.legend(
        [Rectangle((0, 0), 1, 1, color=colour) for colour in colours],
        labels,
        loc="lower center",
        ncol=len(labels),
        fontsize="small",
    )
    # Fixed margins in inches: tight_layout takes seconds with 20 log-axis panels.
    width, height = figure.get_size_inches()
    figure.subplots_adjust(
        left=0.65 / width,
        right=1 - 0.15 / width,
        top=1 - 0.35 / height,
        bottom=1.1 / height,
        wspace=0.45,
        hspace=0.6,
    )
    return _save(figure, path)
