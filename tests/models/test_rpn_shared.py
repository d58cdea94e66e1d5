"""The RPN head shared with the detector's conv layers (Faster R-CNN's step 3): the re-fit leaves
the conv layers as they were, the shared path's detections are those of the two-step path (the
same weights' proposals computed apart, then given to the detector), it runs the backbone once
per image, and a proposal cache keyed by the checkpoint changes with its weights."""

from dataclasses import replace

import pytest
import torch
import yaml
from _train_data import make_tiny_voc, tiny_config, tiny_config_dict

from detect import Detector
from detect.cli import main
from detect.data import load_dataset
from detect.data.images import read_image
from detect.models import build_detector
from detect.models.rpn import SHARED_KEY, RegionProposalNetwork, load_rpn
from detect.proposals.cache import ProposalCache
from detect.training.rpn import build_rpn, refit_shared_head, train_rpn

POST_NMS = 40


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_voc(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """A run trained with rpn proposals: the RPN, a few detector iterations, the shared head."""
    folder = tmp_path_factory.mktemp("shared")
    values = tiny_config_dict(data)
    values["proposals"] = {
        "method": "rpn",
        "cache_dir": str(folder / "cache"),
        "rpn_iterations": 20,
        "rpn_lr": 0.02,
        "min_size": 2,
        "max_proposals": 100,
        "rpn_post_nms": POST_NMS,
    }
    config_file = folder / "rpn.yaml"
    config_file.write_text(yaml.safe_dump(values))
    assert main(["train", "--config", str(config_file), "--out", str(folder / "run")]) == 0
    return folder / "run"


def _state(module: torch.nn.Module) -> dict:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def test_refit_trains_the_head_only(data):
    config = tiny_config(data)
    config = replace(config, proposals=replace(config.proposals, rpn_iterations=8))
    dataset = load_dataset(data / "voc", "trainval", config.data.classes)
    torch.manual_seed(0)
    step1 = build_rpn(config, dataset)
    detector = build_detector("spp", config.model, 2)
    conv_before, head_before = _state(detector.backbone), _state(step1.head)
    shared = refit_shared_head(config, dataset, detector.backbone, step1)
    for key, value in detector.backbone.state_dict().items():  # weights and BatchNorm stats
        assert torch.equal(value, conv_before[key]), key
    moved = [k for k, v in shared.head.state_dict().items() if not torch.equal(v, head_before[k])]
    assert moved  # the head did train, starting from step 1's
    assert torch.equal(shared.anchor_shapes, step1.anchor_shapes)
    # the training loop itself, on a network whose backbone it must freeze (BatchNorm included)
    before = _state(step1.backbone)
    train_rpn(step1, dataset, 4, 0.02, freeze_backbone=True)
    for key, value in step1.backbone.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_shared_path_equals_two_step_path(run, data):
    overrides = ["proposals.min_size=2"]
    det = Detector.from_checkpoint(run / "checkpoint.pt", device="cpu", overrides=overrides)
    assert det.model.rpn is not None
    # the two-step path: the same weights as a standalone RPN (its own copy of the backbone),
    # its proposals given to the detector as imported ones
    standalone = load_rpn(run / "checkpoint.pt")
    cfg = det.config.proposals
    found_any = False
    for name in ("0000", "0001", "0002"):
        image = read_image(data / "voc" / "JPEGImages" / f"{name}.png")
        boxes = standalone.propose(image, cfg.rpn_pre_nms, cfg.rpn_nms_iou, 2.0, POST_NMS)
        assert 0 < boxes.shape[0] <= POST_NMS
        two_step = det(image, proposals=boxes)
        shared = det(image)
        assert torch.equal(shared.labels, two_step.labels)
        torch.testing.assert_close(shared.boxes, two_step.boxes, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(shared.scores, two_step.scores, atol=1e-5, rtol=1e-4)
        found_any |= len(shared.scores) > 0
    assert found_any  # score_threshold 0: the comparison is not of empty results


def test_backbone_runs_once_per_image(run, data, monkeypatch):
    calls = []
    own_pass = RegionProposalNetwork.forward

    def counted(self, *args):
        calls.append("rpn")
        return own_pass(self, *args)

    monkeypatch.setattr(RegionProposalNetwork, "forward", counted)
    images = [data / "voc" / "JPEGImages" / f"000{i}.png" for i in range(4)]
    for shared, expected in [(True, ["detector"]), (False, ["rpn", "detector"])]:
        det = Detector.from_checkpoint(
            run / "checkpoint.pt", device="cpu", overrides=[f"proposals.rpn_shared={shared}"]
        )
        assert (det.model.rpn is not None) == shared
        det.model.backbone.register_forward_hook(lambda *_: calls.append("detector"))
        calls.clear()
        assert len(list(det.predict(images, progress=False))) == 4
        assert calls == expected * 4  # shared: one conv pass per image; else two


def test_cache_key_follows_the_checkpoint_weights(run, tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    assert payload[SHARED_KEY]["format"] == "detect-rpn-shared-v1"
    torch.save(payload, checkpoint)
    key = ProposalCache(tmp_path / "cache", "rpn", weights=str(checkpoint), min_size=2)
    # same bytes, same key; a changed head weight, another key
    same = ProposalCache(tmp_path / "cache", "rpn", weights=str(checkpoint), min_size=2)
    assert same.path_for("x") == key.path_for("x")
    payload[SHARED_KEY]["state"]["objectness.bias"] += 1.0
    torch.save(payload, checkpoint)
    changed = ProposalCache(tmp_path / "cache", "rpn", weights=str(checkpoint), min_size=2)
    assert changed.params["weights_sha256"] != key.params["weights_sha256"]
    assert changed.path_for("x") != key.path_for("x")


def test_eval_and_run_use_the_shared_head(run, data, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mean" in printed and "proposals from its shared conv map included" in printed
    assert not list(out.rglob("*.npz"))  # no proposal computed apart, none cached
    images = data / "voc" / "JPEGImages"
    args = ["run", str(images), "--checkpoint", str(run / "checkpoint.pt")]
    assert main([*args, "--out", str(tmp_path / "found"), "--set", "proposals.workers=2"]) == 0
    assert "6 image(s) processed, 0 skipped" in capsys.readouterr().out
    # detect proposals with the checkpoint: the shared head on its backbone, keyed by its bytes
    args = ["proposals", "--data", str(data / "voc"), "--classes", "red,blue", "--split", "test"]
    args += ["--out", str(tmp_path / "props"), "--set", "proposals.min_size=2", "--recall"]
    assert main([*args, "--rpn-weights", str(run / "checkpoint.pt")]) == 0
    assert f"rpn {run / 'checkpoint.pt'} (sha256" in capsys.readouterr().out
