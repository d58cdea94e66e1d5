"""``detect bench``: SPP-net against R-CNN on the same images, backbone, head and proposals.

Both paths are timed through the model's own test-time path,
:meth:`detect.models.DetectionModel.detect`, whose :class:`~detect.models.stage_timer.StageTimer`
sections give the stages (conv / pool / fc / post; R-CNN also warp), in the precision of
``runtime.precision`` (:func:`detect.runtime.autocast`). SPP-net runs on every proposal. R-CNN
(the same backbone and head given a :class:`~detect.models.poolers.CropPooler`) runs on a random
sample of the crops and the time is scaled up to all proposals; its post-processing time is
SPP-net's (the same operation on the same number of regions).

So that the figures hold on a busy machine, every path is first run once untimed (warm-up: oneDNN
picks its kernels, FLOPs are counted), then the timed passes over all images are interleaved
(SPP-net, R-CNN, SPP-net, R-CNN, ... ``bench.repeats`` times): a slow spell hits both paths alike.
Each row reports the median pass and the spread (fastest and slowest pass); the speed-up is the
median of the per-pass ratios. FLOPs are counted from the modules that ran (forward hooks on
Conv2d / Linear: 2 FLOPs per multiply-add); a plain matrix multiply in the same precision gives
the machine's attainable rate. docs/method.md §9 explains the FLOP-bound ceiling.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from detect.bench_peers import format_peer_rows
from detect.config import BenchConfig, Config, check_values
from detect.models.detection_model import DetectionModel, check_model_config
from detect.models.poolers import CropPooler, build_pooler
from detect.models.scoring import RegionScorer, SoftmaxScorer
from detect.models.stage_timer import StageTimer
from detect.runtime import autocast

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


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(
    size: int = 2048,
    repeats: int = 3,
    precision: str = "fp32",
    device: torch.device | str = "cpu",
) -> float:
    """Measured GFLOP/s of a ``size x size`` matrix multiply on ``device`` in ``precision``
    (best of ``repeats``)."""
    device = torch.device(device)
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    with autocast(device, precision):
        torch.mm(a, b)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            torch.mm(a, b)
            synchronize(device)
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


@dataclass
class PathTiming:
    """One timed pass over the images: seconds per image by stage, FLOPs per image, and
    (SPP-net) distinct windows per image."""

    seconds: dict[str, float] = field(default_factory=dict)
    conv_flops: float = 0.0
    fc_flops: float = 0.0
    windows: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def add(self, timer: StageTimer, factor: float = 1.0, skip: tuple[str, ...] = ()) -> None:
        """Add ``timer``'s stage seconds (times ``factor``) except the ``skip`` stages."""
        for stage, seconds in timer.seconds.items():
            if stage not in skip:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds * factor
        self.windows += timer.counts["windows"]

    def per_image(self, count: int) -> PathTiming:
        return PathTiming(
            {stage: s / count for stage, s in self.seconds.items()},
            self.conv_flops / count,
            self.fc_flops / count,
            self.windows / count,
        )


def timing_summary(runs: Sequence[PathTiming]) -> dict:
    """The JSON row fields of repeated passes: per-stage medians, the median total ``total_s``,
    its spread (``total_min_s``, ``total_max_s``, every pass in ``total_runs_s``), FLOPs and
    GFLOP/s of the median pass."""
    totals = [run.total for run in runs]
    stages = sorted({stage for run in runs for stage in run.seconds})
    seconds = {s: statistics.median(run.seconds.get(s, 0.0) for run in runs) for s in stages}
    total = statistics.median(totals)
    flops = runs[0].conv_flops + runs[0].fc_flops
    return {
        "seconds": seconds,
        "total_s": total,
        "total_min_s": min(totals),
        "total_max_s": max(totals),
        "total_runs_s": totals,
        "gflop": flops / 1e9,
        "conv_gflop": runs[0].conv_flops / 1e9,
        "fc_gflop": runs[0].fc_flops / 1e9,
        "gflops_per_s": flops / 1e9 / max(total, 1e-12),
        "conv_gflops_per_s": runs[0].conv_flops / 1e9 / max(seconds.get("conv", 0.0), 1e-12),
        "windows": runs[0].windows,
    }


def ratio_spread(numerators: Sequence[float], denominators: Sequence[float]) -> dict:
    """``speedup`` (median of the per-pass ratios), ``speedup_min``, ``speedup_max``."""
    ratios = [n / max(d, 1e-12) for n, d in zip(numerators, denominators, strict=True)]
    return {
        "speedup": statistics.median(ratios),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
    }


