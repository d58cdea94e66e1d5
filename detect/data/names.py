"""Names that become parts of file names (class names, image ids, split names), checked once.

Output files such as ``comp4_det_<split>_<class>.txt``, ``detections/<image_id>.png`` or
``ImageSets/Main/<split>.txt`` are built from these parts, so a name is accepted only when it is a
single plain path component: not empty, not ``.`` or ``..``, without ``/`` or ``\\`` and without
control characters. Readers call :func:`check_name` / :func:`check_class_names` when the data is
read, so a bad name is one error naming the file and the name, and no output can land outside the
folder it belongs in.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from detect.errors import DetectError


def name_problem(name: object) -> str:
    """Why ``name`` cannot be part of a file name, or ``""`` when it can."""
    if not isinstance(name, str):
        return "is not a string"
    if not name.strip():
        return "is empty"
    if name in (".", ".."):
        return "is a relative folder name"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if any(unicodedata.category(char) == "Cc" for char in name):
        return "contains a control character"
    return ""


def check_name(name: object, what: str, where: str) -> str:
    """Return ``name`` when it is a safe file-name part, else raise
    :class:`DetectError` ``"<where>: <what> <name!r> <problem>"``."""
    problem = name_problem(name)
    if problem:
        raise DetectError(f"{where}: {what} {name!r} {problem}")
    return name  # type: ignore[return-value]


def check_class_names(names: Sequence[object], where: str) -> tuple[str, ...]:
    """Check every class name (:func:`check_name`) and that none repeats; returns them as a tuple."""
    seen: set[str] = set()
    for name in names:
        check_name(name, "class name", where)
        if name in seen:
            raise DetectError(f"{where}: duplicate class name {name!r}")
        seen.add(name)  # type: ignore[arg-type]
    return tuple(names)  # type: ignore[return-value]
