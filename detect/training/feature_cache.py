"""The frozen conv maps of fc-mode fine-tuning: on disk, with a bounded RAM cache in front.

With ``finetune.mode: fc`` the conv layers do not change, so each image's conv map (per flip and
scale) is computed once. :class:`ConvMapCache` keeps it as an fp16 ``.npy`` file under the run
folder (``<run>/features/``, written atomically: :func:`detect.files.atomic_path`) and the most
recently used maps in RAM up to ``finetune.feature_cache_mb`` (least recently used dropped
first), so memory stays bounded however large the data set; a resumed run reads the maps of the
interrupted one.

A file's name is the sha256 of everything its content depends on: the image file's bytes, the
mirror flag, the shorter side, and :func:`backbone_fingerprint` (the backbone's weights, the
model's resize settings, the precision and memory format), so a changed image, other weights or
another scale never read another's map. Every map served, just computed or read back, is the
fp16-rounded one, so an uninterrupted run and a resumed one see exactly the same numbers
(docs/departures.md).
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from detect.files import atomic_path

log = logging.getLogger(__name__)

CACHE_VERSION = "detect-conv-map-v1"
FOLDER_NAME = "features"


def backbone_fingerprint(model, numerics: str) -> str:
    """sha256 (hex) of the backbone's parameters and buffers (names, shapes, dtypes, values),
    the model's ``backbone`` and ``max_size`` settings, its method and ``numerics`` (how the
    convs run: precision, memory format)."""
    digest = hashlib.sha256(CACHE_VERSION.encode())
    cfg = model.cfg
    digest.update(repr((cfg.backbone, cfg.max_size, model.method, numerics)).encode())
    for name, tensor in model.backbone.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class ConvMapCache:
    """``(digest, flip, short_side) -> conv map (C, h, w)`` float32, fp16-rounded.

    Args:
        folder: where the ``.npy`` files go (None: RAM only).
        fingerprint: :func:`backbone_fingerprint` of the frozen backbone.
        budget_mb: RAM for maps kept in memory (fp16 bytes); 0 keeps none in RAM.
        device: where the maps are served.
        read_only: serve the maps on disk but keep none of those computed (a single pass over
            the data, such as the SVM / ridge features, gains nothing from storing them).
    """

    def __init__(
        self,
        folder: Path | None,
        fingerprint: str,
        budget_mb: float,
        device: torch.device,
        read_only: bool = False,
    ) -> None:
        self.folder = folder
        self.device = device
        self.read_only = read_only
        self.fingerprint = fingerprint
        self.budget = int(budget_mb * 2**20)
        self.memory: OrderedDict[str, Tensor] = OrderedDict()
        self.bytes = 0
        self.counts = {"ram": 0, "disk": 0, "computed": 0}

    def name(self, digest: str, flip: bool, short_side: int) -> str:
        """The file name of a map: sha256 of the fingerprint and the map's inputs."""
        key = f"{self.fingerprint}|{digest}|{int(flip)}|{short_side}"
        return hashlib.sha256(key.encode()).hexdigest()[:40] + ".npy"

    def get(
        self, digest: str, flip: bool, short_side: int, compute: Callable[[], Tensor]
    ) -> Tensor:
        """The map of ``digest`` (the image file's sha256) mirrored or not at ``short_side``,
        from RAM, from disk or by ``compute()`` (then saved), as float32 on :attr:`device`."""
        name = self.name(digest, flip, short_side)
        half = self.memory.get(name)
        if half is not None:
            self.memory.move_to_end(name)
            self.counts["ram"] += 1
        else:
            half = self._read(name)
            if half is None:
                half = compute().detach().to("cpu", torch.float16)
                self.counts["computed"] += 1
                if not self.read_only:
                    self._write(name, half)
                    self._remember(name, half)
            else:
                self.counts["disk"] += 1
                self._remember(name, half)
        return half.to(self.device).float()

    def _read(self, name: str) -> Tensor | None:
        if self.folder is None or not (self.folder / name).is_file():
            return None
        try:
            return torch.from_numpy(np.load(self.folder / name, allow_pickle=False))
        except (OSError, ValueError) as exc:  # damaged: computed again and rewritten
            log.warning("conv map cache %s: unreadable (%s); computing it again", name, exc)
            return None

    def _write(self, name: str, half: Tensor) -> None:
        if self.folder is None:
            return
        with atomic_path(self.folder / name) as tmp, open(tmp, "wb") as handle:
            np.save(handle, half.numpy(), allow_pickle=False)

    def _remember(self, name: str, half: Tensor) -> None:
        size = half.numel() * half.element_size()
        if size > self.budget:
            return
        self.memory[name] = half
        self.bytes += size
        while self.bytes > self.budget:
            _, dropped = self.memory.popitem(last=False)
            self.bytes -= dropped.numel() * dropped.element_size()
