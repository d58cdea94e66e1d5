"""A region proposal network (Faster R-CNN's RPN, kept small) on a backbone's conv map.

At every feature cell centre (the backbone's declared geometry: cell ``(i, j)`` is centred at
``(offset + S * j, offset + S * i)`` prepared-image pixels, docs/method.md §3) sit ``A`` anchors,
the ``(w, h)`` shapes fitted to the training boxes by k-means
(:func:`detect.proposals.dense.fit_window_shapes`); with ``centres_per_cell`` ``k > 1`` each cell
holds a ``k x k`` grid of centres instead, ``S / k`` apart and symmetric about the cell centre
(:func:`cell_centre_offsets`), each with the ``A`` shapes: anchors every ``S / k`` pixels, so small
objects (a few strides wide) have an anchor off by at most ``S / (2k)`` rather than ``S / 2``.
:class:`RPNHead` (its :class:`HeadLayout`: centres per cell, width and depth of its 3x3 convs)
predicts per anchor an objectness logit and box deltas
(:func:`detect.ops.boxes.encode_deltas`); at test time the best ``pre_nms`` anchors are decoded,
clipped, stripped of tiny boxes and thinned by NMS (:func:`map_outputs`, then
:func:`decode_proposals`: the one path from a conv map to proposals).
:class:`RegionProposalNetwork` runs its own backbone; :class:`SharedRPN` is a head fitted on a
detector's conv layers that proposes from the map the detector computes anyway (Faster R-CNN's
shared conv, docs/method.md §5).

Training targets (:func:`assign_targets`, :func:`sample_anchors`, :func:`rpn_loss`): an anchor
is positive at IoU >= 0.7 with a ground-truth box or when it is a box's best anchor, negative
below 0.3, ignored otherwise; 256 anchors per image, at most half positive; binary cross-entropy
on objectness plus smooth-L1 on the positives' deltas. Anchors crossing the image border are kept
(as torchvision does), so objects at the border have anchors.

Boxes are ``(N, 4)`` float xyxy, 0-based continuous pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

from detect.errors import DetectError
from detect.models.backbones import Backbone, build_backbone
from detect.models.inputs import normalised_tensor, resize_by
from detect.models.scales import resize_scale
from detect.ops.boxes import box_iou, clip_boxes, decode_deltas, encode_deltas

RPN_FORMAT = "detect-rpn-v1"
POSITIVE_IOU = 0.7
NEGATIVE_IOU = 0.3
ANCHORS_PER_IMAGE = 256
POSITIVE_FRACTION = 0.5
SMOOTH_L1_BETA = 1.0 / 9.0  # Faster R-CNN's sigma 3


def cell_centre_offsets(stride: float, centres_per_cell: int) -> Tensor:
    """``(k,)`` offsets from a cell's centre of the ``k = centres_per_cell`` anchor centres along
    one axis: ``stride * ((t + 0.5) / k - 0.5)``, ``t = 0 .. k-1`` (``[0]`` for ``k = 1``;
    ``[-S/4, S/4]`` for ``k = 2``)."""
    steps = torch.arange(centres_per_cell, dtype=torch.float32)
    return stride * ((steps + 0.5) / centres_per_cell - 0.5)


def grid_anchors(
    shapes: Tensor,
    map_size: tuple[int, int],
    stride: float,
    offset: float,
    centres_per_cell: int = 1,
) -> Tensor:
    """``(h * w * k * k * A, 4)`` xyxy anchors: every ``(w, h)`` of ``shapes`` ``(A, 2)`` centred
    at every centre of an ``map_size = (h, w)`` map, cell ``(i, j)`` centred at ``(offset + stride
    * j, offset + stride * i)`` and holding ``k x k`` centres (``k = centres_per_cell``, offsets
    :func:`cell_centre_offsets` in y and x); ordered by row, column, centre's row, centre's
    column, then shape (the order of :class:`RPNHead`'s outputs)."""
    rows, cols = map_size
    sub = cell_centre_offsets(stride, centres_per_cell)
    ys = (offset + stride * torch.arange(rows, dtype=torch.float32))[:, None] + sub
    xs = (offset + stride * torch.arange(cols, dtype=torch.float32))[:, None] + sub
    cy = ys[:, None, :, None].expand(rows, cols, centres_per_cell, centres_per_cell)
    cx = xs[None, :, None, :].expand(rows, cols, centres_per_cell, centres_per_cell)
    centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2)
    half = shapes.to(torch.float32).reshape(1, -1, 2) / 2
    return torch.cat([centres - half, centres + half], dim=-1).reshape(-1, 4)


