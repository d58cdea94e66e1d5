"""The Python API: detect objects in photos with a trained checkpoint.

::

    from detect import Detector
    det = Detector.from_checkpoint("runs/demo/spp/checkpoint.pt")
    result = det("photo.jpg")       # a path, an (H, W, 3) uint8 RGB array or a PIL image
    result.boxes, result.scores, result.labels, result.class_names
    result.to_json("photo.json"); result.draw("photo_annotated.jpg")

Selective-search proposals are computed for each image (with the checkpoint's
``proposals.*`` settings) unless given; a checkpoint trained with ``proposals.method: rpn`` (and
``rpn_shared``) proposes instead with its RPN head from the conv map the detector computes for
SPP pooling, one backbone pass per image (docs/method.md §5). Boxes are ``(N, 4)`` float32 xyxy in 0-based continuous
pixels of the original image. The model is :class:`detect.models.DetectionModel`; its test-time
path (:meth:`~detect.models.DetectionModel.detect`) does the work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from detect.checkpoints import load_checkpoint
from detect.config import Config
from detect.cpu_threads import beside_workers
from detect.errors import DetectError
from detect.models.detection_model import DetectionModel
from detect.models.scoring import RegionScorer
from detect.proposals import ProposalCache, image_proposals
from detect.proposals.prefetch import ProposalJob, prefetch_proposals, proposal_workers
from detect.structures import Detections

# Ranks of fc6 / fc7 for ``svd=True`` (Fast R-CNN's truncated SVD, as ``detect run --svd``).
SVD_RANKS = (1024, 256)


def as_rgb_array(image: Any, what: str = "image") -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB array from such an array or a PIL image (converted to RGB);
    anything else is a :class:`DetectError` naming ``what`` and the value."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"))
    if (
        isinstance(image, np.ndarray)
        and image.ndim == 3
        and image.shape[2] == 3
        and image.dtype == np.uint8
        and min(image.shape[:2]) >= 1
    ):
        return image
    shape = getattr(image, "shape", None)
    dtype = getattr(image, "dtype", type(image).__name__)
    raise DetectError(
        f"{what}: expected a file path, an (H, W, 3) uint8 RGB array or a PIL image, "
        f"got {type(image).__name__} {shape if shape is not None else ''} {dtype}".rstrip()
    )


@dataclass
class DetectionResult:
    """The detections of one image.

    Attributes:
        boxes: ``(N, 4)`` float32 xyxy, 0-based continuous pixels of the original image.
        scores: ``(N,)`` float32, sorted decreasing. labels: ``(N,)`` int64 indices into
            ``class_names`` (no background).
        class_names: the checkpoint's classes. image_id: the file's stem, or ``"image"`` for an
            array. image: the ``(H, W, 3)`` uint8 RGB image detected in (for :meth:`draw`).
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    class_names: tuple[str, ...]
    image_id: str
    image: np.ndarray

    @property
    def detections(self) -> Detections:
        return Detections(self.boxes, self.scores, self.labels)

    def to_json(self, path: str | Path) -> Path:
        """Write the project's detections json (the file ``detect score --detections`` reads)
        holding this image under :attr:`image_id`; returns the path."""
        from detect.evaluation.detections_json import write_detections_json

        write_detections_json(Path(path), {self.image_id: self.detections}, self.class_names)
        return Path(path)

    def draw(self, path: str | Path, score_threshold: float = 0.5) -> Path:
        """Write the image with the detections scoring at least ``score_threshold`` drawn (format
        from the suffix: .jpg, .png, ...); returns the path."""
        from detect.data.images import write_image
        from detect.visualize import draw_detections

        drawn = draw_detections(self.image, self.detections, self.class_names, score_threshold)
        write_image(Path(path), drawn)
        return Path(path)


