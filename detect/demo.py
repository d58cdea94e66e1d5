"""The whole pipeline on the built-in data: generate, propose, train, evaluate, compare, draw.

``detect demo`` (and ``make demo``) runs :func:`run_demo`: every stage reuses what an earlier run
left (the data set, the proposal cache, finished checkpoints), so a rerun only re-evaluates,
re-times and redraws.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from detect.config import Config, load_config, save_config
from detect.errors import DetectError
from detect.files import atomic_write_text
from detect.shipped_configs import SHIPPED_CONFIG_DIR

log = logging.getLogger(__name__)

DEMO_CONFIG = SHIPPED_CONFIG_DIR / "demo.yaml"


@dataclass
class DemoSummary:
    """What the demo measured; ``report`` is the path of ``report.md``."""

    out_dir: Path
    data_root: Path
    num_trainval: int
    num_test: int
    spp_map: float
    spp_ap: dict[str, float]
    spp_seconds_per_image: float
    rcnn_map: float | None
    rcnn_eval_images: int
    rcnn_seconds_per_image: float | None
    bench: dict
    stage_seconds: dict[str, float] = field(default_factory=dict)
    report: Path | None = None
    files: list[Path] = field(default_factory=list)
    # Rows the summary table adds (name, value): the classification and pretraining results.
    extra_rows: list[tuple[str, str]] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        """R-CNN / SPP-net seconds per image from the bench (same model, images, proposals)."""
        return _spp_row(self.bench)["speedup"]


class _Stages:
    """Wall-clock seconds per demo stage, logged as each one ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, function, *args, **kwargs):
        log.info("demo: %s ...", name)
        start = time.perf_counter()
        result = function(*args, **kwargs)
        self.seconds[name] = time.perf_counter() - start
        log.info("demo: %s done in %.1f s", name, self.seconds[name])
        return result


def _ensure_data(root: Path, cfg: Config) -> None:
    from detect.data.synthetic import ensure_synthetic_dataset

    generated = ensure_synthetic_dataset(
        root,
        num_train=cfg.demo.num_train,
        num_val=cfg.demo.num_val,
        num_test=cfg.demo.num_test,
        image_size=tuple(cfg.demo.image_size),
        seed=cfg.seed,
    )
    if not generated:
        log.info("demo: reusing the synthetic data set in %s", root)


def _proposals(cfg: Config, splits: tuple[str, ...]) -> dict[str, tuple]:
    """``{split: (DetectionDataset, {image_id: proposals (R, 4)})}``, computing missing ones."""
    from detect.data import load_dataset
    from detect.proposals import load_or_compute_proposals

    data = cfg.data
    loaded = {}
    for split in splits:
        dataset = load_dataset(
            data.root,
            split,
            data.classes,
            data.image_dir,
            data.strict_boxes,
            max_image_pixels=data.max_image_pixels,
        )
        proposals = load_or_compute_proposals(
            dataset, cfg.proposals, max_image_pixels=data.max_image_pixels
        )
        loaded[split] = (dataset, proposals)
    return loaded


def _train(cfg: Config, out_dir: Path, method: str):
    """Train, or reuse the finished checkpoint of an identical earlier run."""
    from detect.training import train

    resume = (out_dir / "checkpoint.pt").is_file()
    try:
        return train(cfg, out_dir=out_dir, method=method, resume=resume)
    except DetectError as exc:
        if not resume:
            raise
        log.warning("demo: cannot reuse %s (%s); training again", out_dir, exc)
        (out_dir / "checkpoint.pt").unlink()
        return train(cfg, out_dir=out_dir, method=method, resume=False)


def _train_and_evaluate(
    stages: _Stages,
    name: str,
    cfg: Config,
    out_dir: Path,
    method: str,
    max_images: int | None = None,
):
    """Train (or reuse) one detector, then evaluate it on the test split (``out_dir/eval``)."""
    from detect.evaluation.checkpoint_eval import evaluate_checkpoint
    from detect.runtime import runtime_overrides

    run = stages.run(f"train {name}", _train, cfg, out_dir, method)
    evaluation = stages.run(
        f"evaluate {name}",
        evaluate_checkpoint,
        run.checkpoint,
        split=cfg.data.test_split,
        out_dir=out_dir / "eval",
        max_images=max_images,
        proposal_cache=cfg.proposals.cache_dir,  # the demo's own cache, filled by its first stage
        overrides=runtime_overrides(cfg.runtime),  # the demo's device and precision
    )
    return run, evaluation


