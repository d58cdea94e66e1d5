"""Testing the image classifier: top-1 / top-5 error per test view, and predictions.

The views (:func:`detect.classify.data.eval_view`) are the columns of the paper's classification
tables: ``crop`` (the centre square resized to ``classify.test_size``), ``warp`` (the whole image
resized to ``test_size x test_size``) and ``full`` (the whole image at its own size, SPP only).
Full images are batched by size: images of one height and width go through the network together.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from detect.classify.data import TEST_VIEWS, Sample, eval_view, read_image_folder
from detect.classify.model import ImageClassifier, build_classifier
from detect.classify.train import read_classifier_checkpoint
from detect.config import Config, RuntimeConfig, config_from_dict
from detect.models.inputs import normalised_tensor
from detect.runtime import autocast, resolve_device


@dataclass
class LoadedClassifier:
    """A trained classifier ready to run (eval mode, on ``device``)."""

    model: ImageClassifier
    class_names: list[str]
    config: Config
    device: torch.device
    precision: str

    def views(self) -> tuple[str, ...]:
        """The test views this network can take (the fixed-size one has no ``full``)."""
        return ("crop", "warp") if self.model.fixed is not None else TEST_VIEWS

    def logits(self, images: Sequence[np.ndarray], view: str) -> torch.Tensor:
        """``(N, K)`` float32 logits of ``images`` (``(H, W, 3)`` uint8 RGB) seen as ``view``,
        run in batches of ``classify.batch_size`` images of one size."""
        c = self.config.classify
        tensors = [
            normalised_tensor(eval_view(image, view, c.test_size, c.crop_fraction), *self._stats())
            for image in images
        ]
        by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, tensor in enumerate(tensors):
            by_size[tuple(tensor.shape)].append(index)
        out = torch.empty(len(tensors), len(self.class_names))
        with torch.no_grad(), autocast(self.device, self.precision):
            for indices in by_size.values():
                for start in range(0, len(indices), c.batch_size):
                    chunk = indices[start : start + c.batch_size]
                    batch = torch.stack([tensors[i] for i in chunk]).to(self.device)
                    out[chunk] = self.model(batch).float().cpu()
        return out

    def _stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return self.model.backbone.mean, self.model.backbone.std


def load_classifier(
    path: str | Path, device: str | None = None, precision: str | None = None
) -> LoadedClassifier:
    """The classifier saved in ``path``, run on ``device`` in ``precision`` (default: the
    ``runtime`` section's defaults, auto and fp32: a checkpoint does not bring its own)."""
    payload = read_classifier_checkpoint(path)
    cfg = config_from_dict(payload["config"], f"classifier checkpoint {path}")
    model = build_classifier(cfg, len(payload["class_names"]), weights="none")
    model.load_state_dict(payload["model"])
    resolved = resolve_device(device or RuntimeConfig.device)
    model.to(resolved).eval()
    return LoadedClassifier(
        model, list(payload["class_names"]), cfg, resolved, precision or RuntimeConfig.precision
    )


def top_k_errors(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows whose label is not among the ``k`` highest logits."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return float((top != labels[:, None]).all(dim=1).float().mean())


def evaluate_classifier(
    loaded: LoadedClassifier,
    samples: list[Sample] | None = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """``{view: {"top1": error, "top5": error (only with more than 5 classes)}}`` over
    ``samples`` (default: the ImageFolder ``classify.root/classify.test_split`` of the
    checkpoint's config, with its class names)."""
    cfg = loaded.config
    if samples is None:
        _, samples = read_image_folder(
            cfg.classify.root, cfg.classify.test_split, loaded.class_names
        )
    images = [
        sample.load(cfg.data.max_image_pixels)
        for sample in tqdm(samples, desc="test images", disable=not progress)
    ]
    labels = torch.tensor([sample.label for sample in samples])
    errors = {}
    for view in loaded.views():
        logits = loaded.logits(images, view)
        errors[view] = {"top1": top_k_errors(logits, labels, 1)}
        if len(loaded.class_names) > 5:
            errors[view]["top5"] = top_k_errors(logits, labels, 5)
    return errors


def view_names(test_size: int) -> dict[str, str]:
    """How the views are named in tables."""
    return {
        "crop": f"centre crop {test_size}",
        "warp": f"warp to {test_size}",
        "full": "full image, own size",
    }


def format_errors(errors: dict[str, dict[str, float]], num_images: int, test_size: int) -> str:
    """The errors as a table: one row per view, top-1 (and top-5) error in percent."""
    top5 = any("top5" in e for e in errors.values())
    names = view_names(test_size)
    lines = [f"{'view':<24}{'top-1 err':>10}" + (f"{'top-5 err':>10}" if top5 else "")]
    for view, values in errors.items():
        line = f"{names[view]:<24}{100 * values['top1']:>9.1f}%"
        if top5:
            line += f"{100 * values['top5']:>9.1f}%"
        lines.append(line)
    lines.append(f"({num_images} test images)")
    return "\n".join(lines)
