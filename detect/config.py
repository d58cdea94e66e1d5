"""Experiment configuration: frozen dataclasses loaded from YAML.

Defaults are the paper's settings (docs/departures.md lists where the project differs); a YAML
file (or a config shipped in ``detect/configs/``, by name: :mod:`detect.shipped_configs`)
overrides any subset. An unknown or misspelt key is an error listing the
valid keys. The merged config is written next to every checkpoint and result (:func:`save_config`)
so a run can be reproduced.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from detect.errors import DetectError
from detect.files import read_text
from detect.shipped_configs import resolve_config_path


@dataclass(frozen=True)
class DataConfig:
    """Where the images and annotations are. ``root`` is a VOC-layout folder or a COCO json."""

    root: str = "data/demo"
    train_split: str = "trainval"
    test_split: str = "test"
    # Class names to use; empty = the 20 VOC classes (VOC) or the json's categories (COCO).
    classes: tuple[str, ...] = ()
    # COCO only: the folder holding the images named in the json (default: beside the json).
    image_dir: str = ""
    # False turns bad boxes (x2 < x1, outside the image) into a counted warning instead of an error.
    strict_boxes: bool = True
    # Refuse an image (or an annotation's stated size) of more pixels than this, read from the
    # file's header before decoding: a small file can claim a huge size and exhaust memory.
    max_image_pixels: int = 100_000_000


@dataclass(frozen=True)
class ProposalConfig:
    """Selective search proposals ("fast" mode, about 2,000 boxes per image, as the paper), or one
    of the methods for small, dense objects (docs/method.md §5)."""

    # ss: selective search (the paper) | ss-multi: its diversification ensemble | dense: sliding
    # windows ranked by objectness | rpn: a learned proposal network (detect.proposals.methods).
    method: str = "ss"
    mode: str = "fast"  # fast | quality
    resize_long_side: int = 500  # image resized so its longer side is this before the search
    min_size: float = 16.0  # drop boxes with a side below this (original image pixels)
    max_proposals: int = 2000
    cache_dir: str = "data/proposals"
    workers: int = 1
    # Read proposals from this file instead of computing them: Fast R-CNN's released VOC2007
    # selective-search .mat, or a per-image .npz / .json (detect.proposals.formats). Empty = compute.
    import_file: str = ""
    # ss, ss-multi: search the image enlarged by this factor (after resize_long_side); 1 = as is.
    upscale: float = 1.0
    # ss-multi: one hierarchy per colour space x graph-segmentation k (x the two fast strategies)
    # with initial regions of at least multi_min_region pixels (OpenCV's presets: 100); merged by
    # rank, a box overlapping a better-ranked one by IoU > multi_dedup_iou dropped.
    multi_color_spaces: tuple[str, ...] = ("hsv", "lab", "rgb")
    multi_ks: tuple[float, ...] = (100.0, 200.0)
    multi_min_region: int = 30
    multi_dedup_iou: float = 0.95
    # dense: window (width, height) shapes in pixels; empty = the k-means centres of the training
    # boxes' shapes (dense_num_shapes of them), fitted when proposals are computed.
    dense_shapes: tuple[tuple[float, ...], ...] = ()
    dense_num_shapes: int = 16
    dense_stride: float = 0.08  # window step, a fraction of the window's width / height
    dense_ring: float = 0.03  # objectness surround width, a fraction of the side (at least 1 px)
    dense_nms_iou: float = 0.65  # a window overlapping a better-ranked one by more is dropped
    # rpn: a region proposal network on the backbone's conv map (docs/method.md §5), trained by
    # detect train (before the detection head) into RUN/rpn.pt, or read from rpn_weights when set.
    rpn_weights: str = ""  # an RPN weights file; empty = the one detect train writes
    rpn_iterations: int = 2000  # training images (one per iteration)
    rpn_lr: float = 0.001  # Faster R-CNN's; divided by 10 after 3/4 of the iterations
    rpn_num_anchors: int = 9  # anchor shapes: k-means of the training boxes' (log w, log h)
    # Anchor centres per conv cell side: 1 = one at each cell centre (Faster R-CNN), k = a k x k
    # grid per cell (anchors every stride / k pixels) for objects a few strides wide.
    rpn_centres_per_cell: int = 1
    # The head's 3x3 convs: how many, and their channels (0 = the backbone's: Faster R-CNN's one
    # conv of 256 on ZF, 512 on VGG16). Small backbones (tiny: 64) gain from a wider, deeper head.
    rpn_head_width: int = 0
    rpn_head_depth: int = 1
    rpn_pre_nms: int = 6000  # best-scoring anchors decoded before NMS (0 = all)
    rpn_nms_iou: float = 0.7
    # After the detector is fine-tuned, an RPN head re-fitted on its final, frozen conv layers
    # (Faster R-CNN's 4-step training, step 3; rpn_refit_iterations at rpn_lr), kept in the
    # checkpoint: at test time each image's conv map is computed once, the RPN proposes from it
    # and SPP pools from it. false: the RPN of rpn_weights runs its own backbone (a second conv
    # pass per image).
    rpn_shared: bool = True
    rpn_refit_iterations: int = 0  # that re-fit's training images (0 = rpn_iterations)
    rpn_post_nms: int = 300  # shared path: kept after NMS (Faster R-CNN's; 0 = max_proposals)


@dataclass(frozen=True)
class ModelConfig:
    """Backbone, pyramid, scales and head (the paper's SPP layer, projection and scales)."""

    backbone: str = "zf5"  # zf5 | zf5_padded | zf5_padded_nolrn | alexnet | vgg16 | tiny
    weights: str = "none"  # none | imagenet | PATH to a state dict
    pyramid_levels: tuple[int, ...] = (1, 2, 3, 6)
    scales: tuple[int, ...] = (688,)  # shorter side; (480, 576, 688, 864, 1200) for 5 scales
    max_size: int = 2000  # cap on the longer side (the paper has none; bounds memory)
    # Projection of image boxes to feature cells: "auto" (Appendix A's formula around each
    # backbone's declared cell centres) or "paper" (the literal floor(x/S)+1, ceil(x/S)-1).
    projection: str = "auto"
    fc_dims: tuple[int, ...] = (4096, 4096)
    dropout: float = 0.5
    # Truncated SVD of fc6 / fc7 at test time (Fast R-CNN: 1024, 256); empty = off.
    svd_ranks: tuple[int, ...] = ()
    # R-CNN baseline: crop size (0 = the backbone's own: 224 ZF-5/VGG16, 227 AlexNet, 128 tiny)
    # and context padding in pixels.
    rcnn_crop_size: int = 0
    rcnn_context: int = 16
    region_batch: int = 4096  # regions per fc batch (bounds memory for huge proposal sets)
    rcnn_batch: int = 64  # R-CNN crops per conv batch at test time (bounds memory)


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning of fc layers (``fc``) or of conv + fc through the SPP layer (``end_to_end``)."""

    mode: str = "fc"  # fc | end_to_end
    iterations: int = 300_000
    lr: float = 1e-4
    lr_steps: tuple[int, ...] = (250_000,)  # lr multiplied by lr_gamma at each step
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    images_per_batch: int = 2
    rois_per_image_batch: int = 128  # windows per iteration (over all its images)
    fg_fraction: float = 0.25
    fg_iou: float = 0.5
    bg_iou_low: float = 0.1
    bg_iou_high: float = 0.5
    flip: bool = True
    bbox_loss_weight: float = 1.0
    checkpoint_every: int = 10_000
    log_every: int = 20
    # Start from the weights of this detect checkpoint (its classes and backbone must match).
    init_checkpoint: str = ""
    # fc mode: keep each image's frozen conv map (per flip and scale, fp16) on disk under the run
    # folder (<out>/features/), reused on resume (False: recompute every time).
    cache_features: bool = True
    # RAM for the most recently used of those maps (MiB); the rest are read back from disk.
    feature_cache_mb: int = 256
    # Several model.scales (SPP-net): each sampled window is pooled at a random one ("window",
    # the released code) or all windows of an image at one random scale ("image": one conv each).
    random_scale: str = "window"
    # fc mode freezes the conv layers; with model.weights none and no init_checkpoint they stay
    # random, so training is refused unless this says it is meant (tests, ablations).
    allow_random_backbone: bool = False


@dataclass(frozen=True)
class SVMConfig:
    """One-vs-rest linear SVMs with hard-negative mining (R-CNN's and SPP-net's recipe)."""

    enabled: bool = False
    feature: str = "fc7"  # fc7 | pool
    C: float = 0.001
    positive_weight: float = 2.0
    intercept_scaling: float = 10.0
    feature_norm: float = 20.0  # features scaled so their mean L2 norm is this
    neg_iou: float = 0.3
    rounds: int = 3
    initial_negatives: int = 2000  # random negatives per class in the first round
    hard_threshold: float = -1.0  # negatives scoring above this are added
    easy_threshold: float = -1.2  # negatives scoring below this are dropped
    # Proposals kept per image in the negative pool (0 = all, as the paper; bounds disk use).
    max_negatives_per_image: int = 0
    # At most this many negatives per class in a mining round's training set, the highest
    # scoring kept (0 = no cap, as the paper); bounds the memory of each SVM fit.
    max_active_negatives: int = 0


@dataclass(frozen=True)
class BBoxRegConfig:
    """Box regression: ``ridge`` on pooled features (the paper) or the ``learned`` layer."""

    method: str = "ridge"  # ridge | learned
    min_iou: float = 0.6
    ridge_lambda: float = 4000.0  # 1000 for R-CNN, 4000 for SPP-net
    feature_norm: float = 20.0  # pooled features scaled so their mean L2 norm is this (R-CNN)


@dataclass(frozen=True)
class TestConfig:
    """Detection at test time: the scales SPP-net detects at, post-processing (per-class NMS,
    caps)."""

    # SPP-net's shorter sides at test time (detect eval / run / bench, the Python API); empty =
    # model.scales, the training scales (the paper tests where it trains). docs/method.md §4.
    scales: tuple[int, ...] = ()
    classifier: str = "softmax"  # softmax | svm
    bbox_reg: bool = True
    score_threshold: float = 0.05
    nms_iou: float = 0.3
    top_per_class: int = 100
    max_per_image: int = 100


@dataclass(frozen=True)
class BenchConfig:
    """``detect bench``: SPP-net vs R-CNN timing on the same images, model and proposals."""

    num_proposals: int = 2000
    rcnn_sample: int = 256  # crops actually timed for R-CNN; time is scaled up (and says so)
    rcnn_batch: int = 64
    repeats: int = 1
    # The multi-scale SPP-net row (the paper's five scales); empty = single scale (test.scales, else model.scales) only.
    multi_scales: tuple[int, ...] = (480, 576, 688, 864, 1200)
    # Ranks for the --svd rows when model.svd_ranks is empty (Fast R-CNN's fc6 / fc7).
    svd_ranks: tuple[int, ...] = (1024, 256)
    matmul_size: int = 2048  # n of the n x n fp32 matrix multiply whose GFLOP/s is the reference


@dataclass(frozen=True)
class DemoConfig:
    """``detect demo``: the built-in data set and how much of the R-CNN baseline to run."""

    num_train: int = 120
    num_val: int = 40
    num_test: int = 60
    image_size: tuple[int, ...] = (256, 320)  # (H, W)
    # The R-CNN baseline: these section.key=value changes to the SPP-net config (e.g. fc-only
    # fine-tuning on warped crops, starting from SPP-net's trained backbone and head).
    rcnn_overrides: tuple[str, ...] = ()
    rcnn_eval_images: int = 20  # test images R-CNN is evaluated on (it is slow); 0 = skip R-CNN
    bench_images: int = 3
    draw_images: int = 8
    # Image classification (detect.classify.demo): the generated set (classify.root) and the
    # modes trained on it, compared on centre crop, warp and full image (docs/classification.md).
    classify_modes: tuple[str, ...] = ("fixed", "single", "multi")  # empty = skip
    classify_train: int = 400
    classify_test: int = 200
    classify_side_range: tuple[int, ...] = (160, 288)  # the images' shorter sides drawn in it
    classify_max_aspect: float = 2.0  # longer / shorter side, log-uniform in [1, max_aspect]
    classify_object_size: tuple[float, ...] = (0.2, 0.55)  # object size / shorter side, range
    classify_background_contrast: float = 1.0  # 1: the detection set's texture; lower: flatter
    classify_class_colour: float = 0.0  # fraction of objects in their class's colour (else any)
    classify_overrides: tuple[str, ...] = ()  # section.key=value changes for the modes only
    # SPP pretraining for detection: model.backbone first trained as an SPP classifier on crops
    # of objects (their boxes scaled by pretrain_context) with pretrain_overrides, then a second
    # detector fine-tuned from it with pretrain_comparison_overrides + pretrained_overrides, and
    # compared with a detector from scratch fine-tuned with pretrain_comparison_overrides (empty:
    # with the demo's main SPP-net); false = skip. The objects are those
    # of a separate generated set of pretrain_images images (pretrain_root, seed + 1000: other
    # images than the detector's, as the paper's ImageNet is not VOC); 0 = the detector's own
    # training objects.
    pretrain: bool = True
    pretrain_context: float = 1.5
    pretrain_images: int = 0
    pretrain_root: str = "data/demo_pretrain"
    pretrain_overrides: tuple[str, ...] = ()
    pretrain_comparison_overrides: tuple[str, ...] = ()
    pretrained_overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClassifyConfig:
    """``detect classify``: an image classifier = ``model.backbone`` (with ``model.weights``) +
    image-level SPP over ``model.pyramid_levels`` + fc layers (``model.fc_dims``,
    ``model.dropout``) + softmax, trained on whole images (docs/classification.md)."""

    # ImageFolder layout: <root>/<split>/<class name>/<image files>, one sub-folder per class.
    root: str = "data/classify"
    train_split: str = "train"
    test_split: str = "test"
    # fixed: (a) sizes[0] inputs and a fixed max-pool (fixed_pool) instead of SPP; single: (b)
    # SPP at sizes[0]; multi: (c) SPP, the sizes in turn, one per epoch (the paper: 224, 180);
    # variable: (d) SPP, each batch at a random size in variable_range.
    mode: str = "multi"
    bins: str = "sliding"  # sliding: the paper's window ceil(a/n), stride floor(a/n) | adaptive
    sizes: tuple[int, ...] = (224, 180)
    variable_range: tuple[int, ...] = (180, 224)  # [low, high] input sizes of the variable mode
    # Training region: a random square of this fraction of the shorter side (the paper's 224
    # crop of an image resized to 256), resized to the epoch's size; flipped at random.
    crop_fraction: float = 0.875
    flip: bool = True
    fixed_pool: tuple[int, ...] = (3, 2)  # (a)'s pool5 window and stride (ZF-5's 3x3/2)
    test_size: int = 224  # the centre-crop and warp views of ``detect classify eval``
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.01
    lr_steps: tuple[int, ...] = ()  # epochs after which lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4


# runtime.precision: float32, or autocast to bfloat16 / float16 (detect.runtime.autocast).
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how the network runs (:mod:`detect.runtime`); ``--device`` / ``--precision``.
    Not a property of a model: a checkpoint runs with the runtime of the command that loads it."""

    device: str = "auto"  # auto (CUDA, then MPS, then CPU) | cpu | cuda | cuda:N | mps
    precision: str = "fp32"  # fp32 | bf16 (CPU and GPU) | fp16 (GPU; gradient scaler in training)
    # The backbone's convs in channels_last (NHWC) memory format; always so when precision is not
    # fp32. On by default: on the CPU oneDNN runs them 1.3x (tiny) to 2.3x (ZF-5) faster (README).
    channels_last: bool = True
    # Worker processes decoding, resizing and flipping images for training and evaluation
    # (torch.utils.data); 0 = in the main process.
    num_workers: int = 0


@dataclass(frozen=True)
class Config:
    """The whole experiment."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    svm: SVMConfig = field(default_factory=SVMConfig)
    bbox_reg: BBoxRegConfig = field(default_factory=BBoxRegConfig)
    test: TestConfig = field(default_factory=TestConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)


def check_values(prefix: str, checks: list[tuple[bool, str, Any, str]]) -> None:
    """Raise :class:`DetectError` ``"<prefix><key> must be <expected>, got <value>"`` for the
    first failed check of ``(ok, key, value, expected)`` rows, e.g.
    ``check_values("model.", [(cfg.dropout < 1, "dropout", cfg.dropout, "in [0, 1)")])``."""
    for ok, key, value, expected in checks:
        if not ok:
            raise DetectError(f"{prefix}{key} must be {expected}, got {value!r}")


# Exponent floats that YAML 1.2 and JSON read as numbers but PyYAML (YAML 1.1) leaves as strings:
# no dot (1e-3, 1e6) or no exponent sign (2.5e3).
_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$")


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Convert a YAML value to the dataclass field's declared type, or raise naming ``where``."""
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, where)
    origin = typing.get_origin(annotation)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise DetectError(f"{where}: expected a list, got {value!r}")
        (item_type, _ellipsis) = typing.get_args(annotation)
        return tuple(_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (types.UnionType, typing.Union):
        raise DetectError(f"{where}: unsupported union type")  # not used by the config
    if annotation is bool:
        if not isinstance(value, bool):
            raise DetectError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation in (int, float) and isinstance(value, str) and _EXPONENT_FLOAT.match(value):
        value = float(value)  # 1e-3, 1e6: numbers, though PyYAML's YAML 1.1 reads them as text
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DetectError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, float) and value.is_integer():  # 1e6
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise DetectError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str | int | float):
            raise DetectError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise DetectError(f"{where}: unsupported type {annotation!r}")


