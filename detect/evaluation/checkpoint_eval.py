"""Evaluate a checkpoint on a split: inference over every image, result files, official scores.

Writes into ``out_dir``: ``detections.json`` (the project's format), VOC comp4 files under
``comp4/`` (or ``coco_results.json`` for ``--metric coco``), ``metrics.json`` and, for VOC metrics,
``pr_curves.png`` and the false-positive analysis ``error_analysis.{json,md,png}``
(:mod:`detect.evaluation.error_analysis`); the AP goes to TensorBoard under ``tensorboard/`` when
it is installed (:mod:`detect.scalars`). Scores come from the evaluators of
:mod:`detect.evaluation.evaluators`, as in ``detect score``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from detect.data.loader import read_images
from detect.data.names import check_name
from detect.distributed import all_gather_object, gather_dict, is_main, process_group, this_shard
from detect.errors import DetectError
from detect.evaluation.detections_json import DETECTIONS_FILE, write_detections_json
from detect.evaluation.error_analysis import ClassErrors, analyze_errors, save_error_analysis
from detect.evaluation.evaluators import METRICS, COCOEvaluator, Scores, VOCEvaluator
from detect.files import atomic_write_text
from detect.scalars import TENSORBOARD_DIR, write_scalars
from detect.structures import Detections


@dataclass
class EvalResult:
    """Scores and files of one evaluation.

    Attributes:
        scores: the evaluator's scores (``mAP``, per-class ``ap``, COCO ``stats``).
        seconds_per_image: mean time of the detector on one image (proposals excluded, but
            for a shared RPN head's: they come from the detector's own pass).
        wall_seconds: the whole detection pass (proposals, image reading and the detector).
        num_images: the images evaluated.
        results_path: the comp4 folder or the COCO results json.
        detections: image id -> :class:`Detections` (boxes xyxy 0-based continuous pixels).
        errors: the false-positive analysis per class (VOC metrics;
            :func:`~detect.evaluation.error_analysis.analyze_errors`), ``error_files`` its files.
    """

    scores: Scores
    seconds_per_image: float
    num_images: int
    method: str
    out_dir: Path
    metrics_path: Path
    detections_path: Path
    results_path: Path
    pr_curve: Path | None = None
    detections: dict[str, Detections] = field(default_factory=dict, repr=False)
    wall_seconds: float = 0.0
    errors: dict[str, ClassErrors] | None = field(default=None, repr=False)
    error_files: tuple[Path, ...] = ()
    shared_rpn: bool = False  # proposed by the RPN head on the detector's conv map

    @property
    def images_per_second(self) -> float:
        """Images over :attr:`wall_seconds` (proposals included)."""
        return self.num_images / self.wall_seconds if self.wall_seconds > 0 else float("nan")

    @property
    def mAP(self) -> float:
        """VOC mAP, or COCO AP@[.5:.95] for ``metric == "coco"``."""
        return self.scores.mAP

    @property
    def ap(self) -> dict[str, float]:
        """Class name -> AP (VOC metrics; empty for COCO)."""
        return self.scores.ap


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
    evaluator = (
        COCOEvaluator(root, loaded.class_names)
        if metric == "coco"
        else VOCEvaluator(dataset, metric)
    )
    cache_dir = Path(proposal_cache) if proposal_cache is not None else out / "proposals"
    # Under torchrun each rank detects its shard of the images (proposals included); an image's
    # detections depend on that image alone, so the gathered ones are those of one process.
    started = time.perf_counter()
    with process_group():
        shard = dataclasses.replace(dataset, annotations=this_shard(dataset.annotations))
        proposals: dict = {}  # none with a shared RPN: it proposes in the detector's pass
        if loaded.model.rpn is None:
            proposals = load_or_compute_proposals(
                shard,
                dataclasses.replace(cfg.proposals, cache_dir=str(cache_dir)),
                max_image_pixels=cfg.data.max_image_pixels,
            )
        found: dict[str, Detections] = {}
        seconds = 0.0
        # Images decoded by runtime.num_workers worker processes; only the detections (at most
        # test.max_per_image per image) are kept, never the images.
        images = read_images(shard.annotations, cfg.data.max_image_pixels, cfg.runtime.num_workers)
        for ann, image in tqdm(
            images, total=len(shard), desc=f"eval {split}", unit="img", disable=not is_main()
        ):
            start = time.perf_counter()
            found[ann.image_id] = loaded.model.detect(
                image, proposals.get(ann.image_id), cfg.test, loaded.scorer
            )
            seconds += time.perf_counter() - start
        detections = gather_dict(found, [ann.image_id for ann in dataset.annotations])
        seconds = sum(all_gather_object(seconds))
    wall_seconds = time.perf_counter() - started
    for image_id, image_detections in detections.items():
        evaluator.process(image_id, image_detections)

    scores = evaluator.evaluate()
    coco = metric == "coco"
    result = EvalResult(
        scores=scores,
        seconds_per_image=seconds / len(dataset),
        num_images=len(dataset),
        method=loaded.method,
        shared_rpn=loaded.model.rpn is not None,
        out_dir=out,
        metrics_path=out / "metrics.json",
        detections_path=out / DETECTIONS_FILE,
        results_path=out / ("coco_results.json" if coco else "comp4"),
        pr_curve=None if coco else out / "pr_curves.png",
        detections=detections,
        wall_seconds=wall_seconds,
    )
    if not is_main():  # under torchrun rank 0 alone writes; every rank returns the same result
        return result
    title = f"{loaded.method} {split} ({metric})"
    _write_results(result, split, loaded.class_names, evaluator, title)
    if not coco:
        result.errors = analyze_errors(detections, dataset)
        result.error_files = save_error_analysis(result.errors, out, f"False positives, {title}")
    _write_ap_scalars(result, split, int(loaded.payload.get("iteration", 0)))
    payload = {
        "checkpoint": str(checkpoint),
        "data": str(root),
        "split": split,
        "method": result.method,
        **scores.to_json(),
        "num_images": result.num_images,
        "seconds_per_image": result.seconds_per_image,
        "wall_seconds": result.wall_seconds,
        "classifier": cfg.test.classifier,
    }
    atomic_write_text(result.metrics_path, json.dumps(payload, indent=2) + "\n")
    return result


def _write_ap_scalars(result: EvalResult, split: str, iteration: int) -> None:
    """The mAP and each class's AP (VOC), or COCO's stats, as TensorBoard scalars
    ``eval_<split>/...`` at the checkpoint's fine-tuning ``iteration`` under
    ``result.out_dir/tensorboard`` (when tensorboard is installed)."""
    scores = result.scores
    values = {"mAP": scores.mAP} | {f"AP/{name}": ap for name, ap in scores.ap.items()}
    values |= {f"coco/{name}": value for name, value in scores.stats.items()}
    tags = {f"eval_{split}/{name}": float(value) for name, value in values.items()}
    write_scalars(result.out_dir / TENSORBOARD_DIR, tags, iteration)


def _write_results(result: EvalResult, split: str, class_names, evaluator, title: str) -> None:
    """Write ``detections.json`` and the comp4 files and PR curves (VOC metrics) or the COCO
    results json of ``result`` into ``result.out_dir``."""
    from detect.evaluation.coco_results import write_coco_results
    from detect.evaluation.voc_files import write_comp4
    from detect.visualize import plot_pr_curves

    result.out_dir.mkdir(parents=True, exist_ok=True)
    write_detections_json(result.detections_path, result.detections, class_names)
    if result.pr_curve is None:
        write_coco_results(result.results_path, result.detections, evaluator.category_ids)
        return
    write_comp4(result.results_path, split, result.detections, class_names)
    scores = result.scores
    plot_pr_curves(scores.voc.precision, scores.voc.recall, scores.ap, result.pr_curve, title=title)