def spp_pass(
    model: DetectionModel,
    images: Sequence[np.ndarray],
    proposals: Sequence[torch.Tensor],
    scales: Sequence[int],
    cfg: Config,
    scorer: RegionScorer,
) -> PathTiming:
    """One SPP-net pass over every image and all its proposals: seconds per image."""
    result = PathTiming()
    for image, boxes in zip(images, proposals, strict=True):
        timer = StageTimer()
        model.detect(image, boxes, cfg.test, scorer, scales=scales, timer=timer)
        result.add(timer)
    return result.per_image(len(images))


def spp_flops(
    model: DetectionModel,
    images: Sequence[np.ndarray],
    proposals: Sequence[torch.Tensor],
    scales: Sequence[int],
    cfg: Config,
    scorer: RegionScorer,
) -> PathTiming:
    """An untimed SPP-net pass (the warm-up) counting FLOPs per image."""
    result = PathTiming()
    for image, boxes in zip(images, proposals, strict=True):
        with count_flops(model) as flops:
            model.detect(image, boxes, cfg.test, scorer, scales=scales)
        result.conv_flops += flops.conv
        result.fc_flops += flops.fc
    return result.per_image(len(images))


def rcnn_pooler(model: DetectionModel, batch: int) -> CropPooler:
    """The R-CNN pooler of ``model``'s settings (crop size, context), ``batch`` crops at a time."""
    return build_pooler("rcnn", replace(model.cfg, rcnn_batch=batch), model.backbone)


def rcnn_samples(proposals: Sequence[torch.Tensor], cfg: Config) -> list[torch.Tensor]:
    """The ``bench.rcnn_sample`` random proposal indices per image R-CNN is timed on (the same
    for every head and pass: seeded by ``cfg.seed``)."""
    generator = torch.Generator().manual_seed(cfg.seed)
    return [
        torch.randperm(boxes.shape[0], generator=generator)[: cfg.bench.rcnn_sample]
        for boxes in proposals
    ]


def rcnn_pass(
    rcnn: DetectionModel,
    images: Sequence[np.ndarray],
    proposals: Sequence[torch.Tensor],
    samples: Sequence[torch.Tensor],
    cfg: Config,
    scorer: RegionScorer,
) -> PathTiming:
    """One R-CNN pass: ``rcnn`` (a model with a :class:`CropPooler`) on each image's sampled
    crops, seconds scaled up to all proposals, per image. Post-processing is not included (the
    caller adds SPP-net's: the same operation on the same number of regions)."""
    result = PathTiming()
    for image, boxes, sample in zip(images, proposals, samples, strict=True):
        timer = StageTimer()
        rcnn.detect(image, boxes[sample], cfg.test, scorer, timer=timer)
        result.add(timer, boxes.shape[0] / max(1, sample.numel()), skip=("post",))
    return result.per_image(len(images))


def rcnn_flops(
    rcnn: DetectionModel,
    images: Sequence[np.ndarray],
    proposals: Sequence[torch.Tensor],
    samples: Sequence[torch.Tensor],
    cfg: Config,
    scorer: RegionScorer,
) -> PathTiming:
    """R-CNN's FLOPs per image over all proposals, from a warm-up run on one batch of each
    image's sampled crops (conv FLOPs scale with the number of crops; fc FLOPs are per region)."""
    result = PathTiming()
    for image, boxes, sample in zip(images, proposals, samples, strict=True):
        warm = sample[: cfg.bench.rcnn_batch]
        with count_flops(rcnn) as flops:
            rcnn.detect(image, boxes[warm], cfg.test, scorer)
        result.conv_flops += flops.conv * boxes.shape[0] / max(1, warm.numel())
        result.fc_flops += head_flops_per_region(rcnn.head) * boxes.shape[0]
    return result.per_image(len(images))


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


def head_variants(model: DetectionModel, cfg: Config, svd: bool) -> dict[str, DetectionModel]:
    """``{"full": model}``, plus with ``svd`` a copy whose head is compressed to
    ``model.svd_ranks`` (or ``bench.svd_ranks``), named ``"svd r6/r7"``. A ``model`` loaded
    with its head already compressed (its ``cfg.svd_ranks``) is named so, and alone."""
    if model.cfg.svd_ranks:
        return {_svd_name(model.cfg.svd_ranks): model}
    variants = {"full": model}
    if svd:
        ranks = cfg.model.svd_ranks or cfg.bench.svd_ranks
        compressed = copy.deepcopy(model)
        compressed.head.compress(ranks)
        variants[_svd_name(ranks)] = compressed
    return variants


