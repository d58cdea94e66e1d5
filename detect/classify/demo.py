"""The demo's classification stages (:func:`detect.demo.run_demo` calls them).

* :func:`classify_modes`: the generated classification set, then modes (a) fixed, (b) single and
  (c) multi trained briefly (``runs/demo/classify/<mode>/``) and each tested on the centre crop,
  the warp and the full image at its own size: the paper's table (error of (c) <= (b) < (a)).
* :func:`pretrain_backbone`: the detection backbone trained first as an SPP classifier on
  object-centred crops of a separate generated set's objects (``demo.pretrain_images``;
  ``runs/demo/classify/pretrain/``), and
  :func:`pretrained_config`: the detector's config fine-tuned from it (SPP-net's recipe), with
  the fine-tuning budget of the comparison (``demo.pretrain_comparison_overrides``) that a
  second detector from scratch, :func:`comparison_config`, gets too.

A rerun reuses finished checkpoints trained with the same config.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from detect.config import Config, with_overrides
from detect.errors import DetectError

log = logging.getLogger(__name__)


def mode_label(mode: str, cfg: Config) -> str:
    """How a mode is named in the table, with its sizes, e.g. ``(c) SPP, 112/90``."""
    c = cfg.classify
    sizes = {
        "fixed": f"(a) no SPP, {c.sizes[0]}",
        "single": f"(b) SPP, {c.sizes[0]}",
        "multi": "(c) SPP, " + "/".join(map(str, c.sizes)),
        "variable": f"(d) SPP, {c.variable_range[0]}-{c.variable_range[1]}",
    }
    return sizes[mode]


@dataclass
class ModeResult:
    """One trained mode: ``errors[view]["top1"]`` (views of
    :func:`detect.classify.evaluate.evaluate_classifier`) and its checkpoint."""

    mode: str
    errors: dict[str, dict[str, float]]
    checkpoint: Path


def _train_or_reuse(cfg: Config, out: Path, samples=None, class_names=None):
    """Train into ``out``, or reuse its finished run of the same config (resume)."""
    from detect.classify.train import train_classifier

    resume = (out / "checkpoint.pt").is_file()
    try:
        return train_classifier(cfg, out, samples, class_names, resume=resume, progress=False)
    except DetectError as exc:
        if not resume:
            raise
        log.warning("demo: cannot reuse %s (%s); training again", out, exc)
        return train_classifier(cfg, out, samples, class_names, overwrite=True, progress=False)


def classify_modes(cfg: Config, out_dir: Path) -> list[ModeResult]:
    """Generate (or reuse) the classification set (``demo.classify_*``), train and test each
    of ``demo.classify_modes`` with ``demo.classify_overrides``."""
    from detect.classify.evaluate import evaluate_classifier, load_classifier
    from detect.data.synthetic_classification import (
        generate_classification_set,
        is_complete_classification_set,
    )

    d = cfg.demo
    params = dict(
        num_train=d.classify_train,
        num_test=d.classify_test,
        side_range=tuple(d.classify_side_range),
        max_aspect=d.classify_max_aspect,
        object_size=tuple(d.classify_object_size),
        background_contrast=d.classify_background_contrast,
        class_colour=d.classify_class_colour,
        seed=cfg.seed,
    )
    if not is_complete_classification_set(cfg.classify.root, **params):
        generate_classification_set(cfg.classify.root, progress=False, **params)
    results = []
    for mode in d.classify_modes:
        overrides = [*d.classify_overrides, f"classify.mode={mode}"]
        mode_cfg = with_overrides(cfg, overrides, "demo.classify_overrides")
        run = _train_or_reuse(mode_cfg, out_dir / mode)
        loaded = load_classifier(run.checkpoint, cfg.runtime.device, cfg.runtime.precision)
        errors = evaluate_classifier(loaded, progress=False)
        log.info("demo: classify %s: %s", mode, errors)
        results.append(ModeResult(mode, errors, run.checkpoint))
    return results


def paper_ordering(results: list[ModeResult]) -> tuple[float, float, float] | None:
    """``(c, b, a)``: the full-image top-1 errors of (c) multi and (b) single and (a) fixed's
    better view (crop or warp; it has no full view), or None unless the three were run."""
    by_mode = {result.mode: result.errors for result in results}
    if not {"fixed", "single", "multi"} <= set(by_mode):
        return None
    a = min(by_mode["fixed"][view]["top1"] for view in ("crop", "warp"))
    return by_mode["multi"]["full"]["top1"], by_mode["single"]["full"]["top1"], a


def _holds(condition: bool) -> str:
    return "holds" if condition else "does not hold"


def _ordering_holds(errors: tuple[float, float, float]) -> str:
    """Whether ``(c, b, a)`` (:func:`paper_ordering`) is in the paper's order, c <= b < a."""
    c, b, a = errors
    return _holds(c <= b < a)