def _build(cls: type, values: Any, where: str) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise DetectError(f"{where}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise DetectError(
                f"{where.rstrip(': ')}: unknown key {key!r}; valid keys: {', '.join(valid)}"
            )
        child = f"{where}{key}" if where.endswith(": ") else f"{where}.{key}"
        kwargs[key] = _convert(value, hints[key], child)
    return cls(**kwargs)


# Seeds the random generators take (numpy's legacy seeding: below 2**32), with room for the
# offsets derived seeds add (e.g. the demo's pretraining set: seed + 1000).
MAX_SEED = 2**31 - 1


def config_from_dict(values: dict, source: str = "config") -> Config:
    """Build a :class:`Config` from nested dicts; ``source`` names the origin in errors."""
    config = _build(Config, values, f"{source}: ")
    seed = config.seed
    check_values(f"{source}: ", [(0 <= seed <= MAX_SEED, "seed", seed, f"in [0, {MAX_SEED}]")])
    return config


def set_dotted(values: dict, dotted: str, source: str) -> None:
    if "=" not in dotted:
        raise DetectError(f"{source}: override {dotted!r} is not of the form section.key=value")
    key, raw = dotted.split("=", 1)
    parts = key.split(".")
    node = values
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise DetectError(f"{source}: override {dotted!r}: {part!r} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise DetectError(
            f"{source}: override {dotted!r}: invalid YAML value: {_yaml_problem(exc)}"
        ) from exc


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what is wrong and where (1-based line and column)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def apply_overrides(
    values: dict, overrides: list[str], source: str, given_by: str = "--set"
) -> Config:
    """The :class:`Config` of ``values`` (nested dicts from ``source``) with each
    ``section.key=value`` override applied in order.

    ``values`` is checked first, so its errors name ``source``; then each override, so an error
    it causes names ``<given_by> section.key=value`` (``--set``, or the config list it came
    from), not the file.
    """
    config = config_from_dict(values, source)
    for dotted in overrides:
        where = f"{given_by} {dotted}"
        set_dotted(values, dotted, where)
        config = config_from_dict(values, where)
    return config


