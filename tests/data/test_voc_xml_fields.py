"""VOC annotation fields read from hand-written XML: the image size (or the image's own when the
XML lacks it), <filename>, the difficult / truncated flags and the exact error messages."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from detect.data.images import write_image
from detect.data.voc import (
    annotation_xml,
    read_voc_annotation,
    read_voc_dataset,
    write_voc_dataset,
)
from detect.errors import DetectError
from detect.structures import Annotation

CLASSES = ("cat", "dog")
BOX = "<bndbox><xmin>2</xmin><ymin>3</ymin><xmax>10</xmax><ymax>12</ymax></bndbox>"


def voc_folder(root: Path, xml: str, image_name: str = "a.jpg", shape=(23, 37)) -> Path:
    """A one-image VOC folder whose annotation ``a.xml`` is ``xml``; the image is ``shape`` (H, W)."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    write_image(root / "JPEGImages" / image_name, np.zeros((*shape, 3), np.uint8))
    (root / "Annotations" / "a.xml").write_text(f"<annotation>{xml}</annotation>")
    (root / "ImageSets" / "Main" / "test.txt").write_text("a\n")
    return root


def read(root: Path, **options):
    return read_voc_dataset(root, "test", CLASSES, **options).annotations[0]


@pytest.mark.parametrize(
    "size",
    [
        "",
        "<size><depth>3</depth></size>",
        "<size><width>0</width><height>0</height></size>",
        "<size><width>37</width><height>0</height></size>",
        "<size><width>0</width><height>23</height></size>",
    ],
)
def test_a_missing_size_is_the_images(tmp_path, size):
    root = voc_folder(tmp_path, f"{size}<object><name>cat</name>{BOX}</object>")
    ann = read(root)
    assert (ann.width, ann.height) == (37, 23)
    with pytest.raises(DetectError) as info:
        read(root, check_images=False)
    xml = root / "Annotations" / "a.xml"
    assert str(info.value) == f"annotation {xml}: missing <size> (and images not checked)"


def test_a_stated_size_is_used_as_written(tmp_path):
    # One pixel wide and high: a size of 1 is a size, not a missing one.
    size = "<size><width>1</width><height>1</height></size>"
    pixel = "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>1</xmax><ymax>1</ymax></bndbox>"
    root = voc_folder(tmp_path, f"{size}<object><name>dog</name>{pixel}</object>")
    ann = read(root)
    assert (ann.width, ann.height) == (1, 1)
    assert ann.boxes.tolist() == [[0.0, 0.0, 1.0, 1.0]] and ann.boxes.dtype == torch.float32


def test_the_filename_element_names_the_image(tmp_path):
    size = "<size><width>37</width><height>23</height></size>"
    root = voc_folder(tmp_path, f"<filename> b.png </filename>{size}", image_name="b.png")
    write_image(root / "JPEGImages" / "a.jpg", np.zeros((23, 37, 3), np.uint8))
    assert read(root).path == root / "JPEGImages" / "b.png"
    assert read(root, check_images=False).path == root / "JPEGImages" / "b.png"
    (root / "Annotations" / "a.xml").write_text(
        f"<annotation><filename></filename>{size}</annotation>"
    )
    assert read(root).path == root / "JPEGImages" / "a.jpg"


def test_flags_are_false_unless_one(tmp_path):
    objects = [
        "<object><name>cat</name>" + BOX + "</object>",  # no flags: neither
        "<object><name>dog</name><difficult> </difficult><truncated/>" + BOX + "</object>",
        "<object><name>cat</name><difficult>1</difficult><truncated>0</truncated>"
        + BOX
        + "</object>",
        "<object><name>dog</name><difficult>0</difficult><truncated> 1 </truncated>"
        + BOX
        + "</object>",
    ]
    root = voc_folder(tmp_path, "".join(objects))
    ann = read(root)
    assert ann.difficult.tolist() == [False, False, True, False]
    assert ann.truncated.tolist() == [False, False, False, True]
    assert ann.labels.tolist() == [0, 1, 0, 1]


