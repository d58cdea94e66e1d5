"""VOC reader/writer: round trip, the 1-based conversion by hand, and every bad-input error."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from detect.data import load_dataset
from detect.data.images import write_image
from detect.data.voc import VOC_CLASSES, write_voc_dataset
from detect.errors import DetectError
from detect.structures import Annotation

CLASSES = ("circle", "square", "triangle")

XML = """<annotation>
  <filename>{filename}</filename>
  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>
  {objects}
</annotation>
"""

OBJECT = """<object><name>{name}</name><truncated>{truncated}</truncated>
  <difficult>{difficult}</difficult>
  <bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox>
</object>"""


def make_voc(root: Path, objects_by_id: dict, split="test", width=50, height=40) -> Path:
    """Hand-written VOC folder: objects_by_id = {id: [(name, voc_box, difficult, truncated)]}."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for image_id, objects in objects_by_id.items():
        write_image(root / "JPEGImages" / f"{image_id}.jpg", np.zeros((height, width, 3), np.uint8))
        text = "".join(
            OBJECT.format(name=n, box=b, difficult=int(d), truncated=int(t))
            for n, b, d, t in objects
        )
        xml = XML.format(filename=f"{image_id}.jpg", width=width, height=height, objects=text)
        (root / "Annotations" / f"{image_id}.xml").write_text(xml)
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(objects_by_id) + "\n")
    return root


def test_reads_hand_written_voc_and_converts_one_based(tmp_path):
    root = make_voc(
        tmp_path / "voc",
        {
            "a": [("dog", (1, 1, 50, 40), 0, 1), ("cat", (10, 5, 19, 14), 1, 0)],
            "b": [],
        },
    )
    ds = load_dataset(root, "test")
    assert ds.class_names == VOC_CLASSES and ds.image_ids == ["a", "b"]
    a = ds.annotations[0]
    assert (a.width, a.height) == (50, 40)
    assert a.path == root / "JPEGImages" / "a.jpg"
    # VOC (1, 1, 50, 40) inclusive covers the whole 50x40 image: continuous (0, 0, 50, 40).
    # VOC (10, 5, 19, 14) is 10x10 pixels: continuous (9, 4, 19, 14).
    torch.testing.assert_close(a.boxes, torch.tensor([[0.0, 0, 50, 40], [9, 4, 19, 14]]))
    assert a.labels.tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("cat")]
    assert a.difficult.tolist() == [False, True] and a.truncated.tolist() == [True, False]
    assert len(ds.annotations[1]) == 0 and ds.annotations[1].boxes.shape == (0, 4)


def test_writer_reader_round_trip(tmp_path):
    root = tmp_path / "synth"
    rng = np.random.default_rng(0)
    by_split = {}
    for split, ids in (("train", ["0", "1", "2"]), ("test", ["3", "4"])):
        anns = []
        for image_id in ids:
            path = root / "JPEGImages" / f"{image_id}.png"
            write_image(path, np.zeros((60, 80, 3), np.uint8))
            n = int(rng.integers(0, 5))
            x1 = rng.uniform(0, 40, n).round(2)
            y1 = rng.uniform(0, 30, n).round(2)
            boxes = np.stack([x1, y1, x1 + rng.uniform(1, 40, n), y1 + rng.uniform(1, 30, n)], 1)
            anns.append(
                Annotation(
                    image_id,
                    path,
                    80,
                    60,
                    torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    rng.integers(0, 3, n),
                    rng.random(n) < 0.3,
                    rng.random(n) < 0.5,
                )
            )
        by_split[split] = anns
    write_voc_dataset(root, CLASSES, by_split)
    for split, anns in by_split.items():
        ds = load_dataset(root, split, classes=CLASSES)
        assert ds.image_ids == [a.image_id for a in anns]
        for got, want in zip(ds.annotations, anns, strict=True):
            assert got.path == want.path and (got.width, got.height) == (80, 60)
            torch.testing.assert_close(got.boxes, want.boxes, rtol=0, atol=1e-5)
            assert torch.equal(got.labels, want.labels)
            assert torch.equal(got.difficult, want.difficult)
            assert torch.equal(got.truncated, want.truncated)


def test_written_xml_is_one_based(tmp_path):
    path = tmp_path / "JPEGImages" / "x.jpg"
    ann = Annotation("x", path, 20, 10, [[0, 0, 20, 10]], [1])
    write_voc_dataset(tmp_path, CLASSES, {"all": [ann]})
    xml = (tmp_path / "Annotations" / "x.xml").read_text()
    assert "<xmin>1</xmin>" in xml and "<xmax>20</xmax>" in xml and "<ymax>10</ymax>" in xml
    assert "<name>square</name>" in xml and "<filename>x.jpg</filename>" in xml
    assert (tmp_path / "ImageSets" / "Main" / "all.txt").read_text() == "x\n"


def _error(root, split="test", **kwargs) -> str:
    with pytest.raises(DetectError) as info:
        load_dataset(root, split, **kwargs)
    return str(info.value)


def test_missing_folder_and_split(tmp_path):
    assert "nothing" in _error(tmp_path / "nothing")
    root = make_voc(tmp_path / "voc", {"a": []})
    message = _error(root, split="val")
    assert "val.txt" in message and "not found" in message and "'test'" in message
    (root / "JPEGImages").rename(root / "images")
    assert "JPEGImages" in _error(root)


def test_empty_split(tmp_path):
    root = make_voc(tmp_path / "voc", {"a": []})
    (root / "ImageSets/Main/test.txt").write_text("\n\n")
    message = _error(root)
    assert "test.txt" in message and "empty" in message


