"""Proposals of the next images computed in worker processes while the network runs on this one.

``detect run`` and :meth:`detect.Detector.predict` go through their images in order; selective
search (about a second per photo) would otherwise wait for the network and the network for it.
:func:`prefetch_proposals` keeps up to ``ahead`` images in flight in a pool of ``workers`` spawned
processes (:func:`detect.proposals.compute._pool_context`) and yields each image's boxes in the
input order, so image ``i + 1``'s search runs beside image ``i``'s network. The workers run
single-threaded OpenCV and never import torch (this module and what it imports are torch-free):
they read the image file themselves (or are sent the array) and use the same proposal cache as
the caller, so the boxes are those :func:`detect.proposals.compute.image_boxes` gives in-process.
Boxes are ``(R, 4)`` float32 xyxy numpy arrays in 0-based continuous pixels of the original image.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detect.data.images import read_image
from detect.errors import DetectError
from detect.proposals.cache import ProposalCache
from detect.proposals.compute import _init_worker, _pool_context, image_boxes


@dataclass(frozen=True)
class ProposalJob:
    """One image to find proposals for: a file (``path``; the worker reads it) or an
    ``(H, W, 3)`` uint8 RGB ``image`` (sent to the worker; ``path`` None)."""

    image_id: str
    path: Path | None = None
    image: np.ndarray | None = None


def job_boxes(
    job: ProposalJob, cache: ProposalCache, max_image_pixels: int
) -> tuple[np.ndarray | None, str]:
    """``(boxes, "")`` of one job, or ``(None, message)`` when its file cannot be read or
    searched (the message names the file). Runs in a worker process."""
    import cv2

    try:
        image = read_image(job.path, max_image_pixels) if job.image is None else job.image
        return image_boxes(image, job.image_id, cache, job.path), ""
    except (DetectError, cv2.error) as exc:
        return None, str(exc).strip()


def proposal_workers(cache: ProposalCache, workers: int) -> int:
    """The worker processes to prefetch ``cache``'s proposals with: ``workers``, or 0 for the
    ``rpn`` method, whose network runs in this process (torch, never in the workers)."""
    return 0 if cache.method == "rpn" else workers


def prefetch_proposals(
    jobs: Iterable[ProposalJob],
    cache: ProposalCache,
    max_image_pixels: int,
    workers: int = 1,
    ahead: int | None = None,
) -> Iterator[tuple[ProposalJob, np.ndarray | None, str]]:
    """``(job, boxes or None, error message)`` for each of ``jobs``, in order, computed by
    ``workers`` processes at most ``ahead`` jobs (default ``workers + 1``) ahead of the one
    yielded (``workers=0``: each in this process when its turn comes, no overlap; otherwise the
    first is computed in this process while the workers start). ``jobs`` is
    consumed lazily, so a generator of large arrays holds only the jobs in flight. The pool is
    shut down (pending jobs cancelled) when the iteration ends or stops."""
    if workers < 0:
        raise DetectError(f"proposal workers must be >= 0 (0 = in this process), got {workers}")
    if workers == 0:
        for job in jobs:
            yield job, *job_boxes(job, cache, max_image_pixels)
        return
    ahead = max(1, ahead or workers + 1)
    pending: collections.deque[tuple[ProposalJob, Future]] = collections.deque()
    source = iter(jobs)
    first = next(source, None)
    if first is None:
        return
    pool = ProcessPoolExecutor(workers, mp_context=_pool_context(), initializer=_init_worker)

    def fill() -> None:
        while len(pending) < ahead:
            job = next(source, None)
            if job is None:
                return
            pending.append((job, pool.submit(job_boxes, job, cache, max_image_pixels)))

    try:
        # The first image is searched here while the workers start (spawning and importing
        # take a second or more); they take the following ones.
        fill()
        yield first, *job_boxes(first, cache, max_image_pixels)
        while True:
            fill()
            if not pending:
                return
            job, future = pending.popleft()
            try:
                boxes, error = future.result()
            except BrokenProcessPool as exc:
                raise DetectError(
                    "proposal workers stopped before finishing (a script that runs the detector "
                    'on many images needs `if __name__ == "__main__":` around its top-level '
                    "code: the workers are spawned processes that import it; workers=0 computes "
                    f"them in this process): {exc}"
                ) from exc
            yield job, boxes, error
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
