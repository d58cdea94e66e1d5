"""Proposal cache keys and records by hand: the sha256 an entry is keyed by (of the file's bytes,
or of the decoded pixels and their shape), the config's parameters, and what an entry records."""

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detect.config import ProposalConfig
from detect.errors import DetectError
from detect.proposals.cache import ProposalCache, image_digest


def test_digests_by_hand(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"\x00\x01" * 1_000_000)  # more than one read chunk
    assert image_digest(path) == hashlib.sha256(b"\x00\x01" * 1_000_000).hexdigest()
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    expected = hashlib.sha256(repr((2, 4, 3)).encode() + pixels.tobytes()).hexdigest()
    assert image_digest(image=pixels) == "pixels-" + expected
    assert image_digest(image=pixels.reshape(4, 2, 3)) != image_digest(image=pixels)  # the shape
    with pytest.raises(
        DetectError, match=rf"^image {tmp_path / 'none.png'}: cannot read: No such file"
    ):
        image_digest(tmp_path / "none.png")
    with pytest.raises(ValueError, match="^image_digest needs an image file or the decoded image$"):
        image_digest()


def test_the_config_sets_every_parameter(tmp_path):
    cfg = ProposalConfig(
        mode="quality", resize_long_side=300, min_size=8, max_proposals=50, cache_dir=str(tmp_path)
    )
    cache = ProposalCache.from_config(cfg)
    assert cache.cache_dir == tmp_path
    assert cache.params == {
        "mode": "quality",
        "resize_long_side": 300,
        "min_size": 8.0,
        "max_proposals": 50,
    }
    with pytest.raises(ValueError, match="^a proposal cache without a folder has no files$"):
        ProposalCache(None).path_for("x")


def test_an_entry_of_decoded_pixels_records_what_it_is(tmp_path):
    cache = ProposalCache(tmp_path)
    pixels = np.zeros((6, 8, 3), dtype=np.uint8)
    path = cache.put("img", torch.tensor([[1, 2, 3, 4]]), (6, 8), image=pixels)
    boxes = cache.get(image_size=(6, 8), image=pixels)
    assert boxes.dtype == torch.float32 and boxes.tolist() == [[1.0, 2.0, 3.0, 4.0]]
    assert cache.get(image_size=(8, 6), image=pixels) is None  # another size: stale
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
    assert meta["image_file"] is None and meta["image_id"] == "img"
    assert meta["box_format"] == "xyxy, 0-based continuous pixels"
    assert meta["opencv"] == cv2.__version__ and meta["image_size"] == [6, 8]
    file_entry = cache.put("f", torch.zeros((0, 4)), (6, 8), image_path=Path(path))
    with np.load(file_entry) as data:
        assert json.loads(str(data["meta"]))["image_file"] == str(path)


def rewrite_meta(path, **changes):
    with np.load(path) as data:
        boxes, meta = np.asarray(data["boxes"]), json.loads(str(data["meta"]))
    meta.update(changes)
    with open(path, "wb") as handle:
        np.savez(handle, boxes=boxes, meta=np.array(json.dumps(meta)))


def test_lookup_statuses_and_reasons(tmp_path, caplog):
    cache = ProposalCache(tmp_path / "cache", mode="fast")
    pixels = np.zeros((6, 8, 3), dtype=np.uint8)
    path = cache.put("img", torch.tensor([[1.0, 2.0, 3.0, 4.0]]), (6, 8), image=pixels)
    assert cache.lookup(image=pixels, image_size=(6, 8)).status == "hit"
    unreadable = cache.lookup(image_path=tmp_path / "gone.png")
    assert unreadable.status == "missing" and "gone.png: cannot read" in unreadable.reason
    stale = {
        "format": ("written by old-format/opencv_selective_search", {"format": "old-format"}),
        "method": ("written by detect-proposals-v2/edges", {"method": "edges"}),
        "params": ("parameters {'mode': 'quality'} != ", {"params": {"mode": "quality"}}),
        "image": ("written for another image (sha256 abc)", {"image_sha256": "abc"}),
        "size": ("image size [8, 6] (height, width) != the image's [6, 8]", {"image_size": [8, 6]}),
    }
    for expected, change in stale.values():
        cache.put("img", torch.tensor([[1.0, 2.0, 3.0, 4.0]]), (6, 8), image=pixels)
        rewrite_meta(path, **change)
        found = cache.lookup(image=pixels, image_size=(6, 8))
        assert found.status == "stale" and found.reason.startswith(expected), found.reason
        assert f"proposal cache {path}: stale ({found.reason}); recomputing" in caplog.text
    path.write_bytes(b"not a zip")
    corrupt = cache.lookup(image=pixels, image_size=(6, 8))
    assert corrupt.status == "corrupt" and corrupt.reason.startswith("unreadable (ValueError: ")
    assert f"proposal cache {path}: {corrupt.reason}; recomputing" in caplog.text
    with open(path, "wb") as handle:
        np.savez(handle, boxes=np.zeros((1, 4), np.float64), meta=np.array("{}"))
    bad = cache.lookup(image=pixels, image_size=(6, 8))
    assert (bad.status, bad.reason) == ("corrupt", "bad content (boxes float64 (1, 4))")
