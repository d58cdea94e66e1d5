"""The synthetic data set: boxes tight around what was drawn, determinism, splits, VOC round trip."""

from pathlib import Path

import numpy as np
import pytest

from detect.cli import main
from detect.data import load_dataset
from detect.data import synthetic as synth
from detect.data.images import read_image
from detect.data.synthetic import (
    SYNTHETIC_CLASSES,
    generate_synthetic_dataset,
    image_rng,
    is_complete,
    read_info,
    render_image,
)
from detect.errors import DetectError

H, W = 96, 128


def _bbox(pixels: np.ndarray) -> list[float]:
    """Independent tight box of a boolean (H, W) array: 0-based continuous xyxy."""
    rows, cols = np.where(pixels)
    return [cols.min(), rows.min(), cols.max() + 1.0, rows.max() + 1.0]


def _near(image: np.ndarray, colour: np.ndarray, tolerance: float) -> np.ndarray:
    """(H, W) bool: pixels within ``tolerance`` of ``colour`` in every channel."""
    return (np.abs(image.astype(float) - np.asarray(colour, float)) <= tolerance).all(axis=-1)


def _object_colours(colour: np.ndarray) -> list[np.ndarray]:
    """The fill and rim colours of an object, as the renderer rounds them."""
    return [colour.astype(float), np.round(colour * synth.RIM_SHADE)]


def test_boxes_are_tight_around_the_drawn_pixels_on_a_flat_background(monkeypatch):
    # Re-render on a black background without grain: every non-black pixel belongs to exactly one
    # object, recognised by its own fill or rim colour (independent of the renderer's masks).
    monkeypatch.setattr(synth, "_background", lambda rng, h, w: np.zeros((h, w, 3), np.float32))
    monkeypatch.setattr(synth, "PIXEL_NOISE", 0.0)
    checked = occluded = 0
    for index in range(40):
        rendered = render_image(image_rng(7, index), 160, 200)
        colours = [tuple(c) for c in rendered.colours]
        if len(set(colours)) < len(colours):
            continue  # two objects of identical colour: ownership by colour is ambiguous
        owned = np.zeros((160, 200), bool)
        for box, colour in zip(rendered.boxes, rendered.colours, strict=True):
            pixels = np.zeros((160, 200), bool)
            for shade in _object_colours(colour):
                pixels |= _near(rendered.image, shade, 1.0)
            assert pixels.any()
            assert box.tolist() == _bbox(pixels)
            owned |= pixels
            checked += 1
        occluded += int((rendered.visible < 1.0).sum())
        # nothing drawn that no annotation accounts for
        assert not (rendered.image.any(axis=-1) & ~owned).any()
    assert checked > 60 and occluded > 5


def test_boxes_match_visible_masks_and_image_pixels():
    seen_difficult = 0
    for index in range(1, 31):
        rendered = render_image(image_rng(3, index), H, W)
        assert rendered.image.shape == (H, W, 3) and rendered.image.dtype == np.uint8
        assert 1 <= len(rendered.labels) <= 5
        # visible masks are disjoint: occluded pixels belong to the object on top only
        assert rendered.masks.sum(axis=0).max() <= 1
        for i, (box, mask) in enumerate(zip(rendered.boxes, rendered.masks, strict=True)):
            assert box.tolist() == _bbox(mask)
            fill, rim = _object_colours(rendered.colours[i])
            of_object = _near(rendered.image, fill, 20) | _near(rendered.image, rim, 20)
            assert of_object[mask].mean() > 0.99  # the mask is where the object's colour was drawn
            x1, y1, x2, y2 = (int(v) for v in box)
            # each border row / column of the box holds pixels of the object's colour
            assert of_object[y1, x1:x2].any() and of_object[y2 - 1, x1:x2].any()
            assert of_object[y1:y2, x1].any() and of_object[y1:y2, x2 - 1].any()
            longer = max(x2 - x1, y2 - y1)
            if longer < synth.DIFFICULT_SIZE or rendered.visible[i] < synth.DIFFICULT_VISIBLE:
                assert rendered.difficult[i]
            else:
                assert not rendered.difficult[i]
            seen_difficult += int(rendered.difficult[i])
        assert ((rendered.boxes >= 0) & (rendered.boxes <= [W, H, W, H])).all()
    assert seen_difficult > 0


def test_sizes_and_aspect_ratios_vary():
    sizes, aspects = [], []
    for index in range(60):
        rendered = render_image(image_rng(0, index), 256, 320)
        for box, visible in zip(rendered.boxes, rendered.visible, strict=True):
            if visible == 1.0:
                w, h = box[2] - box[0], box[3] - box[1]
                sizes.append(max(w, h))
                aspects.append(w / h)
    assert min(sizes) < 12 and max(sizes) > 110
    assert min(aspects) < 0.7 and max(aspects) > 1.4


def _generate(root, **kwargs):
    params = {"num_train": 6, "num_val": 3, "num_test": 4, "image_size": (H, W), "progress": False}
    params.update(kwargs)
    return generate_synthetic_dataset(root, **params)