def message(root: Path, text: str) -> str:
    return re.escape(f"annotation {root / 'Annotations' / 'a.xml'}: {text}")


@pytest.mark.parametrize(
    ("xml", "text"),
    [
        ("<object><name> </name>" + BOX + "</object>", "object 0: missing <name>"),
        (
            "<object><name>cat</name>" + BOX + "</object><object><name>dog</name></object>",
            "object 1: missing <bndbox>",
        ),
        (
            "<object><name>cat</name>" + BOX.replace("<xmin>2", "<xmin>two") + "</object>",
            "object 0: <xmin> is not a number: 'two'",
        ),
        (
            "<object><name>cat</name>" + BOX.replace("<ymax>12", "<ymax>") + "</object>",
            "object 0: missing <ymax>",
        ),
        (
            "<object><name>cat</name><difficult>2</difficult>" + BOX + "</object>",
            "object 0: <difficult> must be 0 or 1, got '2'",
        ),
        (
            "<object><name>dog</name><truncated>yes</truncated>" + BOX + "</object>",
            "object 0: <truncated> must be 0 or 1, got 'yes'",
        ),
        ("<size><width>x</width><height>5</height></size>", "size: <width> is not a number: 'x'"),
        ("<size><width>5</width><height></height></size>", "size: missing <height>"),
    ],
)
def test_errors_name_the_file_the_object_and_the_tag(tmp_path, xml, text):
    root = voc_folder(tmp_path, xml)
    with pytest.raises(DetectError, match="^" + message(root, text) + "$"):
        read(root)


def test_boxes_outside_the_image_are_errors_unless_asked_otherwise(tmp_path):
    root = voc_folder(tmp_path, "<object><name>cat</name>" + BOX.replace("12", "40") + "</object>")
    xml, index = root / "Annotations" / "a.xml", {"cat": 0}
    available = {"a.jpg"}
    with pytest.raises(DetectError, match="outside"):
        read_voc_annotation(xml, "a", root, index, available)
    clipped = read_voc_annotation(xml, "a", root, index, available, strict_boxes=False)
    assert clipped.boxes.tolist() == [[1.0, 2.0, 10.0, 23.0]]


WRITTEN = """<annotation>
  <folder>{folder}</folder>
  <filename>0007.png</filename>
  <size>
    <width>64</width>
    <height>48</height>
    <depth>3</depth>
  </size>
  <segmented>0</segmented>
  <object>
    <name>dog</name>
    <pose>Unspecified</pose>
    <truncated>1</truncated>
    <difficult>0</difficult>
    <bndbox>
      <xmin>1</xmin>
      <ymin>1</ymin>
      <xmax>10</xmax>
      <ymax>20</ymax>
    </bndbox>
  </object>
  <object>
    <name>cat</name>
    <pose>Unspecified</pose>
    <truncated>0</truncated>
    <difficult>1</difficult>
    <bndbox>
      <xmin>5.5</xmin>
      <ymin>6</ymin>
      <xmax>30.25</xmax>
      <ymax>40</ymax>
    </bndbox>
  </object>
</annotation>
"""


def test_written_xml_by_hand():
    ann = Annotation(
        "0007",
        Path("voc/JPEGImages/0007.png"),
        64,
        48,
        torch.tensor([[0.0, 0.0, 10.0, 20.0], [4.5, 5.0, 30.25, 40.0]]),
        [1, 0],
        [False, True],
        [True, False],
    )
    # 1-based inclusive boxes: (x1 + 1, y1 + 1, x2, y2); integers without a decimal point.
    assert annotation_xml(ann, CLASSES, folder="voc") == WRITTEN.format(folder="voc")
    assert annotation_xml(ann, CLASSES) == WRITTEN.format(folder="").replace(
        "<folder></folder>", "<folder />"
    )


