"""Proposal cache: round trip, content keys, size checks, interrupted writes and corrupt files
never trusted."""

import hashlib
import json
import logging

import numpy as np
import pytest
import torch
from proposals_testdata import synthetic_image

from detect.data.images import read_image, write_image
from detect.proposals import ProposalCache, compute_proposals, image_proposals
from detect.proposals.compute import ImageItem
from detect.proposals.search import selective_search

BOXES = torch.tensor([[0.5, 1.0, 20.25, 30.0], [3.0, 4.0, 50.0, 60.0]])


def test_round_trip_and_recorded_metadata(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"x" * 123)
    cache = ProposalCache(tmp_path / "cache", mode="fast", resize_long_side=500, max_proposals=7)
    assert cache.get(image) is None
    path = cache.put("a", BOXES, (120, 160), image)
    got = cache.get(image, (120, 160))
    assert got.dtype == torch.float32 and torch.equal(got, BOXES)
    with np.load(path) as data:  # independent read of what is on disk
        meta = json.loads(str(data["meta"]))
    assert meta["params"] == {
        "mode": "fast",
        "resize_long_side": 500,
        "min_size": 16.0,
        "max_proposals": 7,
    }
    assert meta["image_sha256"] == hashlib.sha256(b"x" * 123).hexdigest()
    assert meta["image_size"] == [120, 160] and meta["image_id"] == "a"


def test_parameter_or_image_change_misses_and_a_wrong_size_is_stale(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"x" * 10)
    ProposalCache(tmp_path, mode="fast").put("a", BOXES, (120, 160), image)
    assert ProposalCache(tmp_path, mode="fast").lookup(image).status == "hit"
    for other in (
        ProposalCache(tmp_path, mode="quality"),
        ProposalCache(tmp_path, resize_long_side=600),
        ProposalCache(tmp_path, min_size=8),
        ProposalCache(tmp_path, max_proposals=100),
    ):
        assert other.lookup(image).status == "missing"  # another key
        assert other.get(image) is None
    cache = ProposalCache(tmp_path, mode="fast")
    assert cache.lookup(image, (120, 161)).status == "stale"  # other image size
    image.write_bytes(b"y" * 10)  # the image file was replaced by one of the same size
    assert cache.lookup(image).status == "missing"


def test_same_name_and_byte_size_but_other_pixels_never_share_an_entry(tmp_path):
    """Two BMPs of the same size (so the same byte count) and the same name in two folders."""
    first, second = tmp_path / "train" / "000001.bmp", tmp_path / "photos" / "000001.bmp"
    write_image(first, synthetic_image(0)[0])
    write_image(second, synthetic_image(1)[0][::-1].copy())  # another scene, upside down
    assert first.stat().st_size == second.stat().st_size
    cache = ProposalCache(tmp_path / "cache", resize_long_side=160, min_size=8, max_proposals=200)
    params = dict(resize_long_side=160, min_size=8, max_proposals=200)
    trained = compute_proposals([ImageItem("000001", first)], cache, progress=False)
    entry = next((tmp_path / "cache").iterdir())
    before = entry.read_bytes()
    image = read_image(second)
    boxes = image_proposals(image, "000001", cache, second)  # what `detect run` does
    expected = selective_search(image, mode="fast", **params)  # computed here, independently
    assert torch.equal(boxes, expected)
    assert not torch.equal(boxes, torch.from_numpy(trained.proposals["000001"]))
    assert entry.read_bytes() == before  # the training entry is neither reused nor overwritten
    assert len(list((tmp_path / "cache").iterdir())) == 2
    again = compute_proposals([ImageItem("000001", first)], cache, progress=False)
    assert again.cached == 1
    assert np.array_equal(again.proposals["000001"], trained.proposals["000001"])


