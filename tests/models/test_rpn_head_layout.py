"""The RPN head's layout (``proposals.rpn_head_width`` / ``rpn_head_depth``): a head of several
convs against a chain of ``F.conv2d`` calls on its own weights, every payload keeping the layout
(RPN weights files and a checkpoint's shared head), payloads written before it existed loading
as one conv as wide as the backbone, and the config reaching the step-1 RPN and its refit."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from _train_data import make_tiny_voc, tiny_config

from detect.data import load_dataset
from detect.errors import DetectError
from detect.files import atomic_torch_save
from detect.models.backbones import build_backbone
from detect.models.rpn import HeadLayout, RegionProposalNetwork, RPNHead, SharedRPN, load_rpn
from detect.training.rpn import build_rpn, refit_shared_head

SHAPES = torch.tensor([[10.0, 20.0], [33.0, 7.5], [16.0, 16.0]])


def _randomise(module: torch.nn.Module) -> None:
    torch.manual_seed(2)
    for param in module.parameters():
        param.data.normal_(0, 0.1)


@pytest.mark.parametrize(("width", "depth"), [(0, 1), (32, 1), (24, 3)])
def test_head_is_a_chain_of_3x3_convs_then_1x1_outputs(width, depth):
    head = RPNHead(16, len(SHAPES), HeadLayout(width=width, depth=depth))
    _randomise(head)
    features = torch.rand(2, 16, 5, 7)
    convs = [(p.weight, p.bias) for p in head.modules() if getattr(p, "kernel_size", 0) == (3, 3)]
    assert len(convs) == depth
    hidden = features
    for weight, bias in convs:  # by hand: conv, ReLU, as many as the layout says
        assert weight.shape[0] == (width or 16)
        hidden = F.relu(F.conv2d(hidden, weight, bias, padding=1))
    logits = F.conv2d(hidden, head.objectness.weight, head.objectness.bias)
    deltas = F.conv2d(hidden, head.deltas.weight, head.deltas.bias)
    got_logits, got_deltas = head(features)
    # (N, A, h, w) -> (N, h * w * A): cell by cell, the anchors of a cell together
    assert torch.allclose(got_logits, logits.permute(0, 2, 3, 1).reshape(2, -1), atol=1e-6)
    assert torch.allclose(got_deltas, deltas.permute(0, 2, 3, 1).reshape(2, -1, 4), atol=1e-6)


def test_rpn_weights_file_keeps_the_layout_and_old_files_load(tmp_path):
    layout = HeadLayout(width=40, depth=2)
    rpn = RegionProposalNetwork(build_backbone("tiny"), SHAPES, 64, 100, layout)
    _randomise(rpn.head)
    path = tmp_path / "rpn.pt"
    atomic_torch_save(rpn.payload(), path)
    loaded = load_rpn(path)
    assert loaded.head.layout == layout
    image = (torch.rand(64, 80, 3) * 255).to(torch.uint8).numpy()
    expected = rpn.eval().propose(image, min_size=1, max_proposals=50)
    assert (loaded.propose(image, min_size=1, max_proposals=50) == expected).all()
    old = RegionProposalNetwork(build_backbone("tiny"), SHAPES, 64, 100).payload()
    del old["head_width"], old["head_depth"]  # written before the keys existed
    atomic_torch_save(old, path)
    assert load_rpn(path).head.layout == HeadLayout()
    assert load_rpn(path).head.conv.out_channels == 64  # the backbone's channels
    atomic_torch_save(rpn.payload() | {"head_depth": 0}, path)
    with pytest.raises(DetectError, match=r"rpn.pt: head_depth is 0, not an integer >= 1"):
        load_rpn(path)


def test_shared_head_payload_keeps_the_layout():
    backbone = build_backbone("tiny")
    shared = SharedRPN(backbone, SHAPES, min_size=1, layout=HeadLayout(2, 48, 2))
    _randomise(shared.head)
    loaded = SharedRPN.from_payload(shared.payload(), backbone, "here", min_size=1)
    assert loaded.head.layout == HeadLayout(2, 48, 2)
    features = backbone(torch.rand(1, 3, 64, 64))
    assert torch.equal(loaded(features, 1.0, (64, 64)), shared(features, 1.0, (64, 64)))
    with pytest.raises(DetectError, match="here: head_width is -1"):
        SharedRPN.from_payload(shared.payload() | {"head_width": -1}, backbone, "here")


def test_config_reaches_the_rpn_and_the_refit_keeps_the_step1_layout(tmp_path):
    root = make_tiny_voc(tmp_path, num_images=4)
    config = tiny_config(root)
    proposals = replace(config.proposals, rpn_head_width=20, rpn_head_depth=2, rpn_iterations=2)
    config = replace(config, proposals=proposals)
    dataset = load_dataset(root / "voc", "trainval", config.data.classes)
    step1 = build_rpn(config, dataset)
    assert step1.head.layout == HeadLayout(1, 20, 2)
    refit_config = replace(config, proposals=replace(proposals, rpn_head_depth=1))
    shared = refit_shared_head(refit_config, dataset, build_backbone("tiny"), step1)
    assert shared.head.layout == HeadLayout(1, 20, 2)
    # without a step-1 RPN the config's layout
    assert refit_shared_head(refit_config, dataset, build_backbone("tiny")).head.layout == (
        HeadLayout(1, 20, 1)
    )
    for key, value in (("rpn_head_width", -1), ("rpn_head_depth", 0)):
        bad = replace(config, proposals=replace(proposals, **{key: value}))
        with pytest.raises(DetectError, match=f"proposals.{key}"):
            build_rpn(bad, dataset)


def test_refit_iterations_are_their_own_and_checked_before_training(tmp_path, monkeypatch):
    import detect.training.rpn as rpn_training
    from detect.training.pipeline import validate_training_config

    root = make_tiny_voc(tmp_path, num_images=4)
    config = tiny_config(root)
    dataset = load_dataset(root / "voc", "trainval", config.data.classes)
    counts = []
    monkeypatch.setattr(rpn_training, "train_rpn", lambda _rpn, _data, n, *a, **k: counts.append(n))
    for refit, expected in ((0, 3), (5, 5)):
        proposals = replace(config.proposals, rpn_iterations=3, rpn_refit_iterations=refit)
        refit_shared_head(replace(config, proposals=proposals), dataset, build_backbone("tiny"))
        assert counts.pop() == expected
    for key, value in (("rpn_refit_iterations", -1), ("rpn_head_depth", 0)):
        bad = replace(config, proposals=replace(config.proposals, **{key: value}))
        with pytest.raises(DetectError, match=f"proposals.{key}"):
            validate_training_config(bad, "spp")


def test_frozen_backbone_maps_are_computed_once_per_image_and_flip(tmp_path):
    from detect.training.rpn import train_rpn

    root = make_tiny_voc(tmp_path, num_images=3)
    dataset = load_dataset(root / "voc", "trainval", tiny_config(root).data.classes)
    runs = {}
    for cache_mb in (0, 64):
        torch.manual_seed(0)
        rpn = RegionProposalNetwork(build_backbone("tiny"), SHAPES, 64, 100, HeadLayout(1, 8, 2))
        calls: list[int] = []
        rpn.backbone.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        losses = train_rpn(rpn, dataset, 12, 0.01, freeze_backbone=True, cache_mb=cache_mb)
        runs[cache_mb] = (losses, len(calls))
    assert runs[0][1] == 12  # no RAM: every visit computes the map
    assert runs[64][1] <= 6  # 3 images x 2 flips at most
    assert runs[0][0] == runs[64][0]  # the same maps either way
