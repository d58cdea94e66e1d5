"""Computing proposals for many images: cache look-up, a worker pool, sharding, failure counting.

Work is split per image. ``workers`` processes (always ``spawn``: see :func:`_pool_context`)
each run single-threaded OpenCV and write each image's cache file as soon as it is done, so an
interrupted run loses at most the images in flight and a rerun (resume) skips everything cached.
Neither importing this module nor :func:`compute_proposals` loads torch (each worker would spend
seconds on it, and so would a fully cached rerun): boxes stay numpy arrays until
:func:`load_or_compute_proposals` and :func:`image_proposals` hand them to the models as tensors.

Sharding (``--shard I/N``, or ``RANK`` / ``WORLD_SIZE`` under torchrun;
:func:`detect.distributed.shard_items`) takes every N-th image of the list starting at the I-th
(0-based), so N jobs over the same list cover every image exactly once; since the cache holds one
file per image, the shards' cache folders simply combine (copy them into one, or
``detect proposals --merge``), and :func:`check_cache` reports any image still missing.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from detect.config import ProposalConfig
from detect.data.images import DEFAULT_MAX_IMAGE_PIXELS, read_image
from detect.distributed import shard_items as shard_items  # the shards of --shard I/N
from detect.errors import DetectError, Interrupted
from detect.proposals.cache import ProposalCache
from detect.proposals.methods import propose

if TYPE_CHECKING:
    from torch import Tensor

    from detect.structures import DetectionDataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageItem:
    """One image to compute proposals for."""

    image_id: str
    path: Path


@dataclass
class ProposalRun:
    """Outcome of :func:`compute_proposals`.

    Attributes:
        proposals: ``{image_id: (R, 4) float32 xyxy numpy array}`` for every image that
            succeeded.
        cached: images whose cache entry was reused.
        computed: images computed in this run (``recomputed`` of them replaced a stale or
            corrupt cache file).
        failures: ``(path, message)`` of images that could not be read or searched.
        search_seconds: summed per-image compute time (read + search + cache write).
        wall_seconds: elapsed time of the whole run.
    """

    proposals: dict[str, np.ndarray] = field(default_factory=dict)
    cached: int = 0
    computed: int = 0
    recomputed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    search_seconds: float = 0.0
    wall_seconds: float = 0.0


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"I/N"`` (0-based shard ``I`` of ``N``) into ``(I, N)``."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError as exc:
        raise DetectError(f"--shard {text!r}: expected I/N, e.g. 0/4") from exc
    if count < 1 or not 0 <= index < count:
        raise DetectError(f"--shard {text!r}: need N >= 1 and 0 <= I < N (shards are 0-based)")
    return index, count


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def _compute_one(
    task: tuple[ImageItem, ProposalCache, int],
) -> tuple[str, np.ndarray | None, float, str]:
    """Read (at most ``max_image_pixels``), search and cache one image: ``(image_id, boxes or
    None, seconds, error message)``."""
    import cv2

    item, cache, max_image_pixels = task
    start = time.perf_counter()
    try:
        image = read_image(item.path, max_image_pixels)
        boxes = search_and_cache(image, item.image_id, cache, item.path)
    except (DetectError, cv2.error) as exc:
        return item.image_id, None, 0.0, str(exc).strip()
    return item.image_id, boxes, time.perf_counter() - start, ""


def search_and_cache(
    image: np.ndarray, image_id: str, cache: ProposalCache, image_path: str | Path | None = None
) -> np.ndarray:
    """Proposals by ``cache``'s method and parameters of ``image`` ``(H, W, 3)`` uint8 RGB, cached
    under the content of its file ``image_path`` (else of its pixels) and recorded as computed for
    ``image_id``: ``(R, 4)`` float32 xyxy original pixels."""
    boxes = propose(image, cache.method, cache.params)
    cache.put(image_id, boxes, image.shape[:2], image_path, image)
    return boxes


def image_boxes(
    image: np.ndarray, image_id: str, cache: ProposalCache, image_path: str | Path | None = None
) -> np.ndarray:
    """Proposals ``(R, 4)`` float32 xyxy original pixels (a numpy array) of one image already
    read (``(H, W, 3)`` uint8 RGB): from ``cache`` when a valid entry exists, else computed and
    cached (:func:`search_and_cache`)."""
    boxes = cache.lookup(image_path, tuple(image.shape[:2]), image).boxes
    if boxes is None:
        boxes = search_and_cache(image, image_id, cache, image_path)
    return boxes


def image_proposals(
    image: np.ndarray, image_id: str, cache: ProposalCache, image_path: str | Path | None = None
) -> Tensor:
    """:func:`image_boxes` as a tensor."""
    import torch

    return torch.from_numpy(image_boxes(image, image_id, cache, image_path))


def _pool_context() -> multiprocessing.context.BaseContext:
    # Never "fork": once torch (or OpenCV) has started its OpenMP thread pool in this process, a
    # forked child can deadlock in it (seen: `detect demo` hung after training-free torch work).
    return multiprocessing.get_context("spawn")


def check_cache(items: Sequence[ImageItem], cache: ProposalCache) -> dict[str, list[str]]:
    """Cache status of every item without computing anything: ``{status: [image_id, ...]}`` with
    status ``hit``, ``missing``, ``stale`` or ``corrupt`` (see :class:`CacheLookup`)."""
    statuses: dict[str, list[str]] = {"hit": [], "missing": [], "stale": [], "corrupt": []}
    for item in items:
        statuses[cache.lookup(item.path).status].append(item.image_id)
    return statuses


def compute_proposals(
    items: Sequence[ImageItem],
    cache: ProposalCache,
    workers: int = 1,
    progress: bool = True,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> ProposalRun:
    """Proposals for ``items``: cached ones are loaded, the others computed with ``workers``
    processes (1 = in this process) and cached. Unreadable images (or images of more than
    ``max_image_pixels`` pixels) are logged by path, counted in :attr:`ProposalRun.failures` and
    skipped; the run goes on."""
    if workers < 1:
        raise DetectError(f"proposals.workers must be >= 1, got {workers}")
    if cache.method == "rpn":
        workers = 1  # the network runs in this process, with torch's threads
    start = time.perf_counter()
    ids = [item.image_id for item in items]
    duplicates = [image_id for image_id, n in Counter(ids).items() if n > 1]
    if duplicates:
        raise DetectError(f"proposals: duplicate image ids {duplicates[:5]}")
    run = ProposalRun()
    todo: list[ImageItem] = []
    replaced: set[str] = set()  # ids whose cache entry was stale or corrupt
    for item in items:
        found = cache.lookup(item.path)
        if found.boxes is not None:
            run.proposals[item.image_id] = found.boxes
            run.cached += 1
        else:
            if found.status in ("stale", "corrupt"):
                replaced.add(item.image_id)
            todo.append(item)
    if todo:
        tasks = [(item, cache, max_image_pixels) for item in todo]
        paths = {item.image_id: str(item.path) for item in todo}
        bar = tqdm(
            total=len(todo), desc=f"proposals ({cache.method})", unit="img", disable=not progress
        )
        with bar, _interrupt_says_what_is_cached(run, cache, len(items)):
            for image_id, boxes, seconds, error in _run_tasks(tasks, workers):
                bar.update()
                if boxes is None:
                    log.error("proposals: skipping %s: %s", paths[image_id], error)
                    run.failures.append((paths[image_id], error))
                    continue
                run.proposals[image_id] = boxes
                run.computed += 1
                run.recomputed += image_id in replaced
                run.search_seconds += seconds
    run.proposals = {i: run.proposals[i] for i in ids if i in run.proposals}  # list order
    run.wall_seconds = time.perf_counter() - start
    return run


@contextlib.contextmanager
def _interrupt_says_what_is_cached(run: ProposalRun, cache: ProposalCache, total: int):
    """Ctrl-C inside becomes :class:`Interrupted` saying how many of the ``total`` images have
    their proposals in the cache (``run`` counts them as results come in)."""
    try:
        yield
    except KeyboardInterrupt as exc:
        if cache.cache_dir is None:
            raise Interrupted(
                f"proposals are not cached (no cache folder): the {run.computed} computed are lost"
            ) from exc
        kept = run.cached + run.computed
        raise Interrupted(
            f"the proposal cache {cache.cache_dir} keeps the proposals of {kept} of {total} "
            f"images ({run.computed} computed in this run); computing again skips them"
        ) from exc


def _run_tasks(tasks: list, workers: int):
    """Yield :func:`_compute_one` results, in this process or from a pool of ``workers``."""
    if workers <= 1 or len(tasks) == 1:
        import cv2

        previous = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            yield from map(_compute_one, tasks)
        finally:
            cv2.setNumThreads(previous)
        return
    context = _pool_context()
    with context.Pool(min(workers, len(tasks)), initializer=_init_worker) as pool:
        yield from pool.imap_unordered(_compute_one, tasks, chunksize=1)


def items_from_dataset(dataset: DetectionDataset) -> list[ImageItem]:
    return [ImageItem(a.image_id, a.path) for a in dataset.annotations]


def load_or_compute_proposals(
    dataset: DetectionDataset,
    cfg: ProposalConfig,
    workers: int | None = None,
    progress: bool = True,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> dict[str, Tensor]:
    """Proposals ``{image_id: (R, 4) float32 xyxy original pixels}`` for every image of
    ``dataset``, from ``cfg.cache_dir`` or computed (``workers`` processes, default
    ``cfg.workers``) and cached. With ``cfg.import_file`` set, they are read from that file
    instead (see :mod:`detect.proposals.formats`).

    Raises:
        DetectError: when some image could not be read (listing them), or when an imported file
            lacks an image of the data set.
    """
    if cfg.import_file:
        from detect.proposals.formats import proposals_for_dataset

        return proposals_for_dataset(cfg.import_file, dataset)
    import torch

    run = compute_proposals(
        items_from_dataset(dataset),
        ProposalCache.from_config(cfg),
        cfg.workers if workers is None else workers,
        progress,
        max_image_pixels,
    )
    if run.failures:
        listed = "; ".join(f"{path}: {message}" for path, message in run.failures[:5])
        raise DetectError(f"proposals: {len(run.failures)} image(s) failed: {listed}")
    return {image_id: torch.from_numpy(boxes) for image_id, boxes in run.proposals.items()}
