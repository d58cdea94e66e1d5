"""Atomic writes, reading text / json / torch files, and image reading of every kind of file a
user may hand us."""

import cv2
import numpy as np
import pytest

from detect.data.images import read_image, write_image
from detect.errors import DetectError
from detect.files import atomic_path, atomic_write_text


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "cache.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["cache.txt"]


def _rgb(h=12, w=16):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_png_round_trip_keeps_rgb_order(tmp_path):
    image = _rgb()
    write_image(tmp_path / "a.png", image)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), image)
    # OpenCV itself stores BGR: the red channel of our RGB image is cv2's last channel
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "a.png"))[:, :, 2], image[:, :, 0])


def test_grayscale_rgba_and_16bit(tmp_path):
    gray = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    out = read_image(tmp_path / "g.png")
    assert out.shape == (12, 16, 3) and (out[:, :, 0] == gray).all()

    rgba = np.dstack([_rgb(), np.full((12, 16), 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    assert read_image(tmp_path / "a.png").shape == (12, 16, 3)

    deep = (np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 300).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), np.dstack([deep] * 3))
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 0], np.round(deep / 257.0).astype(np.uint8))


def test_exif_orientation_is_applied(tmp_path):
    """A 10x20 JPEG tagged orientation 6 (rotate 90 CW) reads as 20x10."""
    image = np.zeros((10, 20, 3), np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    data = data.tobytes()
    # minimal APP1 Exif segment with one IFD entry: Orientation (0x0112) SHORT = 6
    tiff = (
        b"MM\x00\x2a\x00\x00\x00\x08"
        + b"\x00\x01"
        + b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00"
        + b"\x00\x00\x00\x00"
    )
    app1 = b"Exif\x00\x00" + tiff
    segment = b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1
    (tmp_path / "r.jpg").write_bytes(data[:2] + segment + data[2:])
    assert read_image(tmp_path / "r.jpg").shape == (20, 10, 3)


def test_missing_and_corrupt_files_name_the_path(tmp_path):
    with pytest.raises(DetectError, match=r"nope.jpg: file not found"):
        read_image(tmp_path / "nope.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DetectError, match=r"bad.jpg: not a readable image"):
        read_image(tmp_path / "bad.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DetectError, match="empty.png"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(DetectError, match=r"folder.jpg: is a folder, not an image file"):
        read_image(tmp_path / "folder.jpg")


def test_atomic_write_where_a_folder_or_file_is_in_the_way(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(DetectError, match=r"cannot write .*out: it is a folder"):
        atomic_write_text(tmp_path / "out", "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DetectError, match=r"cannot write .*a/b.json: .*file is not a folder"):
        atomic_write_text(tmp_path / "file" / "a" / "b.json", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "out"]


def test_read_text_json_and_torch_files_name_the_file(tmp_path):
    import json

    import torch

    from detect.files import load_torch_file, read_json, read_text

    binary = tmp_path / "binary.bin"
    binary.write_bytes(bytes(range(256)))
    text = tmp_path / "text.txt"
    text.write_text("hello")
    for reader in (read_text, read_json):
        with pytest.raises(DetectError, match=r"^thing .*nope: file not found$"):
            reader(tmp_path / "nope", "thing")
        with pytest.raises(DetectError, match=r"^thing .*: is a folder, not a file$"):
            reader(tmp_path, "thing")
        with pytest.raises(DetectError, match=r"binary.bin: not a text file \(byte 128"):
            reader(binary, "thing")
    with pytest.raises(DetectError, match=r"text.txt: cannot read json: Expecting value"):
        read_json(text, "thing")
    (tmp_path / "ok.json").write_text(json.dumps({"a": [1, 2]}))
    assert read_json(tmp_path / "ok.json", "thing") == {"a": [1, 2]}

    for path in (text, binary):
        with pytest.raises(DetectError) as info:
            load_torch_file(path, "checkpoint")
        message = str(info.value)
        assert message == (
            f"checkpoint {path}: cannot read: not a file written by torch.save "
            f"({path.stat().st_size} bytes)"
        )
    with pytest.raises(DetectError, match=r"is a folder, not a file"):
        load_torch_file(tmp_path, "checkpoint")
    with pytest.raises(DetectError, match=r"nope.pt: file not found"):
        load_torch_file(tmp_path / "nope.pt", "checkpoint")
    # A real torch.save file holding something weights_only refuses: one line, not torch's essay.
    torch.save({"x": 1}, tmp_path / "ok.pt")
    assert load_torch_file(tmp_path / "ok.pt", "checkpoint") == {"x": 1}
    torch.save({"x": np.zeros(2)}, tmp_path / "pickled.pt")
    with pytest.raises(DetectError) as info:
        load_torch_file(tmp_path / "pickled.pt", "checkpoint")
    assert "torch.load (weights only) failed" in str(info.value) and "\n" not in str(info.value)


def test_atomic_write_uses_normal_file_permissions(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "shared.txt", "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == 0o644
