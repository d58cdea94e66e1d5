"""Proposal cache: round trip, invalidation, interrupted writes and corrupt files never trusted."""

import json
import logging

import numpy as np
import pytest
import torch

from detect.proposals import ProposalCache
from detect.proposals.cache import cache_file_name

BOXES = torch.tensor([[0.5, 1.0, 20.25, 30.0], [3.0, 4.0, 50.0, 60.0]])


def test_round_trip_and_recorded_metadata(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"x" * 123)
    cache = ProposalCache(tmp_path / "cache", mode="fast", resize_long_side=500, max_proposals=7)
    assert cache.get("a", image) is None
    path = cache.put("a", BOXES, (120, 160), image)
    got = cache.get("a", image, (120, 160))
    assert got.dtype == torch.float32 and torch.equal(got, BOXES)
    with np.load(path) as data:  # independent read of what is on disk
        meta = json.loads(str(data["meta"]))
    assert meta["params"] == {
        "mode": "fast",
        "resize_long_side": 500,
        "min_size": 16.0,
        "max_proposals": 7,
    }
    assert (
        meta["image_size"] == [120, 160] and meta["image_bytes"] == 123 and meta["image_id"] == "a"
    )


def test_parameter_or_image_change_invalidates(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"x" * 10)
    ProposalCache(tmp_path, mode="fast").put("a", BOXES, (120, 160), image)
    assert ProposalCache(tmp_path, mode="fast").lookup("a", image).status == "hit"
    for other in (
        ProposalCache(tmp_path, mode="quality"),
        ProposalCache(tmp_path, resize_long_side=600),
        ProposalCache(tmp_path, min_size=8),
        ProposalCache(tmp_path, max_proposals=100),
    ):
        assert other.lookup("a", image).status == "stale"
        assert other.get("a", image) is None
    cache = ProposalCache(tmp_path, mode="fast")
    assert cache.lookup("a", image, (120, 161)).status == "stale"  # other image size
    image.write_bytes(b"x" * 11)  # the image file was replaced
    assert cache.lookup("a", image).status == "stale"


def test_interrupted_write_leaves_old_file_and_no_partial(tmp_path, monkeypatch):
    cache = ProposalCache(tmp_path)
    cache.put("a", BOXES, (120, 160))

    def crash(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.put("a", BOXES * 2, (120, 160))
    with pytest.raises(KeyboardInterrupt):
        cache.put("b", BOXES, (120, 160))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]  # no temp file, no b.npz
    assert torch.equal(cache.get("a"), BOXES)
    assert cache.lookup("b").status == "missing"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "bad_boxes"])
def test_corrupt_file_is_reported_and_not_used(tmp_path, caplog, damage):
    cache = ProposalCache(tmp_path)
    path = cache.put("a", BOXES, (120, 160))
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not an npz at all")
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        with open(path, "wb") as handle:
            np.savez(handle, boxes=np.zeros((3, 5), np.float32), meta=np.array("{}"))
    with caplog.at_level(logging.WARNING):
        found = cache.lookup("a")
    assert found.status == "corrupt" and found.boxes is None
    assert str(path) in caplog.text


def test_file_names_are_safe_and_distinct():
    assert cache_file_name("000005") == "000005.npz"
    names = {cache_file_name(i) for i in ["a/b", "a_b", "a:b", "../x", ".hidden", ""]}
    assert len(names) == 6
    assert all("/" not in n and not n.startswith(".") for n in names)


def test_bad_parameters_and_a_file_as_folder_are_refused(tmp_path):
    from detect.errors import DetectError

    with pytest.raises(DetectError, match=r"proposals.max_proposals must be >= 0"):
        ProposalCache(tmp_path, max_proposals=-1)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(DetectError, match=r"a_file \(proposals.cache_dir\): exists and is not"):
        ProposalCache(tmp_path / "a_file")
