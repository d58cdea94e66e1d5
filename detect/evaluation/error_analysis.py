"""False positives by type, per class, in the manner of Hoiem, Chodpathumwan and Dai, *Diagnosing
Error in Object Detectors* (ECCV 2012), whose breakdown the R-CNN and SPP-net papers show.

Each class's detections are ranked by score and matched exactly as the VOC AP matches them
(:mod:`detect.evaluation.voc_ap`: the devkit's rules at IoU 0.5). A detection whose match is a
``difficult`` ground truth is ignored there and is left out here too (it is neither correct nor a
false positive). Every other detection is *correct* (a true positive) or a false positive of
exactly one type, taken in this order:

* ``loc`` — poor localisation: IoU >= ``low_iou`` (0.1) with a ground truth of its own class, i.e.
  IoU in [0.1, 0.5) or a duplicate detection of an object already matched (IoU >= 0.5);
* ``sim`` — confusion with a similar class: IoU >= ``low_iou`` with a ground truth of a class in
  one of its similarity groups (:data:`VOC_SIMILAR_GROUPS` on PASCAL VOC);
* ``oth`` — confusion with another class: IoU >= ``low_iou`` with a ground truth of any other
  class;
* ``bg`` — background: everything else.

Overlaps for the types count every ground truth, ``difficult`` ones too (a box on a hard object is
no background error). Data sets whose classes fall in no similarity group (the synthetic shapes)
have no ``sim`` errors: every confusion is ``oth``.

Two views per class, as in the papers: the outcome of the top-ranked ``N`` detections, ``N`` the
class's number of non-difficult ground truths (:func:`outcome_counts`), and the fraction of each
false-positive type among the first ``n`` false positives as ``n`` grows
(:func:`fp_type_fractions`; the papers' stacked-area figure, drawn by
:func:`detect.visualize.plot_fp_types`). Boxes are float xyxy, 0-based continuous pixels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from detect.errors import DetectError
from detect.evaluation.voc_ap import _flatten_detections, _match_class
from detect.files import atomic_write_text
from detect.ops.boxes import paired_box_iou
from detect.structures import DetectionDataset, Detections

# Outcome codes of a ranked detection; IGNORED ones (matched to a difficult object) are dropped.
IGNORED, CORRECT, LOC, SIM, OTH, BG = -1, 0, 1, 2, 3, 4
OUTCOMES = ("correct", "loc", "sim", "oth", "bg")  # names of the codes 0..4
FP_TYPES = OUTCOMES[1:]
FP_TYPE_LABELS = {
    "loc": "Loc: poor localisation",
    "sim": "Sim: similar class",
    "oth": "Oth: other class",
    "bg": "BG: background",
}

# Hoiem et al.'s similar categories on PASCAL VOC: animals (with person), vehicles, furniture,
# and aeroplane with bird.
VOC_SIMILAR_GROUPS: tuple[tuple[str, ...], ...] = (
    ("bird", "cat", "cow", "dog", "horse", "person", "sheep"),
    ("aeroplane", "bicycle", "boat", "bus", "car", "motorbike", "train"),
    ("chair", "diningtable", "sofa"),
    ("aeroplane", "bird"),
)

ANALYSIS_JSON, ANALYSIS_MD, ANALYSIS_PNG = (
    "error_analysis.json",
    "error_analysis.md",
    "error_analysis.png",
)


def similar_classes(
    class_names: Sequence[str], groups: Sequence[Sequence[str]] = VOC_SIMILAR_GROUPS
) -> np.ndarray:
    """``(K, K)`` bool: ``[a, b]`` is true when classes ``a != b`` share a group of ``groups``
    (names that are not among ``class_names`` are skipped)."""
    index = {name: k for k, name in enumerate(class_names)}
    similar = np.zeros((len(class_names), len(class_names)), dtype=bool)
    for group in groups:
        members = [index[name] for name in group if name in index]
        similar[np.ix_(members, members)] = True
    np.fill_diagonal(similar, False)
    return similar


def detection_outcomes(
    det_image: np.ndarray,
    det_boxes: np.ndarray,
    label: int,
    gt_image: np.ndarray,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    gt_difficult: np.ndarray,
    similar: np.ndarray,
    num_images: int,
    iou_threshold: float = 0.5,
    low_iou: float = 0.1,
) -> np.ndarray:
    """The outcome code (``IGNORED``, ``CORRECT``, ``LOC``, ``SIM``, ``OTH``, ``BG``) of each of one
    class's detections.

    Args:
        det_image, det_boxes: ``(D,)`` image indices and ``(D, 4)`` float64 xyxy boxes of the
            detections of class ``label``, in descending score order.
        gt_image, gt_boxes, gt_labels, gt_difficult: every ground truth of the split, all classes,
            ``(G,)`` image indices (non-decreasing), ``(G, 4)`` float64 xyxy, ``(G,)`` labels,
            ``(G,)`` difficult flags.
        similar: ``(K, K)`` bool from :func:`similar_classes`.
        num_images: images in the split (image indices are below it).
        iou_threshold: the IoU of a correct detection (inclusive), as in the VOC AP.
        low_iou: the least IoU (inclusive) at which a false positive counts as touching an object.

    Returns:
        ``(D,)`` int64 codes.
    """
    own = gt_labels == label
    tp, fp = _match_class(
        det_image,
        det_boxes,
        gt_image[own],
        gt_boxes[own],
        gt_difficult[own],
        num_images,
        iou_threshold,
    )
    # Best IoU of each detection with a ground truth of its own (0), a similar (1) and any other
    # class (2) in its image: one row per (detection, ground truth of its image) pair.
    gt_start = np.searchsorted(gt_image, np.arange(num_images + 1))
    gt_count = np.diff(gt_start)[det_image]
    pair_det = np.repeat(np.arange(det_image.size), gt_count)
    pair_first = np.cumsum(gt_count) - gt_count
    pair_gt = gt_start[det_image][pair_det] + np.arange(pair_det.size) - pair_first[pair_det]
    iou = paired_box_iou(
        torch.from_numpy(det_boxes[pair_det]), torch.from_numpy(gt_boxes[pair_gt])
    ).numpy()
    pair_label = gt_labels[pair_gt]
    kind = np.where(pair_label == label, 0, np.where(similar[label, pair_label], 1, 2))
    best = np.zeros((det_image.size, 3))
    np.maximum.at(best, (pair_det, kind), iou)

    codes = np.full(det_image.size, BG, dtype=np.int64)
    codes[best[:, 2] >= low_iou] = OTH
    codes[best[:, 1] >= low_iou] = SIM
    codes[best[:, 0] >= low_iou] = LOC
    codes[tp] = CORRECT
    codes[~tp & ~fp] = IGNORED
    return codes


def outcome_counts(outcomes: np.ndarray, top: int | None = None) -> dict[str, int]:
    """How many of the first ``top`` (default all) of ``(D,)`` ranked outcome codes (no
    ``IGNORED``) are of each of :data:`OUTCOMES`."""
    counts = np.bincount(outcomes[:top], minlength=len(OUTCOMES))
    return {name: int(counts[code]) for code, name in enumerate(OUTCOMES)}


def cumulative_fp_counts(outcomes: np.ndarray) -> np.ndarray:
    """``(F, 4)`` int64: row ``n - 1`` counts each of :data:`FP_TYPES` among the first ``n``
    false positives of the ranked ``(D,)`` outcome codes (``F`` false positives in all)."""
    fp = outcomes[outcomes != CORRECT]
    return np.cumsum(fp[:, None] == np.arange(LOC, BG + 1)[None, :], axis=0, dtype=np.int64)


def fp_type_fractions(outcomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The share of each false-positive type among the first ``n`` false positives, for every
    ``n``: ``(n (F,), fractions (F, 4))`` with ``n = 1..F`` and the columns in :data:`FP_TYPES`
    order, each row summing to 1 (:func:`cumulative_fp_counts` over ``n``)."""
    counts = cumulative_fp_counts(outcomes)
    n = np.arange(1, counts.shape[0] + 1)
    return n, counts / n[:, None]


