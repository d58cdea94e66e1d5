"""Evaluate a checkpoint on a split: inference over every image, result files, official scores.

Writes into ``out_dir``: ``detections.json`` (the project's format), VOC comp4 files under
``comp4/`` (or ``coco_results.json`` for ``--metric coco``), ``metrics.json`` and, for VOC metrics,
``pr_curves.png``. Scores come from :mod:`detect.evaluation`, the machinery of ``detect score``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from detect.data.images import read_image
from detect.data.names import check_name
from detect.errors import DetectError
from detect.evaluation.voc_ap import METRICS as VOC_METRICS
from detect.files import atomic_write_text
from detect.structures import Detections, write_detections_json

METRICS = (*VOC_METRICS, "coco")


@dataclass
class EvalResult:
    """Scores and files of one evaluation.

    Attributes:
        mAP: VOC mAP, or COCO AP@[.5:.95] for ``metric == "coco"``.
        ap: class name -> AP (VOC metrics; empty for COCO). stats: COCOeval stats (COCO only).
        seconds_per_image: mean time of :func:`detect.inference.detect_image` (proposals excluded).
        results_path: the comp4 folder or the COCO results json.
    """

    metric: str
    mAP: float
    ap: dict[str, float]
    seconds_per_image: float
    num_images: int
    method: str
    out_dir: Path
    metrics_path: Path
    detections_path: Path
    results_path: Path
    pr_curve: Path | None = None
    stats: dict[str, float] = field(default_factory=dict)
    detections: dict[str, Detections] = field(default_factory=dict, repr=False)


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def check_data_classes(root: Path, class_names: tuple[str, ...], checkpoint: Path) -> None:
    """A VOC folder whose ``classes.txt`` names classes the checkpoint was not trained for is a
    :class:`DetectError` naming both lists (before any image is read)."""
    from detect.data.voc import CLASS_LIST_NAME, read_class_list

    if not root.is_dir():
        return
    declared = read_class_list(root)
    unknown = [name for name in declared if name not in class_names]
    if unknown:
        raise DetectError(
            f"checkpoint {checkpoint}: trained for classes {list(class_names)}, but "
            f"{root / CLASS_LIST_NAME} lists {list(declared)}; not in the checkpoint: {unknown}"
        )


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path | None = None,
    split: str = "test",
    method: str | None = None,
    metric: str = "voc07",
    out_dir: str | Path | None = None,
    max_images: int | None = None,
    overrides: list[str] | None = None,
    proposal_cache: str | Path | None = None,
) -> EvalResult:
    """Run the checkpoint's detector over ``split`` and score it.

    Args:
        checkpoint: a file written by :func:`detect.training.train`.
        data_root: VOC folder or COCO json; default the checkpoint config's ``data.root``.
        method: ``"spp"`` / ``"rcnn"`` forward path for the saved weights (default: as trained).
        metric: ``voc07``, ``voc10`` or ``coco`` (needs a COCO json ``data_root``).
        out_dir: where files go; default ``<checkpoint folder>/eval_<split>``.
        max_images: evaluate only the first N images of the split.
        overrides: ``section.key=value`` changes to the saved config (e.g. ``test.classifier=svm``).
        proposal_cache: the proposal cache folder; default ``out_dir/proposals`` (never the
            saved ``proposals.cache_dir``: nothing is written outside ``out_dir`` unless asked).
    """
    from detect.checkpoints import load_checkpoint
    from detect.config_paths import warn_relative_paths
    from detect.data import load_dataset
    from detect.inference import detect_image
    from detect.proposals import load_or_compute_proposals

    if metric not in METRICS:
        raise DetectError(f"--metric: expected one of {list(METRICS)}, got {metric!r}")
    if max_images is not None and max_images < 1:
        raise DetectError(f"--max-images: expected a positive number, got {max_images}")
    checkpoint = Path(checkpoint)
    loaded = load_checkpoint(checkpoint, method=method, overrides=overrides)
    cfg = loaded.config
    used = ("data.image_dir", "proposals.import_file")
    warn_relative_paths(
        cfg, f"checkpoint {checkpoint}", used if data_root else ("data.root", *used)
    )
    root = Path(data_root if data_root is not None else cfg.data.root)
    if data_root is None and not root.exists():
        raise DetectError(
            f"data {root} (data.root saved in checkpoint {checkpoint}): not found; "
            "give the data set with --data"
        )
    if metric == "coco" and root.suffix.lower() != ".json":
        raise DetectError(f"data {root}: --metric coco needs a COCO instances .json")
    check_data_classes(root, loaded.class_names, checkpoint)
    check_name(split, "split", "--split")  # it names eval_<split>/ and the comp4 files
    out = Path(out_dir) if out_dir is not None else checkpoint.parent / f"eval_{split}"
    if out.exists() and not out.is_dir():
        raise DetectError(f"--out {out}: exists and is not a folder")
    dataset = load_dataset(
        root,
        split,
        loaded.class_names,
        cfg.data.image_dir,
        cfg.data.strict_boxes,
        max_image_pixels=cfg.data.max_image_pixels,
    )
    if max_images is not None:
        dataset = dataclasses.replace(dataset, annotations=dataset.annotations[:max_images])
    if len(dataset) == 0:
        raise DetectError(f"data {root}: split {split!r} has no images")
    cache_dir = Path(proposal_cache) if proposal_cache is not None else out / "proposals"
    proposals = load_or_compute_proposals(
        dataset,
        dataclasses.replace(cfg.proposals, cache_dir=str(cache_dir)),
        max_image_pixels=cfg.data.max_image_pixels,
    )

    detections: dict[str, Detections] = {}
    seconds = 0.0
    for ann in tqdm(dataset.annotations, desc=f"eval {split}", unit="img"):
        image = read_image(ann.path, cfg.data.max_image_pixels)
        start = time.perf_counter()
        detections[ann.image_id] = detect_image(
            loaded.model, image, proposals[ann.image_id], cfg.test, loaded.scorer
        )
        seconds += time.perf_counter() - start

    out.mkdir(parents=True, exist_ok=True)
    detections_path = out / "detections.json"
    write_detections_json(detections_path, detections, loaded.class_names)
    result = EvalResult(
        metric=metric,
        mAP=math.nan,
        ap={},
        seconds_per_image=seconds / len(dataset),
        num_images=len(dataset),
        method=loaded.method,
        out_dir=out,
        metrics_path=out / "metrics.json",
        detections_path=detections_path,
        results_path=out / "comp4",
        detections=detections,
    )
    if metric == "coco":
        _score_coco(result, dataset, root, loaded.class_names)
    else:
        _score_voc(result, dataset, split, loaded.class_names)
    payload = {
        "checkpoint": str(checkpoint),
        "data": str(root),
        "split": split,
        "method": result.method,
        "metric": metric,
        "mAP": _finite_or_none(result.mAP),
        "ap": {name: _finite_or_none(ap) for name, ap in result.ap.items()},
        "stats": result.stats,
        "num_images": result.num_images,
        "seconds_per_image": result.seconds_per_image,
        "classifier": cfg.test.classifier,
    }
    atomic_write_text(result.metrics_path, json.dumps(payload, indent=2) + "\n")
    return result


def _score_voc(result: EvalResult, dataset, split: str, class_names) -> None:
    from detect.evaluation.voc_ap import evaluate_voc
    from detect.evaluation.voc_files import write_comp4
    from detect.visualize import plot_pr_curves

    write_comp4(result.results_path, split, result.detections, class_names)
    scores = evaluate_voc(result.detections, dataset, metric=result.metric)
    result.mAP, result.ap = scores.mAP, dict(scores.ap)
    result.pr_curve = plot_pr_curves(
        scores.precision,
        scores.recall,
        scores.ap,
        result.out_dir / "pr_curves.png",
        title=f"{result.method} {split} ({result.metric})",
    )


def _score_coco(result: EvalResult, dataset, root: Path, class_names) -> None:
    from detect.data.coco import coco_categories, load_coco
    from detect.evaluation.coco import evaluate_coco, write_coco_results

    coco_gt = load_coco(root)
    _, category_ids = coco_categories(coco_gt, class_names)
    result.results_path = result.out_dir / "coco_results.json"
    write_coco_results(result.results_path, result.detections, category_ids)
    result.stats = evaluate_coco(result.detections, dataset, class_names, coco_gt=coco_gt)
    result.mAP = result.stats["AP"]


def format_eval_table(result: EvalResult) -> str:
    """A per-class AP table (VOC) or the COCO stats, with mAP and time per image."""
    lines = []
    if result.ap:
        width = max(len(name) for name in (*result.ap, "mean"))
        lines.append(f"{'class':<{width}}  {'AP':>7}")
        lines += [f"{name:<{width}}  {ap:7.4f}" for name, ap in result.ap.items()]
        lines.append(f"{'mean':<{width}}  {result.mAP:7.4f}  ({result.metric})")
    else:
        width = max(len(name) for name in result.stats) if result.stats else 4
        lines += [f"{name:<{width}}  {value:7.4f}" for name, value in result.stats.items()]
    lines.append(
        f"{result.num_images} images, {result.seconds_per_image:.3f} s/image "
        f"({result.method}, proposals excluded)"
    )
    return "\n".join(lines)
