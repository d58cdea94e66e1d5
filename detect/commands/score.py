"""`detect score`: score detection files against ground truth (VOC07, VOC10, COCO).

Ground truth (``--gt``): a VOC-layout folder (with ``--split``) or a COCO instances json.
Detections (``--detections``): a folder of VOC comp4 files ``comp4_det_<split>_<class>.txt``, a
COCO results json (a list of ``image_id/category_id/bbox/score`` records), or the project's
detections json (``detect-detections-v1``, see :func:`detect.structures.write_detections_json`).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from detect.data.coco import coco_categories, load_coco, read_coco_dataset
from detect.data.voc import read_voc_dataset
from detect.errors import DetectError
from detect.evaluation.checkpoint_eval import METRICS
from detect.evaluation.coco import STAT_NAMES, evaluate_coco, read_coco_results
from detect.evaluation.voc_ap import evaluate_voc
from detect.evaluation.voc_files import read_comp4
from detect.files import atomic_write_text, read_json
from detect.ops.boxes import xyxy_from_xywh
from detect.structures import DETECTIONS_FORMAT, DetectionDataset, Detections, read_detections_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, type=Path, help="VOC-layout folder or COCO json")
    parser.add_argument("--split", default="test", help="VOC split (ImageSets/Main/<split>.txt)")
    parser.add_argument(
        "--detections",
        required=True,
        type=Path,
        help="folder of comp4_det_<split>_<class>.txt files, COCO results json, or detect json",
    )
    parser.add_argument(
        "--metric",
        choices=METRICS,
        help="default: voc07 for a VOC folder, coco for a COCO json",
    )
    parser.add_argument("--json", type=Path, help="write the scores to this json file")
    parser.add_argument(
        "--classes", nargs="+", default=(), help="class names (default: VOC's 20 / the json's)"
    )


def _json_kind(path: Path) -> str:
    """``"detect"`` for the project's detections json, ``"coco"`` for a COCO results list."""
    payload = read_json(path, "detections")
    if isinstance(payload, dict) and payload.get("format") == DETECTIONS_FORMAT:
        return "detect"
    if isinstance(payload, list):
        return "coco"
    raise DetectError(
        f"detections {path}: neither a {DETECTIONS_FORMAT} file nor a COCO results list"
    )


def _relabel(
    path: Path, file_classes: tuple[str, ...], detections: dict[str, Detections], classes
) -> dict[str, Detections]:
    """Map labels of a detect json (its own class list) onto ``classes`` by name."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = [name for name in file_classes if name not in index]
    if unknown:
        raise DetectError(
            f"detections {path}: class {unknown[0]!r} is not a ground-truth class; known: {list(classes)}"
        )
    mapping = [index[name] for name in file_classes]
    return {
        image_id: Detections(d.boxes, d.scores, [mapping[int(la)] for la in d.labels])
        for image_id, d in detections.items()
    }


def _load_detections(args, dataset: DetectionDataset, category_ids: list[int] | None):
    """Detections as image id -> Detections over ``dataset.class_names``."""
    path: Path = args.detections
    ids = set(dataset.image_ids)
    if path.is_dir():
        return read_comp4(path, args.split, dataset.class_names, ids)
    if not path.is_file():
        raise DetectError(f"detections {path}: not found")
    if _json_kind(path) == "detect":
        file_classes, detections = read_detections_json(path)
        unknown = [image_id for image_id in detections if image_id not in ids]
        if unknown:
            raise DetectError(
                f"detections {path}: image {unknown[0]!r} is not in split {dataset.split!r}"
            )
        return _relabel(path, file_classes, detections, dataset.class_names)
    if category_ids is None:
        raise DetectError(f"detections {path}: a COCO results json needs a COCO json --gt")
    label_of = {cat: label for label, cat in enumerate(category_ids)}
    grouped: dict[str, list] = {}
    for index, record in enumerate(read_coco_results(path)):
        image_id = str(record["image_id"])
        if image_id not in ids:
            raise DetectError(f"detections {path}: detection {index}: image {image_id} not in --gt")
        if record["category_id"] in label_of:
            grouped.setdefault(image_id, []).append(record)
    return {
        image_id: Detections(
            xyxy_from_xywh([r["bbox"] for r in records]),
            [r["score"] for r in records],
            [label_of[r["category_id"]] for r in records],
        )
        for image_id, records in grouped.items()
    }


def _score_coco(args) -> dict:
    path: Path = args.detections
    coco = load_coco(args.gt)
    class_names, _ = coco_categories(coco, args.classes, f"COCO annotations {args.gt}")
    if path.is_file() and _json_kind(path) == "coco":
        detections = read_coco_results(path)
    else:
        dataset = read_coco_dataset(args.gt, classes=class_names, check_images=False)
        _, category_ids = coco_categories(coco, class_names)
        detections = _load_detections(args, dataset, category_ids)
    stats = evaluate_coco(detections, args.gt, classes=class_names)
    width = max(len(name) for name in STAT_NAMES)
    for name, value in stats.items():
        print(f"{name:<{width}}  {value:7.4f}")
    return {"metric": "coco", "mAP": stats["AP"], "stats": stats}


def _score_voc(args) -> dict:
    if args.gt.is_dir():
        dataset = read_voc_dataset(args.gt, args.split, args.classes, check_images=False)
        category_ids = None
    else:
        dataset = read_coco_dataset(args.gt, args.split, args.classes, check_images=False)
        _, category_ids = coco_categories(load_coco(args.gt), dataset.class_names)
    detections = _load_detections(args, dataset, category_ids)
    result = evaluate_voc(detections, dataset, metric=args.metric)
    width = max(len(name) for name in (*dataset.class_names, "mean"))
    print(f"{'class':<{width}}  {'AP':>7}  {'GT':>6}")
    for name, ap in result.ap.items():
        print(f"{name:<{width}}  {ap:7.4f}  {result.num_positives[name]:6d}")
    print(f"{'mean':<{width}}  {result.mAP:7.4f}  ({args.metric}, {len(dataset)} images)")
    clean = {name: None if math.isnan(ap) else ap for name, ap in result.ap.items()}
    return {
        "metric": args.metric,
        "mAP": None if math.isnan(result.mAP) else result.mAP,
        "ap": clean,
    }


def run(args) -> int:
    gt: Path = args.gt
    if not gt.is_dir() and not (gt.is_file() and gt.suffix.lower() == ".json"):
        raise DetectError(f"--gt {gt}: not a VOC-layout folder or a COCO .json file")
    args.metric = args.metric or ("voc07" if gt.is_dir() else "coco")
    if args.metric == "coco":
        if gt.is_dir():
            raise DetectError(f"--gt {gt}: --metric coco needs a COCO annotations json")
        scores = _score_coco(args)
    else:
        scores = _score_voc(args)
    if args.json:
        atomic_write_text(args.json, json.dumps(scores, indent=2) + "\n")
    return 0