def _verdict(results: list[ModeResult]) -> str:
    """Whether the paper's ordering holds: full-image error of (c) <= (b) < (a)'s better view;
    empty unless fixed, single and multi were run."""
    errors = paper_ordering(results)
    if errors is None:
        return ""
    c, b, a = errors
    return (
        f"\n\nThe paper's ordering, full-image error of (c) <= (b) < (a)'s better view (crop or "
        f"warp): {100 * c:.1f} / {100 * b:.1f} / {100 * a:.1f}, {_ordering_holds(errors)}."
    )


def format_modes_table(results: list[ModeResult], cfg: Config) -> str:
    """Markdown: top-1 error (%) +- its standard error per mode and test view, and whether the
    paper's ordering holds. The fixed-size network has no full view: the whole image reaches it
    only warped (its warp column)."""
    from detect.classify.evaluate import view_names

    d = cfg.demo
    names = view_names(cfg.classify.test_size)
    lines = ["| training | " + " | ".join(names.values()) + " |", "| --- | --- | --- | --- |"]
    for result in results:
        cells = []
        for view in names:
            if view not in result.errors:
                cells.append("n/a")
                continue
            error = result.errors[view]["top1"]
            spread = math.sqrt(error * (1 - error) / d.classify_test)
            cells.append(f"{100 * error:.1f} ± {100 * spread:.1f}")
        lines.append(f"| {mode_label(result.mode, cfg)} | " + " | ".join(cells) + " |")
    extra = f", {', '.join(d.classify_overrides)}" if d.classify_overrides else ""
    return (
        f"Top-1 error (%) ± its standard error on {d.classify_test} generated test images (4 "
        f"shapes, {100 * d.classify_class_colour:.0f}% in their class's colour, shorter sides "
        f"{d.classify_side_range[0]}-{d.classify_side_range[1]} px, up to {d.classify_max_aspect:g}"
        f"x as long), {d.classify_train} training images, {cfg.classify.epochs} epochs{extra}:"
        "\n\n" + "\n".join(lines) + _verdict(results)
    )


PRETRAIN_SEED_OFFSET = 1000  # the pretraining set's seed is the demo's plus this: other images


def check_pretrain_images(cfg: Config) -> int:
    """``demo.pretrain_images``, or a :class:`DetectError` naming it when negative (the demo
    checks it before its first stage)."""
    from detect.config import check_values

    count = cfg.demo.pretrain_images
    check_values("demo.", [(count >= 0, "pretrain_images", count, ">= 0 (0 = the training set)")])
    return count


def pretraining_dataset(cfg: Config, train_dataset):
    """The detection set whose objects pretrain the backbone: with ``demo.pretrain_images`` > 0,
    a separate generated set of that many training images in ``demo.pretrain_root`` (reused
    when complete), the demo's image size, seed ``seed + PRETRAIN_SEED_OFFSET``, so none of its
    images is the detector's (the paper pretrains on ImageNet, not VOC); else ``train_dataset``."""
    from detect.data import load_dataset
    from detect.data.synthetic import ensure_synthetic_dataset

    count = check_pretrain_images(cfg)
    if count == 0:
        return train_dataset
    root = Path(cfg.demo.pretrain_root)
    generated = ensure_synthetic_dataset(
        root,
        num_train=count,
        num_val=0,
        num_test=0,
        image_size=tuple(cfg.demo.image_size),
        seed=cfg.seed + PRETRAIN_SEED_OFFSET,
    )
    if not generated:
        log.info("demo: reusing the pretraining set in %s", root)
    return load_dataset(root, "train", list(train_dataset.class_names))


