"""``detect bench``: time SPP-net against R-CNN on the same images, model and proposals."""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from pathlib import Path

from detect.commands import add_config_argument, add_override_argument, add_runtime_arguments
from detect.errors import DetectError


def add_arguments(parser) -> None:
    add_config_argument(parser, "its model, bench and proposals settings are used")
    add_override_argument(parser, "bench.repeats=5")
    add_runtime_arguments(parser)
    parser.add_argument(
        "--images",
        nargs="+",
        help="image files (default: scikit-learn's sample photo china.jpg resized to 688x917)",
    )
    parser.add_argument(
        "--checkpoint", help="trained checkpoint (default: random weights of model.backbone)"
    )
    parser.add_argument("--proposals", type=int, help="proposals per image (bench.num_proposals)")
    parser.add_argument(
        "--scales", type=int, nargs="+", help="single-scale row (test.scales, else model.scales)"
    )
    parser.add_argument(
        "--multi-scales",
        type=int,
        nargs="*",
        help="multi-scale row (bench.multi_scales); give no value to skip it",
    )
    parser.add_argument("--svd", action="store_true", help="also time truncated-SVD fc6/fc7")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: the physical cores; fewer keeps the timing steady "
        "while another process is busy)",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also time torchvision's Faster R-CNN (ResNet-50-FPN, MobileNetV3-Large-FPN; random "
        "weights) and SPP-net end to end, proposals included",
    )
    parser.add_argument("--json", help="write the report as JSON here")


def default_image():
    """A real photograph shipped with scikit-learn, resized to 688 x 917 (the issue's size)."""
    import cv2
    from sklearn.datasets import load_sample_image

    image = load_sample_image("china.jpg")  # 427 x 640
    height, width = image.shape[:2]
    crop = image[:, (width - height * 4 // 3) // 2 :][:, : height * 4 // 3]
    return cv2.resize(crop, (917, 688), interpolation=cv2.INTER_CUBIC)


def bench_proposals(image, image_id: str, path, config):
    """Real selective-search proposals (cached): at most ``bench.num_proposals``."""
    from detect.proposals import ProposalCache, image_proposals

    cfg = replace(config.proposals, max_proposals=config.bench.num_proposals)
    return image_proposals(image, image_id, ProposalCache.from_config(cfg), path)


def run(args) -> int:
    import torch

    from detect.bench import check_bench_config, format_bench_report, run_bench
    from detect.config import load_config
    from detect.cpu_threads import physical_cores
    from detect.data.images import read_image
    from detect.files import atomic_write_text
    from detect.models import build_detector
    from detect.models.detection_model import check_model_config
    from detect.runtime import resolve_runtime

    threads = physical_cores() if args.threads is None else args.threads
    if threads < 1:
        raise DetectError(f"--threads: expected a positive number, got {threads}")
    torch.set_num_threads(threads)
    config = load_config(args.config, args.overrides)
    resolve_runtime(config.runtime)
    scorer = None
    if args.checkpoint:
        from detect.checkpoints import load_checkpoint

        # The checkpoint's model and test sections, with the --set changes to them; the full
        # head (run_bench adds the SVD rows itself, at model.svd_ranks or bench.svd_ranks).
        changes = [o for o in args.overrides if o.startswith(("model.", "test."))]
        loaded = load_checkpoint(
            args.checkpoint, method="spp", overrides=[*changes, "model.svd_ranks=[]"]
        )
        model, scorer = loaded.model, loaded.scorer
        config = replace(config, model=loaded.config.model, test=loaded.config.test)
    else:
        classes = len(config.data.classes) or 20
        model = build_detector("spp", replace(config.model, weights="none"), classes)
    bench = config.bench
    if args.proposals is not None:
        bench = replace(bench, num_proposals=args.proposals)
    if args.multi_scales is not None:
        bench = replace(bench, multi_scales=tuple(args.multi_scales))
    config = replace(config, bench=bench)
    if args.scales:  # the row's scales, in place of the config's test (or training) scales
        config = replace(
            config,
            model=replace(config.model, scales=tuple(args.scales)),
            test=replace(config.test, scales=()),
        )
    check_model_config(config.model)  # before any proposal is computed
    check_bench_config(config.bench)
    if args.json and Path(args.json).is_dir():
        raise DetectError(f"--json {args.json}: is a folder")
    if args.images:
        limit = config.data.max_image_pixels
        named = [(Path(p).stem, Path(p), read_image(p, limit)) for p in args.images]
    else:
        named = [("sklearn_china_688x917", None, default_image())]
    images = [image for _, _, image in named]
    proposals = [bench_proposals(image, name, path, config) for name, path, image in named]
    if any(p.shape[0] == 0 for p in proposals):
        raise DetectError("bench: an image has no proposals; nothing to time")
    if any(p.shape[0] < config.bench.num_proposals for p in proposals):
        print(
            f"note: selective search gave {[int(p.shape[0]) for p in proposals]} proposals "
            f"(fewer than the {config.bench.num_proposals} asked for); all of them are used"
        )
    peers = None
    if args.peers:
        from detect.bench_peers import peer_rows

        peers = functools.partial(peer_rows, images, config, model, scorer)
    report = run_bench(model, images, proposals, config, scorer, svd=args.svd, extra_rows=peers)
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=1))
    print(format_bench_report(report))
    if args.json:
        print(f"report written to {args.json}")
    return 0