def _svd_name(ranks: Sequence[int]) -> str:
    return f"svd {'/'.join(str(r) for r in ranks)}"


def run_bench(
    model: DetectionModel,
    images: Sequence[np.ndarray],
    proposals: Sequence[torch.Tensor],
    cfg: Config,
    scorer: RegionScorer | None = None,
    svd: bool = False,
    extra_rows: Callable[[list[dict]], list[dict]] | None = None,
) -> dict:
    """The whole comparison on ``cfg.runtime.device`` in ``cfg.runtime.precision``; returns the
    JSON-ready report (see :func:`format_bench_report`).

    ``model`` is an SPP-net detector (uncompressed head); with ``svd`` every row is repeated with
    the head compressed to ``model.svd_ranks`` (or ``bench.svd_ranks``). Rows hold ``path``
    (``spp`` / ``rcnn``), ``scales``, ``head``, ``precision``, ``total_s`` (median seconds per
    image; spread in ``total_min_s`` / ``total_max_s``), ``speedup`` (R-CNN / SPP-net, median
    over the interleaved passes; 1 for R-CNN) and its spread, stages and FLOPs.
    ``extra_rows(rows)`` may append rows timed after these (``detect bench --peers``).
    """
    check_model_config(cfg.model)
    check_bench_config(cfg.bench)
    scorer = scorer or SoftmaxScorer()
    precision = cfg.runtime.precision
    model.use_runtime(cfg.runtime).eval()  # its detect() runs in autocast(device, precision)
    device = model.device
    scale_sets = [tuple(cfg.test.scales or cfg.model.scales)]
    if cfg.bench.multi_scales and tuple(cfg.bench.multi_scales) != scale_sets[0]:
        scale_sets.append(tuple(cfg.bench.multi_scales))
    regions = float(np.mean([p.shape[0] for p in proposals]))
    samples = rcnn_samples(proposals, cfg)
    rate = matmul_gflops(cfg.bench.matmul_size, precision=precision, device=device)
    rows = []
    for name, variant in head_variants(model, cfg, svd).items():
        rcnn = variant.with_pooler(rcnn_pooler(variant, cfg.bench.rcnn_batch))
        log.info("warm-up, head %s", name)
        spp_counts = [spp_flops(variant, images, proposals, s, cfg, scorer) for s in scale_sets]
        rcnn_count = rcnn_flops(rcnn, images, proposals, samples, cfg, scorer)
        spp_runs: list[list[PathTiming]] = [[] for _ in scale_sets]
        rcnn_runs: list[PathTiming] = []
        for repeat in range(cfg.bench.repeats):  # interleaved: SPP-net, R-CNN, SPP-net, ...
            log.info("timing pass %d of %d, head %s", repeat + 1, cfg.bench.repeats, name)
            for runs, scales in zip(spp_runs, scale_sets, strict=True):
                runs.append(spp_pass(variant, images, proposals, scales, cfg, scorer))
            timing = rcnn_pass(rcnn, images, proposals, samples, cfg, scorer)
            timing.seconds["post"] = spp_runs[0][-1].seconds.get("post", 0.0)
            rcnn_runs.append(timing)
        for runs, count in [*zip(spp_runs, spp_counts, strict=True), (rcnn_runs, rcnn_count)]:
            for run in runs:
                run.conv_flops, run.fc_flops = count.conv_flops, count.fc_flops
        rcnn_totals = [run.total for run in rcnn_runs]
        fc_all = head_flops_per_region(variant.head) * regions
        for scales, runs in zip(scale_sets, spp_runs, strict=True):
            rows.append(
                {
                    "path": "spp",
                    "scales": list(scales),
                    "head": name,
                    "precision": precision,
                    **timing_summary(runs),
                    **ratio_spread(rcnn_totals, [run.total for run in runs]),
                    "flop_ceiling": (rcnn_runs[0].conv_flops + fc_all)
                    / max(runs[0].conv_flops + fc_all, 1.0),
                }
            )
        rows.append(
            {
                "path": "rcnn",
                "scales": [],
                "head": name,
                "precision": precision,
                **timing_summary(rcnn_runs),
                **ratio_spread(rcnn_totals, rcnn_totals),
            }
        )
    if extra_rows is not None:
        rows += extra_rows(rows)
    return {
        "backbone": model.backbone.name,
        "images": len(images),
        "image_sizes": [list(image.shape[:2]) for image in images],
        "regions_per_image": regions,
        "rcnn_sample": cfg.bench.rcnn_sample,
        "rcnn_batch": cfg.bench.rcnn_batch,
        "rcnn_crop_size": rcnn_pooler(model, cfg.bench.rcnn_batch).crop_size,
        "repeats": cfg.bench.repeats,
        "device": str(device),
        "precision": precision,
        "threads": torch.get_num_threads(),
        "matmul_gflops_per_s": rate,
        "rows": rows,
    }