def rcnn_config(cfg: Config, spp_checkpoint: Path) -> Config:
    """The baseline's config: the SPP-net config with ``demo.rcnn_overrides`` applied and
    fine-tuning started from SPP-net's checkpoint (same backbone weights)."""
    from detect.config import with_overrides

    overrides = [*cfg.demo.rcnn_overrides, f"finetune.init_checkpoint={spp_checkpoint}"]
    return with_overrides(cfg, overrides, "demo.rcnn_overrides")


def _bench(cfg: Config, checkpoint: Path, dataset, proposals: dict, out_dir: Path) -> dict:
    """Time SPP-net against R-CNN on the first ``demo.bench_images`` images of ``dataset``."""
    from detect.bench import format_bench_report, run_bench
    from detect.checkpoints import load_checkpoint
    from detect.data.images import read_image
    from detect.runtime import runtime_overrides

    loaded = load_checkpoint(checkpoint, overrides=runtime_overrides(cfg.runtime))
    annotations = dataset.annotations[: cfg.demo.bench_images]
    images = [read_image(ann.path, cfg.data.max_image_pixels) for ann in annotations]
    boxes = [proposals[ann.image_id] for ann in annotations]
    report = run_bench(loaded.model, images, boxes, loaded.config, loaded.scorer)
    atomic_write_text(out_dir / "bench.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out_dir / "bench.txt", format_bench_report(report) + "\n")
    return report


def _draw(cfg: Config, dataset, evaluation, out_dir: Path) -> Path:
    """Draw the detections of the first ``demo.draw_images`` images of ``dataset``."""
    from detect.data.images import read_image, write_image
    from detect.visualize import draw_detections, make_grid

    pictures = []
    for ann in dataset.annotations[: cfg.demo.draw_images]:
        picture = draw_detections(
            read_image(ann.path, cfg.data.max_image_pixels),
            evaluation.detections[ann.image_id],
            dataset.class_names,
            score_threshold=0.5,
        )
        write_image(out_dir / "detections" / f"{ann.image_id}.png", picture)
        pictures.append(picture)
    grid = out_dir / "detections.png"
    write_image(grid, make_grid(pictures, cols=4))
    return grid


def run_demo(
    out_dir: str | Path = "runs/demo",
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
) -> DemoSummary:
    """Run the demo; see the module docstring. ``config_path`` defaults to the shipped demo config."""
    from detect.classify.demo import (
        DetectorScore,
        check_pretrain_images,
        comparison_config,
        run_classify_stages,
    )

    out = Path(out_dir)
    cfg = load_config(config_path or DEMO_CONFIG, overrides)
    check_pretrain_images(cfg)
    # A bad override in a demo list stops the demo before its first stage, not minutes into it.
    comparison_config(cfg)
    rcnn_config(cfg, out / "spp" / "checkpoint.pt")
    root = Path(cfg.data.root)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    stages = _Stages()

    stages.run("data", _ensure_data, root, cfg)
    splits = stages.run("proposals", _proposals, cfg, (cfg.data.train_split, cfg.data.test_split))
    test_dataset, test_proposals = splits[cfg.data.test_split]
    spp_run, spp_eval = _train_and_evaluate(stages, "SPP-net", cfg, out / "spp", "spp")
    rcnn_eval = None
    if cfg.demo.rcnn_eval_images > 0:
        _, rcnn_eval = _train_and_evaluate(
            stages,
            "R-CNN",
            rcnn_config(cfg, spp_run.checkpoint),
            out / "rcnn",
            "rcnn",
            max_images=cfg.demo.rcnn_eval_images,
        )

    classify = run_classify_stages(
        stages, cfg, out, splits[cfg.data.train_split][0], _train_and_evaluate
    )

    bench = stages.run("bench", _bench, cfg, spp_run.checkpoint, test_dataset, test_proposals, out)
    grid = stages.run("draw", _draw, cfg, test_dataset, spp_eval, out)

    summary = DemoSummary(
        out_dir=out,
        data_root=root,
        num_trainval=len(splits[cfg.data.train_split][0]),
        num_test=len(test_dataset),
        spp_map=spp_eval.mAP,
        spp_ap=spp_eval.ap,
        spp_seconds_per_image=spp_eval.seconds_per_image,
        rcnn_map=rcnn_eval.mAP if rcnn_eval else None,
        rcnn_eval_images=rcnn_eval.num_images if rcnn_eval else 0,
        rcnn_seconds_per_image=rcnn_eval.seconds_per_image if rcnn_eval else None,
        bench=bench,
        stage_seconds=stages.seconds,
        files=[
            out / "config.yaml",
            spp_run.checkpoint,
            spp_run.loss_png,
            spp_eval.metrics_path,
            spp_eval.pr_curve,
            out / "bench.json",
            out / "bench.txt",
            grid,
        ],
    )
    if rcnn_eval is not None:
        summary.files += [rcnn_eval.metrics_path]
    summary.files += classify.files
    summary.report = out / "report.md"
    summary.files.append(summary.report)
    main_spp = DetectorScore(spp_eval.mAP, cfg.finetune.iterations)
    summary.extra_rows = classify.summary_rows(main_spp)
    classify_report = classify.report(main_spp, summary.rcnn_map)
    atomic_write_text(summary.report, format_demo_report(summary, cfg) + classify_report)
    return summary


def _spp_row(bench: dict) -> dict:
    return next(row for row in bench["rows"] if row["path"] == "spp")


def _rcnn_row(bench: dict) -> dict:
    return next(row for row in bench["rows"] if row["path"] == "rcnn")


def format_summary_table(summary: DemoSummary) -> str:
    """The one summary table: data, accuracy, time per image, speed-up (Markdown)."""
    from detect.bench import speedup_text

    spp, rcnn = _spp_row(summary.bench), _rcnn_row(summary.bench)
    rcnn_map = (
        f"{summary.rcnn_map:.3f} ({summary.rcnn_eval_images} test images)"
        if summary.rcnn_map is not None
        else "skipped"
    )
    rows = [
        (
            "data set",
            f"synthetic, {summary.num_trainval} trainval / {summary.num_test} test images",
        ),
        ("SPP-net VOC07 mAP", f"{summary.spp_map:.3f} ({summary.num_test} test images)"),
        ("R-CNN VOC07 mAP", rcnn_map),
        (
            "SPP-net s/image (bench)",
            f"{spp['total_s']:.4f} (conv {spp['seconds'].get('conv', 0):.4f}, "
            f"pool {spp['seconds'].get('pool', 0):.4f}, fc {spp['seconds'].get('fc', 0):.4f})",
        ),
        ("R-CNN s/image (bench)", f"{rcnn['total_s']:.4f}"),
        (
            "speed-up (same model, images, proposals)",
            f"{speedup_text(spp)} (median (spread) of {summary.bench['repeats']} passes; "
            f"FLOP ceiling {spp['flop_ceiling']:.1f}x)",
        ),
        ("proposals / image (bench)", f"{summary.bench['regions_per_image']:.0f}"),
        *summary.extra_rows,
    ]
    lines = ["| | |", "| --- | --- |"] + [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def format_demo_report(summary: DemoSummary, cfg: Config) -> str:
    """``report.md``: the summary table, per-class AP, stage times and the files written."""
    from detect.bench import format_bench_report

    ap_lines = ["| class | SPP-net AP |", "| --- | --- |"] + [
        f"| {name} | {value:.3f} |" for name, value in summary.spp_ap.items()
    ]
    stage_lines = ["| stage | seconds |", "| --- | --- |"] + [
        f"| {name} | {seconds:.1f} |" for name, seconds in summary.stage_seconds.items()
    ]
    stage_lines.append(f"| total | {sum(summary.stage_seconds.values()):.1f} |")
    files = "\n".join(f"- `{path}`" for path in summary.files if path is not None)
    bench_text = format_bench_report(summary.bench) + "\n"  # = bench.txt
    return (
        "# detect demo\n\n"
        f"backbone `{cfg.model.backbone}` trained from scratch ({cfg.finetune.mode}), "
        f"trained at scale(s) {list(cfg.model.scales)}, SPP-net tested at "
        f"{list(cfg.test.scales or cfg.model.scales)}, pyramid {list(cfg.model.pyramid_levels)}, "
        f"classifier {cfg.test.classifier}, box regression {cfg.bbox_reg.method}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s).\n\n"
        f"{format_summary_table(summary)}\n\n## Per-class AP (VOC07)\n\n"
        + "\n".join(ap_lines)
        + "\n\n## Stage times\n\n"
        + "\n".join(stage_lines)
        + f"\n\n## Bench\n\n```\n{bench_text}```\n\n## Files\n\n{files}\n"
    )
