"""Anchor centres at sub-stride offsets (``proposals.rpn_centres_per_cell``): the anchors against
a brute-force loop of the centres, the head's outputs in step with them, every payload keeping
the setting (RPN weights files and a checkpoint's shared head) and payloads written before it
existed loading with one centre per cell."""

from dataclasses import replace

import pytest
import torch
from _train_data import make_tiny_voc, tiny_config

from detect.data import load_dataset
from detect.errors import DetectError
from detect.files import atomic_torch_save
from detect.models.backbones import build_backbone
from detect.models.rpn import (
    HeadLayout,
    RegionProposalNetwork,
    SharedRPN,
    grid_anchors,
    load_rpn,
    map_outputs,
)
from detect.training.rpn import build_rpn, refit_shared_head

SHAPES = torch.tensor([[10.0, 20.0], [33.0, 7.5], [16.0, 16.0]])


@pytest.mark.parametrize("centres", [1, 2, 3])
def test_sub_stride_anchors_match_a_loop(centres):
    stride, offset = 16.0, 8.5
    anchors = grid_anchors(SHAPES, (3, 4), stride, offset, centres)
    expected = []
    for i in range(3):
        for j in range(4):
            # the cell spans [offset + stride * (j - 1/2), offset + stride * (j + 1/2)): k equal
            # parts, a centre in the middle of each
            left = offset + stride * j - stride / 2
            top = offset + stride * i - stride / 2
            for r in range(centres):
                for c in range(centres):
                    cx = left + stride * (2 * c + 1) / (2 * centres)
                    cy = top + stride * (2 * r + 1) / (2 * centres)
                    for w, h in SHAPES.tolist():
                        expected.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    assert torch.allclose(anchors, torch.tensor(expected), atol=1e-5)


def test_two_centres_per_cell_put_anchors_every_half_stride():
    anchors = grid_anchors(
        torch.tensor([[4.0, 4.0]]), (2, 3), stride=16, offset=8, centres_per_cell=2
    )
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert sorted(set(centres[:, 0].tolist())) == [4, 12, 20, 28, 36, 44]
    assert sorted(set(centres[:, 1].tolist())) == [4, 12, 20, 28]
    assert len({tuple(c) for c in centres.tolist()}) == 24  # every centre once


@pytest.mark.parametrize("centres", [1, 2])
def test_head_outputs_line_up_with_the_anchors(centres):
    rpn = RegionProposalNetwork(build_backbone("tiny"), SHAPES, 64, 100, HeadLayout(centres))
    logits, deltas, anchors = rpn(torch.zeros(1, 3, 64, 96), 1.0)
    rows, cols = rpn.backbone(torch.zeros(1, 3, 64, 96)).shape[-2:]
    count = rows * cols * centres**2 * len(SHAPES)
    assert logits.shape == (1, count) and deltas.shape == (1, count, 4)
    assert anchors.shape == (count, 4)
    # logit channel (position, shape) of cell (0, 0) is the anchor of that position and shape
    features = rpn.backbone(torch.zeros(1, 3, 64, 96))
    hidden = torch.relu(rpn.head.conv(features))
    channels = rpn.head.objectness(hidden)[0, :, 0, 0]
    assert torch.allclose(logits[0, : centres**2 * len(SHAPES)], channels)
    again = map_outputs(rpn.head, rpn.anchor_shapes, features, 1.0, rpn.backbone)[2]
    assert torch.equal(again, anchors)


def _random_head(module: torch.nn.Module) -> None:
    torch.manual_seed(1)
    for param in module.parameters():
        param.data.normal_(0, 0.1)


def test_rpn_weights_file_round_trip_and_old_files(tmp_path):
    rpn = RegionProposalNetwork(build_backbone("tiny"), SHAPES, 64, 100, HeadLayout(2))
    _random_head(rpn.head)
    image = (torch.rand(64, 80, 3) * 255).to(torch.uint8).numpy()
    path = tmp_path / "rpn.pt"
    atomic_torch_save(rpn.payload(), path)
    loaded = load_rpn(path)
    assert loaded.head.centres_per_cell == 2
    expected = rpn.eval().propose(image, min_size=1, max_proposals=50)
    assert torch.equal(
        torch.from_numpy(loaded.propose(image, min_size=1, max_proposals=50)),
        torch.from_numpy(expected),
    )
    old = RegionProposalNetwork(build_backbone("tiny"), SHAPES, 64, 100).payload()
    del old["centres_per_cell"]  # written before the key existed
    atomic_torch_save(old, path)
    assert load_rpn(path).head.centres_per_cell == 1
    bad = rpn.payload() | {"centres_per_cell": 0}
    atomic_torch_save(bad, path)
    with pytest.raises(DetectError, match="centres_per_cell is 0"):
        load_rpn(path)


def test_shared_head_payload_round_trip_and_old_payloads():
    backbone = build_backbone("tiny")
    shared = SharedRPN(backbone, SHAPES, min_size=1, layout=HeadLayout(3))
    _random_head(shared.head)
    loaded = SharedRPN.from_payload(shared.payload(), backbone, "here", min_size=1)
    assert loaded.head.centres_per_cell == 3
    features = backbone(torch.rand(1, 3, 64, 64))
    assert torch.equal(loaded(features, 1.0, (64, 64)), shared(features, 1.0, (64, 64)))
    old = SharedRPN(backbone, SHAPES).payload()
    del old["centres_per_cell"]
    assert SharedRPN.from_payload(old, backbone, "here").head.centres_per_cell == 1
    with pytest.raises(DetectError, match="here: centres_per_cell is 'two'"):
        SharedRPN.from_payload(old | {"centres_per_cell": "two"}, backbone, "here")


def test_config_setting_reaches_the_rpn_and_the_refitted_head(tmp_path):
    root = make_tiny_voc(tmp_path, num_images=4)
    config = tiny_config(root)
    proposals = replace(config.proposals, rpn_centres_per_cell=2, rpn_iterations=2)
    config = replace(config, proposals=proposals)
    dataset = load_dataset(root / "voc", "trainval", config.data.classes)
    step1 = build_rpn(config, dataset)
    assert step1.head.centres_per_cell == 2
    assert step1.head.objectness.out_channels == 4 * len(step1.anchor_shapes)
    # the refit keeps the step-1 RPN's centres whatever the config says now
    refit_config = replace(config, proposals=replace(proposals, rpn_centres_per_cell=1))
    shared = refit_shared_head(refit_config, dataset, build_backbone("tiny"), step1)
    assert shared.head.centres_per_cell == 2
    bad = replace(config, proposals=replace(proposals, rpn_centres_per_cell=0))
    with pytest.raises(DetectError, match="rpn_centres_per_cell"):
        build_rpn(bad, dataset)
