"""Training the region proposal network (:mod:`detect.models.rpn`) on a data set's boxes: the
stage ``detect train`` runs before the detection head when ``proposals.method`` is ``rpn``.

One image per iteration (shuffled, horizontally flipped at random), SGD with momentum 0.9 and
weight decay 5e-4, the learning rate divided by 10 after three quarters of the iterations (Faster
R-CNN's schedule), in float32 on ``runtime.device``. Backbone and head are trained together.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from detect.config import Config, ProposalConfig, check_values
from detect.data.images import DEFAULT_MAX_IMAGE_PIXELS, read_image
from detect.files import atomic_torch_save
from detect.models.backbones import Backbone
from detect.models.rpn import (
    HeadLayout,
    RegionProposalNetwork,
    SharedRPN,
    assign_targets,
    map_outputs,
    rpn_loss,
    sample_anchors,
)
from detect.ops.boxes import hflip_boxes
from detect.proposals.dense import fit_window_shapes
from detect.proposals.learned import shared_settings
from detect.runtime import resolve_device
from detect.structures import DetectionDataset
from detect.training.feature_cache import ConvMapCache

log = logging.getLogger(__name__)

RPN_WEIGHTS_NAME = "rpn.pt"


def training_boxes(dataset: DetectionDataset) -> list[torch.Tensor]:
    """The non-difficult boxes ``(G_i, 4)`` xyxy original pixels of every image."""
    return [
        torch.as_tensor(a.boxes, dtype=torch.float32)[
            ~torch.as_tensor(a.difficult, dtype=torch.bool)
        ]
        for a in dataset.annotations
    ]


def head_layout(cfg: ProposalConfig) -> HeadLayout:
    """The :class:`HeadLayout` of a new RPN head: ``proposals.rpn_centres_per_cell``,
    ``rpn_head_width`` and ``rpn_head_depth``, checked."""
    check_values(
        "proposals.",
        [
            (
                cfg.rpn_centres_per_cell >= 1,
                "rpn_centres_per_cell",
                cfg.rpn_centres_per_cell,
                ">= 1",
            ),
            (cfg.rpn_head_width >= 0, "rpn_head_width", cfg.rpn_head_width, ">= 0"),
            (cfg.rpn_head_depth >= 1, "rpn_head_depth", cfg.rpn_head_depth, ">= 1"),
        ],
    )
    return HeadLayout(cfg.rpn_centres_per_cell, cfg.rpn_head_width, cfg.rpn_head_depth)


def fit_anchor_shapes(config: Config, dataset: DetectionDataset) -> torch.Tensor:
    """``(A, 2)`` float32 anchor ``(w, h)`` shapes in original pixels: the k-means centres of
    ``dataset``'s box shapes, ``proposals.rpn_num_anchors`` of them."""
    cfg = config.proposals
    check_values(
        "proposals.",
        [(cfg.rpn_num_anchors >= 1, "rpn_num_anchors", cfg.rpn_num_anchors, ">= 1")],
    )
    boxes = torch.cat([torch.zeros((0, 4)), *training_boxes(dataset)]).numpy()
    shapes = fit_window_shapes(boxes[:, 2:] - boxes[:, :2], cfg.rpn_num_anchors, config.seed)
    return torch.from_numpy(shapes).float()


def build_rpn(config: Config, dataset: DetectionDataset) -> RegionProposalNetwork:
    """A fresh RPN on ``config.model.backbone`` (weights per ``model.weights``) with the anchor
    shapes of :func:`fit_anchor_shapes` and the head of :func:`head_layout`, resizing images as
    the detector does (``model.scales[0]``, ``model.max_size``)."""
    from detect.models.weights import load_backbone

    layout = head_layout(config.proposals)
    shapes = fit_anchor_shapes(config, dataset)
    backbone = load_backbone(config.model.backbone, config.model.weights)
    return RegionProposalNetwork(
        backbone, shapes, config.model.scales[0], config.model.max_size, layout
    )


