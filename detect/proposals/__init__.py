"""Region proposals: selective search, a per-image cache, parallel/sharded computation, import and
export (Fast R-CNN ``.mat``, ``.npz``, ``.json``) and recall measurement.

Boxes are ``(R, 4)`` float32 xyxy, 0-based continuous pixels of the original image, in the
method's ranking order.
"""

from detect.proposals.cache import ProposalCache
from detect.proposals.compute import (
    ImageItem,
    ProposalRun,
    check_cache,
    compute_proposals,
    image_proposals,
    load_or_compute_proposals,
    parse_shard,
    shard_items,
)
from detect.proposals.formats import proposals_for_dataset, read_proposals, write_proposals
from detect.proposals.recall import RecallResult, proposal_recall
from detect.proposals.search import selective_search

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
