"""Import/export: Fast R-CNN .mat (1-based y1 x1 y2 x2, checked with hand values), npz, json."""

import numpy as np
import pytest
import scipy.io
import torch

from detect.errors import DetectError
from detect.proposals import read_proposals, write_proposals
from detect.proposals.formats import mat_from_xyxy, xyxy_from_mat


def _mat_cells(*arrays):
    cells = np.empty((1, len(arrays)), dtype=object)
    for i, array in enumerate(arrays):
        cells[0, i] = np.asarray(array, dtype=np.float64)
    return cells


def test_mat_conversion_hand_values():
    # 1-based inclusive y1=11 x1=21 y2=40 x2=80 covers columns 21..80 -> continuous x 20..80.
    assert torch.equal(
        xyxy_from_mat(np.array([[11, 21, 40, 80]])), torch.tensor([[20.0, 10, 80, 40]])
    )
    assert np.array_equal(mat_from_xyxy(torch.tensor([[20.0, 10, 80, 40]])), [[11, 21, 40, 80]])


def test_mat_import_in_split_order_and_with_images_field(tmp_path):
    path = tmp_path / "voc_2007_test.mat"
    scipy.io.savemat(path, {"boxes": _mat_cells([[1, 1, 10, 20], [5, 6, 7, 8]], [[2, 3, 4, 5]])})
    boxes = read_proposals(path, ["000001", "000004"])
    assert torch.equal(boxes["000001"], torch.tensor([[0.0, 0, 20, 10], [5, 4, 8, 7]]))
    assert torch.equal(boxes["000004"], torch.tensor([[2.0, 1, 5, 4]]))
    with pytest.raises(DetectError, match="2 box arrays for 3 images"):
        read_proposals(path, ["a", "b", "c"])
    with pytest.raises(DetectError, match="'images'"):
        read_proposals(path)
    named = tmp_path / "named.mat"
    images = np.empty((1, 2), dtype=object)
    images[0, :] = ["b", "a"]
    scipy.io.savemat(
        named, {"boxes": _mat_cells([[1, 1, 10, 20]], [[2, 3, 4, 5]]), "images": images}
    )
    boxes = read_proposals(named, ["a", "b"])  # the file's own order wins
    assert torch.equal(boxes["b"], torch.tensor([[0.0, 0, 20, 10]]))


def test_mat_export_round_trip_read_back_with_scipy(tmp_path):
    proposals = {
        "x": torch.tensor([[20.0, 10, 80, 40], [0.5, 1.5, 9.25, 7]]),
        "y": torch.zeros((0, 4)),
    }
    path = tmp_path / "out.mat"
    write_proposals(path, proposals)
    raw = scipy.io.loadmat(path)
    assert np.array_equal(raw["boxes"][0, 0], [[11, 21, 40, 80], [2.5, 1.5, 7, 9.25]])
    assert [str(v[0]) for v in raw["images"].ravel()] == ["x", "y"]
    back = read_proposals(path)
    assert list(back) == ["x", "y"] and back["y"].shape == (0, 4)
    assert torch.equal(back["x"], proposals["x"])


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_npz_and_json_round_trip(tmp_path, suffix):
    proposals = {
        "file": torch.tensor([[1.0, 2, 30.5, 40.25]]),  # 'file' is np.savez's own keyword
        "000002": torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 25]]),
        "empty": torch.zeros((0, 4)),
    }
    path = tmp_path / f"p{suffix}"
    write_proposals(path, proposals)
    back = read_proposals(path)
    assert set(back) == set(proposals)
    for key, value in proposals.items():
        assert back[key].shape == value.shape and torch.allclose(back[key], value, atol=0.01)


def test_bad_files_are_clear_errors(tmp_path):
    (tmp_path / "a.json").write_text('{"img": [[1, 2, 3]]}')
    with pytest.raises(DetectError, match="a.json image img"):
        read_proposals(tmp_path / "a.json")
    scipy.io.savemat(tmp_path / "b.mat", {"other": np.zeros(3)})
    with pytest.raises(DetectError, match="no 'boxes'"):
        read_proposals(tmp_path / "b.mat")
    with pytest.raises(DetectError, match="unknown format"):
        read_proposals(tmp_path / "a.json", []) if False else write_proposals(
            tmp_path / "c.pkl", {}
        )
    with pytest.raises(DetectError, match="not found"):
        read_proposals(tmp_path / "missing.npz")
