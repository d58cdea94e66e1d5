"""The proposal methods by name, their parameters (what a cache entry is keyed by) and dispatch.

``ss`` is selective search (:mod:`detect.proposals.search`), ``ss-multi`` its diversification
ensemble (:mod:`detect.proposals.multi`), ``dense`` sliding windows ranked by objectness
(:mod:`detect.proposals.dense`), ``rpn`` a trained region proposal network
(:mod:`detect.proposals.learned`; its parameters name the weights file and its sha256). A method's parameters are a json-like dict (lists, not tuples,
so a cache entry's recorded parameters compare equal after a round trip through json); every one
that changes the boxes is in it, so a cache never serves boxes computed with other settings.
Numpy and OpenCV only: proposal workers import this module (``rpn`` loads torch when it runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from detect.config import check_values
from detect.errors import DetectError

if TYPE_CHECKING:
    from detect.config import ProposalConfig

PROPOSAL_METHODS = ("ss", "ss-multi", "dense", "rpn")
# What cache entries record as the method (selective search's name predates the other methods).
RECORDED_NAMES = {
    "ss": "opencv_selective_search",
    "ss-multi": "ss-multi",
    "dense": "dense",
    "rpn": "rpn",
}

_DEFAULTS: dict[str, dict[str, Any]] = {
    "ss": {"mode": "fast", "resize_long_side": 500, "min_size": 16.0, "max_proposals": 2000},
    "ss-multi": {
        "color_spaces": ["hsv", "lab", "rgb"],
        "ks": [100.0, 200.0],
        "min_region": 30,
        "dedup_iou": 0.95,
        "resize_long_side": 500,
        "upscale": 1.0,
        "min_size": 16.0,
        "max_proposals": 2000,
    },
    "dense": {"shapes": [], "stride": 0.08, "ring": 0.03, "nms_iou": 0.65, "max_proposals": 2000},
    "rpn": {
        "weights": "",
        "pre_nms": 6000,
        "nms_iou": 0.7,
        "min_size": 16.0,
        "max_proposals": 2000,
    },
}
_FLOATS = {"min_size", "dedup_iou", "upscale", "stride", "ring", "nms_iou"}
_INTS = {"resize_long_side", "max_proposals", "min_region", "pre_nms"}


def check_method(method: str) -> None:
    check_values(
        "proposals.",
        [(method in PROPOSAL_METHODS, "method", method, f"one of {list(PROPOSAL_METHODS)}")],
    )


def _plain(key: str, value: Any) -> Any:
    if key in _FLOATS:
        return float(value)
    if key in _INTS:
        return int(value)
    if key == "ks":
        return [float(k) for k in value]
    if key == "color_spaces":
        return [str(c) for c in value]
    if key == "shapes":
        return [[float(v) for v in shape] for shape in value]
    if key == "weights":
        return str(value)
    return value


def method_params(method: str, given: dict[str, Any]) -> dict[str, Any]:
    """``method``'s full parameters: its defaults updated with ``given``, json-like and checked.
    ``ss``'s ``upscale`` is recorded only when it is not 1, so entries cached before it existed
    (computed the same way) stay valid.

    Raises:
        DetectError: an unknown method or a parameter the method cannot use.
    """
    check_method(method)
    if method == "rpn":  # recomputed below from the file, whatever was recorded
        given = {key: value for key, value in given.items() if key != "weights_sha256"}
    unknown = sorted(
        set(given) - set(_DEFAULTS[method]) - ({"upscale"} if method == "ss" else set())
    )
    if unknown:
        raise DetectError(f"proposals method {method}: unknown parameter(s) {unknown}")
    params = {key: _plain(key, value) for key, value in {**_DEFAULTS[method], **given}.items()}
    if method == "ss" and params.get("upscale", 1.0) == 1.0:
        params.pop("upscale", None)
    _check(method, params)
    if method == "rpn":  # the weights' content is part of the key: never boxes of other weights
        from detect.proposals.learned import weights_sha256

        params["weights_sha256"] = weights_sha256(params["weights"])
    return params


def _check(method: str, params: dict[str, Any]) -> None:
    if method == "ss":
        from detect.proposals.search import check_search_params

        check_search_params(**params)
    elif method == "ss-multi":
        from detect.proposals.multi import check_multi_params

        check_multi_params(**params)
    elif method == "rpn":
        from detect.proposals.learned import check_rpn_params

        check_rpn_params(**params)
    else:
        from detect.proposals.dense import check_dense_params

        check_dense_params(**params)


def config_params(cfg: ProposalConfig) -> dict[str, Any]:
    """The parameters of ``cfg.method`` from the ``proposals`` config section."""
    check_method(cfg.method)
    if cfg.method == "ss":
        keys = {"mode": cfg.mode, "resize_long_side": cfg.resize_long_side, "upscale": cfg.upscale}
    elif cfg.method == "ss-multi":
        keys = {
            "color_spaces": cfg.multi_color_spaces,
            "ks": cfg.multi_ks,
            "min_region": cfg.multi_min_region,
            "dedup_iou": cfg.multi_dedup_iou,
            "resize_long_side": cfg.resize_long_side,
            "upscale": cfg.upscale,
        }
    elif cfg.method == "rpn":
        keys = {"weights": cfg.rpn_weights, "pre_nms": cfg.rpn_pre_nms, "nms_iou": cfg.rpn_nms_iou}
    else:
        if not cfg.dense_shapes:
            raise DetectError(
                "proposals.dense_shapes is empty: fit them to training boxes (detect proposals "
                "--method dense on an annotated --data, or detect train) or list (width, height) pairs"
            )
        keys = {
            "shapes": cfg.dense_shapes,
            "stride": cfg.dense_stride,
            "ring": cfg.dense_ring,
            "nms_iou": cfg.dense_nms_iou,
        }
    if cfg.method != "dense":
        keys["min_size"] = cfg.min_size
    return method_params(cfg.method, {**keys, "max_proposals": cfg.max_proposals})


def propose(image: np.ndarray, method: str, params: dict[str, Any]) -> np.ndarray:
    """Proposals of ``image`` ``(H, W, 3)`` uint8 RGB by ``method`` with ``params``
    (:func:`method_params`): ``(R, 4)`` float32 xyxy, original pixels, in ranking order."""
    check_method(method)
    if method == "ss":
        from detect.proposals.search import search_boxes

        return search_boxes(image, **params)
    if method == "ss-multi":
        from detect.proposals.multi import multi_search_boxes

        return multi_search_boxes(image, **params)
    if method == "rpn":
        from detect.proposals.learned import rpn_boxes

        return rpn_boxes(image, **params)
    from detect.proposals.dense import dense_boxes

    return dense_boxes(image, **params)