@dataclass
class ClassErrors:
    """One class's ranked detections, by outcome.

    Attributes:
        name: the class.
        num_positives: its non-difficult ground truths (the ``N`` of the top-``N`` view).
        outcomes: ``(D,)`` codes (``CORRECT``, ``LOC``, ``SIM``, ``OTH``, ``BG``) of its detections
            in descending score order, ignored ones left out.
    """

    name: str
    num_positives: int
    outcomes: np.ndarray

    @property
    def top(self) -> dict[str, int]:
        """Outcomes of the top ``num_positives`` detections."""
        return outcome_counts(self.outcomes, self.num_positives)

    @property
    def total(self) -> dict[str, int]:
        """Outcomes of all the detections."""
        return outcome_counts(self.outcomes)


def analyze_errors(
    detections: Mapping[str, Detections],
    dataset: DetectionDataset,
    groups: Sequence[Sequence[str]] = VOC_SIMILAR_GROUPS,
    iou_threshold: float = 0.5,
    low_iou: float = 0.1,
) -> dict[str, ClassErrors]:
    """Class name -> :class:`ClassErrors` of ``detections`` on ``dataset`` (see the module).

    Args:
        detections: image id -> :class:`Detections` (boxes ``(N, 4)`` xyxy 0-based continuous,
            labels indices into ``dataset.class_names``), as :func:`evaluate_voc` takes them; the
            order of the dict breaks score ties as there.
        dataset: the split's ground truth.
        groups: class-name groups whose members count as similar to each other.
        iou_threshold: the IoU of a correct detection; ``low_iou``: of a touched object.
    """
    if not 0.0 < low_iou <= iou_threshold:
        raise DetectError(f"error analysis: low_iou must be in (0, {iou_threshold}], got {low_iou}")
    index_of = {image_id: i for i, image_id in enumerate(dataset.image_ids)}
    class_names = dataset.class_names
    det_image, det_label, det_score, det_boxes = _flatten_detections(
        detections, index_of, len(class_names)
    )
    order = np.argsort(-det_score, kind="stable")
    det_image, det_label, det_boxes = det_image[order], det_label[order], det_boxes[order]
    annotations = dataset.annotations
    gt_image = np.repeat(np.arange(len(annotations)), [len(a.boxes) for a in annotations])
    gt_boxes = np.concatenate([np.zeros((0, 4))] + [a.boxes.double().numpy() for a in annotations])
    gt_labels = np.concatenate([[]] + [a.labels.numpy() for a in annotations]).astype(np.int64)
    gt_difficult = np.concatenate([[]] + [a.difficult.numpy() for a in annotations]).astype(bool)
    similar = similar_classes(class_names, groups)

    result = {}
    for label, name in enumerate(class_names):
        dets = det_label == label
        codes = detection_outcomes(
            det_image[dets],
            det_boxes[dets],
            label,
            gt_image,
            gt_boxes,
            gt_labels,
            gt_difficult,
            similar,
            len(annotations),
            iou_threshold,
            low_iou,
        )
        positives = int(np.count_nonzero((gt_labels == label) & ~gt_difficult))
        result[name] = ClassErrors(name, positives, codes[codes != IGNORED])
    return result


