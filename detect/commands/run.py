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

import dataclasses
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from detect.commands import add_override_argument
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
    from detect.checkpoints import load_checkpoint
    from detect.data.images import read_image, write_image
    from detect.evaluation.detections_json import DETECTIONS_FILE, write_detections_json
    from detect.files import atomic_write_text
    from detect.proposals import ProposalCache, image_proposals
    from detect.visualize import draw_detections

    # load_checkpoint applies the test-time SVD of model.svd_ranks (forced to 1024/256 by --svd)
    # and checks the model settings, --scales included.
    overrides = [*args.overrides, *(["model.svd_ranks=[1024, 256]"] if args.svd else [])]
    if args.scales:
        overrides.append(f"model.scales={list(args.scales)}")
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
    loaded = load_checkpoint(args.checkpoint, method=args.method, overrides=overrides)
    # Only the folder the user names: never the checkpoint's proposals.cache_dir.
    cache_cfg = dataclasses.replace(loaded.config.proposals, cache_dir=args.proposal_cache or "")
    cache = ProposalCache.from_config(cache_cfg)
    done, skipped, total = 0, [], 0
    found = {}  # image id -> Detections, for OUT/detections.json
    start = time.perf_counter()
    for item in tqdm(items, desc="detect", unit="image"):
        path = item.path
        try:
            image = read_image(path, loaded.config.data.max_image_pixels)
            proposals = image_proposals(image, item.image_id, cache, path)
        except DetectError as exc:  # names the file; the other images go on
            skipped.append(str(exc))
            continue
        detections = loaded.model.detect(image, proposals, loaded.config.test, loaded.scorer)
        payload = {
            "image": str(path),
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "method": loaded.method,
            "box_format": "xyxy, 0-based continuous pixels of the original image",
            "classes": list(loaded.class_names),
            "detections": detections.to_records(loaded.class_names),
        }
        atomic_write_text(out / f"{item.image_id}.json", json.dumps(payload, indent=1))
        drawn = draw_detections(image, detections, loaded.class_names, args.draw_threshold)
        write_image(out / f"{item.image_id}.jpg", drawn)
        found[item.image_id] = detections
        done += 1
        total += len(detections)
    write_detections_json(out / DETECTIONS_FILE, found, loaded.class_names)
    elapsed = time.perf_counter() - start
    print(
        f"{done} image(s) processed, {len(skipped)} skipped, {total} detections, "
        f"{elapsed / max(done, 1):.2f} s/image (incl. proposals); results in {out}/"
    )
    for message in skipped:
        print(f"detect run: error: skipped {message}", file=sys.stderr)
    return 1 if skipped else 0
