"""Region proposals: selective search and the methods for small, dense objects (``ss-multi``,
``dense``, ``rpn``: :mod:`detect.proposals.methods`), a per-image cache, parallel/sharded computation,
import and export (Fast R-CNN ``.mat``, ``.npz``, ``.json``) and recall measurement.

Boxes are ``(R, 4)`` float32 xyxy, 0-based continuous pixels of the original image, in the
method's ranking order.
"""

import importlib

# name -> the module defining it; imported on first use, so a proposal worker process (or a fully
# cached `detect proposals`) loads only what it runs, never the torch-based formats and recall.
_MODULE_OF = {
    "ProposalCache": "cache",
    "ImageItem": "compute",
    "ProposalRun": "compute",
    "check_cache": "compute",
    "compute_proposals": "compute",
    "image_proposals": "compute",
    "load_or_compute_proposals": "compute",
    "parse_shard": "compute",
    "shard_items": "compute",
    "proposals_for_dataset": "formats",
    "read_proposals": "formats",
    "write_proposals": "formats",
    "RecallResult": "recall",
    "proposal_recall": "recall",
    "selective_search": "search",
}

__all__ = [
    "ImageItem",
    "ProposalCache",
    "ProposalRun",
    "RecallResult",
    "check_cache",
    "compute_proposals",
    "image_proposals",
    "load_or_compute_proposals",
    "parse_shard",
    "proposal_recall",
    "proposals_for_dataset",
    "read_proposals",
    "selective_search",
    "shard_items",
    "write_proposals",
]


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"detect.proposals.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module 'detect.proposals' has no attribute {name!r}")