def test_the_recorded_image_size_is_checked_on_every_read(tmp_path, caplog):
    """An entry whose recorded size is not the image's (written for another image: here by hand)
    is never used, whether the image is decoded (run) or not yet (train, eval, proposals)."""
    path = tmp_path / "a.png"
    write_image(path, synthetic_image(0)[0])  # 120 x 160
    cache = ProposalCache(tmp_path / "cache", resize_long_side=160, min_size=8)
    entry = cache.put("a", BOXES, (120, 160), path)
    assert cache.lookup(path).status == "hit"  # from the PNG header, without decoding
    with np.load(entry) as data:
        meta = json.loads(str(data["meta"]))
    meta["image_size"] = [60, 80]
    with open(entry, "wb") as handle:
        np.savez(handle, boxes=BOXES.numpy(), meta=np.array(json.dumps(meta)))
    with caplog.at_level(logging.WARNING):
        assert cache.lookup(path).status == "stale"
    assert "image size [60, 80] (height, width) != the image's [120, 160]" in caplog.text
    assert cache.lookup(path, (120, 160)).status == "stale"
    run = compute_proposals([ImageItem("a", path)], cache, progress=False)
    assert run.recomputed == 1 and cache.lookup(path).status == "hit"
    meta["image_size"] = [160, 120]  # EXIF may rotate: the header's size in either orientation
    with open(entry, "wb") as handle:
        np.savez(handle, boxes=BOXES.numpy(), meta=np.array(json.dumps(meta)))
    assert cache.lookup(path).status == "hit"


def test_a_cache_without_a_folder_keeps_nothing(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"x" * 10)
    for folder in (None, ""):
        cache = ProposalCache(folder)
        assert cache.put("a", BOXES, (120, 160), image) is None
        assert cache.lookup(image).status == "missing"
    assert list(tmp_path.iterdir()) == [image]


def test_interrupted_write_leaves_old_file_and_no_partial(tmp_path, monkeypatch):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    cache = ProposalCache(tmp_path / "cache")
    entry = cache.put("a", BOXES, (120, 160), a)

    def crash(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.put("a", BOXES * 2, (120, 160), a)
    with pytest.raises(KeyboardInterrupt):
        cache.put("b", BOXES, (120, 160), b)
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [entry.name]  # no temp, no b
    assert torch.equal(cache.get(a), BOXES)
    assert cache.lookup(b).status == "missing"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "bad_boxes", "flipped"])
def test_corrupt_file_is_reported_and_not_used(tmp_path, caplog, damage):
    image = tmp_path / "a.png"
    image.write_bytes(b"a")
    cache = ProposalCache(tmp_path / "cache")
    path = cache.put("a", BOXES, (120, 160), image)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not an npz at all")
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "flipped":  # a byte of the stored boxes changed: the zip CRC no longer fits
        index = data.index(BOXES.numpy().tobytes()) + 5
        path.write_bytes(data[:index] + bytes([data[index] ^ 0x40]) + data[index + 1 :])
    else:
        with open(path, "wb") as handle:
            np.savez(handle, boxes=np.zeros((3, 5), np.float32), meta=np.array("{}"))
    with caplog.at_level(logging.WARNING):
        found = cache.lookup(image)
    assert found.status == "corrupt" and found.boxes is None
    assert str(path) in caplog.text


def test_entry_names_are_content_keys(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "sub" / "a.png"
    a.write_bytes(b"same")
    b.parent.mkdir()
    b.write_bytes(b"same")
    cache = ProposalCache(tmp_path / "cache")
    name = cache.put("../x", BOXES, (120, 160), a).name
    assert len(name) == 44 and name.endswith(".npz") and int(name[:40], 16) >= 0
    assert cache.get(b) is not None  # the same bytes under another name share the entry
    assert ProposalCache(tmp_path / "cache", mode="quality").path_for("d").name != (
        cache.path_for("d").name
    )


def test_bad_parameters_and_a_file_as_folder_are_refused(tmp_path):
    from detect.errors import DetectError

    with pytest.raises(DetectError, match=r"proposals.max_proposals must be >= 0"):
        ProposalCache(tmp_path, max_proposals=-1)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(DetectError, match=r"a_file \(proposals.cache_dir\): exists and is not"):
        ProposalCache(tmp_path / "a_file")
