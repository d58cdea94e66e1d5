"""``detect run``: detect objects in images with a trained checkpoint.

Writes ``OUT/<stem>.json`` (class names, scores, boxes in original pixels, xyxy 0-based continuous)
and ``OUT/<stem>.jpg`` (the image with its detections drawn) for every readable image, and
``OUT/detections.json``, every image's detections in the project's detections file
(:mod:`detect.evaluation.detections_json`; ``detect score --detections OUT`` reads it), and nothing
else: proposals are kept only in the cache folder named by ``--proposal-cache``.

Exit status: 0 when every image was processed, 1 when some could not be read (each is named on
stderr; the others are still processed), 2 for bad input (checkpoint, options, no images at all).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from detect.commands import add_override_argument, add_runtime_arguments
from detect.distributed import all_gather_object, gather_dict, is_main, process_group, this_shard
from detect.errors import DetectError


def add_arguments(parser) -> None:
    parser.epilog = (
        "Exit status: 0 all images processed, 1 some image could not be read (named on stderr), "
        "2 bad input."
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders")
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by detect train")
    parser.add_argument(
        "--method", choices=("spp", "rcnn"), help="forward path (default: the checkpoint's)"
    )
    parser.add_argument(
        "--scales", type=int, nargs="+", help="SPP-net shorter sides (default: the config's)"
    )
    parser.add_argument(
        "--svd",
        action="store_true",
        help="truncated SVD of fc6/fc7 at ranks 1024/256 (else the config's svd_ranks)",
    )
    parser.add_argument("--out", default="runs/detect", help="output folder (default runs/detect)")
    parser.add_argument(
        "--proposal-cache",
        metavar="DIR",
        help="proposal cache folder to read and fill (default: none, proposals are not kept)",
    )
    parser.add_argument(
        "--draw-threshold", type=float, default=0.5, help="draw detections scoring at least this"
    )
    add_override_argument(parser, "data.max_image_pixels=200000000")
    add_runtime_arguments(parser)


def collect_images(arguments: list[str]):
    """:class:`ImageItem` s of the files as given and of the images directly inside folders
    (sorted by name); ids are file stems, which name the outputs, so they must be unique."""
    from detect.proposals.sources import items_from_folder, items_with_unique_ids

    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            paths += [item.path for item in items_from_folder(path)]
        else:
            paths.append(path)
    return items_with_unique_ids(paths, "images (outputs are named by file stem)")


def run(args) -> int:
    # Under torchrun the ranks join before the model is placed: "cuda" is then each one's GPU.
    with process_group():
        return _run(args)


def _run(args) -> int:
    from detect.detector import Detector
    from detect.evaluation.detections_json import DETECTIONS_FILE, write_detections_json

    items = collect_images(args.images)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DetectError(f"--out {out}: exists and is not a folder")
    clash = [item.path for item in items if f"{item.image_id}.json" == DETECTIONS_FILE]
    if clash:
        raise DetectError(
            f"image {clash[0]}: its results would overwrite {out / DETECTIONS_FILE}, the file of "
            "every image's detections; rename the image"
        )
    # The test-time SVD of model.svd_ranks (1024/256 with --svd) is applied and the model
    # settings, --scales included, are checked; proposals are kept only in --proposal-cache.
    det = Detector.from_checkpoint(
        args.checkpoint,
        method=args.method,
        scales=args.scales,
        svd=args.svd,
        overrides=args.overrides,
        proposal_cache=args.proposal_cache,
    )
    start = time.perf_counter()
    # Under torchrun each rank detects its shard of the images and writes their files; rank 0
    # writes OUT/detections.json with every rank's detections, in the order of the images given.
    found, skipped = _detect_images(det, this_shard(items), out, args.draw_threshold)
    found = gather_dict(found, [item.image_id for item in items])
    skipped = [message for part in all_gather_object(skipped) for message in part]
    if not is_main():
        return 1 if skipped else 0
    write_detections_json(out / DETECTIONS_FILE, found, det.class_names)
    elapsed = time.perf_counter() - start
    done, total = len(found), sum(len(detections) for detections in found.values())
    print(
        f"{done} image(s) processed, {len(skipped)} skipped, {total} detections, "
        f"{elapsed / max(done, 1):.2f} s/image, {done / max(elapsed, 1e-9):.2f} images/s end to "
        f"end (proposals included); results in {out}/"
    )
    for message in skipped:
        print(f"detect run: error: skipped {message}", file=sys.stderr)
    return 1 if skipped else 0


def _detect_images(det, items, out: Path, draw_threshold: float) -> tuple[dict, list[str]]:
    """Detect objects in ``items``, writing ``OUT/<id>.json`` and ``OUT/<id>.jpg`` for each:
    ``({image id: Detections}, [one line per image that could not be read])``."""
    from detect.cpu_threads import beside_workers
    from detect.proposals.prefetch import ProposalJob, prefetch_proposals, proposal_workers

    # The next images' proposals are computed in proposals.workers processes while the network
    # runs on this one (on the cores they leave); each image's boxes are those computed in this
    # process would be.
    jobs = (ProposalJob(item.image_id, item.path) for item in items)
    limit = det.config.data.max_image_pixels
    workers = proposal_workers(det.proposal_cache, det.config.proposals.workers)
    if det.model.rpn is None:
        prefetched = prefetch_proposals(jobs, det.proposal_cache, limit, workers)
    else:  # a shared RPN head proposes from each image's conv map in the network's pass
        workers = 0
        prefetched = ((job, None, "") for job in jobs)
    bar = tqdm(prefetched, total=len(items), desc="detect", unit="image", disable=not is_main())
    with beside_workers(workers):
        return _write_each(det, bar, out, draw_threshold)


def _write_each(det, prefetched, out: Path, draw_threshold: float) -> tuple[dict, list[str]]:
    """Detect objects in each ``(item, proposals or None, error)`` of ``prefetched`` (proposals
    None without an error: the shared RPN head's, :meth:`detect.Detector.__call__`) and write
    ``OUT/<id>.json`` and ``OUT/<id>.jpg``: ``({image id: Detections}, [one line per image that
    could not be read])``."""
    from detect.files import atomic_write_text

    found, skipped = {}, []
    for item, proposals, error in prefetched:
        path = item.path
        try:
            if error:
                raise DetectError(error)
            image, _, _ = det.read(path)
        except DetectError as exc:  # names the file; the other images go on
            skipped.append(str(exc))
            continue
        result = det(image, proposals, image_id=item.image_id)
        detections = result.detections
        payload = {
            "image": str(path),
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "method": det.method,
            "box_format": "xyxy, 0-based continuous pixels of the original image",
            "classes": list(det.class_names),
            "detections": detections.to_records(det.class_names),
        }
        atomic_write_text(out / f"{item.image_id}.json", json.dumps(payload, indent=1))
        result.draw(out / f"{item.image_id}.jpg", draw_threshold)
        found[item.image_id] = detections
    return found, skipped
