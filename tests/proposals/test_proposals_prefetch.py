"""Proposals computed ahead in worker processes: in order, the boxes selective search gives each
image in this process, failures named and skipped, and workers that never import torch."""

import subprocess
import sys

import numpy as np
import pytest
from proposals_testdata import synthetic_image, write_images

from detect.errors import DetectError
from detect.proposals.cache import ProposalCache
from detect.proposals.prefetch import ProposalJob, prefetch_proposals
from detect.proposals.search import search_boxes

PARAMS = dict(mode="fast", resize_long_side=80, min_size=4.0, max_proposals=50)


@pytest.mark.parametrize("workers", [0, 2])
def test_prefetched_boxes_are_each_images_own_in_order(tmp_path, workers):
    paths = write_images(tmp_path, 3)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    array = synthetic_image(7)[0]
    jobs = [ProposalJob(p.stem, p) for p in paths[:2]]
    jobs += [ProposalJob("broken", tmp_path / "broken.png"), ProposalJob("array", None, array)]
    jobs.append(ProposalJob(paths[2].stem, paths[2]))
    cache = ProposalCache(None, **PARAMS)
    found = list(prefetch_proposals(iter(jobs), cache, 10**8, workers, ahead=2))
    assert [job.image_id for job, _, _ in found] == ["img0", "img1", "broken", "array", "img2"]
    images = [synthetic_image(0)[0], synthetic_image(1)[0], None, array, synthetic_image(2)[0]]
    for (_, boxes, error), image in zip(found, images, strict=True):
        if image is None:
            assert boxes is None and "broken.png" in error
        else:
            assert error == "" and np.array_equal(boxes, search_boxes(image, **PARAMS))


def test_negative_workers_is_an_error():
    with pytest.raises(DetectError, match="proposal workers must be >= 0"):
        list(prefetch_proposals([], ProposalCache(None, **PARAMS), 10**8, -1))


# What a prefetch worker runs: its module's imports, the pool initializer and one job.
WORKER_THEN_MODULES = """
import sys
from pathlib import Path
from detect.errors import DetectError
from detect.proposals.cache import ProposalCache
from detect.proposals.compute import _init_worker
from detect.proposals.prefetch import ProposalJob, job_boxes
_init_worker()
boxes, error = job_boxes(ProposalJob("a", Path(sys.argv[1])), ProposalCache(None), 10**8)
print(boxes.shape[1], repr(error))
print("torch imported:", "torch" in sys.modules)
"""


def test_a_prefetch_worker_never_imports_torch(tmp_path):
    [image] = write_images(tmp_path, 1)
    done = subprocess.run(
        [sys.executable, "-c", WORKER_THEN_MODULES, str(image)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["4 ''", "torch imported: False"]
