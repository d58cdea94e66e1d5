"""The paper configs train the paper's recipe; fc fine-tuning on a random backbone is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from detect.cli import build_parser, main
from detect.config import load_config
from detect.demo import rcnn_config
from detect.errors import DetectError
from detect.shipped_configs import SHIPPED_CONFIG_DIR
from detect.training.pipeline import validate_training_config

PAPER_CONFIGS = ["voc07_zf5.yaml", "voc07_zf5_5scale.yaml", "voc07_vgg16.yaml"]


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_are_the_papers_recipe(name):
    # fc6-fc8 fine-tuned on frozen conv features, SVMs on fc7 scoring the regions at test time,
    # ridge box regression (SPP-net's lambda 4000).
    cfg = load_config(SHIPPED_CONFIG_DIR / name)
    assert cfg.finetune.mode == "fc"
    assert cfg.svm.enabled and cfg.svm.feature == "fc7"
    assert cfg.bbox_reg.method == "ridge" and cfg.bbox_reg.ridge_lambda == 4000.0
    assert cfg.test.classifier == "svm" and cfg.test.bbox_reg


def test_fc_mode_on_a_random_backbone_is_refused_naming_both_keys():
    cfg = load_config(SHIPPED_CONFIG_DIR / "voc07_zf5.yaml")  # weights: none, finetune.mode: fc
    with pytest.raises(DetectError) as info:
        validate_training_config(cfg, "spp")
    message = str(info.value)
    assert "model.weights" in message and "finetune.mode" in message and "\n" not in message
    assert "'none'" in message and "'fc'" in message


@pytest.mark.parametrize(
    "overrides",
    [
        ["finetune.allow_random_backbone=true"],  # explicitly meant
        ["finetune.mode=end_to_end"],  # the conv layers are trained too
        ["finetune.init_checkpoint=runs/x/checkpoint.pt"],  # weights come from a checkpoint
        ["model.weights=zf5_converted.pt"],  # pretrained weights (read when the model is built)
    ],
)
def test_fc_mode_is_accepted_with_trained_or_trainable_conv_layers(overrides):
    validate_training_config(load_config(SHIPPED_CONFIG_DIR / "voc07_zf5.yaml", overrides), "spp")


def test_shipped_demo_and_training_configs_still_validate(tmp_path):
    for name in ("demo.yaml", "train_synthetic_tiny.yaml", "voc07_vgg16.yaml"):
        cfg = load_config(SHIPPED_CONFIG_DIR / name)
        validate_training_config(cfg, "spp")
    demo = load_config(SHIPPED_CONFIG_DIR / "demo.yaml")
    # The demo's R-CNN: fc fine-tuning on crops, starting from SPP-net's trained checkpoint.
    rcnn = rcnn_config(demo, tmp_path / "spp" / "checkpoint.pt")
    assert rcnn.finetune.mode == "fc" and rcnn.model.weights == "none"
    validate_training_config(rcnn, "rcnn")


def test_train_command_refuses_with_one_line_and_status_2(tmp_path, capsys):
    status = main(
        [
            "train",
            "--config",
            str(SHIPPED_CONFIG_DIR / "voc07_zf5.yaml"),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "model.weights" in err and "finetune.mode" in err
    assert not (tmp_path / "run").exists()


README = Path(__file__).parent.parent / "README.md"


def readme_commands() -> list[list[str]]:
    """The README's example command lines (``detect ...`` at the start of a line), comments cut."""
    lines = README.read_text().splitlines()
    return [line.split("#")[0].split()[1:] for line in lines if line.startswith("detect ")]


def test_readme_commands_parse_and_compare_rcnn_trained_on_crops():
    parser = build_parser()
    commands = [parser.parse_args(argv) for argv in readme_commands()]
    assert commands
    trained_as = {
        str(Path(args.out) / "checkpoint.pt"): args.method or "spp"
        for args in commands
        if args.command == "train"
    }
    evaluated = [args for args in commands if args.command == "eval"]
    # An R-CNN accuracy figure comes from a checkpoint trained on crops (--method rcnn), never
    # from an SPP-net checkpoint run per crop.
    assert any(trained_as.get(str(args.checkpoint)) == "rcnn" for args in evaluated)
    for args in evaluated:
        method = args.method or trained_as.get(str(args.checkpoint), "spp")
        assert method == trained_as.get(str(args.checkpoint), method), args