@pytest.mark.parametrize(
    ("size", "problem"),
    [
        ("<width>37.5</width><height>23</height>", "must be whole numbers >= 0, got 37.5x23"),
        ("<width>37</width><height>-1</height>", "must be whole numbers >= 0, got 37x-1"),
        ("<width>-37</width><height>23</height>", "must be whole numbers >= 0, got -37x23"),
    ],
)
def test_stated_sizes_must_be_whole_and_not_negative(tmp_path, size, problem):
    root = voc_folder(tmp_path, f"<size>{size}</size>")
    with pytest.raises(
        DetectError, match="^" + message(root, f"size: <width>/<height> {problem}") + "$"
    ):
        read(root)


def test_the_pixel_limit_is_inclusive(tmp_path):
    root = voc_folder(tmp_path, "<size><width>37</width><height>23</height></size>")
    assert read(root, max_image_pixels=37 * 23).width == 37
    limit = "size 37x23 is over the limit of 850 pixels (data.max_image_pixels)"
    with pytest.raises(DetectError, match="^" + message(root, limit) + "$"):
        read(root, max_image_pixels=37 * 23 - 1)


def test_the_data_set_record_and_strict_boxes_by_default(tmp_path):
    root = voc_folder(tmp_path / "VOC2007", "<object><name>cat</name>" + BOX + "</object>")
    ds = read_voc_dataset(root, "test", CLASSES)
    assert (ds.name, ds.root, ds.split, ds.class_names) == ("VOC2007", root, "test", CLASSES)
    xml = "<object><name>cat</name>" + BOX.replace("12", "40") + "</object>"
    (root / "Annotations" / "a.xml").write_text(f"<annotation>{xml}</annotation>")
    with pytest.raises(DetectError, match="outside the 37x23 image"):
        read_voc_dataset(root, "test", CLASSES)


def test_annotations_without_images_when_images_are_not_checked(tmp_path):
    size = "<size><width>37</width><height>23</height></size>"
    root = voc_folder(tmp_path, size + "<object><name>dog</name>" + BOX + "</object>")
    (root / "JPEGImages" / "a.jpg").unlink()
    (root / "JPEGImages").rmdir()
    assert read(root, check_images=False).labels.tolist() == [1]
    with pytest.raises(DetectError, match=r"missing folder JPEGImages/"):
        read(root)


def test_an_image_read_for_its_size_obeys_the_pixel_limit(tmp_path):
    root = voc_folder(tmp_path, "<object><name>cat</name>" + BOX + "</object>")
    assert read(root, max_image_pixels=37 * 23).width == 37
    with pytest.raises(DetectError, match="pixels"):
        read(root, max_image_pixels=37 * 23 - 1)


def test_a_missing_image_names_the_file_looked_for(tmp_path):
    root = voc_folder(tmp_path, "<filename>b.png</filename>")
    (root / "JPEGImages" / "a.jpg").unlink()  # nor any a.<suffix>
    with pytest.raises(
        DetectError, match=r"image for 'a' not found in JPEGImages/ \(looked for 'b.png'\)"
    ):
        read(root)


def test_written_data_set_folder_and_xml_folder(tmp_path):
    root = tmp_path / "new" / "VOCsynth"
    image = root / "JPEGImages" / "0007.png"
    ann = Annotation("0007", image, 37, 23, torch.tensor([[0.0, 0.0, 10.0, 20.0]]), [1])
    write_voc_dataset(root, CLASSES, {"test": [ann]})  # the folders do not exist yet
    assert (root / "JPEGImages").is_dir()  # for the caller's images
    xml = (root / "Annotations" / "0007.xml").read_text()
    assert "<folder>VOCsynth</folder>" in xml and "<filename>0007.png</filename>" in xml
    assert (root / "ImageSets" / "Main" / "test.txt").read_text().split() == ["0007"]
