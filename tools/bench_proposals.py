"""Benchmark selective search: seconds per VOC-sized image and the speed-up from more workers.

    .venv/bin/python tools/bench_proposals.py [--mode fast] [--images 8] [--workers 1 2] [--image PATH]

The image is a real photo (matplotlib's sample ``grace_hopper.jpg``, or ``--image``) cropped to 4:3
and resized to 500x375, the size of a typical PASCAL VOC image; the multi-image runs use flipped and
shifted crops of it so every image differs. Each worker count runs the full pipeline
(:func:`detect.proposals.compute_proposals`: read, search, cache write) on a fresh cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from detect.data.images import read_image, write_image
from detect.proposals import ImageItem, ProposalCache, compute_proposals, selective_search

VOC_SIZE = (375, 500)  # height, width


def base_photo(path: str | None) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB photo, at least VOC-sized."""
    if path is None:
        import matplotlib.cbook

        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return read_image(path)


def voc_sized_variants(photo: np.ndarray, count: int) -> list[np.ndarray]:
    """``count`` distinct 375x500 RGB images: 4:3 crops at shifted offsets, every other mirrored."""
    height, width = photo.shape[:2]
    crop_w = min(width, round(height * 4 / 3))
    crop_h = round(crop_w * 3 / 4)
    images = []
    for i in range(count):
        top = (height - crop_h) * i // max(1, count - 1)
        left = (width - crop_w) * i // max(1, count - 1)
        crop = photo[top : top + crop_h, left : left + crop_w]
        if i % 2:
            crop = crop[:, ::-1]
        resized = cv2.resize(crop, VOC_SIZE[::-1], interpolation=cv2.INTER_AREA)
        images.append(np.ascontiguousarray(resized))
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="fast", choices=("fast", "quality"))
    parser.add_argument("--image", help="photo to use instead of matplotlib's sample")
    parser.add_argument("--images", type=int, default=8, help="images for the worker comparison")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="single-image timing repeats")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the worker comparison")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    images = voc_sized_variants(base_photo(args.image), args.images)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"cpus: {os.cpu_count()} (load average {load}), opencv {cv2.__version__}, {args.mode}")

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        boxes = selective_search(images[0], mode=args.mode)
        times.append(time.perf_counter() - start)
    print(
        f"single image {images[0].shape[1]}x{images[0].shape[0]}: "
        f"{statistics.median(times):.3f} s (median of {args.repeats}), {boxes.shape[0]} boxes"
    )

    with tempfile.TemporaryDirectory() as tmp:
        items = []
        for i, image in enumerate(images):
            path = Path(tmp) / "images" / f"{i:06d}.png"
            write_image(path, image)
            items.append(ImageItem(path.stem, path))
        # Worker counts alternate over the rounds and the best round counts, so a burst of load
        # from other processes on a shared machine does not favour one side.
        walls: dict[int, list[float]] = {w: [] for w in args.workers}
        for round_index in range(args.rounds):
            for workers in args.workers:
                cache = ProposalCache(Path(tmp) / f"cache{workers}-{round_index}", mode=args.mode)
                run = compute_proposals(items, cache, workers=workers, progress=False)
                walls[workers].append(run.wall_seconds)
        base = min(walls[args.workers[0]])
        for workers, values in walls.items():
            best = min(values)
            print(
                f"{len(items)} images, {workers} worker(s): {best:.2f} s wall "
                f"(best of {args.rounds}: {', '.join(f'{v:.2f}' for v in values)}), "
                f"{best / len(items):.3f} s per image, speed-up {base / best:.2f}x"
            )


if __name__ == "__main__":
    main()