def map_outputs(
    head: RPNHead, anchor_shapes: Tensor, features: Tensor, scale: float, backbone: Backbone
) -> tuple[Tensor, Tensor, Tensor]:
    """``head`` on a conv map ``features`` ``(N, C, h, w)`` that ``backbone`` (its geometry:
    stride and cell offset) computed on images resized by ``scale``: ``(logits (N, M), deltas
    (N, M, 4), anchors (M, 4))``, the anchors (``anchor_shapes`` ``(A, 2)`` original-image
    ``(w, h)`` times ``scale``, at ``head.centres_per_cell`` squared centres of every cell) in
    prepared-image pixels. The one place a conv map becomes anchor outputs: training, the RPN on
    its own backbone and on the detector's (:class:`SharedRPN`) all go through it."""
    logits, deltas = head(features)
    anchors = grid_anchors(
        anchor_shapes.cpu() * scale,
        tuple(features.shape[-2:]),
        backbone.stride,
        backbone.offsets[0],
        head.centres_per_cell,
    ).to(features.device)
    return logits, deltas, anchors


def decode_proposals(
    logits: Tensor,
    deltas: Tensor,
    anchors: Tensor,
    scale: float,
    image_size: tuple[int, int],
    pre_nms: int = 6000,
    nms_iou: float = 0.7,
    min_size: float = 16.0,
    max_proposals: int = 2000,
) -> Tensor:
    """One image's proposals from its anchor outputs (``logits`` ``(M,)``, ``deltas`` ``(M, 4)``,
    ``anchors`` ``(M, 4)`` in pixels of the image resized by ``scale``): the ``pre_nms``
    best-scoring anchors (0 = all) decoded, mapped to the original ``image_size = (H, W)``,
    clipped to it, those with a side under ``min_size`` original pixels dropped, NMS at
    ``nms_iou``, at most ``max_proposals`` kept (0 = all). Returns ``(R, 4)`` float32 xyxy
    original pixels by decreasing objectness, on the outputs' device."""
    scores, deltas = logits.float(), deltas.float()
    if pre_nms > 0 and scores.numel() > pre_nms:
        top = scores.topk(pre_nms).indices
        scores, deltas, anchors = scores[top], deltas[top], anchors[top]
    boxes = clip_boxes(decode_deltas(anchors, deltas) / scale, *image_size)
    sides = torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    big = sides >= min_size
    boxes, scores = boxes[big], scores[big]
    keep = torchvision.ops.nms(boxes, scores, nms_iou)
    if max_proposals > 0:
        keep = keep[:max_proposals]
    return boxes[keep].to(torch.float32)


@dataclass(frozen=True)
class HeadLayout:
    """How an :class:`RPNHead` is built: ``centres_per_cell`` ``k`` (a ``k x k`` grid of anchor
    centres per conv cell), ``depth`` 3x3 convs of ``width`` channels (0 = the backbone's, Faster
    R-CNN's one conv of 256 on ZF / 512 on VGG16). Kept in RPN payloads (:meth:`payload`,
    :meth:`from_payload`)."""

    centres_per_cell: int = 1
    width: int = 0
    depth: int = 1

    def payload(self) -> dict:
        return {
            "centres_per_cell": self.centres_per_cell,
            "head_width": self.width,
            "head_depth": self.depth,
        }

    @classmethod
    def from_payload(cls, payload: dict, where: str) -> HeadLayout:
        """The layout a payload records; keys it lacks (payloads written before they existed)
        take the defaults (one centre, one conv as wide as the backbone); a value that is not an
        int (>= 1; width >= 0) is a :class:`DetectError` naming ``where``."""
        values = {}
        for key, name, least in (
            ("centres_per_cell", "centres_per_cell", 1),
            ("head_width", "width", 0),
            ("head_depth", "depth", 1),
        ):
            value = payload.get(key, getattr(cls, name))
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise DetectError(f"{where}: {key} is {value!r}, not an integer >= {least}")
            values[name] = value
        return cls(**values)


