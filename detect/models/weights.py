"""Backbone weights: random init, torchvision's ImageNet weights, or a file.

``weights: imagenet`` takes the URL from torchvision's weights API
(``AlexNet_Weights.IMAGENET1K_V1``, ``VGG16_Weights.IMAGENET1K_V1``) and reads the file where
torchvision caches it, ``torch.hub.get_dir()/checkpoints/<name>.pth`` (``$TORCH_HOME/hub/...``,
default ``~/.cache/torch/hub/checkpoints``). A missing file is downloaded there by torch.hub's
downloader, as torchvision does: a progress bar on stderr, the SHA-256 prefix in the file name
checked, the bytes written to a ``.partial`` file that is moved in place only when complete (a
failed download leaves nothing). Offline, a one-line error names the file to place and the URL.
"""

from __future__ import annotations

import http.client
import logging
from pathlib import Path

import torch
import torchvision

from detect.errors import DetectError
from detect.files import load_torch_file
from detect.models.backbones import Backbone, build_backbone

log = logging.getLogger(__name__)

# torchvision's ImageNet weights for the backbones that have them (same ``features.*`` keys).
IMAGENET_WEIGHTS = {
    "alexnet": torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
    "vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1,
}


def torchvision_cache_file(backbone: str) -> Path:
    """Where torchvision caches the ImageNet weights of ``backbone``."""
    if backbone not in IMAGENET_WEIGHTS:
        raise DetectError(
            f"model.weights: torchvision has no ImageNet weights for backbone {backbone!r} "
            f"(only {sorted(IMAGENET_WEIGHTS)} have them); use weights: none or a state dict path"
        )
    name = IMAGENET_WEIGHTS[backbone].url.rsplit("/", 1)[1]
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def download_imagenet_weights(backbone: str) -> Path:
    """The cached ImageNet weights file of ``backbone``, downloaded first when missing."""
    path = torchvision_cache_file(backbone)
    if path.is_file():
        return path
    url = IMAGENET_WEIGHTS[backbone].url
    log.info("downloading the ImageNet weights of %s: %s to %s", backbone, url, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        hash_prefix = torch.hub.HASH_REGEX.search(path.name).group(1)
        torch.hub.download_url_to_file(url, str(path), hash_prefix, progress=True)
    except (OSError, http.client.HTTPException, RuntimeError) as exc:
        # OSError covers URLError, socket errors and timeouts; RuntimeError is a hash mismatch.
        lines = str(exc).strip().splitlines()
        raise DetectError(
            f"model.weights: cannot download the ImageNet weights of {backbone} "
            f"({type(exc).__name__}: {lines[0] if lines else 'no details'}); "
            f"fetch {url} by hand and place it at {path}"
        ) from exc
    return path


def load_state_dict_file(backbone: Backbone, path: Path) -> None:
    """Load a backbone state dict (or a torchvision model's; its ``features.*`` keys are used).

    A detector checkpoint's ``backbone.features.*`` keys are accepted too.
    """
    state = load_torch_file(path, "model.weights")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise DetectError(f"model.weights: {path} does not hold a state dict")
    for prefix in ("backbone.", ""):
        selected = {
            key[len(prefix) :]: value
            for key, value in state.items()
            if key.startswith(prefix + "features.")
        }
        if selected:
            break
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(selected))
    unexpected = sorted(set(selected) - set(expected))
    shapes = [
        f"{key}: file {tuple(selected[key].shape)} vs {backbone.name} {tuple(value.shape)}"
        for key, value in expected.items()
        if key in selected and tuple(selected[key].shape) != tuple(value.shape)
    ]
    if missing or unexpected or shapes:
        raise DetectError(
            f"model.weights: {path} does not fit backbone {backbone.name!r}: "
            f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
            f"shape mismatches {shapes[:5]}"
        )
    backbone.load_state_dict(selected)


def load_backbone(name: str, weights: str = "none") -> Backbone:
    """``name`` backbone with ``weights``: ``none`` (random), ``imagenet`` or a file path."""
    backbone = build_backbone(name)
    if weights in ("", "none"):
        return backbone
    path = download_imagenet_weights(name) if weights == "imagenet" else Path(weights).expanduser()
    load_state_dict_file(backbone, path)
    return backbone
