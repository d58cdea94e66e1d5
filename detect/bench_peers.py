"""``detect bench --peers``: the detectors users would pick instead, timed beside SPP-net.

torchvision's Faster R-CNN with a ResNet-50-FPN and a MobileNetV3-Large-FPN backbone, built
with random weights (``weights=None, weights_backbone=None``: timing does not depend on them and
nothing is downloaded), run on the same images with the same threads and precision, end to end:
their own resizing (torchvision's ``min_size`` 800 / ``max_size`` 1333), region proposal network,
RoI heads and post-processing. SPP-net's end-to-end row adds the selective-search seconds per
image (computed afresh, not from the cache) to its network's median time. SPP-net + RPN is timed
end to end like the peers, interleaved with them: its region proposal head on the detector's own
conv map (:class:`detect.models.rpn.SharedRPN`: one backbone pass per image; a checkpoint's
shared head, else a random one with Faster R-CNN's 9 anchors), ``proposals.rpn_post_nms``
proposals, then SPP pooling, the head and post-processing of the fastest single-scale SPP-net
row.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from detect.config import Config
from detect.models.detection_model import DetectionModel
from detect.models.inputs import image_tensor
from detect.models.scoring import RegionScorer, SoftmaxScorer
from detect.models.stage_timer import StageTimer
from detect.runtime import autocast, resolve_device

if TYPE_CHECKING:
    from detect.bench import PathTiming

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
    return image_tensor(image)


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


SHARED_RPN_STAGES = ("conv", "rpn", "pool", "fc", "post")  # the spp+rpn row's stage split
# Faster R-CNN's anchors (areas 128^2, 256^2, 512^2 x aspect ratios 1:2, 1:1, 2:1), (w, h) pixels
FASTER_RCNN_ANCHORS = [
    (round(side * ratio**-0.5), round(side * ratio**0.5))
    for side in (128, 256, 512)
    for ratio in (0.5, 1.0, 2.0)
]


def shared_rpn_model(model: DetectionModel, cfg: Config) -> DetectionModel:
    """``model`` proposing from its own conv map: its checkpoint's shared head when it has one,
    else a random :class:`~detect.models.rpn.SharedRPN` with :data:`FASTER_RCNN_ANCHORS` (timing
    does not depend on the weights), ``cfg.proposals``' head layout and test-time settings."""
    from detect.models.rpn import SharedRPN
    from detect.proposals.learned import shared_settings
    from detect.training.rpn import head_layout

    if model.rpn is None:
        shapes = torch.tensor(FASTER_RCNN_ANCHORS, dtype=torch.float32)
        settings = shared_settings(cfg.proposals)
        layout = head_layout(cfg.proposals)
        model.use_shared_rpn(SharedRPN(model.backbone, shapes, **settings, layout=layout))
    return model


def shared_rpn_pass(
    model: DetectionModel, images: Sequence[np.ndarray], cfg: Config, scorer: RegionScorer
) -> tuple[PathTiming, float]:
    """One end-to-end pass of ``model`` with its shared RPN over ``images``: seconds per image
    by stage (``conv``, ``rpn``, ``pool``, ``fc``, ``post``) and proposals per image."""
    from detect.bench import PathTiming

    result, proposals = PathTiming(), 0
    for image in images:
        timer = StageTimer()
        model.detect(image, None, cfg.test, scorer, timer=timer)
        result.add(timer)
        proposals += timer.counts["regions"]
    return result.per_image(len(images)), proposals / len(images)


def peer_rows(
    images: Sequence[np.ndarray],
    cfg: Config,
    model: DetectionModel,
    scorer: RegionScorer | None,
    rows: Sequence[dict],
) -> list[dict]:
    """SPP-net end to end (selective search + the fastest single-scale SPP-net row of ``rows``),
    SPP-net + RPN on the shared conv map (``model``, the head of that row), and one row per peer
    (median of ``bench.repeats`` interleaved passes after a warm-up). ``speedup`` is the row's
    time over SPP-net + selective search's end-to-end time (above 1: that one is faster)."""
    from detect.bench import head_variants, timing_summary

    precision = cfg.runtime.precision
    device = resolve_device(cfg.runtime.device)
    scorer = scorer or SoftmaxScorer()
    spp = min(
        (row for row in rows if row["path"] == "spp" and len(row["scales"]) == 1),
        key=lambda row: row["total_s"],
    )
    shared = head_variants(model, cfg, spp["head"] != "full")[spp["head"]]
    shared = shared_rpn_model(shared, cfg)
    inputs = [peer_input(image).to(device) for image in images]
    models = {name: build_peer(name).to(device) for name in PEERS}
    runs: dict[str, list[float]] = {name: [] for name in models}
    shared_runs: list[tuple[PathTiming, float]] = []
    with autocast(device, precision):
        shared_rpn_pass(shared, images[:1], cfg, scorer)  # warm-up
        for model in models.values():
            peer_pass(model, inputs[:1])  # warm-up
        for _ in range(cfg.bench.repeats):  # interleaved, as SPP-net and R-CNN
            shared_runs.append(shared_rpn_pass(shared, images, cfg, scorer))
            for name, model in models.items():
                runs[name].append(peer_pass(model, inputs))
    proposals = proposal_seconds(images, cfg)
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
    summary = timing_summary([timing for timing, _ in shared_runs])
    found.append(
        {
            "path": "spp+rpn",
            "scales": spp["scales"],
            "head": spp["head"],
            "precision": precision,
            "proposals": shared_runs[0][1],
            **{key: summary[key] for key in ("seconds", "total_s", "total_min_s", "total_max_s")},
            "total_runs_s": summary["total_runs_s"],
            "speedup": summary["total_s"] / max(end_to_end, 1e-12),
        }
    )
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
        if row["path"] == "spp+ss":
            note = f"selective search {row['proposal_s']:.3f} + network {row['network_s']:.3f}"
        elif row["path"] == "spp+rpn":
            stages = " + ".join(
                f"{name} {row['seconds'].get(name, 0.0):.3f}" for name in SHARED_RPN_STAGES
            )
            note = f"shared conv, {row['proposals']:.0f} proposals: {stages}"
        else:
            note = f"{row['speedup']:.2f}x SPP-net's time"
        lines.append(
            f"{row['path']:<15} {row['head']:<13} {row['total_s']:8.3f} {spread:>15}  {note}"
        )
    lines.append(
        "spp+rpn: SPP-net + RPN, the proposal head on the detector's own conv map (one backbone "
        "pass per image), timed end to end like the peers."
    )
    lines.append(
        "peers: torchvision Faster R-CNN, random weights, own resizing (shorter side 800, longer "
        "at most 1333), RPN proposals, RoI heads and NMS, same threads and precision."
    )
    return "\n".join(lines)
