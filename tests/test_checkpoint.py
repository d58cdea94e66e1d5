"""Checkpoints: round trip, RNG state, clear errors for other classes / backbones / foreign files."""

import random
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _train_data import tiny_config

from detect import __version__
from detect.checkpoints import load_checkpoint, read_checkpoint
from detect.config import RuntimeConfig, config_to_dict
from detect.errors import DetectError
from detect.models import build_detector
from detect.models.scoring import (
    RidgeRegressor,
    RidgeScorer,
    SoftmaxScorer,
    SVMModel,
    SVMScorer,
)
from detect.training.checkpoint import capture_rng_state, restore_rng_state, save_checkpoint

CLASSES = ("red", "blue")


@pytest.fixture
def config(tmp_path):
    return tiny_config(tmp_path)


def saved(tmp_path, config, extras=None, method="spp"):
    torch.manual_seed(1)
    model = build_detector(method, config.model, len(CLASSES))
    path = tmp_path / "ck.pt"
    save_checkpoint(path, model, CLASSES, config, extras)
    return model, path


def test_round_trip(tmp_path, config):
    model, path = saved(tmp_path, config, {"iteration": 7})
    payload = read_checkpoint(path)
    assert payload["version"] == __version__ and payload["iteration"] == 7
    assert payload["config"] == config_to_dict(config)
    loaded = load_checkpoint(path, expected_classes=CLASSES)
    # The saved config comes back, but for the runtime: the loading command's (defaults here).
    assert loaded.config == replace(config, runtime=RuntimeConfig()) != config
    assert loaded.class_names == CLASSES and loaded.method == "spp"
    assert not loaded.model.training
    assert isinstance(loaded.scorer, SoftmaxScorer)
    model.eval()
    image = torch.randn(3, 64, 80)
    boxes = torch.tensor([[0.0, 0.0, 30.0, 30.0], [10.0, 20.0, 70.0, 60.0]])
    a, b = model(image, boxes), loaded.model(image, boxes)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_loads_without_the_initial_weights_file(tmp_path, config):
    # Trained from weights that this machine lacks: the checkpoint's own weights replace them.
    trained_from = replace(config, model=replace(config.model, weights="/nonexistent/file.pth"))
    torch.manual_seed(2)
    model = build_detector("spp", config.model, len(CLASSES)).eval()
    path = tmp_path / "ck.pt"
    save_checkpoint(path, model, CLASSES, trained_from)
    loaded = load_checkpoint(path)
    assert loaded.config.model.weights == "/nonexistent/file.pth"  # the record is kept
    image = torch.randn(3, 64, 80)
    boxes = torch.tensor([[0.0, 0.0, 30.0, 30.0], [10.0, 20.0, 70.0, 60.0]])
    for ours, theirs in zip(loaded.model(image, boxes), model(image, boxes), strict=True):
        assert torch.equal(ours, theirs)


def test_same_weights_through_the_rcnn_path(tmp_path, config):
    model, path = saved(tmp_path, config)
    model.eval()
    loaded = load_checkpoint(path, method="rcnn")
    assert loaded.method == "rcnn" and loaded.model.method == "rcnn"
    image = torch.randn(3, 64, 80)
    boxes = torch.tensor([[0.0, 0.0, 30.0, 30.0], [10.0, 20.0, 70.0, 60.0]])
    crops = loaded.model.pooler.crops(image, boxes)
    # By hand with the saved SPP-net's own modules: its backbone on each warped crop, every
    # pyramid level max-pooled over the crop's whole map, then its head.
    maps = model.backbone(crops)
    levels = config.model.pyramid_levels
    pooled = torch.cat([F.adaptive_max_pool2d(maps, n).flatten(1) for n in levels], dim=1)
    expected = model.head(pooled)
    for ours, theirs in zip(loaded.model(image, boxes), expected, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_other_classes_are_a_clear_error(tmp_path, config):
    _, path = saved(tmp_path, config)
    with pytest.raises(DetectError) as info:
        load_checkpoint(path, expected_classes=("cat", "dog"))
    message = str(info.value)
    assert str(path) in message and "['red', 'blue']" in message and "['cat', 'dog']" in message


def test_other_backbone_is_a_clear_error(tmp_path, config):
    _, path = saved(tmp_path, config)
    with pytest.raises(DetectError) as info:
        load_checkpoint(path, expected_backbone="vgg16")
    assert (
        str(path) in str(info.value)
        and "'tiny'" in str(info.value)
        and "'vgg16'" in str(info.value)
    )
    # A file whose weights do not fit the backbone its config names.
    payload = read_checkpoint(path)
    payload["config"]["model"]["backbone"] = "zf5"
    torch.save(payload, path)
    with pytest.raises(DetectError, match=r"ck.pt: weights do not fit this model"):
        load_checkpoint(path)


def test_foreign_and_missing_files(tmp_path):
    with pytest.raises(DetectError, match="file not found"):
        read_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(DetectError, match="text.pt: cannot read"):
        read_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(DetectError, match="other.pt: not a detect-checkpoint-v1"):
        read_checkpoint(tmp_path / "other.pt")


def test_scorers_from_svm_and_ridge(tmp_path, config):
    svm = SVMModel("fc7", 2.0, torch.ones(2, 32), torch.zeros(2))
    ridge = RidgeRegressor(1.0, torch.zeros(2, 64 * 5, 4), torch.ones(2, 4))
    extras = {"svm": svm.state_dict(), "ridge": ridge.state_dict()}
    _, path = saved(
        tmp_path, replace(config, bbox_reg=replace(config.bbox_reg, method="ridge")), extras
    )
    loaded = load_checkpoint(path, overrides=["test.classifier=svm"])
    assert isinstance(loaded.scorer, SVMScorer) and loaded.scorer.deltas_from is not None
    assert isinstance(load_checkpoint(path).scorer, RidgeScorer)
    learned = load_checkpoint(path, overrides=["bbox_reg.method=learned"])
    assert isinstance(learned.scorer, SoftmaxScorer)

    _, bare = saved(tmp_path, config)
    with pytest.raises(DetectError, match="no SVMs"):
        load_checkpoint(bare, overrides=["test.classifier=svm"])


def test_rng_state_round_trip():
    torch.manual_seed(4)
    np.random.seed(4)
    random.seed(4)
    state = capture_rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(state)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1]) and first[2] == second[2]