def test_deterministic_by_seed(tmp_path):
    # same folder name under different parents: the XML <folder> holds it
    a, b, c = (tmp_path / str(i) / "set" for i in range(3))
    _generate(a, seed=5)
    _generate(b, seed=5)
    _generate(c, seed=6)
    names = sorted(p.name for p in (a / "Annotations").iterdir())
    assert len(names) == 13
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        for path in (a / sub).iterdir():
            assert path.read_bytes() == (b / sub / path.name).read_bytes()
    assert (a / "synthetic.json").read_bytes() == (b / "synthetic.json").read_bytes()
    different = [
        name
        for name in names
        if (a / "Annotations" / name).read_bytes() != (c / "Annotations" / name).read_bytes()
    ]
    assert len(different) >= 12


def test_splits_and_voc_round_trip(tmp_path):
    root = tmp_path / "set"
    written = _generate(root, num_train=20, num_val=8, num_test=12, image_ext=".png", seed=1)
    ids = {split: [a.image_id for a in written[split]] for split in written}
    assert {split: len(v) for split, v in ids.items()} == {
        "train": 20,
        "val": 8,
        "trainval": 28,
        "test": 12,
    }
    assert ids["trainval"] == ids["train"] + ids["val"]
    assert not set(ids["trainval"]) & set(ids["test"])
    difficult = 0
    for split in ("train", "val", "trainval", "test"):
        dataset = load_dataset(root, split, classes=SYNTHETIC_CLASSES)
        assert dataset.image_ids == ids[split]
        for read, original in zip(dataset.annotations, written[split], strict=True):
            assert read.path == original.path and (read.height, read.width) == (H, W)
            assert np.array_equal(read.boxes.numpy(), original.boxes.numpy())
            assert np.array_equal(read.labels.numpy(), original.labels.numpy())
            assert np.array_equal(read.difficult.numpy(), original.difficult.numpy())
            assert np.array_equal(read.truncated.numpy(), original.truncated.numpy())
            difficult += int(read.difficult.sum()) if split != "trainval" else 0
    assert difficult > 0
    # PNG is lossless: the file holds exactly what the renderer drew for that id
    first = written["test"][0]
    expected = render_image(image_rng(1, int(first.image_id)), H, W).image
    assert np.array_equal(read_image(first.path), expected)
    assert "<difficult>1</difficult>" in "".join(
        p.read_text() for p in (root / "Annotations").iterdir()
    )


def test_completion_marker_and_reuse(tmp_path):
    root = tmp_path / "set"
    params = {"num_train": 4, "num_val": 2, "num_test": 3, "image_size": (H, W), "seed": 2}
    assert not is_complete(root, **params)
    generate_synthetic_dataset(root, progress=False, **params)
    assert is_complete(root, **params)
    assert read_info(root)["summary"]["images"] == {"train": 4, "val": 2, "test": 3, "trainval": 6}
    assert not is_complete(root, **{**params, "seed": 3})
    assert not is_complete(root, **{**params, "num_test": 4})
    (root / "JPEGImages" / "000009.jpg").unlink()
    assert not is_complete(root, **params)
    # a smaller regeneration removes the files of the earlier, larger one
    generate_synthetic_dataset(root, progress=False, **{**params, "num_test": 1})
    assert sorted(p.stem for p in (root / "Annotations").iterdir()) == [
        f"{i:06d}" for i in range(1, 8)
    ]
    assert len(list((root / "JPEGImages").iterdir())) == 7


def test_interrupted_generation_is_not_complete(tmp_path, monkeypatch):
    root = tmp_path / "set"
    params = {"num_train": 4, "num_val": 2, "num_test": 3, "image_size": (H, W)}

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "write_voc_dataset", crash)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_dataset(root, progress=False, **params)
    assert read_info(root)["complete"] is False
    assert not is_complete(root, **params)


def test_refuses_foreign_folder_and_bad_parameters(tmp_path):
    (tmp_path / "voc" / "Annotations").mkdir(parents=True)
    with pytest.raises(DetectError, match="refusing"):
        _generate(tmp_path / "voc")
    with pytest.raises(DetectError, match="too small"):
        _generate(tmp_path / "x", image_size=(30, 200))
    with pytest.raises(DetectError, match="image counts"):
        _generate(tmp_path / "x", num_train=0, num_val=0, num_test=0)


def test_cli_generates_then_skips(tmp_path, capsys):
    out = str(tmp_path / "cli")
    args = ["synth", "--out", out, "--train", "3", "--val", "1", "--test", "2", "--size", "64x80"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "written" in first and "difficult" in first and "circle" in first
    assert main(args) == 0
    assert "already holds" in capsys.readouterr().out
    assert len(load_dataset(Path(out), "test", classes=SYNTHETIC_CLASSES)) == 2
    with pytest.raises(SystemExit):
        main(["synth", "--out", out, "--size", "64"])
