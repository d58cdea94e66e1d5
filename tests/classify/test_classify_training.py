"""A small training run learns the generated classes far above chance, through the CLI
(``detect classify train | eval | predict``), and resumes to the same weights."""

import json

import pytest
import torch

from detect.classify.train import read_classifier_checkpoint
from detect.cli import main
from detect.data.synthetic_classification import generate_classification_set

SMALL = [
    "model.backbone=tiny",
    "model.fc_dims=[32]",
    "classify.sizes=[64,48]",
    "classify.test_size=64",
    "classify.batch_size=16",
    "classify.lr=0.01",
    "model.dropout=0",
    "runtime.device=cpu",
]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("classify") / "set"
    # Square images, every object in its class's colour: learnable in seconds, so a broken
    # pipeline (labels, views, pooling) shows as chance-level error (75% with 4 classes).
    generate_classification_set(
        root,
        progress=False,
        num_train=96,
        num_test=40,
        side_range=(56, 80),
        max_aspect=1.0,
        class_colour=1.0,
    )
    return root


@pytest.mark.slow
def test_multi_size_training_learns_and_every_view_is_far_above_chance(small_set, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["classify", "train", "--data", str(small_set), "--out", str(out), "--mode", "multi"]
    assert main([*args, "--quiet", *[f"--set={o}" for o in [*SMALL, "classify.epochs=12"]]]) == 0
    log = (out / "train_log.csv").read_text().splitlines()
    assert [line.split(",")[1] for line in log[1:]] == ["64", "48"] * 6  # alternating sizes
    errors_json = tmp_path / "errors.json"
    checkpoint = out / "checkpoint.pt"
    assert (
        main(
            [
                "classify",
                "eval",
                "--checkpoint",
                str(checkpoint),
                "--json",
                str(errors_json),
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "full image, own size" in printed and "top-5" not in printed  # 4 classes
    errors = json.loads(errors_json.read_text())
    assert errors["num_images"] == 40
    for view in ("crop", "warp", "full"):
        assert errors[view]["top1"] <= 0.4, errors  # chance: 0.75; measured 0.2-0.225
    image = next((small_set / "test" / "star").iterdir())
    assert (
        main(["classify", "predict", "--checkpoint", str(checkpoint), str(image), "--top", "2"])
        == 0
    )
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image}: ") and len(line.split(", ")) == 2


@pytest.mark.slow
def test_resume_gives_the_weights_of_an_uninterrupted_run(small_set, tmp_path, capsys):
    base = ["classify", "train", "--data", str(small_set), "--mode", "variable", "--quiet"]
    sets = [f"--set={o}" for o in [*SMALL, "classify.variable_range=[40,64]"]]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert main([*base, "--out", str(whole), *sets, "--set=classify.epochs=3"]) == 0
    assert main([*base, "--out", str(part), *sets, "--set=classify.epochs=2"]) == 0
    resume = [*base, "--out", str(part), *sets, "--set=classify.epochs=3", "--resume"]
    assert main(resume) == 2  # resuming needs the same config, and says what differs
    err = capsys.readouterr().err
    assert "(classify.epochs: 2 -> 3)" in err, err
    # Continue the 2-epoch run to 3 epochs from its checkpoint; a key the saved config lacks
    # (written before test.scales existed) counts as its default.
    payload = read_classifier_checkpoint(part / "checkpoint.pt")
    payload["config"]["classify"]["epochs"] = 3
    del payload["config"]["test"]["scales"]
    torch.save(payload, part / "checkpoint.pt")
    assert main(resume) == 0
    a = read_classifier_checkpoint(whole / "checkpoint.pt")["model"]
    b = read_classifier_checkpoint(part / "checkpoint.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_existing_run_needs_resume_or_overwrite(small_set, tmp_path, capsys):
    out = tmp_path / "run"
    (out).mkdir()
    (out / "checkpoint.pt").write_bytes(b"x")
    args = ["classify", "train", "--data", str(small_set), "--out", str(out)]
    assert main([*args, *[f"--set={o}" for o in SMALL]]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_bad_input_is_one_line(tmp_path, capsys):
    assert (
        main(["classify", "train", "--data", str(tmp_path / "none"), "--set=model.backbone=tiny"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("detect classify: error: classify.root:") and err.count("\n") == 1
    assert main(["classify", "eval", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "classifier checkpoint" in capsys.readouterr().err
