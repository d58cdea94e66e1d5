"""The project's detections file (``detect-detections-v1``): every image's detections in one json.

``{"format": "detect-detections-v1", "box_format": ..., "classes": [name, ...],
"images": {image_id: [{"label": name, "score": float, "box": [x1, y1, x2, y2]}, ...]}}``, boxes
xyxy in 0-based continuous pixels of the original image. ``detect eval`` and ``detect run`` write
it as :data:`DETECTIONS_FILE` in their output folder; ``detect score`` reads it.
"""

from __future__ import annotations

import json
from pathlib import Path

from detect.errors import DetectError
from detect.files import atomic_write_text, read_json
from detect.structures import Detections

DETECTIONS_FORMAT = "detect-detections-v1"
# The file's name in the output folder of `detect eval` and `detect run`.
DETECTIONS_FILE = "detections.json"


def write_detections_json(
    path: Path, detections: dict[str, Detections], class_names: tuple[str, ...] | list[str]
) -> None:
    """Write the project's detections json (atomically).

    Args:
        detections: image id -> :class:`Detections` (boxes ``(N, 4)`` xyxy 0-based continuous
            pixels, labels indices into ``class_names``); images and detections keep their order.
        class_names: the label order, stored in the file.
    """
    payload = {
        "format": DETECTIONS_FORMAT,
        "box_format": "xyxy, 0-based continuous pixels",
        "classes": list(class_names),
        "images": {image_id: d.to_records(class_names) for image_id, d in detections.items()},
    }
    atomic_write_text(Path(path), json.dumps(payload))


def read_detections_json(path: Path) -> tuple[tuple[str, ...], dict[str, Detections]]:
    """Read the project's detections json; returns ``(class_names, {image_id: Detections})``.

    Raises:
        DetectError: naming the file and the bad value: no ``format`` tag, ``classes`` missing or
            not a list of distinct names that are plain file-name parts, ``images`` missing or not
            an object of image id -> list of detections, or a bad detection (see
            :meth:`Detections.from_records`).
    """
    from detect.data.names import check_class_names

    path = Path(path)
    payload = read_json(path, "detections")
    if not isinstance(payload, dict) or payload.get("format") != DETECTIONS_FORMAT:
        raise DetectError(
            f"detections {path}: not a {DETECTIONS_FORMAT} file (missing 'format' key)"
        )
    for key, kind in (("classes", list), ("images", dict)):
        if not isinstance(payload.get(key), kind):
            expected = "a list of class names" if kind is list else "an object of image id -> list"
            got = repr(payload[key])[:80] if key in payload else "nothing"
            raise DetectError(f"detections {path}: {key!r} must be {expected}, got {got}")
    class_names = check_class_names(payload["classes"], f"detections {path}: classes")
    images = {
        str(image_id): Detections.from_records(
            records, class_names, f"detections {path}: image {image_id}"
        )
        for image_id, records in payload["images"].items()
    }
    return class_names, images