def with_overrides(config: Config, overrides: list[str], source: str) -> Config:
    """``config`` with the ``section.key=value`` overrides of a config list (e.g. a
    ``demo.*_overrides`` key named ``source``) applied in order; an error names ``source`` and
    the override."""
    return apply_overrides(config_to_dict(config), overrides, source, given_by=source + ":")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (defaults when ``path`` is None; a shipped config's name such as
    ``"demo"`` when no such file exists) and apply ``section.key=value`` overrides."""
    values: dict = {}
    source = "defaults"
    if path is not None:
        path = resolve_config_path(path)
        source = str(path)
        text = read_text(path, "config")
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DetectError(f"config {path}: invalid YAML: {_yaml_problem(exc)}") from exc
        values = {} if values is None else values
        if not isinstance(values, dict):
            raise DetectError(
                f"config {path}: the top level must be a mapping of sections (data:, model:, "
                f"...), got a {type(values).__name__}"
            )
    return apply_overrides(values, list(overrides or []), source)


def config_to_dict(config: Config) -> dict:
    """Plain nested dict (tuples as lists) suitable for YAML/JSON."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def save_config(config: Config, path: str | Path) -> None:
    """Write the merged config as YAML (atomically)."""
    from detect.files import atomic_write_text

    atomic_write_text(Path(path), dump_config(config))
