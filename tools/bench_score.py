"""Time VOC scoring on a synthetic VOC07-test-sized problem (in memory, no files).

Usage: ``python tools/bench_score.py [--images 4952] [--detections 300000] [--metric voc07]``

Ground truth: about 2.4 objects per image (VOC07 test has 14,976 objects in 4,952 images), 20
classes, ~6% difficult. Detections: jittered copies of ground truths plus random boxes, spread over
the classes, with random scores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from detect.data.voc import VOC_CLASSES
from detect.evaluation.voc_ap import VOC_METRICS, evaluate_voc
from detect.structures import Annotation, DetectionDataset, Detections


def random_boxes(rng: np.random.Generator, n: int, width: int, height: int) -> np.ndarray:
    x1 = rng.uniform(0, width - 20, n)
    y1 = rng.uniform(0, height - 20, n)
    x2 = np.minimum(x1 + rng.uniform(10, width / 2, n), width)
    y2 = np.minimum(y1 + rng.uniform(10, height / 2, n), height)
    return np.stack([x1, y1, x2, y2], axis=1).round()


def synthesise(num_images: int, num_detections: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    width, height, classes = 500, 375, len(VOC_CLASSES)
    annotations, detections = [], {}
    per_image = rng.multinomial(num_detections, np.full(num_images, 1 / num_images))
    for i in range(num_images):
        image_id = f"{i:06d}"
        n_gt = int(rng.integers(1, 5))
        gt = random_boxes(rng, n_gt, width, height)
        gt_labels = rng.integers(0, classes, n_gt)
        annotations.append(
            Annotation(
                image_id,
                Path(f"{image_id}.jpg"),
                width,
                height,
                gt,
                gt_labels,
                rng.random(n_gt) < 0.06,
            )
        )
        n_det = int(per_image[i])
        n_near = min(n_det, 4 * n_gt)
        source = rng.integers(0, n_gt, n_near)
        near = gt[source] + rng.normal(0, 8, (n_near, 4))
        boxes = np.concatenate([near, random_boxes(rng, n_det - n_near, width, height)])
        labels = np.concatenate([gt_labels[source], rng.integers(0, classes, n_det - n_near)])
        detections[image_id] = Detections(
            torch.tensor(boxes, dtype=torch.float32), rng.random(n_det), labels
        )
    dataset = DetectionDataset("bench", Path("."), "test", VOC_CLASSES, annotations)
    return dataset, detections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4952)
    parser.add_argument("--detections", type=int, default=300_000)
    parser.add_argument("--metric", default="voc07", choices=VOC_METRICS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset, detections = synthesise(args.images, args.detections)
    start = time.perf_counter()
    result = evaluate_voc(detections, dataset, metric=args.metric)
    seconds = time.perf_counter() - start
    total = sum(len(d) for d in detections.values())
    print(
        f"evaluate_voc ({args.metric}): {len(dataset)} images, {len(dataset.class_names)} classes, "
        f"{total} detections, {sum(len(a) for a in dataset.annotations)} ground truths: "
        f"{seconds:.2f} s (mAP {result.mAP:.4f})"
    )


if __name__ == "__main__":
    main()
