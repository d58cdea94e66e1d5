"""``detect bench --peers``: the detectors users would pick instead, timed beside SPP-net.

torchvision's Faster R-CNN with a ResNet-50-FPN and a MobileNetV3-Large-FPN backbone, built
with random weights (``weights=None, weights_backbone=None``: timing does not depend on them and
nothing is downloaded), run on the same images with the same threads and precision, end to end:
their own resizing (torchvision's ``min_size`` 800 / ``max_size`` 1333), region proposal network,
RoI heads and post-processing. SPP-net's end-to-end row adds the selective-search seconds per
image (computed afresh, not from the cache) to its network's median time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch

from detect.config import Config
from detect.runtime import autocast, resolve_device

# row name -> torchvision.models.detection builder
PEERS = {
    "frcnn-r50-fpn": "fasterrcnn_resnet50_fpn",
    "frcnn-mnv3-fpn": "fasterrcnn_mobilenet_v3_large_fpn",
}


def build_peer(name: str) -> torch.nn.Module:
    """The peer ``name`` of :data:`PEERS` with random weights, in eval mode."""
    from torchvision.models import detection

    builder = getattr(detection, PEERS[name])
    return builder(weights=None, weights_backbone=None).eval()


def peer_input(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB -> the ``(3, H, W)`` float image in [0, 1] torchvision takes."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0


def peer_pass(model: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> float:
    """Seconds per image of one pass of ``model`` over ``inputs``, one image at a time (each
    image's detections copied to the CPU, as SPP-net's are)."""
    start = time.perf_counter()
    with torch.no_grad():
        for tensor in inputs:
            [found] = model([tensor])
            found["boxes"].cpu()
    return (time.perf_counter() - start) / len(inputs)


def proposal_seconds(images: Sequence[np.ndarray], cfg: Config) -> float:
    """Selective-search seconds per image with ``cfg.proposals`` (at most
    ``bench.num_proposals`` boxes), computed afresh in this process."""
    from detect.proposals.search import search_boxes

    params = cfg.proposals
    start = time.perf_counter()
    for image in images:
        search_boxes(
            image,
            params.mode,
            params.resize_long_side,
            params.min_size,
            cfg.bench.num_proposals,
        )
    return (time.perf_counter() - start) / len(images)


def peer_rows(images: Sequence[np.ndarray], cfg: Config, rows: Sequence[dict]) -> list[dict]:
    """SPP-net end to end (selective search + the fastest single-scale SPP-net row of ``rows``)
    and one row per peer (median of ``bench.repeats`` interleaved passes after a warm-up).
    ``speedup`` is the row's time over SPP-net's end-to-end time (above 1: SPP-net is faster)."""
    precision = cfg.runtime.precision
    device = resolve_device(cfg.runtime.device)
    inputs = [peer_input(image).to(device) for image in images]
    models = {name: build_peer(name).to(device) for name in PEERS}
    runs: dict[str, list[float]] = {name: [] for name in models}
    with autocast(device, precision):
        for model in models.values():
            peer_pass(model, inputs[:1])  # warm-up
        for _ in range(cfg.bench.repeats):  # interleaved, as SPP-net and R-CNN
            for name, model in models.items():
                runs[name].append(peer_pass(model, inputs))
    proposals = proposal_seconds(images, cfg)
    spp = min(
        (row for row in rows if row["path"] == "spp" and len(row["scales"]) == 1),
        key=lambda row: row["total_s"],
    )
    end_to_end = proposals + spp["total_s"]
    found = [
        {
            "path": "spp+ss",
            "scales": spp["scales"],
            "head": spp["head"],
            "precision": precision,
            "proposal_s": proposals,
            "network_s": spp["total_s"],
            "total_s": end_to_end,
            "total_min_s": proposals + spp["total_min_s"],
            "total_max_s": proposals + spp["total_max_s"],
            "speedup": 1.0,
        }
    ]
    for name, totals in runs.items():
        found.append(
            {
                "path": name,
                "scales": [800],
                "head": "rpn+fc",
                "precision": precision,
                "total_s": statistics.median(totals),
                "total_min_s": min(totals),
                "total_max_s": max(totals),
                "total_runs_s": totals,
                "speedup": statistics.median(totals) / max(end_to_end, 1e-12),
            }
        )
    return found


def format_peer_rows(rows: Sequence[dict]) -> str:
    """The ``--peers`` table: seconds per image end to end, proposals included."""
    lines = [
        "end to end, proposals included (seconds per image):",
        f"{'path':<15} {'head':<13} {'total':>8} {'spread':>15}  vs SPP-net end to end",
    ]
    for row in rows:
        spread = f"{row['total_min_s']:.3f}-{row['total_max_s']:.3f}"
        note = (
            f"selective search {row['proposal_s']:.3f} + network {row['network_s']:.3f}"
            if row["path"] == "spp+ss"
            else f"{row['speedup']:.2f}x SPP-net's time"
        )
        lines.append(
            f"{row['path']:<15} {row['head']:<13} {row['total_s']:8.3f} {spread:>15}  {note}"
        )
    lines.append(
        "peers: torchvision Faster R-CNN, random weights, own resizing (shorter side 800, longer "
        "at most 1333), RPN proposals, RoI heads and NMS, same threads and precision."
    )
    return "\n".join(lines)
