"""Peak memory of a whole fc-mode training run and its evaluation at two data-set sizes.

Generates VOC-sized data (500x375 images, 2,000 proposals each written straight into the
proposal import format: no selective search), then, for each size, in a fresh subprocess: fc-mode
fine-tuning of a ZF-5 (256-channel conv5) detector with an fc layer of 4096, the SVMs with
hard-negative mining, ridge box regression, and ``detect eval`` with the SVM scores on a test
split a fifth of the training split's size. The parent reads each child's peak resident set
(``ru_maxrss`` from ``os.wait4``) and prints both and their growth. Target (issue 14.4): growth
under 10% from the smaller set to the larger, both under 4 GiB.

Memory stays flat because the conv maps of fine-tuning live on disk behind a RAM budget
(``finetune.feature_cache_mb``), the SVM / ridge features are per-image shards read back one
image at a time, a mining round's negatives are capped (``svm.max_active_negatives``) and
evaluation keeps only detections (README, "Memory").

::

    python tools/bench_memory.py                      # 50 and 200 training images
    python tools/bench_memory.py --sizes 20 80 --work runs/bench_memory
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 500, 375
PROPOSALS = 2000
CLASSES = ("box", "disc")
GIB = 2**30


def make_split(root: Path, prefix: str, count: int, rng: np.random.Generator) -> tuple[list, dict]:
    """``count`` noise images with 1-3 objects each, and 2,000 proposals per image: jittered
    ground-truth boxes (regression rows) and uniform random boxes."""
    import torch

    from detect.data.images import write_image
    from detect.structures import Annotation

    annotations, proposals = [], {}
    for index in range(count):
        image = rng.integers(60, 200, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        boxes, labels = [], []
        for _ in range(int(rng.integers(1, 4))):
            w, h = (int(v) for v in rng.integers(60, 180, 2))
            x, y = int(rng.integers(0, WIDTH - w)), int(rng.integers(0, HEIGHT - h))
            label = int(rng.integers(0, len(CLASSES)))
            image[y : y + h, x : x + w] = (200, 40, 40) if label == 0 else (40, 40, 200)
            boxes.append([x, y, x + w, y + h])
            labels.append(label)
        image_id = f"{prefix}{index:05d}"
        path = root / "JPEGImages" / f"{image_id}.jpg"
        write_image(path, image)
        gt = np.array(boxes, dtype=np.float32)
        jitter = np.repeat(gt, 50, axis=0) + rng.normal(0, 8, (50 * len(gt), 4))
        corners = rng.uniform(0, [WIDTH - 20, HEIGHT - 20], (PROPOSALS - len(jitter), 2))
        sizes = rng.uniform(16, 300, corners.shape)
        random_boxes = np.hstack([corners, corners + sizes])
        found = np.concatenate([jitter, random_boxes]).clip(0, [WIDTH, HEIGHT, WIDTH, HEIGHT])
        proposals[image_id] = torch.tensor(found, dtype=torch.float32)
        annotations.append(Annotation(image_id, path, WIDTH, HEIGHT, torch.tensor(gt), labels))
    return annotations, proposals


def make_data(root: Path, num_train: int, num_test: int) -> None:
    """A VOC folder ``root/voc`` (splits trainval and test) and ``root/proposals.npz``."""
    from detect.data.voc import write_voc_dataset
    from detect.proposals import write_proposals

    rng = np.random.default_rng(num_train)
    train, train_boxes = make_split(root / "voc", "tr", num_train, rng)
    test, test_boxes = make_split(root / "voc", "te", num_test, rng)
    write_voc_dataset(root / "voc", CLASSES, {"trainval": train, "test": test})
    write_proposals(root / "proposals.npz", {**train_boxes, **test_boxes})


def config_values(root: Path, workers: int, max_active: int) -> dict:
    """fc-mode ZF-5 with fc 4096, SVMs and ridge; few iterations (memory, not accuracy)."""
    return {
        "seed": 0,
        "data": {"root": str(root / "voc"), "classes": list(CLASSES)},
        "proposals": {
            "import_file": str(root / "proposals.npz"),
            "cache_dir": str(root / "proposal_cache"),
        },
        "model": {
            "backbone": "zf5",
            "scales": [HEIGHT],
            "pyramid_levels": [1, 2],
            "fc_dims": [4096],
        },
        "finetune": {
            "mode": "fc",
            "allow_random_backbone": True,
            "iterations": 20,
            "lr": 0.001,
            "lr_steps": [],
            "log_every": 10,
            "checkpoint_every": 1000,
        },
        "svm": {"enabled": True, "rounds": 2, "max_active_negatives": max_active},
        "bbox_reg": {"method": "ridge"},
        "test": {"classifier": "svm"},
        "runtime": {"device": "cpu", "num_workers": workers},
    }


def child(root: Path, workers: int, max_active: int) -> None:
    """Train and evaluate on ``root``'s data; print the stage times as one json line."""
    from detect.config import config_from_dict
    from detect.evaluation.checkpoint_eval import evaluate_checkpoint
    from detect.training import train

    config = config_from_dict(config_values(root, workers, max_active), "bench_memory")
    started = time.perf_counter()
    result = train(config, out_dir=root / "run", overwrite=True)
    trained = time.perf_counter()
    scores = evaluate_checkpoint(result.checkpoint, split="test", out_dir=root / "eval")
    print(
        json.dumps(
            {
                "train_s": round(trained - started, 1),
                "eval_s": round(time.perf_counter() - trained, 1),
                "mAP": round(scores.mAP, 4),
                "stages": list(result.stages),
            }
        )
    )


def measure(root: Path, workers: int, max_active: int) -> tuple[float, dict]:
    """Run :func:`child` in a fresh interpreter: ``(peak RSS in bytes, its json line)``."""
    command = [sys.executable, __file__, "--child", str(root), "--workers", str(workers)]
    command += ["--max-active-negatives", str(max_active)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench_memory: the run on {root} failed (exit {status})")
    return usage.ru_maxrss * 1024.0, json.loads(output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[50, 200], metavar=("SMALL", "LARGE"))
    parser.add_argument("--work", type=Path, default=Path("runs/bench_memory"))
    parser.add_argument("--workers", type=int, default=2, help="runtime.num_workers")
    parser.add_argument(
        "--max-active-negatives",
        type=int,
        default=6000,
        help="svm.max_active_negatives (0: no cap)",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child, args.workers, args.max_active_negatives)
        return 0
    peaks = []
    for size in args.sizes:
        root = args.work / f"train{size}"
        shutil.rmtree(root, ignore_errors=True)
        make_data(root, size, max(1, size // 5))
        peak, info = measure(root, args.workers, args.max_active_negatives)
        peaks.append(peak)
        print(
            f"{size:4d} training images ({max(1, size // 5)} test): peak RSS "
            f"{peak / GIB:.2f} GiB; train {info['train_s']} s, eval {info['eval_s']} s, "
            f"stages {'+'.join(info['stages'])}, mAP {info['mAP']}",
            flush=True,
        )
        shutil.rmtree(root / "run" / "features", ignore_errors=True)  # disk, not memory
    growth = 100.0 * (peaks[1] / peaks[0] - 1.0)
    met = growth < 10.0 and max(peaks) < 4 * GIB
    print(
        f"growth {growth:+.1f}% from {args.sizes[0]} to {args.sizes[1]} images "
        f"(target < 10%, both < 4 GiB: {'met' if met else 'missed'})"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
