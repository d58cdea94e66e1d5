"""End-to-end seconds per image with proposals overlapped, against max(proposals, network).

    .venv/bin/python tools/bench_overlap.py [--checkpoint CK] [--images 6] [--workers 1]
        [--precision fp32|bf16] [--svd] [--threads N]

Without ``--checkpoint`` a random-weight ZF-5 of the ``zf5_bench`` config (688x917 photos,
selective search on the photo itself, at most 2,000 boxes, 20 classes) is saved to a temporary
folder and loaded through :class:`detect.Detector`. The photos are scikit-learn's ``china.jpg`` at
688x917 (``detect bench``'s), every other one mirrored and each slightly shifted, written as PNGs.
Three timings, seconds per image:

* proposals: selective search of each photo in this process, single-threaded OpenCV (what one
  proposal worker does per image);
* network: the detector on each photo with its proposals given (after one warm-up image);
* end to end: :meth:`detect.Detector.predict` over the files with ``--workers`` proposal workers
  (read, proposals, network; worker start-up included).

The target of issue 18 is end to end <= 1.10 x max(proposals, network) with one worker.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from detect import Detector
from detect.commands.bench import default_image
from detect.config import load_config
from detect.cpu_threads import physical_cores
from detect.data.images import write_image
from detect.models import build_detector
from detect.proposals.prefetch import ProposalJob, prefetch_proposals
from detect.training.checkpoint import save_checkpoint

VOC_CLASSES = 20


def photos(count: int) -> list[np.ndarray]:
    """``count`` distinct 688x917 RGB photos: shifted by 8 px each, every other one mirrored."""
    base = default_image()
    out = []
    for i in range(count):
        image = np.roll(base, 8 * i, axis=1)
        out.append(np.ascontiguousarray(image[:, ::-1] if i % 2 else image))
    return out


def random_checkpoint(folder: Path) -> Path:
    """A random-weight ZF-5 SPP-net checkpoint with the ``zf5_bench`` settings."""
    config = load_config("zf5_bench")
    model = build_detector("spp", config.model, VOC_CLASSES)
    names = tuple(f"class{i}" for i in range(VOC_CLASSES))
    save_checkpoint(folder / "zf5.pt", model, names, config)
    return folder / "zf5.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="default: a random ZF-5 (zf5_bench)")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--svd", action="store_true", help="truncated SVD 1024/256 of fc6/fc7")
    parser.add_argument("--threads", type=int, default=physical_cores())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint = args.checkpoint or random_checkpoint(folder)
        det = Detector.from_checkpoint(
            checkpoint, device="cpu", precision=args.precision, svd=args.svd
        )
        images = photos(args.images)
        paths = []
        for i, image in enumerate(images):
            paths.append(folder / f"photo{i}.png")
            write_image(paths[-1], image)

        cv2.setNumThreads(1)  # as in a proposal worker
        start = time.perf_counter()
        jobs = [
            ProposalJob(path.stem, None, image) for path, image in zip(paths, images, strict=True)
        ]
        boxes = [b for _, b, _ in prefetch_proposals(jobs, det.proposal_cache, 10**9, workers=0)]
        proposals = (time.perf_counter() - start) / len(images)
        cv2.setNumThreads(0)

        det(images[0], boxes[0])  # warm-up
        start = time.perf_counter()
        for image, found in zip(images, boxes, strict=True):
            det(image, found)
        network = (time.perf_counter() - start) / len(images)

        start = time.perf_counter()
        results = list(det.predict(paths, progress=False, workers=args.workers))
        end_to_end = (time.perf_counter() - start) / len(results)

    floor = max(proposals, network)
    print(
        f"{len(images)} photos 688x917, {np.mean([len(b) for b in boxes]):.0f} proposals/image, "
        f"{args.threads} thread(s), {args.precision}{', SVD 1024/256' if args.svd else ''}, "
        f"{args.workers} proposal worker(s)"
    )
    print(f"proposals   {proposals:7.3f} s/image (one process, one OpenCV thread)")
    print(f"network     {network:7.3f} s/image")
    print(f"end to end  {end_to_end:7.3f} s/image = {1 / end_to_end:.2f} images/s")
    print(f"end to end / max(proposals, network) = {end_to_end / floor:.2f} (target <= 1.10)")


if __name__ == "__main__":
    main()