def _percent(count: int, total: int) -> str:
    return f"{100.0 * count / total:.0f}%" if total else "-"


def format_error_table(analysis: Mapping[str, ClassErrors]) -> str:
    """A Markdown table: per class, the outcomes of its top ``N`` detections (``N`` = its
    non-difficult ground truths) and the share of each false-positive type among all its false
    positives; a last row sums the classes."""
    header = (
        "| class | GT | top N: correct | loc | sim | oth | bg | all FP | loc | sim | oth | bg |"
    )
    lines = [header, "|" + " --- |" * 12]
    classes = list(analysis.values())
    rows = [(c.name, c.num_positives, c.top, c.total) for c in classes]
    rows.append(
        (
            "all",
            sum(c.num_positives for c in classes),
            {k: sum(c.top[k] for c in classes) for k in OUTCOMES},
            {k: sum(c.total[k] for c in classes) for k in OUTCOMES},
        )
    )
    for name, positives, top, total in rows:
        fps = sum(total[k] for k in FP_TYPES)
        cells = [name, str(positives), *(str(top[k]) for k in OUTCOMES), str(fps)]
        cells += [_percent(total[k], fps) for k in FP_TYPES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _curve_points(count: int) -> list[int]:
    """1, 2, 4, ... up to ``count``, and ``count`` itself: where the JSON samples the curve."""
    points = [2**k for k in range(int(math.log2(count)) + 1)] if count else []
    return points + ([count] if count and points[-1] != count else [])


def _sampled(
    n: np.ndarray, fractions: np.ndarray, points: int = 400
) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``points`` rows of a ``(n (F,), fractions (F, 4))`` curve, spaced evenly on
    a log axis (the figure's), the first and last kept."""
    if n.size <= points:
        return n, fractions
    keep = np.unique(np.geomspace(1, n.size, points).round().astype(np.int64)) - 1
    return n[keep], fractions[keep]


def error_analysis_json(
    analysis: Mapping[str, ClassErrors], iou_threshold: float = 0.5, low_iou: float = 0.1
) -> dict:
    """The analysis as JSON: per class its ground truths, the top-``N`` and total outcome
    counts, and the counts of each false-positive type among the first ``n`` false positives at
    ``n`` = 1, 2, 4, ... and the last."""
    classes = {}
    for name, errors in analysis.items():
        counts = cumulative_fp_counts(errors.outcomes)
        points = _curve_points(counts.shape[0])
        curve = {"false_positives": points}
        for column, fp_type in enumerate(FP_TYPES):
            curve[fp_type] = [int(counts[p - 1, column]) for p in points]
        classes[name] = {
            "num_positives": errors.num_positives,
            "top": errors.top,
            "all": errors.total,
            "fp_curve": curve,
        }
    return {
        "iou_threshold": iou_threshold,
        "low_iou": low_iou,
        "fp_types": FP_TYPE_LABELS,
        "classes": classes,
    }


def save_error_analysis(
    analysis: Mapping[str, ClassErrors], out_dir: Path, title: str = "false positives"
) -> tuple[Path, Path, Path]:
    """Write ``error_analysis.json``, ``.md`` (the table) and ``.png`` (the stacked shares of
    false-positive types against the number of top-ranked false positives, one panel per
    class) into ``out_dir``; returns their paths."""
    from detect.visualize import plot_fp_types

    out_dir = Path(out_dir)
    json_path, md_path = out_dir / ANALYSIS_JSON, out_dir / ANALYSIS_MD
    atomic_write_text(json_path, json.dumps(error_analysis_json(analysis), indent=2) + "\n")
    intro = (
        f"# {title}\n\nTop N: the class's N highest-scoring detections, N = its non-difficult "
        "ground truths. All FP: the share of each type among all its false positives. "
        + " ".join(f"{label}." for label in FP_TYPE_LABELS.values())
        + "\n\n"
    )
    atomic_write_text(md_path, intro + format_error_table(analysis) + "\n")
    curves = {
        name: _sampled(*fp_type_fractions(errors.outcomes)) for name, errors in analysis.items()
    }
    png = plot_fp_types(curves, [FP_TYPE_LABELS[t] for t in FP_TYPES], out_dir / ANALYSIS_PNG)
    return json_path, md_path, png
