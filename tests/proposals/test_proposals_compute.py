"""Parallel / sharded / resumable computation, failure counting and the data-set entry point."""

import dataclasses
import logging

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from proposals_testdata import synthetic_dataset, write_images

from detect.config import ProposalConfig
from detect.errors import DetectError
from detect.proposals import (
    ImageItem,
    ProposalCache,
    check_cache,
    compute_proposals,
    load_or_compute_proposals,
    parse_shard,
    shard_items,
    write_proposals,
)
from detect.proposals.cache import image_digest

PARAMS = dict(resize_long_side=160, min_size=8, max_proposals=200)


@given(st.integers(0, 60), st.integers(1, 9))
def test_shards_cover_every_image_exactly_once(size, count):
    items = [f"img{i}" for i in range(size)]
    shards = [shard_items(items, index, count) for index in range(count)]
    flat = [item for shard in shards for item in shard]
    assert sorted(flat) == sorted(items) and len(flat) == len(set(flat))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shards == [shard_items(items, index, count) for index in range(count)]  # deterministic


@pytest.mark.parametrize("text", ["4/4", "-1/3", "1", "a/b", "0/0"])
def test_bad_shard_is_a_clear_error(text):
    with pytest.raises(DetectError, match="shard"):
        parse_shard(text)
    assert parse_shard("3/4") == (3, 4)


@pytest.mark.parametrize("workers", [0, -3])
def test_workers_below_one_are_refused(tmp_path, workers):
    items = [ImageItem(p.stem, p) for p in write_images(tmp_path, 1)]
    cache = ProposalCache(tmp_path / "cache", **PARAMS)
    with pytest.raises(DetectError, match=f"proposals.workers must be >= 1, got {workers}"):
        compute_proposals(items, cache, workers=workers, progress=False)
    assert not (tmp_path / "cache").exists()


def test_bad_image_is_counted_and_run_resumes(tmp_path, caplog):
    paths = write_images(tmp_path, 3)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    items = [ImageItem(p.stem, p) for p in paths] + [ImageItem("bad", bad)]
    cache = ProposalCache(tmp_path / "cache", **PARAMS)
    with caplog.at_level(logging.ERROR):
        run = compute_proposals(items, cache, workers=1, progress=False)
    assert str(bad) in caplog.text
    assert [path for path, _ in run.failures] == [str(bad)]
    assert list(run.proposals) == ["img0", "img1", "img2"] and run.computed == 3
    again = compute_proposals(items, cache, workers=1, progress=False)  # resume: all cached
    assert again.cached == 3 and again.computed == 0 and len(again.failures) == 1
    for key, boxes in run.proposals.items():
        assert np.array_equal(again.proposals[key], boxes)
    assert check_cache(items, cache) == {
        "hit": ["img0", "img1", "img2"],
        "missing": ["bad"],
        "stale": [],
        "corrupt": [],
    }


def test_two_workers_equal_one_and_corrupt_file_is_recomputed(tmp_path, caplog):
    items = [ImageItem(p.stem, p) for p in write_images(tmp_path, 4)]
    one = compute_proposals(items, ProposalCache(tmp_path / "c1", **PARAMS), 1, progress=False)
    cache = ProposalCache(tmp_path / "c2", **PARAMS)
    two = compute_proposals(items, cache, workers=2, progress=False)
    assert list(two.proposals) == list(one.proposals) and two.computed == 4
    for key in one.proposals:
        assert np.array_equal(one.proposals[key], two.proposals[key])
    victim = cache.path_for(image_digest(items[2].path))
    victim.write_bytes(victim.read_bytes()[:100])  # truncated on disk
    with caplog.at_level(logging.WARNING):
        rerun = compute_proposals(items, cache, workers=2, progress=False)
    assert str(victim) in caplog.text
    assert rerun.cached == 3 and rerun.computed == 1 and rerun.recomputed == 1
    assert np.array_equal(rerun.proposals["img2"], one.proposals["img2"])
    assert np.array_equal(cache.get(items[2].path).numpy(), one.proposals["img2"])


def test_load_or_compute_proposals_on_a_dataset(tmp_path):
    dataset = synthetic_dataset(tmp_path, 2)
    cfg = ProposalConfig(cache_dir=str(tmp_path / "cache"), **PARAMS)
    proposals = load_or_compute_proposals(dataset, cfg, workers=1, progress=False)
    assert list(proposals) == dataset.image_ids
    assert all(b.dtype == torch.float32 and b.shape[1] == 4 for b in proposals.values())
    # The same proposals through an imported file.
    exported = tmp_path / "boxes.npz"
    write_proposals(exported, proposals)
    imported = load_or_compute_proposals(
        dataset, dataclasses.replace(cfg, import_file=str(exported)), progress=False
    )
    for key in proposals:
        assert torch.equal(imported[key], proposals[key])
    dataset.annotations[1].path.write_bytes(b"broken")
    cache = ProposalCache.from_config(cfg)
    assert cache.lookup(dataset.annotations[1].path).status == "missing"  # new bytes, new key
    with pytest.raises(DetectError, match="1 image"):
        load_or_compute_proposals(dataset, cfg, progress=False)
