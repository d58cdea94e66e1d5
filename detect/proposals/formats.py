"""Import and export of proposals: Fast R-CNN's selective-search ``.mat``, generic ``.npz`` and ``.json``.

* ``.mat`` (the boxes Fast R-CNN released for VOC2007, read with scipy): a ``boxes`` cell array of
  ``(R, 4)`` arrays of 1-based inclusive ``y1 x1 y2 x2``, one per image in the split's order, and
  optionally an ``images`` cell array of the image ids. Continuous xyxy is
  ``(x1 - 1, y1 - 1, x2, y2)`` (:func:`detect.ops.boxes.xyxy_from_voc` after reordering the axes).
* ``.npz``: one ``(R, 4)`` float32 xyxy (0-based continuous) array per image id.
* ``.json``: ``{image_id: [[x1, y1, x2, y2], ...]}``, same box format.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from detect.errors import DetectError
from detect.files import atomic_path, atomic_write_text, read_json
from detect.ops.boxes import clip_boxes, voc_from_xyxy, xyxy_from_voc
from detect.structures import DetectionDataset

FORMATS = (".mat", ".npz", ".json")
_YX_TO_XY = [1, 0, 3, 2]  # y1 x1 y2 x2 <-> x1 y1 x2 y2 (the permutation is its own inverse)


def xyxy_from_mat(mat_boxes: np.ndarray) -> Tensor:
    """Fast R-CNN ``.mat`` boxes ``(R, 4)`` 1-based ``y1 x1 y2 x2`` -> 0-based continuous xyxy."""
    boxes = torch.as_tensor(np.asarray(mat_boxes, dtype=np.float64).reshape(-1, 4))
    return xyxy_from_voc(boxes[:, _YX_TO_XY].float())


def mat_from_xyxy(boxes: Tensor) -> np.ndarray:
    """0-based continuous xyxy ``(R, 4)`` -> ``.mat`` boxes: float64 1-based ``y1 x1 y2 x2``."""
    return voc_from_xyxy(boxes)[:, _YX_TO_XY].double().numpy()


def _check_boxes(boxes: Tensor, where: str) -> Tensor:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DetectError(f"{where}: expected (R, 4) boxes, got shape {tuple(boxes.shape)}")
    if not torch.isfinite(boxes).all():
        raise DetectError(f"{where}: boxes contain NaN or infinite values")
    return boxes.contiguous()


def file_format(path: str | Path) -> str:
    """The proposals file format of ``path`` from its suffix (one of :data:`FORMATS`), or a
    :class:`DetectError` naming the file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DetectError(f"proposals file {path}: unknown format {suffix!r}; use one of {FORMATS}")
    return suffix


def _as_id(value) -> str:
    """An id from a loadmat cell: a str, or a (1,)-shaped array of str."""
    array = np.asarray(value).ravel()
    return str(array[0]) if array.size else ""


def read_mat(path: Path, image_ids: Sequence[str] | None = None) -> dict[str, Tensor]:
    """Read a Fast R-CNN selective-search ``.mat``. Without an ``images`` field the boxes are
    matched to ``image_ids`` (the split's order), which must then have the same length."""
    import scipy.io

    try:
        data = scipy.io.loadmat(str(path))
    except NotImplementedError as exc:  # MATLAB v7.3 files are HDF5
        raise DetectError(f"proposals file {path}: MATLAB v7.3 (HDF5) is not supported") from exc
    except (OSError, ValueError, TypeError) as exc:
        raise DetectError(f"proposals file {path}: cannot read .mat: {exc}") from exc
    if "boxes" not in data:
        keys = [k for k in data if not k.startswith("__")]
        raise DetectError(f"proposals file {path}: no 'boxes' variable (found {keys})")
    cells = np.asarray(data["boxes"]).ravel()
    if "images" in data:
        ids = [_as_id(v) for v in np.asarray(data["images"]).ravel()]
    elif image_ids is not None:
        ids = list(image_ids)
    else:
        raise DetectError(
            f"proposals file {path}: no 'images' variable; the split's ids are needed"
        )
    if len(ids) != len(cells):
        raise DetectError(
            f"proposals file {path}: {len(cells)} box arrays for {len(ids)} images"
            " (a .mat without 'images' must list the split's images in order)"
        )
    return {
        image_id: _check_boxes(xyxy_from_mat(cell), f"{path} image {image_id}")
        for image_id, cell in zip(ids, cells, strict=True)
    }


