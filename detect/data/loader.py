"""Data loading in worker processes (``torch.utils.data``): images are decoded, resized and
flipped while the network works on the previous item (``runtime.num_workers``; 0 = in the main
process, the same code either way).

:func:`load` runs any map-style dataset over an explicit order of keys (``batch_size``
None: one item per key, in exactly that order whatever the number of workers), so what a caller
gets is a function of the key alone: fine-tuning indexes its dataset by iteration
(:mod:`detect.training.batches`), evaluation and region-feature extraction by image
(:class:`ImageReader`, :func:`read_images`). Workers start from a fork server on Linux and by
``spawn`` elsewhere (never by a plain ``fork`` of this process: :func:`_context`), so the
dataset must pickle; each is limited to one OpenCV / torch thread so workers do not
oversubscribe the cores. Pinned memory when the network runs on CUDA.
"""

from __future__ import annotations

import multiprocessing
import pickle
import signal
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from detect.data.images import DEFAULT_MAX_IMAGE_PIXELS, read_image
from detect.errors import DetectError
from detect.structures import Annotation

# Items each worker prepares ahead of the one being used (torch's default).
PREFETCH_FACTOR = 2


def _context() -> multiprocessing.context.BaseContext:
    """``forkserver`` where the platform has it (Linux): workers are forked from a clean
    single-threaded server that has imported torch, not from this process, whose threads (logging,
    TensorBoard writers, progress bars) may hold locks a forked child would wait on forever;
    ``spawn`` elsewhere."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "detect.data.loader"])
    return context


def _init_worker(_worker_id: int) -> None:
    """One thread each for OpenCV and torch in a worker (torch sets its own; OpenCV's pool would
    otherwise start one thread per core in every worker). Ctrl-C is the main process's to handle
    (training saves a checkpoint after the iteration): a worker ignores it and ends with the
    loader."""
    import cv2

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


class _Failure(str):
    """A worker's :class:`DetectError` message, raised again by the main process (torch would
    re-raise it with the worker's traceback in its message)."""


class _Guarded(Dataset):
    """``dataset[key]``, or its :class:`DetectError` as a :class:`_Failure`."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    # Sent to the workers by value (plain pickle): torch's sharing would pass one file
    # descriptor per tensor (proposals, boxes of every image), over the fork server's limit.
    def __getstate__(self) -> dict:
        return {"dataset": pickle.dumps(self.dataset)}

    def __setstate__(self, state: dict) -> None:
        self.dataset = pickle.loads(state["dataset"])

    def __getitem__(self, key: int):
        try:
            return self.dataset[key]
        except DetectError as exc:
            return _Failure(str(exc))


def load(
    dataset: Dataset, keys: Iterable[int], num_workers: int, pin_memory: bool = False
) -> Iterator:
    """``dataset[key]`` for each of ``keys`` in that order (items not batched; numpy arrays in
    them become tensors). A :class:`DetectError` raised for an item is raised here, as it was.

    Args:
        num_workers: worker processes (0: the main process loads each item when asked).
        pin_memory: page-locked tensors, for fast copies to a CUDA device.
    """
    if num_workers < 0:
        raise DetectError(f"runtime.num_workers must be >= 0, got {num_workers}")
    extra = {}
    if num_workers > 0:
        extra = {
            "multiprocessing_context": _context(),
            "worker_init_fn": _init_worker,
            "prefetch_factor": PREFETCH_FACTOR,
        }
    loader = DataLoader(
        _Guarded(dataset),
        batch_size=None,
        sampler=keys if isinstance(keys, range) else list(keys),
        num_workers=num_workers,
        pin_memory=pin_memory,
        # Its own generator: creating a loader draws a seed for its workers, which from the
        # global RNG would shift dropout's random stream (and a resumed run's would differ).
        generator=torch.Generator().manual_seed(0),
        **extra,
    )
    for item in loader:
        if isinstance(item, _Failure):
            raise DetectError(str(item))
        yield item


class ImageReader(Dataset):
    """``index -> (index, (H, W, 3) uint8 RGB image)`` of ``annotations[index]`` (decoded with
    :func:`detect.data.images.read_image`; a bad file is its one-line error, raised in the
    main process by the loader)."""

    def __init__(
        self, annotations: list[Annotation], max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    ) -> None:
        self.paths = [Path(ann.path) for ann in annotations]
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray]:
        return index, read_image(self.paths[index], self.max_pixels)


def read_images(
    annotations: list[Annotation],
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    num_workers: int = 0,
) -> Iterator[tuple[Annotation, np.ndarray]]:
    """``(annotation, (H, W, 3) uint8 RGB image)`` for each of ``annotations`` in order, decoded
    by ``num_workers`` worker processes (0: here, one at a time). Only the images being decoded
    and the ones waiting (``PREFETCH_FACTOR`` per worker) are in memory at once."""
    reader = ImageReader(annotations, max_pixels)
    for index, image in load(reader, range(len(annotations)), num_workers):
        yield annotations[index], np.asarray(image)
