"""Per-image proposal cache: one ``.npz`` file per image, written atomically, keyed by content.

An entry's file name is a hash of the method, its parameters and the image's content (the sha256
of the image file's bytes; of the decoded pixels for an image without a file), so a different image
under the same name (another folder, an edited or rotated photo) never reuses or overwrites
another's entry, and the same image under two names shares one. Hashing costs far less than the
search.

Each file holds ``boxes`` (``(R, 4)`` float32 xyxy, 0-based continuous pixels of the original image)
and ``meta``, a json string recording the method, its parameters, the image's sha256 and size
``(height, width)`` and the id it was computed for. Every read checks them against what is asked
for, the size included (against the decoded image, or the file's header when the image is not
decoded yet); an entry that differs is *stale* (recomputed and overwritten), one that cannot be
read is *corrupt* (a warning names the file, then it is recomputed). Neither is ever returned as
proposals.

A cache without a folder (``cache_dir`` empty or None) keeps nothing: every look-up misses.

Because there is one file per image, shards computed on different machines combine by copying
their cache folders into one (``rsync``/``cp``, or ``detect proposals --merge``, which copies
only valid entries): no other merge step is needed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from detect.config import ProposalConfig
from detect.data.images import header_size
from detect.errors import DetectError
from detect.files import atomic_path, file_sha256
from detect.proposals.methods import RECORDED_NAMES, config_params, method_params

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)

CACHE_FORMAT = "detect-proposals-v2"


@dataclass(frozen=True)
class CacheLookup:
    """Result of :meth:`ProposalCache.lookup`.

    ``status`` is ``"hit"`` (``boxes`` set: a ``(R, 4)`` float32 numpy array), ``"missing"``,
    ``"stale"`` (written with other parameters or for another image) or ``"corrupt"``
    (unreadable); ``reason`` says why. Looking up loads neither torch nor OpenCV.
    """

    status: str
    boxes: np.ndarray | None = None
    reason: str = ""


def image_digest(image_path: str | Path | None = None, image: np.ndarray | None = None) -> str:
    """sha256 (hex) of the image file's bytes, or, when there is no file, of the decoded pixels
    ``image`` ``(H, W, 3)`` uint8 and their shape: what a cache entry is keyed by."""
    if image_path is not None:
        return file_sha256(image_path, "image")
    digest = hashlib.sha256()
    if image is None:
        raise ValueError("image_digest needs an image file or the decoded image")
    digest.update(repr(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return "pixels-" + digest.hexdigest()


def _sizes_to_match(
    image_path: str | Path | None, image_size: tuple[int, int] | None, image: np.ndarray | None
) -> list[list[int]]:
    """The ``[height, width]`` an entry may record for this image: ``image_size`` or the decoded
    ``image``'s, else the size in the file's header in either orientation (EXIF may rotate the
    decoded image); empty when unknown (a header PIL cannot read)."""
    if image_size is None and image is not None:
        image_size = image.shape[:2]
    if image_size is not None:
        return [[int(image_size[0]), int(image_size[1])]]
    header = header_size(Path(image_path)) if image_path is not None else None  # (width, height)
    return [] if header is None else [[header[1], header[0]], [header[0], header[1]]]


class ProposalCache:
    """Proposals of one method and parameter set, one file per image under ``cache_dir`` (no
    folder: nothing is kept).

    ``method`` is a name of :data:`detect.proposals.methods.PROPOSAL_METHODS` and ``params`` its
    parameters (defaults for those not given: :func:`detect.proposals.methods.method_params`),
    e.g. ``ProposalCache(folder, mode="quality", max_proposals=1000)`` for selective search.

    Raises:
        DetectError: an unknown method, a parameter it cannot use, or ``cache_dir`` is a file.
    """

    def __init__(self, cache_dir: str | Path | None, method: str = "ss", **params) -> None:
        self.method = method
        self.params = method_params(method, params)
        self.recorded_method = RECORDED_NAMES[method]
        self.cache_dir = Path(cache_dir) if cache_dir else None
        if self.cache_dir is not None and self.cache_dir.exists() and not self.cache_dir.is_dir():
            raise DetectError(
                f"proposal cache {self.cache_dir} (proposals.cache_dir): exists and is not a folder"
            )

    @classmethod
    def from_config(cls, cfg: ProposalConfig) -> ProposalCache:
        return cls(cfg.cache_dir, cfg.method, **config_params(cfg))

    def path_for(self, digest: str) -> Path:
        """The entry file of the image whose :func:`image_digest` is ``digest``: a hash of the
        format, method, parameters and ``digest``."""
        if self.cache_dir is None:
            raise ValueError("a proposal cache without a folder has no files")
        key = json.dumps([CACHE_FORMAT, self.recorded_method, self.params, digest], sort_keys=True)
        return self.cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.npz"

    def lookup(
        self,
        image_path: str | Path | None = None,
        image_size: tuple[int, int] | None = None,
        image: np.ndarray | None = None,
    ) -> CacheLookup:
        """Look up the image whose file is ``image_path`` (or, without a file, whose pixels are
        ``image``). The recorded size must equal ``image_size`` ``(height, width)`` when given,
        else the size in ``image_path``'s header (either orientation: EXIF may rotate it)."""
        if self.cache_dir is None:
            return CacheLookup("missing")
        try:
            digest = image_digest(image_path, image)
        except DetectError as exc:  # an unreadable image: computing it will report it
            return CacheLookup("missing", reason=str(exc))
        path = self.path_for(digest)
        if not path.is_file():
            return CacheLookup("missing")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                boxes = np.asarray(data["boxes"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            reason = f"unreadable ({type(exc).__name__}: {exc})"
            log.warning("proposal cache %s: %s; recomputing", path, reason)
            return CacheLookup("corrupt", reason=reason)
        if (
            not isinstance(meta, dict)
            or boxes.dtype != np.float32
            or boxes.ndim != 2
            or boxes.shape[1] != 4
            or not np.isfinite(boxes).all()
        ):
            reason = f"bad content (boxes {boxes.dtype} {boxes.shape})"
            log.warning("proposal cache %s: %s; recomputing", path, reason)
            return CacheLookup("corrupt", reason=reason)
        reason = self._stale_reason(meta, digest, _sizes_to_match(image_path, image_size, image))
        if reason:
            log.warning("proposal cache %s: stale (%s); recomputing", path, reason)
            return CacheLookup("stale", reason=reason)
        return CacheLookup("hit", boxes=boxes)

    def _stale_reason(self, meta: dict, digest: str, sizes: list[list[int]]) -> str:
        if meta.get("format") != CACHE_FORMAT or meta.get("method") != self.recorded_method:
            return f"written by {meta.get('format')}/{meta.get('method')}"
        if meta.get("params") != self.params:
            return f"parameters {meta.get('params')} != {self.params}"
        if meta.get("image_sha256") != digest:
            return f"written for another image (sha256 {meta.get('image_sha256')})"
        recorded = meta.get("image_size")
        if sizes and recorded not in sizes:
            return f"image size {recorded} (height, width) != the image's {sizes[0]}"
        return ""

    def get(
        self,
        image_path: str | Path | None = None,
        image_size: tuple[int, int] | None = None,
        image: np.ndarray | None = None,
    ) -> Tensor | None:
        """The cached ``(R, 4)`` float32 xyxy boxes, or None when missing, stale or corrupt
        (arguments as :meth:`lookup`)."""
        import torch

        boxes = self.lookup(image_path, image_size, image).boxes
        return None if boxes is None else torch.from_numpy(boxes)

    def put(
        self,
        image_id: str,
        boxes: np.ndarray | Tensor,
        image_size: tuple[int, int],
        image_path: str | Path | None = None,
        image: np.ndarray | None = None,
    ) -> Path | None:
        """Write ``boxes`` ``(R, 4)`` xyxy of the image (its file ``image_path``, else its pixels
        ``image``; ``(height, width)`` ``image_size``) atomically: a crash leaves either the old
        file or the new one, never a partial file. ``image_id`` is recorded for people reading
        the cache. Returns the file (None for a cache without a folder)."""
        if self.cache_dir is None:
            return None
        import cv2

        digest = image_digest(image_path, image)
        meta = {
            "format": CACHE_FORMAT,
            "method": self.recorded_method,
            "params": self.params,
            "image_sha256": digest,
            "image_size": [int(image_size[0]), int(image_size[1])],
            "image_id": image_id,
            "image_file": None if image_path is None else str(image_path),
            "box_format": "xyxy, 0-based continuous pixels",
            "opencv": cv2.__version__,
        }
        array = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        path = self.path_for(digest)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, boxes=array, meta=np.array(json.dumps(meta)))
        return path