def speedup_text(row: dict) -> str:
    """``"20.1x (19.5-21.0)"``: the median speed-up and its spread over the passes."""
    return f"{row['speedup']:.1f}x ({row['speedup_min']:.1f}-{row['speedup_max']:.1f})"


def format_bench_report(report: dict) -> str:
    """A plain-text table of :func:`run_bench`'s report (with any ``--peers`` rows)."""
    header = (
        f"{'path':<6} {'scales':<8} {'head':<13} {'conv':>7} {'pool':>7} {'fc':>7} {'post':>7} "
        f"{'total':>8} {'spread':>15} {'GFLOP':>7} {'GFLOP/s':>8} {'windows':>7} "
        f"{'speed-up (spread)':>19} {'ceiling':>7}"
    )
    lines = [
        f"backbone {report['backbone']}, {report['images']} image(s) "
        f"{_sizes_text(report['image_sizes'])}, "
        f"{report['regions_per_image']:.0f} proposals/image, {report['device']}, "
        f"{report['threads']} thread(s), {report['precision']}, median of {report['repeats']} interleaved pass(es) after a warm-up",
        header,
        "-" * len(header),
    ]
    peers = [row for row in report["rows"] if row["path"] not in ("spp", "rcnn")]
    for row in report["rows"]:
        if row in peers:
            continue
        seconds = row["seconds"]
        conv = seconds.get("conv", 0.0) + seconds.get("warp", 0.0)
        scales = "1" if len(row["scales"]) == 1 else str(len(row["scales"]) or "crop")
        spread = f"{row['total_min_s']:.3f}-{row['total_max_s']:.3f}"
        spp = row["path"] == "spp"
        lines.append(
            f"{row['path']:<6} {scales:<8} {row['head']:<13} {conv:7.3f} "
            f"{seconds.get('pool', 0.0):7.3f} {seconds.get('fc', 0.0):7.3f} "
            f"{seconds.get('post', 0.0):7.3f} {row['total_s']:8.3f} {spread:>15} "
            f"{row['gflop']:7.1f} {row['gflops_per_s']:8.1f} "
            + (
                f"{row['windows']:7.0f} {speedup_text(row):>19} {row['flop_ceiling']:6.1f}x"
                if spp
                else ""
            )
        )
    lines += [
        "",
        "times in seconds per image (conv includes resizing / crop warping): medians, spread = "
        "fastest-slowest pass; speed-up = R-CNN total / SPP-net total with the same head "
        "(median over the passes, spread in brackets); ceiling = FLOP-bound speed-up (R-CNN "
        "conv + fc) / (SPP-net conv + fc) over all proposals (docs/method.md §9); windows = "
        "distinct windows pooled.",
        f"R-CNN was timed on a random sample of {report['rcnn_sample']} crops per image "
        f"({report['rcnn_crop_size']}x{report['rcnn_crop_size']}, batches of "
        f"{report['rcnn_batch']}) and scaled up to all proposals; its post-processing time is "
        "SPP-net's (same operation, same number of regions).",
        f"plain {report['precision']} matrix multiply on this machine: "
        f"{report['matmul_gflops_per_s']:.1f} GFLOP/s "
        f"(R-CNN's batched conv reaches {_rcnn_fraction(report):.0%} of it).",
    ]
    if peers:
        lines += ["", format_peer_rows(peers)]
    return "\n".join(lines)


def _sizes_text(sizes: list[list[int]]) -> str:
    """``"256x320"`` when all images share a size, else the distinct ``HxW`` sizes."""
    distinct = sorted({f"{height}x{width}" for height, width in sizes})
    return distinct[0] if len(distinct) == 1 else "sizes " + ", ".join(distinct)


def _rcnn_fraction(report: dict) -> float:
    rates = [row["conv_gflops_per_s"] for row in report["rows"] if row["path"] == "rcnn"]
    return max(rates) / max(report["matmul_gflops_per_s"], 1e-12)
