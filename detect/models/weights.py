"""Backbone weights: random init, torchvision's ImageNet weights from its cache, or a file.

Nothing is downloaded: ``weights: imagenet`` reads the file torchvision would have cached
(``$TORCH_HOME/hub/checkpoints/<name>.pth``, default ``~/.cache/torch/hub/checkpoints``) and a
missing file is an error saying exactly which file to put where.
"""

from __future__ import annotations

from pathlib import Path

import torch

from detect.errors import DetectError
from detect.files import load_torch_file
from detect.models.backbones import Backbone, build_backbone

# torchvision's ImageNet checkpoints for the backbones that have one (same ``features.*`` keys).
TORCHVISION_FILES = {
    "alexnet": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
}


def torchvision_cache_file(backbone: str) -> Path:
    """Where torchvision caches the ImageNet weights of ``backbone``."""
    if backbone not in TORCHVISION_FILES:
        raise DetectError(
            f"model.weights: torchvision has no ImageNet weights for backbone {backbone!r} "
            f"(only {sorted(TORCHVISION_FILES)}); use weights: none or a state dict path"
        )
    name = TORCHVISION_FILES[backbone].rsplit("/", 1)[1]
    return Path(torch.hub.get_dir()) / "checkpoints" / name


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
    if weights == "imagenet":
        path = torchvision_cache_file(name)
        if not path.is_file():
            raise DetectError(
                f"model.weights: imagenet weights for {name} not found; no download is attempted. "
                f"Place {TORCHVISION_FILES[name]} at {path}"
            )
    else:
        path = Path(weights).expanduser()
    load_state_dict_file(backbone, path)
    return backbone
