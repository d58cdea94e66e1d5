"""``rpn`` proposals: a trained region proposal network (:mod:`detect.models.rpn`) run in this
process (it needs torch and the model, unlike the numpy-only methods that proposal workers run).

A cache entry's parameters hold the weights file and the sha256 of its bytes, so retrained or
replaced weights never get another network's cached boxes. Boxes are ``(R, 4)`` float32 xyxy,
0-based continuous pixels of the original image, by decreasing objectness.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from detect.config import check_values
from detect.errors import DetectError
from detect.files import file_sha256

if TYPE_CHECKING:
    from detect.config import ProposalConfig


def weights_sha256(path: str) -> str:
    """sha256 (hex) of the RPN weights file ``path`` (``proposals.rpn_weights``)."""
    if not path:
        raise DetectError(
            "proposals.rpn_weights is empty: train the RPN with detect train "
            "(proposals.method=rpn) or give its weights file (--rpn-weights RUN/rpn.pt)"
        )
    return file_sha256(path, "proposals.rpn_weights")


def check_rpn_params(
    weights: str, pre_nms: int, nms_iou: float, min_size: float, max_proposals: int
) -> None:
    """Raise :class:`DetectError` naming the ``proposals.*`` setting that is unusable."""
    checks = [
        (pre_nms >= 0, "rpn_pre_nms", pre_nms, ">= 0 (0 = all anchors)"),
        (0 < nms_iou <= 1, "rpn_nms_iou", nms_iou, "in (0, 1]"),
        (min_size >= 0, "min_size", min_size, ">= 0"),
        (max_proposals >= 0, "max_proposals", max_proposals, ">= 0 (0 = all)"),
    ]
    check_values("proposals.", checks)


def shared_settings(cfg: ProposalConfig) -> dict:
    """The test-time settings of a shared-conv RPN (:class:`detect.models.rpn.SharedRPN`) from
    the ``proposals`` section: ``rpn_pre_nms``, ``rpn_nms_iou``, ``min_size`` and
    ``rpn_post_nms`` proposals kept after NMS (0 = ``max_proposals``), checked."""
    post_nms = cfg.rpn_post_nms or cfg.max_proposals
    check_values("proposals.", [(cfg.rpn_post_nms >= 0, "rpn_post_nms", cfg.rpn_post_nms, ">= 0")])
    check_rpn_params("", cfg.rpn_pre_nms, cfg.rpn_nms_iou, cfg.min_size, post_nms)
    return {
        "pre_nms": cfg.rpn_pre_nms,
        "nms_iou": cfg.rpn_nms_iou,
        "min_size": cfg.min_size,
        "max_proposals": post_nms,
    }


@functools.lru_cache(maxsize=2)
def _network(path: str, sha256: str):
    """The network saved in ``path`` (loaded once per file content: ``sha256`` is the key)."""
    from detect.models.rpn import load_rpn

    return load_rpn(Path(path))


def rpn_boxes(
    image: np.ndarray,
    weights: str,
    weights_sha256: str,
    pre_nms: int = 6000,
    nms_iou: float = 0.7,
    min_size: float = 16.0,
    max_proposals: int = 2000,
) -> np.ndarray:
    """Proposals of ``image`` ``(H, W, 3)`` uint8 RGB by the RPN in ``weights``
    (:meth:`detect.models.rpn.RegionProposalNetwork.propose`): ``(R, 4)`` float32 xyxy."""
    from detect.proposals.search import check_rgb_image

    check_rgb_image(image, "rpn proposals")
    network = _network(str(weights), weights_sha256)
    return network.propose(image, pre_nms, nms_iou, min_size, max_proposals)
