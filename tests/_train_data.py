"""A tiny VOC-layout data set drawn in code, with imported proposals, for the training tests."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from detect.config import config_from_dict
from detect.data.images import write_image
from detect.data.voc import write_voc_dataset
from detect.proposals import write_proposals
from detect.structures import Annotation

CLASSES = ("red", "blue")
COLOURS = {0: (220, 30, 30), 1: (30, 30, 220)}


def make_tiny_voc(root: Path, num_images: int = 6, size: int = 64, seed: int = 0) -> Path:
    """Images with one or two solid squares of class red / blue on grey noise.

    Writes ``root/voc`` (split ``trainval`` and ``test`` = the same images) and
    ``root/proposals.json`` (jittered ground-truth boxes plus random boxes). Returns ``root``.
    """
    rng = np.random.default_rng(seed)
    voc = root / "voc"
    annotations, proposals = [], {}
    for index in range(num_images):
        image = rng.integers(90, 140, size=(size, size, 3), dtype=np.uint8)
        boxes, labels = [], []
        for label in (index % 2, 1 - index % 2)[: 1 + index % 2]:
            side = int(rng.integers(16, 28))
            x, y = (int(v) for v in rng.integers(0, size - side, size=2))
            if boxes and x < boxes[0][2] and y < boxes[0][3]:
                continue  # keep objects apart
            image[y : y + side, x : x + side] = COLOURS[label]
            boxes.append([x, y, x + side, y + side])
            labels.append(label)
        image_id = f"{index:04d}"
        path = voc / "JPEGImages" / f"{image_id}.png"
        write_image(path, image)
        gt = torch.tensor(boxes, dtype=torch.float32)
        annotations.append(Annotation(image_id, path, size, size, gt, labels))
        jitter = gt.repeat(12, 1) + torch.from_numpy(rng.normal(0, 3, (12 * len(gt), 4))).float()
        corners = torch.from_numpy(rng.uniform(0, size - 12, (40, 2))).float()
        sizes = torch.from_numpy(rng.uniform(8, 40, (40, 2))).float()
        random_boxes = torch.cat([corners, (corners + sizes).clamp(max=size)], dim=1)
        proposals[image_id] = torch.cat([jitter.clamp(0, size), random_boxes])
    write_voc_dataset(voc, CLASSES, {"trainval": annotations, "test": annotations})
    write_proposals(root / "proposals.json", proposals)
    return root


def tiny_config_dict(root: Path, **finetune) -> dict:
    """Config values for a fast run on :func:`make_tiny_voc` data (tiny backbone, few iterations)."""
    values = {
        "seed": 3,
        "data": {"root": str(root / "voc"), "classes": list(CLASSES)},
        "proposals": {
            "import_file": str(root / "proposals.json"),
            "cache_dir": str(root / "cache"),
        },
        "model": {
            "backbone": "tiny",
            "scales": [64],
            "max_size": 128,
            "pyramid_levels": [1, 2],
            "fc_dims": [32, 32],
            "dropout": 0.5,
        },
        "finetune": {
            "mode": "end_to_end",
            "iterations": 6,
            "lr": 0.01,
            "lr_steps": [4],
            "images_per_batch": 2,
            "rois_per_image_batch": 32,
            "checkpoint_every": 3,
            "log_every": 2,
            **finetune,
        },
        "bbox_reg": {"method": "learned"},
        "test": {"score_threshold": 0.0},
        # The CPU suite stays on the CPU on a GPU machine too (bit-identical resume, exact
        # comparisons); tests/gpu/ asks for CUDA.
        "runtime": {"device": "cpu"},
    }
    return values


def tiny_config(root: Path, **finetune):
    return config_from_dict(tiny_config_dict(root, **finetune), "test config")


def ctrl_c_after(iterations: int) -> Callable[[int], None]:
    """An ``on_iteration`` callback that does what Ctrl-C does once ``iterations`` are done."""

    def callback(completed: int) -> None:
        if completed == iterations:
            signal.raise_signal(signal.SIGINT)

    return callback
