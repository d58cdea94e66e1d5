"""The pieces of fine-tuning under torchrun that one process can check: the ranks' shards of an
iteration are the images, flips and windows one process samples; the hooks of a rank other than
0; the one line a resume with another number of processes prints. (Two processes end to end:
tests/test_torchrun.py.)"""

import logging

import pytest
import torch
from _train_data import make_tiny_voc, tiny_config

from detect.data import load_dataset
from detect.models import build_detector
from detect.proposals import load_or_compute_proposals
from detect.training import ddp
from detect.training.batches import IterationBatches
from detect.training.hooks import DivergenceCheck, IterationCallback, LRSchedule


@pytest.fixture
def torchrun_env(monkeypatch):
    def set_env(rank: int, world_size: int):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world_size))

    return set_env


@pytest.mark.parametrize("world_size", [2, 3])
def test_the_ranks_shards_of_an_iteration_are_one_process_batch(tmp_path, world_size):
    data = make_tiny_voc(tmp_path, num_images=5)
    config = tiny_config(data, images_per_batch=5)  # flips on: every draw is exercised
    dataset = load_dataset(data / "voc", "trainval", config.data.classes)
    proposals = load_or_compute_proposals(dataset, config.proposals)
    model = build_detector("spp", config.model, 2)

    def batches(shard):
        return IterationBatches(dataset, proposals, config, model.pooler, model.cfg, shard)

    for iteration in (0, 3):
        _, whole = batches((0, 1))[iteration]
        assert [image.position for image in whole] == list(range(5))
        assert {image.flip for image in whole} == {True, False}
        parts = [batches((rank, world_size))[iteration][1] for rank in range(world_size)]
        assert [[image.position for image in part] for part in parts] == [
            list(range(rank, 5, world_size)) for rank in range(world_size)
        ]
        by_position = {image.position: image for part in parts for image in part}
        assert len(by_position) == 5
        for image in whole:
            other = by_position[image.position]
            assert (other.image_id, other.flip) == (image.image_id, image.flip)
            assert len(other.groups) == len(image.groups) > 0
            for a, b in zip(image.groups, other.groups, strict=True):
                assert a.short_side == b.short_side
                for name in ("image", "windows", "labels", "targets"):
                    assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_ranks_other_than_0_keep_only_what_changes_training(torchrun_env):
    hooks = [
        DivergenceCheck(writer=None, first_loss=None),
        LRSchedule(None),
        IterationCallback(print),
    ]
    torchrun_env(0, 2)
    assert ddp.rank_hooks(hooks) == hooks
    torchrun_env(1, 2)
    kept = ddp.rank_hooks(hooks)
    assert kept[:2] == hooks[:2] and len(kept) == 3 and isinstance(kept[2], ddp.IgnoreCtrlC)


def test_a_resume_with_another_world_size_says_so_in_one_line(torchrun_env, caplog):
    caplog.set_level(logging.WARNING)
    torchrun_env(0, 4)
    ddp.note_resumed_world_size(4, "run/checkpoint.pt")
    assert caplog.records == []
    ddp.note_resumed_world_size(2, "run/checkpoint.pt")
    (record,) = caplog.records
    message = record.getMessage()
    assert "\n" not in message
    assert "run/checkpoint.pt, saved by 2 process(es), with 4" in message
    caplog.clear()
    ddp.note_resumed_world_size(None, "old.pt")  # a checkpoint from before the record: 1
    assert "saved by 1 process(es), with 4" in caplog.records[0].getMessage()
    torchrun_env(1, 4)
    caplog.clear()
    ddp.note_resumed_world_size(2, "run/checkpoint.pt")
    assert caplog.records == []  # rank 0 alone says it
