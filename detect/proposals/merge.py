"""Combining shard caches: copy what other cache folders hold for a list of images into one.

Shards computed on machines without a shared file system (``--shard I/N`` job arrays writing to
local disks) each leave a cache folder. An entry's file name depends only on the method, its
parameters and the image's content (:meth:`ProposalCache.path_for`), never on the folder, so
merging is copying: for every image without a valid entry in the target, the first source folder
holding a valid one (checked as any look-up is: parameters, image digest, size) gives its file.
Stale or corrupt files are never copied. Like the cache itself, no torch is imported.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from detect.files import atomic_path
from detect.proposals.cache import ProposalCache, image_digest
from detect.proposals.compute import ImageItem


def merge_caches(
    items: Sequence[ImageItem], target: ProposalCache, sources: Sequence[str | Path]
) -> int:
    """Copy into ``target`` (a cache with a folder) the valid entries that the cache folders
    ``sources`` (same method and parameters as ``target``) hold for ``items`` lacking a valid
    entry in ``target``. Returns the number of entries copied; the images still missing
    everywhere stay missing (:func:`detect.proposals.compute.check_cache` lists them)."""
    caches = [ProposalCache(source, target.method, **target.params) for source in sources]
    copied = 0
    for item in items:
        if target.lookup(item.path).status == "hit":
            continue
        source = next((c for c in caches if c.lookup(item.path).status == "hit"), None)
        if source is None:
            continue
        digest = image_digest(item.path)
        with atomic_path(target.path_for(digest)) as tmp:
            shutil.copyfile(source.path_for(digest), tmp)
        copied += 1
    return copied
