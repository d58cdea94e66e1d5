"""`detect score`: score detection files against ground truth (VOC07, VOC10, COCO).

Ground truth (``--gt``): a VOC-layout folder (with ``--split``) or a COCO instances json.
Detections (``--detections``): the output folder of ``detect run`` or ``detect eval`` (its
``detections.json``), a folder of VOC comp4 files ``comp4_det_<split>_<class>.txt``, a COCO results
json, or the project's detections json (:mod:`detect.evaluation.detection_files`). Class names:
``--classes``, else the VOC folder's ``classes.txt``, else the detections json's own list, else the
20 VOC classes (a COCO json: its categories).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from detect.data.coco import coco_categories, load_coco, read_coco_dataset
from detect.data.voc import read_class_list, read_voc_dataset
from detect.errors import DetectError
from detect.evaluation.detection_files import DetectionsSource
from detect.evaluation.evaluators import (
    METRICS,
    COCOEvaluator,
    Scores,
    VOCEvaluator,
    format_scores,
)
from detect.files import atomic_write_text
from detect.structures import DetectionDataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, type=Path, help="VOC-layout folder or COCO json")
    parser.add_argument("--split", default="test", help="VOC split (ImageSets/Main/<split>.txt)")
    parser.add_argument(
        "--detections",
        required=True,
        type=Path,
        help="output folder of detect run / detect eval, folder of comp4 files, COCO results json, "
        "or detections json",
    )
    parser.add_argument(
        "--metric",
        choices=METRICS,
        help="default: voc07 for a VOC folder, coco for a COCO json",
    )
    parser.add_argument("--json", type=Path, help="write the scores to this json file")
    parser.add_argument(
        "--classes",
        nargs="+",
        default=(),
        help="class names (default: classes.txt, the detections file's, VOC's 20 / the json's)",
    )


def _voc_dataset(args, source: DetectionsSource) -> DetectionDataset:
    """The VOC folder's split; classes from ``--classes``, else its ``classes.txt``, else the
    detections file's own list, else the 20 VOC classes."""
    classes = tuple(args.classes) or read_class_list(args.gt) or source.class_names
    return read_voc_dataset(args.gt, args.split, classes, check_images=False)


def _score_coco(args, source: DetectionsSource) -> Scores:
    evaluator = COCOEvaluator(args.gt, args.classes)
    if source.format == "coco":
        evaluator.process_results(source.records)
    else:
        dataset = read_coco_dataset(args.gt, classes=evaluator.class_names, check_images=False)
        for image_id, dets in source.for_dataset(dataset, args.split).items():
            evaluator.process(image_id, dets)
    return evaluator.evaluate()


def _score_voc(args, source: DetectionsSource) -> Scores:
    category_ids = None
    if args.gt.is_dir():
        dataset = _voc_dataset(args, source)
    else:
        dataset = read_coco_dataset(args.gt, args.split, args.classes, check_images=False)
        _, category_ids = coco_categories(load_coco(args.gt), dataset.class_names)
    evaluator = VOCEvaluator(dataset, args.metric)
    for image_id, dets in source.for_dataset(dataset, args.split, category_ids).items():
        evaluator.process(image_id, dets)
    return evaluator.evaluate()


def run(args) -> int:
    gt: Path = args.gt
    if not gt.is_dir() and not (gt.is_file() and gt.suffix.lower() == ".json"):
        raise DetectError(f"--gt {gt}: not a VOC-layout folder or a COCO .json file")
    args.metric = args.metric or ("voc07" if gt.is_dir() else "coco")
    if args.metric == "coco" and gt.is_dir():
        raise DetectError(f"--gt {gt}: --metric coco needs a COCO annotations json")
    source = DetectionsSource.read(args.detections)
    scores = (_score_coco if args.metric == "coco" else _score_voc)(args, source)
    print(format_scores(scores))
    if args.json:
        atomic_write_text(args.json, json.dumps(scores.to_json(), indent=2) + "\n")
    return 0
