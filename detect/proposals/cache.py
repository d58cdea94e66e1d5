"""Per-image proposal cache: one ``.npz`` file per image, written atomically.

Each file holds ``boxes`` (``(R, 4)`` float32 xyxy, 0-based continuous pixels of the original image)
and ``meta``, a json string recording the method, its parameters, the image size and the image
file's byte size. An entry whose method, parameters or image differ from what is asked for is
*stale* (recomputed and overwritten); one that cannot be read is *corrupt* (a warning names the file,
then it is recomputed). Neither is ever returned as proposals.

Because there is one file per image, shards computed on different machines combine by copying
their cache folders into one (``rsync``/``cp``): no merge step is needed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from detect.config import ProposalConfig
from detect.errors import DetectError
from detect.io import atomic_path
from detect.proposals.search import check_search_params

log = logging.getLogger(__name__)

CACHE_FORMAT = "detect-proposals-v1"
METHOD = "opencv_selective_search"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class CacheLookup:
    """Result of :meth:`ProposalCache.lookup`.

    ``status`` is ``"hit"`` (``boxes`` set), ``"missing"``, ``"stale"`` (written with other
    parameters or for another image) or ``"corrupt"`` (unreadable); ``reason`` says why.
    """

    status: str
    boxes: Tensor | None = None
    reason: str = ""


def cache_file_name(image_id: str) -> str:
    """File name for ``image_id``: the id itself when it is a safe name, else a sanitised name
    plus a hash of the id (so distinct ids never share a file)."""
    safe = _SAFE.sub("_", image_id)
    if safe != image_id or not safe or safe.startswith("."):
        digest = hashlib.sha1(image_id.encode()).hexdigest()[:10]
        safe = f"{safe.lstrip('.')}-{digest}"
    return f"{safe}.npz"


class ProposalCache:
    """Proposals of one method and parameter set, one file per image under ``cache_dir``.

    Raises:
        DetectError: a parameter selective search cannot use, or ``cache_dir`` is a file.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        mode: str = "fast",
        resize_long_side: int = 500,
        min_size: float = 16.0,
        max_proposals: int = 2000,
    ) -> None:
        check_search_params(mode, resize_long_side, min_size, max_proposals)
        self.cache_dir = Path(cache_dir)
        if self.cache_dir.exists() and not self.cache_dir.is_dir():
            raise DetectError(
                f"proposal cache {self.cache_dir} (proposals.cache_dir): exists and is not a folder"
            )
        self.params = {
            "mode": mode,
            "resize_long_side": int(resize_long_side),
            "min_size": float(min_size),
            "max_proposals": int(max_proposals),
        }

    @classmethod
    def from_config(cls, cfg: ProposalConfig, cache_dir: str | Path | None = None) -> ProposalCache:
        return cls(
            cfg.cache_dir if cache_dir is None else cache_dir,
            mode=cfg.mode,
            resize_long_side=cfg.resize_long_side,
            min_size=cfg.min_size,
            max_proposals=cfg.max_proposals,
        )

    def path_for(self, image_id: str) -> Path:
        return self.cache_dir / cache_file_name(image_id)

    def lookup(
        self,
        image_id: str,
        image_path: str | Path | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> CacheLookup:
        """Look ``image_id`` up. When given, ``image_path``'s byte size and ``image_size``
        ``(height, width)`` must match what was recorded, else the entry is stale."""
        path = self.path_for(image_id)
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
        reason = self._stale_reason(meta, image_id, image_path, image_size)
        if reason:
            log.debug("proposal cache %s: stale (%s)", path, reason)
            return CacheLookup("stale", reason=reason)
        return CacheLookup("hit", boxes=torch.from_numpy(boxes))

    def _stale_reason(
        self,
        meta: dict,
        image_id: str,
        image_path: str | Path | None,
        image_size: tuple[int, int] | None,
    ) -> str:
        if meta.get("format") != CACHE_FORMAT or meta.get("method") != METHOD:
            return f"written by {meta.get('format')}/{meta.get('method')}"
        if meta.get("params") != self.params:
            return f"parameters {meta.get('params')} != {self.params}"
        if meta.get("image_id") != image_id:
            return f"written for image {meta.get('image_id')!r}"
        if image_size is not None and list(meta.get("image_size", ())) != list(image_size):
            return f"image size {meta.get('image_size')} != {list(image_size)}"
        if image_path is not None and Path(image_path).is_file():
            size = Path(image_path).stat().st_size
            if meta.get("image_bytes") != size:
                return f"image file is {size} bytes, cached for {meta.get('image_bytes')}"
        return ""

    def get(
        self,
        image_id: str,
        image_path: str | Path | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> Tensor | None:
        """The cached ``(R, 4)`` float32 xyxy boxes, or None when missing, stale or corrupt."""
        return self.lookup(image_id, image_path, image_size).boxes

    def put(
        self,
        image_id: str,
        boxes: Tensor,
        image_size: tuple[int, int],
        image_path: str | Path | None = None,
    ) -> Path:
        """Write ``boxes`` ``(R, 4)`` xyxy for ``image_id`` (image ``(height, width)``) atomically:
        a crash leaves either the old file or the new one, never a partial file."""
        meta = {
            "format": CACHE_FORMAT,
            "method": METHOD,
            "params": self.params,
            "image_id": image_id,
            "image_size": [int(image_size[0]), int(image_size[1])],
            "image_bytes": Path(image_path).stat().st_size if image_path is not None else None,
            "box_format": "xyxy, 0-based continuous pixels",
            "opencv": cv2.__version__,
        }
        array = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).numpy()
        path = self.path_for(image_id)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, boxes=array, meta=np.array(json.dumps(meta)))
        return path
