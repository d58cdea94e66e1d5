"""`detect eval`: run a trained detector over a split and score it (VOC07 / VOC10 / COCO).

Usage: ``detect eval --checkpoint CK [--data PATH] [--split test] [--method spp|rcnn]
[--metric voc07|voc07_numpy|voc10|coco] [--out DIR] [--max-images N] [--proposal-cache DIR]
[--set section.key=value ...] [--device D] [--precision P]``. Writes ``detections.json``, comp4
files (or ``coco_results.json``), ``metrics.json``, ``pr_curves.png``, the false-positive analysis
``error_analysis.{json,md,png}`` (VOC metrics), TensorBoard scalars ``tensorboard/`` (when
installed) and the proposal cache ``proposals/`` into ``--out`` (default
``<checkpoint folder>/eval_<split>``); ``--proposal-cache`` names another cache folder. Prints the
AP table, the false-positive table and the throughput.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from detect.commands import add_override_argument, add_runtime_arguments
from detect.evaluation.evaluators import METRICS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint.pt of a run")
    parser.add_argument("--data", help="VOC-layout folder or COCO json (default: from the run)")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--method", choices=["spp", "rcnn"], help="forward path (default: the trained one)"
    )
    parser.add_argument("--metric", choices=METRICS, default="voc07")
    parser.add_argument("--out", type=Path, help="output folder")
    parser.add_argument("--max-images", type=int, help="evaluate only the first N images")
    parser.add_argument(
        "--proposal-cache",
        metavar="DIR",
        help="proposal cache folder to read and fill (default: OUT/proposals)",
    )
    add_override_argument(parser, "test.classifier=svm")
    add_runtime_arguments(parser)


def run(args) -> int:
    from detect.distributed import process_group

    # Under torchrun the ranks join before the model is placed: "cuda" is then each one's GPU.
    with process_group():
        return _run(args)


def _run(args) -> int:
    from detect.distributed import is_main
    from detect.evaluation.checkpoint_eval import evaluate_checkpoint
    from detect.evaluation.error_analysis import format_error_table
    from detect.evaluation.evaluators import format_scores

    result = evaluate_checkpoint(
        args.checkpoint,
        data_root=args.data,
        split=args.split,
        method=args.method,
        metric=args.metric,
        out_dir=args.out,
        max_images=args.max_images,
        overrides=args.overrides,
        proposal_cache=args.proposal_cache,
    )
    if not is_main():  # under torchrun rank 0 alone reports (and wrote the files)
        return 0
    print(format_scores(result.scores))
    if result.errors is not None:
        print(
            "\nfalse positives (top N: the N best detections, N = ground truths; Loc, Sim, Oth, BG)"
        )
        print(format_error_table(result.errors))
    print(
        f"{result.num_images} images in {result.wall_seconds:.1f} s, "
        f"{result.images_per_second:.2f} images/s (proposals and reading included); "
        f"detector {result.seconds_per_image:.3f} s/image ({result.method}, proposals "
        f"{'from its shared conv map included' if result.shared_rpn else 'excluded'})"
    )
    files = ["metrics.json", "detections.json", result.results_path.name]
    files += [path.name for path in (result.pr_curve, *result.error_files) if path]
    print(f"results in {result.out_dir}: {', '.join(files)}")
    return 0
