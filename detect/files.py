"""Atomic file writes (a crash or Ctrl-C never leaves a half-written file that is later trusted),
and reading text, json and ``torch.save`` files with one-line errors that name the file."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from detect.errors import DetectError

# A temporary file not modified for this long belongs to a writer that is gone, whatever host.
STALE_TEMP_SECONDS = 3600.0
# Temporary files: ``.<target name>.<host>-<pid>.<random>.tmp`` (the writer's tag lets a later
# process tell a dead writer's file); earlier versions wrote ``.<target name>.<random>.tmp``.
_TAGGED_TEMP = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>[0-9]+)\.[a-z0-9_]+\.tmp$")
_UNTAGGED_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_cleaned_folders: set[tuple[int, str]] = set()  # (pid, folder) already cleaned by this process


def _host() -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname()) or "host"


def _writer_is_gone(name: str, age: float) -> bool:
    """Whether the temporary file ``name`` (``age`` seconds since its last change) was left by a
    writer that no longer runs: a tagged one of this host whose process is gone, or any after
    :data:`STALE_TEMP_SECONDS` without a change. Files not named like ours are never touched."""
    tagged = _TAGGED_TEMP.match(name)
    if not tagged:
        return bool(_UNTAGGED_TEMP.match(name)) and age > STALE_TEMP_SECONDS
    if age > STALE_TEMP_SECONDS:
        return True
    if tagged["host"] != _host():
        return False  # another host's writer (a shared folder): only its age tells
    try:
        os.kill(int(tagged["pid"]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, owned by another user
        return False
    return False


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Remove the temporary files in ``folder`` that killed writers left (a kill during a save)
    and return them; those of writers still running are kept. Done once per process and folder
    (a killed writer is always another process, and listing a cache folder of many thousand
    entries on every write would cost more than the writes)."""
    key = (os.getpid(), str(Path(folder).resolve()))
    if key in _cleaned_folders:
        return []
    _cleaned_folders.add(key)
    now, removed = time.time(), []
    try:
        candidates = [p for p in Path(folder).iterdir() if p.name.endswith(".tmp")]
    except OSError:
        return removed
    for candidate in candidates:
        try:
            if _writer_is_gone(candidate.name, now - candidate.stat().st_mtime):
                candidate.unlink()
                removed.append(candidate)
        except FileNotFoundError:  # removed meanwhile by its writer or another cleaner
            continue
    return removed


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched. Temporary
    files that killed writers left beside it are removed first (:func:`remove_stale_temp_files`).
    A folder at ``path``, or a file where one of its folders must be, is a :class:`DetectError`.
    """
    path = Path(path)
    if path.is_dir():
        raise DetectError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:  # a file where a folder must be
        blocker = next((p for p in path.parents if p.exists()), path.parent)
        raise DetectError(f"cannot write {path}: {blocker} is not a folder") from exc
    remove_stale_temp_files(path.parent)
    prefix = f".{path.name}.{_host()}-{os.getpid()}."
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
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


def check_zip_integrity(path: Path, what: str) -> None:
    """Check every member of the zip file ``path`` against the CRC-32 recorded when it was
    written (``torch.save`` and ``np.savez`` files are zips): a damaged file is a
    :class:`DetectError` ``"<what> <path>: damaged ..."`` naming the first bad member."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise DetectError(f"{what} {path}: damaged (cannot read it as a zip: {exc})") from exc
    if bad is not None:
        raise DetectError(
            f"{what} {path}: damaged: {bad} does not match the checksum written with it "
            "(the file changed after it was saved); use another copy"
        )


def load_torch_file(path: str | Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, or a one-line :class:`DetectError`
    ``"<what> <path>: ..."`` when the file is missing, a folder, not a ``torch.save`` file, or
    damaged (a member failing its CRC-32, :func:`check_zip_integrity`: torch itself does not check
    them, so flipped bytes in a tensor would load as wrong weights)."""
    import torch

    path = Path(path)
    if not path.exists():
        raise DetectError(f"{what} {path}: file not found")
    if not path.is_file():
        raise DetectError(f"{what} {path}: is a folder, not a file")
    if zipfile.is_zipfile(path):
        check_zip_integrity(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt / foreign files
        if not zipfile.is_zipfile(path):
            reason = f"not a file written by torch.save ({path.stat().st_size} bytes)"
        else:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason = f"torch.load (weights only) failed: {type(exc).__name__}: {first}"
        raise DetectError(f"{what} {path}: cannot read: {reason}") from exc


def file_sha256(path: str | Path, what: str) -> str:
    """sha256 (hex) of the bytes of the file ``path``; a one-line :class:`DetectError`
    ``"<what> <path>: cannot read: ..."`` when it cannot be read."""
    import hashlib

    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise DetectError(f"{what} {path}: cannot read: {exc.strerror or exc}") from exc
    return digest.hexdigest()
