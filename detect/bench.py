"""``detect bench``: SPP-net against R-CNN on the same images, backbone, head and proposals.

Both paths are timed through the model's own test-time path,
:meth:`detect.models.DetectionModel.detect`, whose :class:`~detect.models.stage_timer.StageTimer`
sections give the stages (conv / pool / fc / post; R-CNN also warp). SPP-net runs on every
proposal. R-CNN (the same backbone and head given a
:class:`~detect.models.poolers.CropPooler`) runs on a random sample of the crops and the time is
scaled up to all proposals; its post-processing time is SPP-net's
(the same operation on the same number of regions). FLOPs are counted from the modules that ran
(forward hooks on Conv2d / Linear: 2 FLOPs per multiply-add); a plain matrix multiply measured in
the same run gives the machine's attainable rate. docs/method.md §9 explains the FLOP-bound ceiling.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from detect.config import BenchConfig, Config, check_values
from detect.models.detection_model import DetectionModel, check_model_config
from detect.models.poolers import CropPooler, build_pooler
from detect.models.scoring import RegionScorer, SoftmaxScorer
from detect.models.stage_timer import StageTimer

log = logging.getLogger(__name__)


@dataclass
class FlopCount:
    """FLOPs (2 per multiply-add) of the Conv2d and Linear layers that ran."""

    conv: int = 0
    fc: int = 0


@contextlib.contextmanager
def count_flops(model: DetectionModel) -> Iterator[FlopCount]:
    """Count FLOPs of ``model.backbone`` convs (``conv``) and ``model.head`` linears (``fc``)."""
    count = FlopCount()

    def conv_hook(module: nn.Conv2d, _inputs, output) -> None:
        kernel = module.kernel_size[0] * module.kernel_size[1]
        count.conv += 2 * output.numel() * (module.in_channels // module.groups) * kernel

    def linear_hook(module: nn.Linear, _inputs, output) -> None:
        count.fc += 2 * output.numel() * module.in_features

    handles = [
        m.register_forward_hook(conv_hook)
        for m in model.backbone.modules()
        if isinstance(m, nn.Conv2d)
    ]
    handles += [
        m.register_forward_hook(linear_hook)
        for m in model.head.modules()
        if isinstance(m, nn.Linear)
    ]
    try:
        yield count
    finally:
        for handle in handles:
            handle.remove()


def head_flops_per_region(head: nn.Module) -> int:
    """FLOPs of the head (all its Linear layers) for one region."""
    return sum(
        2 * m.in_features * m.out_features for m in head.modules() if isinstance(m, nn.Linear)
    )


def matmul_gflops(size: int = 2048, repeats: int = 3) -> float:
    """Measured fp32 GFLOP/s of a ``size x size`` matrix multiply (best of ``repeats``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


@dataclass
class PathTiming:
    """Seconds per image by stage, FLOPs per image, and (SPP-net) distinct windows per image."""

    seconds: dict[str, float] = field(default_factory=dict)
    conv_flops: float = 0.0
    fc_flops: float = 0.0
    windows: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    @property
    def flops(self) -> float:
        return self.conv_flops + self.fc_flops

    def as_dict(self) -> dict:
        return {
            "seconds": dict(self.seconds),
            "total_seconds": self.total,
            "gflop": self.flops / 1e9,
            "conv_gflop": self.conv_flops / 1e9,
            "fc_gflop": self.fc_flops / 1e9,
            "gflops_per_s": self.flops / 1e9 / max(self.total, 1e-12),
            "conv_gflops_per_s": self.conv_flops / 1e9 / max(self.seconds.get("conv", 0.0), 1e-12),
            "windows": self.windows,
        }


def bench_spp(
    model: DetectionModel,
    images: Sequence[np.ndarray],
    proposals: Sequence[torch.Tensor],
    scales: Sequence[int],
    cfg: Config,
    scorer: RegionScorer,
    repeats: int = 1,
) -> PathTiming:
    """SPP-net per-image time (after one untimed warm-up pass that also counts FLOPs)."""
    result = PathTiming()
    for image, boxes in zip(images, proposals, strict=True):
        with count_flops(model) as flops:
            model.detect(image, boxes, cfg.test, scorer, scales=scales, timer=StageTimer())
        timer = StageTimer()
        for _ in range(repeats):
            model.detect(image, boxes, cfg.test, scorer, scales=scales, timer=timer)
        for stage, seconds in timer.seconds.items():
            result.seconds[stage] = result.seconds.get(stage, 0.0) + seconds / repeats
        result.conv_flops += flops.conv
        result.fc_flops += flops.fc
        result.windows += timer.counts["windows"] / repeats
    return _per_image(result, len(images))


def rcnn_pooler(model: DetectionModel, batch: int) -> CropPooler:
    """The R-CNN pooler of ``model``'s settings (crop size, context), ``batch`` crops at a time."""
    return build_pooler("rcnn", replace(model.cfg, rcnn_batch=batch), model.backbone)


def bench_rcnn(
    model: DetectionModel,
    images: Sequence[np.ndarray],
    proposals: Sequence[torch.Tensor],
    cfg: Config,
    scorer: RegionScorer,
    generator: torch.Generator,
) -> PathTiming:
    """R-CNN per-image time of ``model``'s backbone and head given a :class:`CropPooler`, timed
    with :meth:`DetectionModel.detect` on ``cfg.bench.rcnn_sample`` random crops per image in
    batches of ``bench.rcnn_batch`` and scaled up to all proposals. Post-processing time is not
    included (the caller adds SPP-net's: the same operation on the same number of regions)."""
    rcnn = model.with_pooler(rcnn_pooler(model, cfg.bench.rcnn_batch))
    result = PathTiming()
    for image, boxes in zip(images, proposals, strict=True):
        count = boxes.shape[0]
        sample = torch.randperm(count, generator=generator)[: cfg.bench.rcnn_sample]
        factor = count / max(1, sample.numel())
        timer = StageTimer()
        with count_flops(rcnn) as flops:
            rcnn.detect(image, boxes[sample], cfg.test, scorer, timer=timer)
        for stage, seconds in timer.seconds.items():
            if stage != "post":
                result.seconds[stage] = result.seconds.get(stage, 0.0) + seconds * factor
        result.conv_flops += flops.conv * factor
        result.fc_flops += head_flops_per_region(rcnn.head) * count
    return _per_image(result, len(images))


def _per_image(result: PathTiming, count: int) -> PathTiming:
    result.seconds = {stage: s / count for stage, s in result.seconds.items()}
    result.conv_flops /= count
    result.fc_flops /= count
    result.windows /= count
    return result


def check_bench_config(cfg: BenchConfig) -> None:
    """Raise :class:`DetectError` naming the ``bench.*`` setting the comparison cannot use."""

    def positive(values: tuple[int, ...]) -> bool:
        return all(v >= 1 for v in values)

    checks = [
        (cfg.num_proposals >= 1, "num_proposals", cfg.num_proposals, ">= 1"),
        (cfg.rcnn_sample >= 1, "rcnn_sample", cfg.rcnn_sample, ">= 1"),
        (cfg.rcnn_batch >= 1, "rcnn_batch", cfg.rcnn_batch, ">= 1"),
        (cfg.repeats >= 1, "repeats", cfg.repeats, ">= 1"),
        (positive(cfg.multi_scales), "multi_scales", cfg.multi_scales, "positive sizes"),
        (positive(cfg.svd_ranks), "svd_ranks", cfg.svd_ranks, "positive ranks"),
        (cfg.matmul_size >= 1, "matmul_size", cfg.matmul_size, ">= 1"),
    ]
    check_values("bench.", checks)


def run_bench(
    model: DetectionModel,
    images: Sequence[np.ndarray],
    proposals: Sequence[torch.Tensor],
    cfg: Config,
    scorer: RegionScorer | None = None,
    svd: bool = False,
) -> dict:
    """The whole comparison; returns the JSON-ready report (see :func:`format_bench_report`).

    ``model`` is an SPP-net detector (uncompressed head); with ``svd`` every row is repeated with
    the head compressed to ``model.svd_ranks`` (or ``bench.svd_ranks``).
    """
    check_model_config(cfg.model)
    check_bench_config(cfg.bench)
    scorer = scorer or SoftmaxScorer()
    model.eval()
    variants = {"full": model}
    if svd:
        ranks = cfg.model.svd_ranks or cfg.bench.svd_ranks
        compressed = copy.deepcopy(model)
        compressed.head.compress(ranks)
        variants[f"svd {'/'.join(str(r) for r in ranks)}"] = compressed
    scale_sets = [tuple(cfg.model.scales)]
    if cfg.bench.multi_scales and tuple(cfg.bench.multi_scales) != scale_sets[0]:
        scale_sets.append(tuple(cfg.bench.multi_scales))
    regions = float(np.mean([p.shape[0] for p in proposals]))
    rate = matmul_gflops(cfg.bench.matmul_size)
    rows = []
    for name, variant in variants.items():
        spp_rows = []
        for scales in scale_sets:
            log.info("timing SPP-net, scales %s, head %s", scales, name)
            timing = bench_spp(variant, images, proposals, scales, cfg, scorer, cfg.bench.repeats)
            spp_rows.append((scales, timing))
        generator = torch.Generator().manual_seed(cfg.seed)  # the same crops for every head
        rcnn_timing = bench_rcnn(variant, images, proposals, cfg, scorer, generator)
        rcnn_timing.seconds["post"] = spp_rows[0][1].seconds.get("post", 0.0)
        fc_all = head_flops_per_region(variant.head) * regions
        for scales, timing in spp_rows:
            rows.append(
                {
                    "path": "spp",
                    "scales": list(scales),
                    "head": name,
                    **timing.as_dict(),
                    "speedup": rcnn_timing.total / max(timing.total, 1e-12),
                    "flop_ceiling": (rcnn_timing.conv_flops + fc_all)
                    / max(timing.conv_flops + fc_all, 1.0),
                }
            )
        rows.append({"path": "rcnn", "scales": [], "head": name, **rcnn_timing.as_dict()})
    return {
        "backbone": model.backbone.name,
        "images": len(images),
        "image_sizes": [list(image.shape[:2]) for image in images],
        "regions_per_image": regions,
        "rcnn_sample": cfg.bench.rcnn_sample,
        "rcnn_batch": cfg.bench.rcnn_batch,
        "rcnn_crop_size": rcnn_pooler(model, cfg.bench.rcnn_batch).crop_size,
        "threads": torch.get_num_threads(),
        "matmul_gflops_per_s": rate,
        "rows": rows,
    }


def format_bench_report(report: dict) -> str:
    """A plain-text table of :func:`run_bench`'s report."""
    header = (
        f"{'path':<6} {'scales':<8} {'head':<13} {'conv':>7} {'pool':>7} {'fc':>7} {'post':>7} "
        f"{'total':>8} {'GFLOP':>8} {'GFLOP/s':>8} {'windows':>8} {'speed-up':>9} {'ceiling':>8}"
    )
    lines = [
        f"backbone {report['backbone']}, {report['images']} image(s) "
        f"{_sizes_text(report['image_sizes'])}, "
        f"{report['regions_per_image']:.0f} proposals/image, {report['threads']} thread(s)",
        header,
        "-" * len(header),
    ]
    for row in report["rows"]:
        seconds = row["seconds"]
        conv = seconds.get("conv", 0.0) + seconds.get("warp", 0.0)
        scales = "1" if len(row["scales"]) == 1 else str(len(row["scales"]) or "crop")
        spp = row["path"] == "spp"
        lines.append(
            f"{row['path']:<6} {scales:<8} {row['head']:<13} {conv:7.3f} "
            f"{seconds.get('pool', 0.0):7.3f} {seconds.get('fc', 0.0):7.3f} "
            f"{seconds.get('post', 0.0):7.3f} {row['total_seconds']:8.3f} {row['gflop']:8.1f} "
            f"{row['gflops_per_s']:8.1f} "
            + (
                f"{row['windows']:8.0f} {row['speedup']:8.1f}x {row['flop_ceiling']:7.1f}x"
                if spp
                else ""
            )
        )
    lines += [
        "",
        "times in seconds per image (conv includes resizing / crop warping); speed-up = R-CNN "
        "total / SPP-net total with the same head; ceiling = FLOP-bound speed-up (R-CNN conv + fc) "
        "/ (SPP-net conv + fc) over all proposals (docs/method.md §9); windows = distinct windows pooled.",
        f"R-CNN was timed on a random sample of {report['rcnn_sample']} crops per image "
        f"({report['rcnn_crop_size']}x{report['rcnn_crop_size']}, batches of "
        f"{report['rcnn_batch']}) and scaled up to all proposals; its post-processing time is "
        "SPP-net's (same operation, same number of regions).",
        f"plain fp32 matrix multiply on this machine: {report['matmul_gflops_per_s']:.1f} GFLOP/s "
        f"(R-CNN's batched conv reaches {_rcnn_fraction(report):.0%} of it).",
    ]
    return "\n".join(lines)


def _sizes_text(sizes: list[list[int]]) -> str:
    """``"256x320"`` when all images share a size, else the distinct ``HxW`` sizes."""
    distinct = sorted({f"{height}x{width}" for height, width in sizes})
    return distinct[0] if len(distinct) == 1 else "sizes " + ", ".join(distinct)


def _rcnn_fraction(report: dict) -> float:
    rates = [row["conv_gflops_per_s"] for row in report["rows"] if row["path"] == "rcnn"]
    return max(rates) / max(report["matmul_gflops_per_s"], 1e-12)