def test_malformed_xml(tmp_path):
    root = make_voc(tmp_path / "voc", {"a": [("dog", (1, 1, 5, 5), 0, 0)]})
    (root / "Annotations/a.xml").write_text("<annotation><size>")
    message = _error(root)
    assert "a.xml" in message and "malformed XML" in message


def test_missing_annotation_and_image(tmp_path):
    root = make_voc(tmp_path / "voc", {"a": [], "b": []})
    (root / "Annotations/b.xml").unlink()
    assert "b.xml" in _error(root)
    root = make_voc(tmp_path / "voc2", {"a": [], "b": []})
    (root / "JPEGImages/b.jpg").unlink()
    message = _error(root)
    assert "'b'" in message and "JPEGImages" in message


def test_unknown_class_lists_known(tmp_path):
    root = make_voc(
        tmp_path / "voc", {"a": [("dog", (1, 1, 5, 5), 0, 0), ("unicorn", (1, 1, 5, 5), 0, 0)]}
    )
    message = _error(root)
    assert "a.xml" in message and "object 1" in message and "'unicorn'" in message
    assert "aeroplane" in message and "tvmonitor" in message


@pytest.mark.parametrize(
    ("box", "problem"),
    [((30, 5, 20, 10), "x2 < x1"), ((5, 30, 10, 20), "y2 < y1"), ((10, 10, 51, 20), "outside")],
)
def test_bad_box_is_error_naming_object_and_box(tmp_path, box, problem):
    root = make_voc(tmp_path / "voc", {"a": [("dog", (1, 1, 5, 5), 0, 0), ("cat", box, 0, 0)]})
    message = _error(root)
    assert "a.xml" in message and "object 1" in message and problem in message
    assert "(" + ", ".join(str(v) for v in box) + ")" in message


def test_non_strict_clips_and_drops_with_warning(tmp_path, caplog):
    root = make_voc(
        tmp_path / "voc",
        {
            "a": [
                ("dog", (0, 1, 60, 40), 0, 0),  # x1 = 0 and x2 = 60 > 50: clipped to (0, 0, 50, 40)
                ("cat", (30, 5, 20, 10), 0, 0),  # x2 < x1: dropped
                ("cow", (2, 2, 4, 4), 1, 0),  # fine
            ]
        },
    )
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(root, "test", strict_boxes=False)
    a = ds.annotations[0]
    torch.testing.assert_close(a.boxes, torch.tensor([[0.0, 0, 50, 40], [1, 1, 4, 4]]))
    assert a.labels.tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("cow")]
    assert a.difficult.tolist() == [False, True]
    assert "1 boxes clipped" in caplog.text and "1 dropped" in caplog.text


def test_not_a_dataset_path(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("")
    assert "x.txt" in _error(path)


def test_class_list_written_and_used_by_default(tmp_path):
    from detect.data.voc import read_voc_dataset, write_voc_dataset
    from detect.structures import Annotation

    image = tmp_path / "JPEGImages" / "a.png"
    image.parent.mkdir(parents=True)
    import numpy as np

    from detect.data.images import write_image

    write_image(image, np.zeros((20, 30, 3), np.uint8))
    ann = Annotation("a", image, 30, 20, [[1, 2, 10, 12]], [1])
    write_voc_dataset(tmp_path, ("disc", "star"), {"test": [ann]})
    assert (tmp_path / "classes.txt").read_text() == "disc\nstar\n"
    dataset = read_voc_dataset(tmp_path, "test")
    assert dataset.class_names == ("disc", "star")
    assert dataset[0].labels.tolist() == [1]


@pytest.mark.parametrize("suffix", [".png", ".JPG", ".jpeg", ".tif", ".TIFF", ".webp"])
def test_an_image_is_found_by_any_suffix_the_image_reader_reads(tmp_path, suffix):
    # The <filename> is tried first; then the id with each image suffix, lower or upper case.
    root = make_voc(tmp_path / "voc", {"a": [("dog", (1, 1, 5, 5), 0, 0)]})
    (root / "JPEGImages/a.jpg").rename(root / "JPEGImages" / f"a{suffix}")
    xml = root / "Annotations/a.xml"
    xml.write_text(xml.read_text().replace("<filename>a.jpg<", "<filename>gone.jpg<"))
    assert load_dataset(root, "test", ("dog",))[0].path.name == f"a{suffix}"


def test_listing_a_splits_images_finds_what_the_reader_finds_without_the_objects(tmp_path):
    # Split order c, a, b: a by its <filename>, b by a <filename> naming another file, c by its id
    # with another suffix (its <filename> names a file that is not there). An object of a class
    # nobody asked for does not matter: the listing reads no objects.
    from detect.data.voc import read_voc_images

    objects = {image_id: [("dog", (1, 1, 5, 5), 0, 0)] for image_id in ("c", "a", "b")}
    root = make_voc(tmp_path / "voc", objects)
    images = root / "JPEGImages"
    (images / "b.jpg").rename(images / "photo_of_b.png")
    xml = root / "Annotations/b.xml"
    xml.write_text(xml.read_text().replace("<filename>b.jpg<", "<filename>photo_of_b.png<"))
    (images / "c.jpg").rename(images / "c.bmp")
    xml = root / "Annotations/a.xml"
    xml.write_text(xml.read_text().replace("<name>dog<", "<name>unicorn<"))

    assert read_voc_images(root, "test") == [
        ("c", images / "c.bmp"),
        ("a", images / "a.jpg"),
        ("b", images / "photo_of_b.png"),
    ]
    (images / "a.jpg").rename(images / "a.txt")
    with pytest.raises(DetectError, match="image for 'a' not found"):
        read_voc_images(root, "test")
    (images / "a.txt").rename(images / "a.jpg")
    (root / "Annotations/b.xml").write_text("<annotation><filename>")
    with pytest.raises(DetectError, match="b.xml"):
        read_voc_images(root, "test")