class RPNHead(nn.Module):
    """``layout.depth`` 3x3 convs + ReLU of ``layout.width`` channels (0: ``channels``), then a
    1x1 conv to ``K = k * k * A`` objectness logits per cell and one to ``4K`` deltas (``A =
    num_anchors`` shapes at ``k = layout.centres_per_cell`` squared centres).

    ``forward(features (N, channels, h, w)) -> (logits (N, h * w * K), deltas (N, h * w * K,
    4))``, in :func:`grid_anchors`' order."""

    def __init__(self, channels: int, num_anchors: int, layout: HeadLayout = HeadLayout()) -> None:
        super().__init__()
        self.layout = layout
        per_cell = num_anchors * layout.centres_per_cell**2
        width = layout.width or channels
        self.conv = nn.Conv2d(channels, width, 3, padding=1)
        self.deeper = nn.ModuleList(
            nn.Conv2d(width, width, 3, padding=1) for _ in range(layout.depth - 1)
        )
        self.objectness = nn.Conv2d(width, per_cell, 1)
        self.deltas = nn.Conv2d(width, 4 * per_cell, 1)
        for layer in (self.conv, *self.deeper, self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    @property
    def centres_per_cell(self) -> int:
        return self.layout.centres_per_cell

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        hidden = torch.relu(self.conv(features))
        for conv in self.deeper:
            hidden = torch.relu(conv(hidden))
        count = features.shape[0]
        logits = self.objectness(hidden).permute(0, 2, 3, 1).reshape(count, -1)
        deltas = self.deltas(hidden).permute(0, 2, 3, 1).reshape(count, -1, 4)
        return logits, deltas


def assign_targets(
    anchors: Tensor,
    gt_boxes: Tensor,
    positive_iou: float = POSITIVE_IOU,
    negative_iou: float = NEGATIVE_IOU,
) -> tuple[Tensor, Tensor]:
    """``(labels (M,) int64, matched (M,) int64)`` for ``anchors`` ``(M, 4)`` and ``gt_boxes``
    ``(G, 4)``: label 1 (IoU >= ``positive_iou`` with some box, or the best anchor of some box:
    every anchor tying for a box's largest IoU > 0), 0 (best IoU < ``negative_iou``), -1 ignored;
    ``matched`` is the box each anchor regresses to (its best box; for a box's best anchor, that
    box)."""
    labels = torch.full((anchors.shape[0],), -1, dtype=torch.int64)
    if gt_boxes.shape[0] == 0:
        return labels.zero_(), torch.zeros_like(labels)
    iou = box_iou(anchors, gt_boxes.to(anchors))
    best_iou, matched = iou.max(dim=1)
    labels[best_iou < negative_iou] = 0
    labels[best_iou >= positive_iou] = 1
    box_best = iou.max(dim=0).values
    rows, cols = torch.nonzero((iou == box_best[None]) & (box_best[None] > 0), as_tuple=True)
    labels[rows] = 1
    matched[rows] = cols
    return labels, matched


def sample_anchors(
    labels: Tensor,
    generator: torch.Generator,
    batch: int = ANCHORS_PER_IMAGE,
    positive_fraction: float = POSITIVE_FRACTION,
) -> Tensor:
    """``labels`` ``(M,)`` with all but ``batch`` anchors set to -1: at most ``positive_fraction
    * batch`` random positives, negatives filling the rest."""
    sampled = torch.full_like(labels, -1)
    positives = torch.nonzero(labels == 1).flatten()
    negatives = torch.nonzero(labels == 0).flatten()
    take = min(positives.numel(), int(batch * positive_fraction))
    positives = positives[torch.randperm(positives.numel(), generator=generator)[:take]]
    take = min(negatives.numel(), batch - take)
    negatives = negatives[torch.randperm(negatives.numel(), generator=generator)[:take]]
    sampled[positives] = 1
    sampled[negatives] = 0
    return sampled


def rpn_loss(
    logits: Tensor,
    deltas: Tensor,
    anchors: Tensor,
    gt_boxes: Tensor,
    labels: Tensor,
    matched: Tensor,
) -> Tensor:
    """Binary cross-entropy of ``logits`` ``(M,)`` on the sampled anchors (``labels`` ``(M,)``
    0/1, -1 not sampled) plus the smooth-L1 loss of the positives' ``deltas`` ``(M, 4)`` against
    :func:`encode_deltas` of their ``matched`` boxes, summed over the positives and divided by
    the number of sampled anchors (Faster R-CNN)."""
    sampled = labels >= 0
    count = max(int(sampled.sum()), 1)
    objectness = nn.functional.binary_cross_entropy_with_logits(
        logits[sampled], labels[sampled].to(logits.dtype), reduction="sum"
    )
    positive = labels == 1
    if not positive.any():
        return objectness / count
    targets = encode_deltas(anchors[positive], gt_boxes.to(anchors)[matched[positive]])
    box = nn.functional.smooth_l1_loss(
        deltas[positive], targets, beta=SMOOTH_L1_BETA, reduction="sum"
    )
    return (objectness + box) / count


class RegionProposalNetwork(nn.Module):
    """A backbone and an :class:`RPNHead` of ``layout`` with ``anchor_shapes`` ``(A, 2)`` ``(w,
    h)`` in original-image pixels; images resized as the detector resizes them (shorter side
    ``short_side``, longer side at most ``max_size``)."""

    def __init__(
        self,
        backbone: Backbone,
        anchor_shapes: Tensor,
        short_side: int,
        max_size: int,
        layout: HeadLayout = HeadLayout(),
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = RPNHead(backbone.out_channels, int(anchor_shapes.shape[0]), layout)
        self.register_buffer("anchor_shapes", torch.as_tensor(anchor_shapes, dtype=torch.float32))
        self.short_side, self.max_size = int(short_side), int(max_size)

    @property
    def device(self) -> torch.device:
        return self.anchor_shapes.device

    def prepare(self, image: np.ndarray) -> tuple[Tensor, float]:
        """``(H, W, 3)`` uint8 RGB -> ``((3, H', W') normalised float, scale)``."""
        height, width = image.shape[:2]
        scale = resize_scale(height, width, self.short_side, self.max_size)
        resized = resize_by(image, scale)
        return normalised_tensor(resized, self.backbone.mean, self.backbone.std).to(
            self.device
        ), scale

    def forward(self, images: Tensor, scale: float) -> tuple[Tensor, Tensor, Tensor]:
        """``images`` ``(N, 3, H', W')`` prepared at ``scale`` -> ``(logits (N, M), deltas (N, M,
        4), anchors (M, 4))``, anchors in prepared-image pixels."""
        features = self.backbone(images)
        return map_outputs(self.head, self.anchor_shapes, features, scale, self.backbone)

    @torch.no_grad()
    def propose(
        self,
        image: np.ndarray,
        pre_nms: int = 6000,
        nms_iou: float = 0.7,
        min_size: float = 16.0,
        max_proposals: int = 2000,
    ) -> np.ndarray:
        """Proposals of ``image`` ``(H, W, 3)`` uint8 RGB (:func:`decode_proposals` of the
        network's outputs with these settings): ``(R, 4)`` float32 xyxy original pixels by
        decreasing objectness (eval mode for the call)."""
        was_training = self.training
        self.eval()
        try:
            tensor, scale = self.prepare(image)
            logits, deltas, anchors = self(tensor[None], scale)
        finally:
            self.train(was_training)
        boxes = decode_proposals(
            logits[0],
            deltas[0],
            anchors,
            scale,
            image.shape[:2],
            pre_nms,
            nms_iou,
            min_size,
            max_proposals,
        )
        return boxes.cpu().numpy()

    def payload(self) -> dict:
        """What :func:`load_rpn` reads back: format, backbone name, anchor shapes, the head's
        layout, sizes and weights (on the CPU, float32)."""
        return {
            "format": RPN_FORMAT,
            "backbone": self.backbone.name,
            "anchor_shapes": self.anchor_shapes.cpu().tolist(),
            **self.head.layout.payload(),
            "short_side": self.short_side,
            "max_size": self.max_size,
            "state": {key: value.detach().cpu() for key, value in self.state_dict().items()},
        }


SHARED_FORMAT = "detect-rpn-shared-v1"
SHARED_KEY = "rpn_shared"  # the checkpoint entry holding it (SharedRPN.payload)


class SharedRPN(nn.Module):
    """An :class:`RPNHead` fitted on a detector's own, frozen conv layers (Faster R-CNN's 4-step
    training, step 3; :func:`detect.training.rpn.refit_shared_head`), so at test time it proposes
    from the conv map the detector computes for SPP pooling anyway: one backbone pass per image.

    ``forward(features (1, C, h, w), scale, image_size (H, W)) -> (R, 4)`` float32 xyxy original
    pixels by decreasing objectness: :func:`decode_proposals` with the settings given here. The
    backbone is not a submodule (the detector owns it); ``geometry`` is that backbone, read for
    its stride and cell offset only."""

    def __init__(
        self,
        geometry: Backbone,
        anchor_shapes: Tensor,
        pre_nms: int = 6000,
        nms_iou: float = 0.7,
        min_size: float = 16.0,
        max_proposals: int = 300,
        layout: HeadLayout = HeadLayout(),
    ) -> None:
        super().__init__()
        self.head = RPNHead(geometry.out_channels, int(anchor_shapes.shape[0]), layout)
        self.register_buffer("anchor_shapes", torch.as_tensor(anchor_shapes, dtype=torch.float32))
        self.__dict__["geometry"] = geometry  # not registered: the detector's module
        self.pre_nms, self.nms_iou = int(pre_nms), float(nms_iou)
        self.min_size, self.max_proposals = float(min_size), int(max_proposals)

    def forward(self, features: Tensor, scale: float, image_size: tuple[int, int]) -> Tensor:
        logits, deltas, anchors = map_outputs(
            self.head, self.anchor_shapes, features, scale, self.geometry
        )
        return decode_proposals(
            logits[0],
            deltas[0],
            anchors,
            scale,
            image_size,
            self.pre_nms,
            self.nms_iou,
            self.min_size,
            self.max_proposals,
        )

    def payload(self) -> dict:
        """What a checkpoint keeps under ``rpn_shared``: format, anchor shapes, the head's layout
        and weights (on the CPU, float32); :meth:`from_payload` reads it back."""
        return {
            "format": SHARED_FORMAT,
            "anchor_shapes": self.anchor_shapes.cpu().tolist(),
            **self.head.layout.payload(),
            "state": {key: value.detach().cpu() for key, value in self.head.state_dict().items()},
        }

    @classmethod
    def from_payload(cls, payload: dict, geometry: Backbone, where: str, **settings) -> SharedRPN:
        """The head saved by :meth:`payload` on ``geometry`` (the detector's backbone), with the
        test-time ``settings`` of ``__init__`` and the layout it records
        (:meth:`HeadLayout.from_payload`); a foreign payload is a :class:`DetectError` naming
        ``where``."""
        from detect.checkpoints import load_weights

        if not isinstance(payload, dict) or payload.get("format") != SHARED_FORMAT:
            raise DetectError(f"{where}: {SHARED_KEY!r} is not a {SHARED_FORMAT} entry")
        shapes = torch.tensor(payload["anchor_shapes"], dtype=torch.float32)
        shared = cls(geometry, shapes, **settings, layout=HeadLayout.from_payload(payload, where))
        load_weights(shared.head, payload["state"], where)
        return shared


def load_rpn(path: str | Path) -> RegionProposalNetwork:
    """The :class:`RegionProposalNetwork` saved in ``path``, on the CPU in eval mode: an RPN
    weights file (:meth:`RegionProposalNetwork.payload`, ``RUN/rpn.pt``), or a detector
    checkpoint holding a shared head (``rpn_shared``), which becomes the detector's backbone
    with that head: the proposals the checkpoint's shared path computes, as a standalone
    network (``detect proposals --rpn-weights RUN/checkpoint.pt``)."""
    from detect.checkpoints import CHECKPOINT_FORMAT, load_weights
    from detect.files import load_torch_file

    payload = load_torch_file(path, "RPN weights")
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        return _checkpoint_rpn(payload, path)
    if not isinstance(payload, dict) or payload.get("format") != RPN_FORMAT:
        raise DetectError(f"RPN weights {path}: not a {RPN_FORMAT} file (detect train writes one)")
    rpn = RegionProposalNetwork(
        build_backbone(payload["backbone"]),
        torch.tensor(payload["anchor_shapes"], dtype=torch.float32),
        payload["short_side"],
        payload["max_size"],
        HeadLayout.from_payload(payload, f"RPN weights {path}"),
    )
    load_weights(rpn, payload["state"], path)
    return rpn.eval()


def _checkpoint_rpn(payload: dict, path: str | Path) -> RegionProposalNetwork:
    """The RPN of a checkpoint's shared head on its detector's backbone (see :func:`load_rpn`)."""
    from detect.checkpoints import check_payload_keys, load_weights
    from detect.config import ModelConfig

    check_payload_keys(payload, path)
    if SHARED_KEY not in payload:
        raise DetectError(
            f"RPN weights {path}: a checkpoint without a shared RPN head (trained with "
            "proposals.method rpn and proposals.rpn_shared true writes one)"
        )
    model = payload["config"]["model"]
    backbone = build_backbone(model["backbone"])
    shared = SharedRPN.from_payload(payload[SHARED_KEY], backbone, f"checkpoint {path}")
    prefix = "backbone."
    state = {k[len(prefix) :]: v for k, v in payload["model"].items() if k.startswith(prefix)}
    load_weights(backbone, state, path)
    rpn = RegionProposalNetwork(
        backbone,
        shared.anchor_shapes,
        model["scales"][0],
        model.get("max_size", ModelConfig.max_size),
        shared.head.layout,
    )
    rpn.head.load_state_dict(shared.head.state_dict())
    return rpn.eval()