def pretrain_backbone(cfg: Config, train_dataset, out_dir: Path) -> Path:
    """Train ``model.backbone`` as an SPP classifier on object-centred crops
    (``demo.pretrain_context`` x the boxes) of :func:`pretraining_dataset`'s objects, with
    ``demo.pretrain_overrides``; returns the checkpoint (``model.weights`` reads its backbone)."""
    from detect.classify.data import object_crops

    pre_cfg = with_overrides(cfg, list(cfg.demo.pretrain_overrides), "demo.pretrain_overrides")
    dataset = pretraining_dataset(cfg, train_dataset)
    samples = object_crops(dataset.annotations, cfg.demo.pretrain_context)
    run = _train_or_reuse(pre_cfg, out_dir, samples, list(dataset.class_names))
    log.info("demo: pretrained on %d object crops: %s", len(samples), run.rows[-1])
    return run.checkpoint


def comparison_config(cfg: Config) -> Config:
    """The detector's config with ``demo.pretrain_comparison_overrides``: the fine-tuning budget
    that the pretrained detector and the one it is compared with from scratch share."""
    return with_overrides(
        cfg, list(cfg.demo.pretrain_comparison_overrides), "demo.pretrain_comparison_overrides"
    )


def pretrained_config(cfg: Config, backbone_checkpoint: Path) -> Config:
    """The detector's config started from the pretrained backbone, with
    ``demo.pretrain_comparison_overrides`` then ``demo.pretrained_overrides``."""
    overrides = [f"model.weights={backbone_checkpoint.resolve()}", *cfg.demo.pretrained_overrides]
    return with_overrides(comparison_config(cfg), overrides, "demo.pretrained_overrides")


@dataclass
class DetectorScore:
    """One detector of the pretraining comparison: its VOC07 mAP and fine-tuning iterations."""

    mAP: float
    iterations: int


