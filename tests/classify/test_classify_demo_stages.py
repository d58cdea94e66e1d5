"""The demo's classification stages, reduced: the modes table, and SPP pretraining whose
backbone a detector's ``model.weights`` loads."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from detect.classify.demo import (
    PRETRAIN_SEED_OFFSET,
    ClassifyDemo,
    DetectorScore,
    ModeResult,
    classify_modes,
    format_modes_table,
    pretrain_backbone,
    pretrained_config,
    pretraining_dataset,
    run_classify_stages,
)
from detect.classify.train import read_classifier_checkpoint
from detect.config import load_config
from detect.data import load_dataset
from detect.data.synthetic import SYNTHETIC_CLASSES, generate_synthetic_dataset, read_info
from detect.errors import DetectError
from detect.models.weights import load_backbone


def _cfg(tmp_path, *extra):
    return load_config(
        "demo",
        [
            f"classify.root={tmp_path / 'classify'}",
            "classify.sizes=[48,40]",
            "classify.test_size=48",
            "classify.epochs=1",
            "classify.batch_size=8",
            "model.fc_dims=[16]",
            "model.svd_ranks=[]",
            "runtime.device=cpu",
            "demo.classify_train=8",
            "demo.classify_test=4",
            "demo.classify_side_range=[48,64]",
            f"demo.pretrain_root={tmp_path / 'pre'}",  # never the shipped data/demo_pretrain
            *extra,
        ],
    )


@pytest.mark.slow
def test_modes_table(tmp_path):
    cfg = _cfg(tmp_path, "demo.classify_modes=[fixed, single]")
    results = classify_modes(cfg, tmp_path / "runs")
    assert [r.mode for r in results] == ["fixed", "single"]
    assert set(results[0].errors) == {"crop", "warp"}  # the fixed-size network has no full view
    assert set(results[1].errors) == {"crop", "warp", "full"}
    table = format_modes_table(results, cfg).splitlines()
    assert table[-2].startswith("| (a) no SPP, 48 |") and "| n/a |" in table[-2]
    assert table[-1].startswith("| (b) SPP, 48 |") and "n/a" not in table[-1]
    # A rerun reuses the finished checkpoints.
    mtime = results[1].checkpoint.stat().st_mtime_ns
    assert classify_modes(cfg, tmp_path / "runs")[1].checkpoint.stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_pretrained_backbone_is_what_the_detector_loads(tmp_path):
    root = tmp_path / "det"
    generate_synthetic_dataset(
        root, progress=False, num_train=3, num_val=0, num_test=1, image_size=(96, 128)
    )
    dataset = load_dataset(root, "train", SYNTHETIC_CLASSES)
    cfg = _cfg(
        tmp_path,
        "demo.pretrain_overrides=[classify.mode=variable, classify.bins=adaptive, "
        "'classify.variable_range=[32, 48]', classify.crop_fraction=1.0]",
        "demo.pretrained_overrides=[finetune.iterations=7]",
        "demo.pretrain_images=0",  # the detector's own objects: this 3-image set
    )
    checkpoint = pretrain_backbone(cfg, dataset, tmp_path / "pretrain")
    payload = read_classifier_checkpoint(checkpoint)
    assert payload["class_names"] == list(SYNTHETIC_CLASSES)
    assert payload["config"]["classify"]["mode"] == "variable"
    detector_cfg = pretrained_config(cfg, checkpoint)
    assert detector_cfg.model.weights == str(checkpoint.resolve())
    assert detector_cfg.finetune.iterations == 7
    backbone = load_backbone(detector_cfg.model.backbone, detector_cfg.model.weights)
    state = backbone.state_dict()
    assert state.keys() == {k[len("backbone.") :] for k in payload["model"] if "backbone." in k}
    for key, value in state.items():
        assert torch.equal(value, payload["model"][f"backbone.{key}"]), key


def test_pretraining_set_is_separate_from_the_detectors_images(tmp_path):
    """demo.pretrain_images > 0: a generated set of its own (other seed, no image of the
    detector's), reused when complete; 0: the detector's training set; < 0: one line."""
    root = tmp_path / "det"
    generate_synthetic_dataset(
        root, progress=False, num_train=3, num_val=0, num_test=1, image_size=(96, 128)
    )
    dataset = load_dataset(root, "train", SYNTHETIC_CLASSES)
    assert pretraining_dataset(_cfg(tmp_path, "demo.pretrain_images=0"), dataset) is dataset
    assert not (tmp_path / "pre").exists()
    extra = ["demo.image_size=[96,128]"]
    cfg = _cfg(tmp_path, "demo.pretrain_images=4", *extra)
    pre = pretraining_dataset(cfg, dataset)
    assert len(pre) == 4 and pre.class_names == dataset.class_names
    assert all(Path(a.path).parent == tmp_path / "pre" / "JPEGImages" for a in pre.annotations)
    detector_images = {Path(a.path).read_bytes() for a in dataset.annotations}
    assert not detector_images & {Path(a.path).read_bytes() for a in pre.annotations}
    info = read_info(tmp_path / "pre")
    assert info["params"]["seed"] == cfg.seed + PRETRAIN_SEED_OFFSET
    assert info["params"]["image_size"] == [96, 128]
    mtime = Path(pre.annotations[0].path).stat().st_mtime_ns
    assert Path(pretraining_dataset(cfg, dataset).annotations[0].path).stat().st_mtime_ns == mtime
    with pytest.raises(DetectError, match=r"demo\.pretrain_images.*-1"):
        pretraining_dataset(_cfg(tmp_path, "demo.pretrain_images=-1", *extra), dataset)


class _Stages:
    """detect.demo._Stages without the clock: records the stage names, runs each stage except the
    pretraining, which yields a stand-in checkpoint path."""

    def __init__(self, checkpoint):
        self.names, self.checkpoint = [], checkpoint

    def run(self, name, function, *args):
        self.names.append(name)
        return self.checkpoint if name == "pretrain backbone" else function(*args)


def _run_stages(tmp_path, maps, *extra):
    """run_classify_stages with a stand-in trainer that scores each detector with ``maps``
    (by run folder name) and records its config."""
    trained = {}

    def train_and_evaluate(stages, name, cfg, out_dir, method):
        trained[out_dir.name] = cfg
        evaluation = SimpleNamespace(mAP=maps[out_dir.name], metrics_path=out_dir / "m.json")
        return None, evaluation

    cfg = _cfg(tmp_path, "demo.classify_modes=[]", *extra)
    checkpoint = tmp_path / "pretrain" / "checkpoint.pt"
    stages = _Stages(checkpoint)
    result = run_classify_stages(stages, cfg, tmp_path / "runs", None, train_and_evaluate)
    return result, trained, stages.names, checkpoint


def test_pretrained_and_scratch_detectors_share_the_comparison_budget(tmp_path):
    budget = [
        "demo.pretrain_comparison_overrides=[finetune.iterations=40, 'finetune.lr_steps=[30]']"
    ]
    maps = {"spp_scratch_compare": 0.61, "spp_pretrained": 0.83}
    result, trained, names, checkpoint = _run_stages(tmp_path, maps, *budget)
    assert names == ["pretrain backbone"]
    assert list(trained) == ["spp_scratch_compare", "spp_pretrained"]
    scratch, pretrained = trained["spp_scratch_compare"], trained["spp_pretrained"]
    for cfg in (scratch, pretrained):
        assert cfg.finetune.iterations == 40 and tuple(cfg.finetune.lr_steps) == (30,)
    assert scratch.model.weights == "none"
    assert pretrained.model.weights == str(checkpoint.resolve())
    report = result.report(DetectorScore(0.90, 1200), rcnn_map=0.88)
    rows = [line for line in report.splitlines() if line.startswith("| SPP-net")]
    assert rows == [
        "| SPP-net, backbone from scratch | 1200 | 0.900 |",
        "| SPP-net, backbone from scratch | 40 | 0.610 |",
        "| SPP-net, backbone pretrained as an SPP classifier | 40 | 0.830 |",
    ]
    assert "same budget: holds (0.830 against 0.610)" in report
    assert result.summary_rows(DetectorScore(0.90, 1200)) == [
        ("SPP-pretrained vs from scratch (40 iterations each)", "0.830 >= 0.610: holds")
    ]
    assert "| R-CNN (from the first SPP-net) | | 0.880 |" in report


def test_without_a_comparison_budget_the_main_detector_is_the_one_compared(tmp_path):
    maps = {"spp_pretrained": 0.85}
    result, trained, _, _ = _run_stages(
        tmp_path, maps, "demo.pretrain_comparison_overrides=[]", "finetune.iterations=50"
    )
    assert (
        list(trained) == ["spp_pretrained"] and trained["spp_pretrained"].finetune.iterations == 50
    )
    report = result.report(DetectorScore(0.90, 50), rcnn_map=None)
    assert "same budget: does not hold (0.850 against 0.900)" in report
    assert "| R-CNN (from the first SPP-net) | | skipped |" in report
    assert len([line for line in report.splitlines() if line.startswith("| SPP-net")]) == 2


@pytest.mark.parametrize("key", ["demo.pretrain_comparison_overrides", "demo.rcnn_overrides"])
def test_a_bad_demo_override_is_one_line_before_the_demo_starts(tmp_path, capsys, key):
    from detect.cli import main

    out = tmp_path / "demo"
    status = main(["demo", "--out", str(out), "--set", f"{key}=[finetune.nope=1]"])
    assert status == 2
    err = capsys.readouterr().err
    assert f"{key}: finetune.nope=1: finetune: unknown key 'nope'" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("fixed", "single", "multi", "verdict"),
    [
        # (a)'s better view is its warp here: 0.20 < crop 0.30
        ((0.30, 0.20), 0.10, 0.05, "(c) 5.0 <= (b) 10.0 < (a) 20.0 %: holds"),
        ((0.30, 0.20), 0.10, 0.10, "(c) 10.0 <= (b) 10.0 < (a) 20.0 %: holds"),
        ((0.12, 0.40), 0.12, 0.05, "(c) 5.0 <= (b) 12.0 < (a) 12.0 %: does not hold"),
        ((0.30, 0.20), 0.10, 0.11, "(c) 11.0 <= (b) 10.0 < (a) 20.0 %: does not hold"),
    ],
)
def test_the_summary_says_whether_the_papers_classification_ordering_holds(
    tmp_path, fixed, single, multi, verdict
):
    def mode(name, **errors):
        return ModeResult(name, {v: {"top1": e} for v, e in errors.items()}, tmp_path / name)

    modes = [
        mode("fixed", crop=fixed[0], warp=fixed[1]),
        mode("single", crop=0.5, warp=0.5, full=single),
        mode("multi", crop=0.5, warp=0.5, full=multi),
    ]
    result = ClassifyDemo(modes, _cfg(tmp_path))
    rows = result.summary_rows(DetectorScore(0.9, 1200))
    assert rows == [("image classification, full-image top-1 error", verdict)]
    assert ClassifyDemo(modes[1:], _cfg(tmp_path)).summary_rows(DetectorScore(0.9, 1)) == []