def train_rpn(
    rpn: RegionProposalNetwork,
    dataset: DetectionDataset,
    iterations: int,
    lr: float,
    seed: int = 0,
    device: str = "cpu",
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    log_every: int = 50,
    freeze_backbone: bool = False,
    cache_mb: float = 0,
) -> list[float]:
    """Train ``rpn`` for ``iterations`` images of ``dataset`` (images without boxes included: all
    their anchors are negatives); with ``freeze_backbone`` only the head (its conv layers and
    buffers untouched: no gradients, BatchNorm statistics not updated), each image's conv map
    (per flip) then kept in RAM up to ``cache_mb`` (:class:`ConvMapCache`, least recently used
    dropped first; fp16-rounded, as fc-mode fine-tuning's) instead of computed at every visit.
    Returns the loss of every iteration; ``rpn`` ends on the CPU in eval mode."""
    check_values(
        "proposals.",
        [(iterations >= 1, "rpn_iterations", iterations, ">= 1"), (lr > 0, "rpn_lr", lr, "> 0")],
    )
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    rpn.to(resolve_device(device)).train()
    cache = None
    if freeze_backbone:
        rpn.backbone.requires_grad_(False).eval()
        # private to this call and its frozen backbone: any fingerprint names its maps
        cache = ConvMapCache(None, "frozen", cache_mb, rpn.device)
    params = [p for p in rpn.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [max(1, iterations * 3 // 4)])
    boxes = training_boxes(dataset)
    order: list[int] = []
    losses = []
    for iteration in range(iterations):
        if not order:
            order = rng.permutation(len(dataset)).tolist()
        index = order.pop()
        image = read_image(dataset.annotations[index].path, max_image_pixels)
        gt = boxes[index]
        flip = rng.random() < 0.5
        if flip:
            image = np.ascontiguousarray(image[:, ::-1])
            gt = hflip_boxes(gt, image.shape[1])
        tensor, scale = rpn.prepare(image)
        if cache is None:
            logits, deltas, anchors = rpn(tensor[None], scale)
        else:
            features = cache.get(str(index), flip, tensor.shape[-2], _frozen(rpn, tensor))
            logits, deltas, anchors = map_outputs(
                rpn.head, rpn.anchor_shapes, features, scale, rpn.backbone
            )
        labels, matched = assign_targets(anchors.cpu(), gt * scale)
        labels = sample_anchors(labels, generator).to(anchors.device)
        loss = rpn_loss(
            logits[0], deltas[0], anchors, gt * scale, labels, matched.to(anchors.device)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if (iteration + 1) % log_every == 0:
            log.info(
                "rpn iteration %d/%d: loss %.4f",
                iteration + 1,
                iterations,
                np.mean(losses[-log_every:]),
            )
    rpn.cpu().eval()
    return losses


def _frozen(rpn: RegionProposalNetwork, tensor: torch.Tensor):
    """``() -> (1, C, h, w)``: the frozen backbone's map of one prepared image, no gradients."""

    def compute() -> torch.Tensor:
        with torch.no_grad():
            return rpn.backbone(tensor[None])

    return compute


def save_rpn(rpn: RegionProposalNetwork, path: str | Path) -> Path:
    """Write ``rpn`` (:meth:`~detect.models.rpn.RegionProposalNetwork.payload`) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(rpn.payload(), path)
    return path


def with_rpn_weights(cfg: ProposalConfig, out_dir: str | Path) -> ProposalConfig:
    """``cfg`` with ``rpn_weights`` set to the run folder's ``rpn.pt`` (absolute) when the method
    is ``rpn`` and no weights file is given: the file :func:`ensure_rpn` trains into, recorded in
    the saved config so ``detect eval`` and ``detect run`` use the same network."""
    if cfg.method != "rpn" or cfg.rpn_weights:
        return cfg
    return dataclasses.replace(cfg, rpn_weights=str(Path(out_dir).resolve() / RPN_WEIGHTS_NAME))


def ensure_rpn(
    config: Config, dataset: DetectionDataset, out_dir: str | Path, resume: bool
) -> RegionProposalNetwork:
    """The RPN of ``config.proposals.rpn_weights`` (see :func:`with_rpn_weights`): trained on
    ``dataset`` for ``proposals.rpn_iterations`` and saved there when it is the run folder's
    ``rpn.pt`` (unless resuming a run that already saved it); a file given by the user is only
    read. Under torchrun rank 0 trains, the other ranks wait and read the file."""
    from detect.distributed import barrier, is_main
    from detect.models.rpn import load_rpn

    cfg = config.proposals
    path = Path(cfg.rpn_weights)
    trained_here = path == Path(out_dir).resolve() / RPN_WEIGHTS_NAME
    if trained_here and not (resume and path.is_file()):
        if is_main():
            log.info("training the RPN for %d iterations", cfg.rpn_iterations)
            torch.manual_seed(config.seed)
            rpn = build_rpn(config, dataset)
            _train_as_configured(rpn, dataset, config, cfg.rpn_iterations)
            save_rpn(rpn, path)
        barrier()
    return load_rpn(path)


def _train_as_configured(
    rpn: RegionProposalNetwork,
    dataset: DetectionDataset,
    config: Config,
    iterations: int,
    freeze_backbone: bool = False,
) -> None:
    """:func:`train_rpn` for ``iterations`` at ``proposals.rpn_lr``, the run's seed, device and
    image-size limit (a frozen backbone's maps cached in ``finetune.feature_cache_mb`` of RAM)."""
    cfg = config.proposals
    train_rpn(
        rpn,
        dataset,
        iterations,
        cfg.rpn_lr,
        config.seed,
        config.runtime.device,
        config.data.max_image_pixels,
        freeze_backbone=freeze_backbone,
        cache_mb=config.finetune.feature_cache_mb,
    )


def refit_shared_head(
    config: Config,
    dataset: DetectionDataset,
    backbone: Backbone,
    rpn: RegionProposalNetwork | None = None,
) -> SharedRPN:
    """Faster R-CNN's 4-step training, step 3: an RPN head fitted on the detector's final conv
    layers ``backbone``, kept frozen (a copy is trained through; ``backbone`` itself is not
    touched), with ``rpn``'s anchors and head layout (the step-1 RPN; without one,
    :func:`fit_anchor_shapes` and :func:`head_layout`), starting from its head when it fits (the
    same backbone), else from a fresh one; ``proposals.rpn_refit_iterations`` images (0: as many
    as step 1, ``rpn_iterations``) at ``proposals.rpn_lr``, the detector's first scale.
    Returns the head with the test-time settings of ``config.proposals`` (``rpn_post_nms``
    proposals kept), on the CPU."""
    fits = rpn is not None and rpn.backbone.name == backbone.name
    if rpn is None:
        layout = head_layout(config.proposals)
        shapes = fit_anchor_shapes(config, dataset)
    else:
        shapes, layout = rpn.anchor_shapes, rpn.head.layout
    frozen = copy.deepcopy(backbone)  # train_rpn moves it to runtime.device
    network = RegionProposalNetwork(
        frozen, shapes, config.model.scales[0], config.model.max_size, layout
    )
    if fits:
        network.head.load_state_dict(rpn.head.state_dict())
    iterations = config.proposals.rpn_refit_iterations or config.proposals.rpn_iterations
    _train_as_configured(network, dataset, config, iterations, freeze_backbone=True)
    shared = SharedRPN(backbone, shapes, **shared_settings(config.proposals), layout=layout)
    shared.head.load_state_dict(network.head.state_dict())
    return shared