@dataclass
class ClassifyDemo:
    """What the demo's classification stages measured (empty when skipped). ``scratch``: the
    detector from scratch that ``pretrained`` is compared with (None: the demo's main SPP-net,
    when ``demo.pretrain_comparison_overrides`` is empty)."""

    modes: list[ModeResult]
    config: Config
    pretrained: DetectorScore | None = None
    scratch: DetectorScore | None = None
    files: list[Path] | None = None

    def _pretraining_source(self) -> str:
        count = self.config.demo.pretrain_images
        if count == 0:
            return "the detector's training images"
        return f"{count} other generated images ({self.config.demo.pretrain_root})"

    def report(self, main_spp: DetectorScore, rcnn_map: float | None) -> str:
        """The ``report.md`` section: the modes table and the detection mAPs (Markdown);
        ``main_spp``: the demo's SPP-net (from scratch, its full schedule)."""
        parts = []
        if self.modes:
            parts.append(
                "## Image classification with SPP (docs/classification.md)\n\n"
                + format_modes_table(self.modes, self.config)
            )
        if self.pretrained is not None:
            parts.append(self._pretraining_report(main_spp, rcnn_map))
        return "".join(f"\n{part}\n" for part in parts)

    def summary_rows(self, main_spp: DetectorScore) -> list[tuple[str, str]]:
        """The rows the demo's terminal summary adds: the classification ordering and the
        pretraining comparison, each with whether it holds."""
        rows = []
        errors = paper_ordering(self.modes)
        if errors is not None:
            c, b, a = errors
            rows.append(
                (
                    "image classification, full-image top-1 error",
                    f"(c) {100 * c:.1f} <= (b) {100 * b:.1f} < (a) {100 * a:.1f} %: "
                    f"{_ordering_holds(errors)}",
                )
            )
        if self.pretrained is not None:
            scratch, holds = self._comparison(main_spp)
            rows.append(
                (
                    f"SPP-pretrained vs from scratch ({scratch.iterations} iterations each)",
                    f"{self.pretrained.mAP:.3f} >= {scratch.mAP:.3f}: {holds}",
                )
            )
        return rows

    def _comparison(self, main_spp: DetectorScore) -> tuple[DetectorScore, str]:
        """The detector from scratch the pretrained one is compared with (:attr:`scratch`, else
        ``main_spp``), and whether pretrained >= from scratch holds."""
        scratch = self.scratch or main_spp
        return scratch, _holds(self.pretrained.mAP >= scratch.mAP)

    def _pretraining_report(self, main_spp: DetectorScore, rcnn_map: float | None) -> str:
        scratch, holds = self._comparison(main_spp)
        rows = [("SPP-net, backbone from scratch", main_spp)]
        if self.scratch is not None:
            rows.append(("SPP-net, backbone from scratch", self.scratch))
        rows.append(("SPP-net, backbone pretrained as an SPP classifier", self.pretrained))
        table = "".join(
            f"| {name} | {score.iterations} | {score.mAP:.3f} |\n" for name, score in rows
        )
        rcnn = f"{rcnn_map:.3f}" if rcnn_map is not None else "skipped"
        pretrained_changes = ", ".join(self.config.demo.pretrained_overrides)
        return (
            "## SPP pretraining for detection (docs/classification.md)\n\n"
            "| detector | fine-tuning iterations | VOC07 mAP |\n| --- | --- | --- |\n"
            f"{table}| R-CNN (from the first SPP-net) | | {rcnn} |\n\n"
            f"Pretrained on the objects of {self._pretraining_source()}; fine-tuned with "
            f"{'the same schedule as' if not pretrained_changes else pretrained_changes + ' beside'}"
            f" the detector from scratch it is compared with ({scratch.iterations} iterations). "
            f"Pretrained >= from scratch at the same budget: {holds} "
            f"({self.pretrained.mAP:.3f} against {scratch.mAP:.3f})."
        )


def run_classify_stages(stages, cfg: Config, out: Path, train_dataset, train_and_evaluate):
    """The demo's classification stages, timed by ``stages`` (``detect.demo._Stages``):
    the modes (``demo.classify_modes``; checkpoints in ``out/classify/<mode>``), then, with
    ``demo.pretrain``, the backbone pretraining (``out/classify/pretrain``), a detector from
    scratch with the comparison's budget (``out/spp_scratch_compare``; only with
    ``demo.pretrain_comparison_overrides``) and one fine-tuned from the pretrained backbone
    (``out/spp_pretrained``), each by ``train_and_evaluate``."""
    modes = []
    if cfg.demo.classify_modes:
        modes = stages.run("classify (a)-(c)", classify_modes, cfg, out / "classify")
    result = ClassifyDemo(modes, cfg)
    result.files = [mode.checkpoint for mode in modes]
    if cfg.demo.pretrain:
        checkpoint = stages.run(
            "pretrain backbone", pretrain_backbone, cfg, train_dataset, out / "classify/pretrain"
        )
        if cfg.demo.pretrain_comparison_overrides:
            scratch_cfg = comparison_config(cfg)
            _, evaluation = train_and_evaluate(
                stages,
                "SPP-net (scratch, same budget)",
                scratch_cfg,
                out / "spp_scratch_compare",
                "spp",
            )
            result.scratch = DetectorScore(evaluation.mAP, scratch_cfg.finetune.iterations)
            result.files.append(evaluation.metrics_path)
        pretrained_cfg = pretrained_config(cfg, checkpoint)
        _, evaluation = train_and_evaluate(
            stages, "SPP-net (pretrained)", pretrained_cfg, out / "spp_pretrained", "spp"
        )
        result.pretrained = DetectorScore(evaluation.mAP, pretrained_cfg.finetune.iterations)
        result.files += [checkpoint, evaluation.metrics_path]
    return result
