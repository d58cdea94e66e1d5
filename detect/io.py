"""Atomic file writes (a crash or Ctrl-C never leaves a half-written file that is later trusted),
and reading text, json and ``torch.save`` files with one-line errors that name the file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from detect.errors import DetectError


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched. A folder at
    ``path``, or a file where one of its folders must be, is a :class:`DetectError`.
    """
    path = Path(path)
    if path.is_dir():
        raise DetectError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:  # a file where a folder must be
        blocker = next((p for p in path.parents if p.exists()), path.parent)
        raise DetectError(f"cannot write {path}: {blocker} is not a folder") from exc
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_torch_save(obj, path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def read_text(path: str | Path, what: str) -> str:
    """The text (UTF-8, a leading byte-order mark dropped) of ``path``, or a :class:`DetectError`
    ``"<what> <path>: ..."`` when it is missing, a folder, unreadable or not text."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise DetectError(f"{what} {path}: file not found") from exc
    except IsADirectoryError as exc:
        raise DetectError(f"{what} {path}: is a folder, not a file") from exc
    except UnicodeDecodeError as exc:
        raise DetectError(
            f"{what} {path}: not a text file (byte {exc.start} is not UTF-8)"
        ) from exc
    except OSError as exc:
        raise DetectError(f"{what} {path}: cannot read: {exc.strerror or exc}") from exc


def read_json(path: str | Path, what: str) -> Any:
    """The parsed json of ``path``; errors as :func:`read_text`, plus invalid json (with the line
    and column)."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DetectError(f"{what} {path}: cannot read json: {exc}") from exc


def load_torch_file(path: str | Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, or a one-line :class:`DetectError`
    ``"<what> <path>: ..."`` when the file is missing, a folder or not a ``torch.save`` file."""
    import torch

    path = Path(path)
    if not path.exists():
        raise DetectError(f"{what} {path}: file not found")
    if not path.is_file():
        raise DetectError(f"{what} {path}: is a folder, not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt / foreign files
        if not zipfile.is_zipfile(path):
            reason = f"not a file written by torch.save ({path.stat().st_size} bytes)"
        else:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason = f"torch.load (weights only) failed: {type(exc).__name__}: {first}"
        raise DetectError(f"{what} {path}: cannot read: {reason}") from exc