class Detector:
    """A trained SPP-net (or R-CNN) detector, ready to run on photos; see the module docstring.

    Build it with :meth:`from_checkpoint`. Attributes: ``model`` (the
    :class:`~detect.models.DetectionModel`, eval mode), ``scorer``, ``class_names``, ``config``
    (the checkpoint's config with the options applied), ``method``, ``device``.
    """

    def __init__(
        self,
        model: DetectionModel,
        scorer: RegionScorer,
        class_names: Sequence[str],
        config: Config,
        proposal_cache: ProposalCache,
    ) -> None:
        self.model = model
        self.scorer = scorer
        self.class_names = tuple(class_names)
        self.config = config
        self.proposal_cache = proposal_cache

    @property
    def method(self) -> str:
        return self.model.method

    @property
    def device(self) -> torch.device:
        return self.model.device

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        method: str | None = None,
        scales: Sequence[int] | None = None,
        svd: bool | Sequence[int] = False,
        score_threshold: float | None = None,
        device: str | torch.device | None = None,
        precision: str | None = None,
        proposal_cache: str | Path | None = None,
        overrides: Sequence[str] = (),
    ) -> Detector:
        """Load a checkpoint written by ``detect train`` (or ``detect demo``).

        Args:
            method: ``"spp"`` or ``"rcnn"``: the forward path for the saved weights (default the
                checkpoint's own).
            scales: SPP-net's test scales (shorter sides), e.g. ``[480, 576, 688, 864, 1200]``;
                default the checkpoint's ``test.scales``, else its ``model.scales``.
            svd: truncated SVD of fc6/fc7: ``True`` for ranks 1024/256, or the ranks; default
                the checkpoint's ``model.svd_ranks``.
            score_threshold: keep detections scoring above it (default ``test.score_threshold``).
            device: ``"auto"`` (CUDA, else MPS, else CPU), or a torch device name
                (``"cpu"``, ``"cuda:1"``, ...); default ``runtime.device`` of ``overrides``, else
                ``"auto"`` (:mod:`detect.runtime`).
            precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (GPU only): the forward passes run
                in :func:`detect.runtime.autocast`; default ``runtime.precision``, else fp32.
            proposal_cache: a folder where computed proposals are kept and reused (default none).
            overrides: other ``section.key=value`` changes to the saved config.
        """
        changes = list(overrides)
        if svd is True:
            changes.append(f"model.svd_ranks={list(SVD_RANKS)}")
        elif svd:
            changes.append(f"model.svd_ranks={[int(r) for r in svd]}")
        if scales:
            changes.append(f"test.scales={[int(s) for s in scales]}")
        if score_threshold is not None:
            changes.append(f"test.score_threshold={float(score_threshold)}")
        if device is not None:
            changes.append(f"runtime.device={device}")
        if precision is not None:
            changes.append(f"runtime.precision={precision}")
        loaded = load_checkpoint(path, method=method, overrides=changes)
        # Only the folder the caller names: never the checkpoint's proposals.cache_dir.
        cache_cfg = dataclasses.replace(
            loaded.config.proposals, cache_dir=str(proposal_cache or "")
        )
        cache = ProposalCache.from_config(cache_cfg)
        return cls(loaded.model, loaded.scorer, loaded.class_names, loaded.config, cache)

    def read(self, image: str | Path | np.ndarray | Any) -> tuple[np.ndarray, str, Path | None]:
        """``(rgb (H, W, 3) uint8, image_id, path or None)`` of a path, an array or a PIL image.
        A path is read with ``data.max_image_pixels`` as the size limit."""
        if isinstance(image, (str, Path)):
            from detect.data.images import read_image

            path = Path(image)
            return read_image(path, self.config.data.max_image_pixels), path.stem, path
        return as_rgb_array(image), "image", None

    def proposals(
        self, image: np.ndarray, image_id: str = "image", path: str | Path | None = None
    ) -> Tensor:
        """Selective-search proposals ``(R, 4)`` xyxy of an ``(H, W, 3)`` uint8 RGB image (from
        the proposal cache when it holds them for ``path``'s content)."""
        return image_proposals(image, image_id, self.proposal_cache, path)

    def __call__(
        self,
        image: str | Path | np.ndarray | Any,
        proposals: Tensor | np.ndarray | None = None,
        image_id: str | None = None,
    ) -> DetectionResult:
        """Detect objects in one image.

        Args:
            image: a file path, an ``(H, W, 3)`` uint8 RGB array or a PIL image.
            proposals: ``(R, 4)`` xyxy boxes in the image's pixels; default: those of
                ``proposals.method`` (selective search), or with a shared RPN head (a checkpoint
                trained with ``proposals.method: rpn``) proposed from the detector's own conv
                map, computed once for both.
            image_id: the name the result carries (default the file's stem, or ``"image"``).
        """
        rgb, default_id, path = self.read(image)
        image_id = image_id or default_id
        if proposals is None and self.model.rpn is None:
            proposals = self.proposals(rgb, image_id, path)
        if proposals is not None:
            proposals = torch.as_tensor(proposals, dtype=torch.float32).reshape(-1, 4)
        # None: the shared RPN proposes from the conv map the detector pools from
        found = self.model.detect(rgb, proposals, self.config.test, self.scorer)
        return DetectionResult(
            found.boxes, found.scores, found.labels, self.class_names, image_id, rgb
        )

    def predict(
        self,
        images: Iterable[str | Path | np.ndarray | Any],
        progress: bool = True,
        workers: int | None = None,
    ) -> Iterator[DetectionResult]:
        """:meth:`__call__` on each of ``images`` in turn, with a progress bar on stderr unless
        ``progress`` is False. The proposals of the next images are computed in ``workers``
        processes (default ``proposals.workers``; 0: in this process, one image after the other;
        none with a shared RPN head, whose proposals come from the network's own pass)
        while the network runs on this one (:mod:`detect.proposals.prefetch`); the results are
        those of calling the detector on each image. Meanwhile torch uses at most the physical
        cores the workers leave (:func:`detect.cpu_threads.beside_workers`). The workers are
        spawned processes, so a script calling this needs the usual
        ``if __name__ == "__main__":`` guard."""
        workers = self.config.proposals.workers if workers is None else workers
        workers = proposal_workers(self.proposal_cache, workers)
        jobs = (proposal_job(image) for image in images)
        if self.model.rpn is None:
            found = prefetch_proposals(
                jobs, self.proposal_cache, self.config.data.max_image_pixels, workers
            )
        else:  # proposed from each image's conv map, in the network's pass: no workers
            workers = 0
            found = ((job, None, "") for job in jobs)
        total = len(images) if isinstance(images, Sized) else None
        with beside_workers(workers):
            for job, boxes, error in tqdm(
                found, total=total, desc="detect", unit="image", disable=not progress
            ):
                if error:
                    raise DetectError(error)
                yield self(job.path if job.image is None else job.image, boxes, job.image_id)


def proposal_job(image: str | Path | np.ndarray | Any) -> ProposalJob:
    """What a proposal worker needs for ``image``: a path (the worker reads the file; id its
    stem) or the ``(H, W, 3)`` uint8 RGB array of an array or PIL image (id ``"image"``)."""
    if isinstance(image, (str, Path)):
        return ProposalJob(Path(image).stem, Path(image))
    return ProposalJob("image", None, as_rgb_array(image))