def read_npz(path: Path) -> dict[str, Tensor]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DetectError(f"proposals file {path}: cannot read .npz: {exc}") from exc
    return {
        key: _check_boxes(torch.as_tensor(np.asarray(value, np.float32)), f"{path} image {key}")
        for key, value in arrays.items()
    }


def read_proposals_json(path: Path) -> dict[str, Tensor]:
    payload = read_json(path, "proposals file")
    if not isinstance(payload, dict):
        raise DetectError(f"proposals file {path}: expected {{image_id: [[x1, y1, x2, y2], ...]}}")
    proposals = {}
    for image_id, boxes in payload.items():
        try:
            tensor = torch.tensor(boxes, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise DetectError(
                f"proposals file {path} image {image_id}: not a list of boxes"
            ) from exc
        where = f"{path} image {image_id}"
        proposals[str(image_id)] = _check_boxes(
            tensor.reshape(0, 4) if tensor.numel() == 0 else tensor, where
        )
    return proposals


def read_proposals(path: str | Path, image_ids: Sequence[str] | None = None) -> dict[str, Tensor]:
    """``{image_id: (R, 4) float32 xyxy}`` from a ``.mat``, ``.npz`` or ``.json`` file (by suffix).
    ``image_ids`` (the split's order) is used only by a ``.mat`` without ``images``."""
    path = Path(path)
    if not path.is_file():
        raise DetectError(f"proposals file {path}: file not found")
    suffix = file_format(path)
    if suffix == ".mat":
        return read_mat(path, image_ids)
    return read_npz(path) if suffix == ".npz" else read_proposals_json(path)


def write_proposals(path: str | Path, proposals: dict[str, Tensor]) -> None:
    """Write ``{image_id: (R, 4) xyxy}`` (in the dict's order) as ``.mat``, ``.npz`` or ``.json``
    (by suffix), atomically. The ``.mat`` has ``boxes`` and ``images`` cell arrays (1 x N)."""
    path = Path(path)
    suffix = file_format(path)
    if suffix == ".json":
        payload = {
            image_id: [[round(float(v), 2) for v in box] for box in boxes.tolist()]
            for image_id, boxes in proposals.items()
        }
        atomic_write_text(path, json.dumps(payload))
        return
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        if suffix == ".mat":
            import scipy.io

            boxes = np.empty((1, len(proposals)), dtype=object)
            images = np.empty((1, len(proposals)), dtype=object)
            for i, (image_id, value) in enumerate(proposals.items()):
                boxes[0, i] = mat_from_xyxy(value)
                images[0, i] = image_id
            scipy.io.savemat(handle, {"boxes": boxes, "images": images})
        else:
            # Written entry by entry (what np.savez does) so no id can clash with its keywords.
            with zipfile.ZipFile(handle, "w") as archive:
                for image_id, value in proposals.items():
                    array = torch.as_tensor(value, dtype=torch.float32).reshape(-1, 4).numpy()
                    with archive.open(f"{image_id}.npy", "w") as entry:
                        np.lib.format.write_array(entry, array, allow_pickle=False)


def proposals_for_dataset(path: str | Path, dataset: DetectionDataset) -> dict[str, Tensor]:
    """Imported proposals for every image of ``dataset`` (split order), clipped to each image.

    Raises:
        DetectError: naming the file and the first missing image ids when some are absent.
    """
    proposals = read_proposals(path, dataset.image_ids)
    missing = [i for i in dataset.image_ids if i not in proposals]
    if missing:
        raise DetectError(
            f"proposals file {path}: no boxes for {len(missing)} image(s) of {dataset.name} "
            f"{dataset.split}, e.g. {missing[:5]}"
        )
    return {
        a.image_id: clip_boxes(proposals[a.image_id], a.height, a.width)
        for a in dataset.annotations
    }
