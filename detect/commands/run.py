"""``detect run``: detect objects in images with a trained checkpoint.

Writes ``OUT/<stem>.json`` (class names, scores, boxes in original pixels, xyxy 0-based continuous)
and ``OUT/<stem>.jpg`` (the image with its detections drawn) for every readable image.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from detect.errors import DetectError


def add_arguments(parser) -> None:
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
        "--draw-threshold", type=float, default=0.5, help="draw detections scoring at least this"
    )


def collect_images(arguments: list[str]) -> list[Path]:
    """Files as given, and the images directly inside folders (sorted by name)."""
    from detect.proposals.sources import IMAGE_SUFFIXES

    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            paths += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            paths.append(path)
    return paths


def proposals_for(image, path: Path, config):
    """Cached selective-search proposals of ``image`` (computed and cached when missing)."""
    from detect.proposals import ProposalCache, selective_search

    cache = ProposalCache.from_config(config.proposals)
    size = tuple(image.shape[:2])
    boxes = cache.get(path.stem, path, size)
    if boxes is None:
        cfg = config.proposals
        boxes = selective_search(
            image, cfg.mode, cfg.resize_long_side, cfg.min_size, cfg.max_proposals
        )
        cache.put(path.stem, boxes, size, path)
    return boxes


def run(args) -> int:
    from detect.data.images import read_image, write_image
    from detect.inference import Timer, detect_image
    from detect.io import atomic_write_text
    from detect.training.checkpoint import load_checkpoint
    from detect.visualize import draw_detections

    # load_checkpoint applies the test-time SVD of model.svd_ranks (forced to 1024/256 by --svd).
    overrides = ["model.svd_ranks=[1024, 256]"] if args.svd else []
    loaded = load_checkpoint(args.checkpoint, method=args.method, overrides=overrides)
    paths = collect_images(args.images)
    if not paths:
        raise DetectError(f"no images found in {' '.join(args.images)}")
    out = Path(args.out)
    timer = Timer()
    done, skipped, total = 0, [], 0
    start = time.perf_counter()
    for path in tqdm(paths, desc="detect", unit="image"):
        try:
            image = read_image(path)
            proposals = proposals_for(image, path, loaded.config)
        except DetectError as exc:
            skipped.append(f"{path}: {exc}")
            continue
        detections = detect_image(
            loaded.model,
            image,
            proposals,
            loaded.config.test,
            loaded.scorer,
            scales=args.scales,
            timer=timer,
        )
        payload = {
            "image": str(path),
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "method": loaded.method,
            "box_format": "xyxy, 0-based continuous pixels of the original image",
            "classes": list(loaded.class_names),
            "detections": detections.to_records(loaded.class_names),
        }
        atomic_write_text(out / f"{path.stem}.json", json.dumps(payload, indent=1))
        drawn = draw_detections(image, detections, loaded.class_names, args.draw_threshold)
        write_image(out / f"{path.stem}.jpg", drawn)
        done += 1
        total += len(detections)
    elapsed = time.perf_counter() - start
    for message in skipped:
        print(f"detect run: skipped {message}", file=sys.stderr)
    print(
        f"{done} image(s) processed, {len(skipped)} skipped, {total} detections, "
        f"{elapsed / max(done, 1):.2f} s/image (incl. proposals); results in {out}/"
    )
    return 0 if done else 1
