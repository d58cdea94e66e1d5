"""Property: whatever a file says, the readers either read it or raise DetectError, never another
exception (which the CLI would show as a traceback).

Hypothesis mutates valid VOC XML (and classes.txt / split files), COCO instances json, the
project's detections json and comp4 lines: values replaced by hostile ones (NaN, infinity, huge,
negative, strings, nulls, lists, path-like names, control characters), keys deleted, raw bytes
inserted. Example counts are modest so the file runs in a few seconds.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detect.data.coco import read_coco_dataset
from detect.data.voc import read_voc_dataset
from detect.errors import DetectError
from detect.evaluation.coco_results import read_coco_results
from detect.evaluation.detection_files import DetectionsSource
from detect.evaluation.detections_json import read_detections_json
from detect.evaluation.voc_files import read_comp4
from detect.structures import Annotation, DetectionDataset

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure is reproducible
    suppress_health_check=[HealthCheck.too_slow],
)

CLASSES = ("circle", "square")

NASTY_TEXT = st.sampled_from(
    ["nan", "inf", "-inf", "1e12", "-5", "0", "", " ", "abc", "../x", "a/b", "..", "\x01", "1.5"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**13), 10**13)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | NASTY_TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


def must_read_or_refuse(read) -> None:
    """Call ``read()``; a DetectError is fine (bad input), any other exception fails the test."""
    try:
        read()
    except DetectError as exc:
        assert "\n" not in str(exc).strip(), str(exc)


def json_paths(value, prefix=()) -> list[tuple]:
    """Every path (tuple of keys / indices) to a node of a parsed json value, the root included."""
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths += json_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths += json_paths(child, (*prefix, index))
    return paths


@st.composite
def mutated_json(draw, valid):
    """``valid`` (parsed json) with 1-3 nodes replaced by a drawn value or deleted."""
    value = json.loads(json.dumps(valid))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(json_paths(value)))
        if not path:
            return draw(JSON_VALUES)
        parent = value
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON_VALUES)
    return value


@st.composite
def mutated_bytes(draw, text: str) -> bytes:
    """``text`` encoded, with a few raw bytes perhaps inserted (invalid UTF-8 among them)."""
    data = text.encode()
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    return data


# ---- VOC ----

VOC_XML = """<annotation><filename>a.jpg</filename>
<size><width>{width}</width><height>{height}</height><depth>3</depth></size>
<object><name>{name}</name><difficult>{difficult}</difficult><truncated>0</truncated>
<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>
</object></annotation>
"""
VOC_FIELDS = {
    "width": "50",
    "height": "40",
    "name": "circle",
    "difficult": "0",
    "xmin": "1",
    "ymin": "1",
    "xmax": "20",
    "ymax": "20",
}


@FUZZ
@given(
    fields=st.fixed_dictionaries(
        {k: st.just(v) | NASTY_TEXT | st.text(max_size=6) for k, v in VOC_FIELDS.items()}
    ),
    escaped=st.booleans(),
    extra=st.data(),
    classes=st.lists(st.just("circle") | NASTY_TEXT | st.text(max_size=5), max_size=3),
    split_ids=st.lists(st.just("a") | NASTY_TEXT | st.text(max_size=5), max_size=3),
    strict=st.booleans(),
)
def test_voc_reader_raises_only_detect_error(fields, escaped, extra, classes, split_ids, strict):
    values = {k: escape(v) if escaped else v for k, v in fields.items()}
    xml = extra.draw(mutated_bytes(VOC_XML.format(**values)))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "Annotations").mkdir()
        (root / "ImageSets" / "Main").mkdir(parents=True)
        (root / "Annotations" / "a.xml").write_bytes(xml)
        (root / "classes.txt").write_bytes(extra.draw(mutated_bytes("\n".join(classes))))
        split = "\n".join(["a", *split_ids])
        (root / "ImageSets" / "Main" / "test.txt").write_bytes(extra.draw(mutated_bytes(split)))
        must_read_or_refuse(
            lambda: read_voc_dataset(root, "test", strict_boxes=strict, check_images=False)
        )


# ---- COCO instances and results ----

COCO_INSTANCES = {
    "images": [
        {"id": 1, "file_name": "1.jpg", "width": 100, "height": 80},
        {"id": 2, "file_name": "2.jpg", "width": 60, "height": 60},
    ],
    "annotations": [
        {"id": 5, "image_id": 1, "category_id": 3, "bbox": [10, 10, 50, 50], "iscrowd": 0},
        {"id": 6, "image_id": 2, "category_id": 4, "bbox": [0, 0, 20, 30], "area": 600},
    ],
    "categories": [{"id": 3, "name": "circle"}, {"id": 4, "name": "square"}],
}


@FUZZ
@given(payload=mutated_json(COCO_INSTANCES), strict=st.booleans())
def test_coco_reader_raises_only_detect_error(payload, strict):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "instances.json"
        path.write_text(json.dumps(payload))
        must_read_or_refuse(
            lambda: read_coco_dataset(path, strict_boxes=strict, check_images=False)
        )


COCO_RESULTS = [
    {"image_id": 1, "category_id": 3, "bbox": [10, 10, 50, 50], "score": 0.9},
    {"image_id": 2, "category_id": 4, "bbox": [0, 0, 20, 30], "score": 0.2},
]


@FUZZ
@given(records=mutated_json(COCO_RESULTS))
def test_coco_results_reader_raises_only_detect_error(records):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "results.json"
        path.write_text(json.dumps(records))
        must_read_or_refuse(lambda: read_coco_results(path))


# ---- the project's detections json ----

DETECTIONS = {
    "format": "detect-detections-v1",
    "box_format": "xyxy, 0-based continuous pixels",
    "classes": list(CLASSES),
    "images": {
        "a": [{"label": "circle", "score": 0.9, "box": [1.0, 2.0, 30.0, 40.0]}],
        "b": [{"label": "square", "score": 0.1, "box": [0, 0, 5, 5]}],
    },
}


@FUZZ
@given(payload=mutated_json(DETECTIONS))
def test_detections_json_reader_raises_only_detect_error(payload):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "detections.json"
        path.write_text(json.dumps(payload))
        must_read_or_refuse(lambda: read_detections_json(path))


@FUZZ
@given(
    payload=mutated_json(DETECTIONS) | mutated_json(COCO_RESULTS),
    prefix=st.sampled_from(["", " \n", "\ufeff", "x", "[", "{", "3"]),
)
def test_detections_of_any_format_read_only_or_raise_detect_error(payload, prefix):
    """What ``detect score --detections`` reads, told apart by content, then mapped onto a split."""
    anns = [Annotation(i, Path(f"{i}.jpg"), 50, 40, [], []) for i in ("1", "2", "a", "b")]
    dataset = DetectionDataset("t", Path("."), "test", CLASSES, anns)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "detections.json"
        path.write_text(prefix + json.dumps(payload))
        must_read_or_refuse(
            lambda: DetectionsSource.read(path).for_dataset(dataset, "test", [3, 4])
        )


# ---- comp4 files ----

COMP4_TOKEN = st.sampled_from(["a", "b", "0.5", "1", "20", "-3"]) | NASTY_TEXT | st.text(max_size=6)


@FUZZ
@given(
    lines=st.lists(st.lists(COMP4_TOKEN, max_size=7).map(" ".join), max_size=4),
    extra=st.data(),
)
def test_comp4_reader_raises_only_detect_error(lines, extra):
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        (directory / "comp4_det_test_circle.txt").write_text("a 0.5 1 1 20 20\n")
        text = "\n".join(["a 0.9 2 2 10 10", *lines]) + "\n"
        (directory / "comp4_det_test_square.txt").write_bytes(extra.draw(mutated_bytes(text)))
        must_read_or_refuse(lambda: read_comp4(directory, "test", CLASSES, image_ids=["a", "b"]))
