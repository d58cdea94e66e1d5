"""``detect proposals``: compute, cache, import/export and measure proposals (selective search by
default; ``--method`` ss-multi, dense or rpn for small, dense objects).

Examples::

    detect proposals --data data/VOC2007 --split trainval --workers 2 --out data/proposals/voc07
    detect proposals --data data/VOC2007 --shard 0/4 --out cache/   # job 0 of a 4-job array
    detect proposals --data data/VOC2007 --out cache/ --check       # after copying shards together
    detect proposals --data data/VOC2007 --out cache/ --merge node0/ node1/  # copy in, then check
    torchrun --nproc_per_node 4 -m detect proposals --data data/VOC2007 --out cache/  # 4 shards
    detect proposals --data data/VOC2007 --split test --import voc_2007_test.mat --recall
    detect proposals --data photos/ --export photos_proposals.json
    detect proposals --data data/small --split test --method ss,ss-multi,dense --recall --out c/
    detect proposals --data data/small --split test --method ss,dense,rpn --recall \
        --rpn-weights runs/small/checkpoint.pt --out c/   # the RPN its detector uses

Under ``torchrun`` each process computes the shard ``RANK`` of ``WORLD_SIZE`` (as ``--shard
RANK/WORLD_SIZE``; see :mod:`detect.distributed`), all into the one ``--out`` folder.

Exit status: 0 when every image has proposals, 1 when some image failed (or, with ``--check`` /
``--merge``, is missing from the cache), 2 for bad input.

Computing and caching import no torch (a fully cached rerun starts in a fraction of a second);
``--import``, ``--export``, ``--recall`` and the ``rpn`` method load it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from detect.commands import add_config_argument, add_override_argument
from detect.config import Config, ProposalConfig, load_config
from detect.config_paths import cache_dir_for
from detect.distributed import is_distributed, rank, world_size
from detect.errors import DetectError
from detect.proposals.cache import ProposalCache
from detect.proposals.compute import check_cache, compute_proposals, parse_shard, shard_items
from detect.proposals.methods import PROPOSAL_METHODS, check_method
from detect.proposals.prefetch import proposal_workers
from detect.proposals.sources import is_annotated, resolve_images


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Cache: one .npz per image under --out; shards' folders combine by copying them into one. "
        "Exit status: 0 all images done, 1 some image failed (or --check found some missing), "
        "2 bad input."
    )
    parser.add_argument(
        "--data",
        required=True,
        help="VOC folder, COCO .json, folder of images, or .txt list of image paths",
    )
    parser.add_argument("--split", help="VOC/COCO split (default: the config's data.train_split)")
    add_config_argument(parser, "its proposals and data settings are used")
    add_override_argument(parser, "proposals.max_proposals=1000")
    parser.add_argument("--classes", help="comma-separated class names (VOC/COCO reading)")
    parser.add_argument(
        "--method",
        help=f"{' | '.join(PROPOSAL_METHODS)} (default: the config's proposals.method, ss); with --recall "
        "a comma-separated list compares them",
    )
    parser.add_argument("--mode", choices=("fast", "quality"), help="selective search preset")
    parser.add_argument(
        "--rpn-weights",
        metavar="FILE",
        help="rpn method: the RPN weights (RUN/rpn.pt), or the checkpoint.pt of a run trained "
        "with proposals.method=rpn (the RPN its detector uses: the head shared with its conv "
        "layers, else RUN/rpn.pt); implies --method rpn when --method is not given",
    )
    parser.add_argument("--workers", type=int, help="parallel processes (default: config, 1)")
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help="compute only shard I (0-based) of N; the N shards cover every image exactly once",
    )
    parser.add_argument("--out", help="cache folder, one .npz per image (default: config)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="compute nothing: report images missing/stale in the cache (e.g. after merging shards)",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="DIR",
        help="compute nothing: copy the valid entries of these shard cache folders into --out, "
        "then report as --check",
    )
    parser.add_argument(
        "--import",
        dest="import_file",
        metavar="FILE",
        help="use proposals from a .mat (Fast R-CNN), .npz or .json file instead of computing",
    )
    parser.add_argument("--export", metavar="FILE", help="write the proposals as .mat/.npz/.json")
    parser.add_argument(
        "--recall",
        action="store_true",
        help="recall@0.5/0.7 and AR vs number of proposals: table and PNG in the --out folder "
        "(several --method: side by side, with seconds per image)",
    )


def _methods(args: argparse.Namespace, cfg: ProposalConfig) -> list[str]:
    default = "rpn" if args.rpn_weights else cfg.method
    methods = [m.strip() for m in args.method.split(",")] if args.method else [default]
    for method in methods:
        check_method(method)
    if len(methods) > 1 and not args.recall:
        raise DetectError(f"--method {args.method}: several methods only with --recall")
    if len(set(methods)) < len(methods):
        raise DetectError(f"--method {args.method}: a method is named twice")
    return methods


def _with_window_shapes(cfg: ProposalConfig, config: Config, data: str) -> ProposalConfig:
    """``cfg`` with dense window shapes fitted to the training split (``data.train_split``) of
    ``data`` when annotated, else of ``data.root`` (when the method is dense without shapes)."""
    if cfg.method != "dense" or cfg.dense_shapes:
        return cfg
    from detect.data import load_dataset
    from detect.proposals.dense import with_window_shapes

    root = data if is_annotated(data) else config.data.root
    split = config.data.train_split
    train = load_dataset(
        root,
        split,
        config.data.classes,
        config.data.image_dir,
        config.data.strict_boxes,
        max_image_pixels=config.data.max_image_pixels,
    )
    cfg = with_window_shapes(cfg, train, config.seed)
    shapes = ", ".join(f"{w:g}x{h:g}" for w, h in cfg.dense_shapes)
    print(f"dense window shapes (k-means of the boxes of {root} {split}): {shapes}")
    return cfg


def _selection(args: argparse.Namespace):
    overrides = list(args.overrides)
    if args.classes:
        overrides.append(f"data.classes=[{args.classes}]")
    config = load_config(args.config, overrides)
    cfg = config.proposals
    cache_dir = args.out if args.out is not None else cache_dir_for(config, args.data)
    changes = {
        key: value
        for key, value in (("mode", args.mode), ("workers", args.workers), ("cache_dir", cache_dir))
        if value is not None
    }
    if args.rpn_weights:
        changes["rpn_weights"] = _rpn_weights(args.rpn_weights)
    cfg = dataclasses.replace(cfg, **changes)
    split = args.split or config.data.train_split
    items, dataset = resolve_images(args.data, split, config.data, annotations=args.recall)
    total = len(items)
    shard = _shard(args)
    if shard is not None:
        items = shard_items(items, *shard)
    return config, cfg, split, items, dataset, total


def _rpn_weights(given: str) -> str:
    """The RPN weights file of ``--rpn-weights``: the file itself, or for a run's checkpoint the
    checkpoint itself when it holds a head fitted on its detector's conv layers (and its config
    keeps ``proposals.rpn_shared``: the proposals its detector uses), else the
    ``proposals.rpn_weights`` its saved config names."""
    from detect.files import load_torch_file
    from detect.models.rpn import SHARED_KEY

    payload = load_torch_file(given, "--rpn-weights")
    if not isinstance(payload, dict) or "config" not in payload:
        return given  # an RPN weights file (or not: loading it says so)
    if SHARED_KEY in payload and payload["config"].get("proposals", {}).get("rpn_shared", True):
        return given
    weights = payload["config"].get("proposals", {}).get("rpn_weights", "")
    if not weights:
        raise DetectError(
            f"--rpn-weights {given}: a checkpoint trained without an RPN (proposals.method "
            f"{payload['config'].get('proposals', {}).get('method', 'ss')!r})"
        )
    return weights


def _shard(args: argparse.Namespace) -> tuple[int, int] | None:
    """``(index, count)`` of ``--shard I/N``, else of ``RANK`` / ``WORLD_SIZE`` under torchrun;
    None for all images."""
    if args.shard and is_distributed():
        raise DetectError(
            f"--shard {args.shard}: not under torchrun (WORLD_SIZE={world_size()}), whose ranks "
            "already take one shard each"
        )
    if args.shard:
        return parse_shard(args.shard)
    return (rank(), world_size()) if is_distributed() else None


def _merge(items, cache: ProposalCache, sources: list[str]) -> int:
    from detect.proposals.merge import merge_caches

    if cache.cache_dir is None:
        raise DetectError("--merge needs the cache folder to merge into: give --out")
    for source in sources:
        if not Path(source).is_dir():
            raise DetectError(f"--merge {source}: not a folder")
    return merge_caches(items, cache, sources)


def run(args: argparse.Namespace) -> int:
    if args.export:
        from detect.proposals.formats import file_format

        file_format(args.export)  # a bad suffix fails now, not after computing everything
    config, cfg, split, items, dataset, total = _selection(args)
    methods = _methods(args, cfg)
    if args.recall and dataset is None:
        raise DetectError(f"--recall needs annotations: --data {args.data} is not VOC or COCO")
    if len(methods) > 1:
        return _compare(args, config, cfg, methods, split, items, dataset)
    cfg = _with_window_shapes(dataclasses.replace(cfg, method=methods[0]), config, args.data)
    max_image_pixels = config.data.max_image_pixels
    shard = _shard(args)
    shard_note = f" (shard {shard[0]}/{shard[1]} of {total})" if shard else ""
    cache = ProposalCache.from_config(cfg)
    if args.merge:
        copied = _merge(items, cache, args.merge)
        entries = "entry" if copied == 1 else "entries"
        print(f"merged {', '.join(args.merge)} into {cache.cache_dir}: {copied} {entries} copied")
    if args.check or args.merge:
        statuses = check_cache(items, cache)
        print(f"cache {cache.cache_dir}: {len(items)} images{shard_note}")
        for status, ids in statuses.items():
            example = f"  e.g. {', '.join(ids[:5])}" if ids and status != "hit" else ""
            print(f"  {status:>8}: {len(ids)}{example}")
        return 0 if len(statuses["hit"]) == len(items) else 1

    failures: list[tuple[str, str]] = []
    import_file = args.import_file or cfg.import_file
    if import_file:
        from detect.proposals.formats import read_proposals

        imported = read_proposals(import_file, [item.image_id for item in items])
        proposals = {i.image_id: imported[i.image_id] for i in items if i.image_id in imported}
        failures = [
            (str(i.path), f"not in {import_file}") for i in items if i.image_id not in imported
        ]
        print(f"imported {import_file}: {len(proposals)} of {len(items)} images{shard_note}")
    else:
        result = compute_proposals(items, cache, cfg.workers, max_image_pixels=max_image_pixels)
        proposals, failures = result.proposals, result.failures
        print(
            f"proposals ({_describe(cache)}) in {cache.cache_dir}: {len(items)} images{shard_note}, "
            f"{result.cached} cached, {result.computed} computed "
            f"({result.recomputed} replaced stale/corrupt cache files), {len(failures)} failed"
        )
        if result.computed:
            workers = max(1, proposal_workers(cache, cfg.workers))  # rpn: in this process
            print(
                f"seconds per image: {result.search_seconds / result.computed:.3f} per worker, "
                f"{result.wall_seconds / result.computed:.3f} wall with {workers} worker(s)"
            )
    if proposals:
        counts = np.array([boxes.shape[0] for boxes in proposals.values()])
        print(f"boxes per image: mean {counts.mean():.1f}, min {counts.min()}, max {counts.max()}")
    if args.export or args.recall:
        import torch

        proposals = {image_id: torch.as_tensor(boxes) for image_id, boxes in proposals.items()}
    if args.export:
        from detect.proposals.formats import write_proposals

        write_proposals(args.export, proposals)
        print(f"wrote {len(proposals)} images' proposals to {args.export}")
    if args.recall:
        from detect.proposals.recall import format_recall_table, proposal_recall, save_recall_plot

        recall = proposal_recall(proposals, dataset)
        print(format_recall_table(recall))
        plot = Path(cfg.cache_dir) / f"recall_{split}.png"
        save_recall_plot(recall, plot)
        print(f"recall plot: {plot}")
    return _report_failures(failures)


def _report_failures(failures: list[tuple[str, str]]) -> int:
    for path, message in failures:  # last, so the run ends with what went wrong
        named = message if path in message else f"{path}: {message}"
        print(f"detect proposals: error: skipped {named}", file=sys.stderr)
    return 1 if failures else 0


def _describe(cache: ProposalCache) -> str:
    """The method and its main settings, e.g. ``ss fast, long side 500, at most 2000``."""
    params = cache.params
    if cache.method == "ss":
        upscale = f" x{params['upscale']:g}" if "upscale" in params else ""
        detail = f"{params['mode']}, long side {params['resize_long_side']}{upscale}"
    elif cache.method == "ss-multi":
        detail = (
            f"{'+'.join(params['color_spaces'])} x k {'/'.join(f'{k:g}' for k in params['ks'])}, "
            f"long side {params['resize_long_side']} x{params['upscale']:g}"
        )
    elif cache.method == "rpn":
        detail = f"{params['weights']} (sha256 {params['weights_sha256'][:12]})"
    else:
        detail = f"{len(params['shapes'])} window shapes, stride {params['stride']:g}"
    return f"{cache.method} {detail}, at most {params['max_proposals']}"


def _compare(args, config, cfg, methods, split, items, dataset) -> int:
    """Compute (or load) each method's proposals for ``items`` and print their recall side by
    side with seconds per image; one PNG of average recall per method."""
    import torch

    from detect.proposals.recall import (
        format_comparison,
        format_recall_table,
        proposal_recall,
        save_comparison_plot,
    )

    results, seconds, failures = {}, {}, []
    for method in methods:
        method_cfg = _with_window_shapes(dataclasses.replace(cfg, method=method), config, args.data)
        cache = ProposalCache.from_config(method_cfg)
        run = compute_proposals(
            items, cache, cfg.workers, max_image_pixels=config.data.max_image_pixels
        )
        failures += run.failures
        print(f"{_describe(cache)}: {run.cached} cached, {run.computed} computed")
        seconds[method] = run.search_seconds / run.computed if run.computed else None
        proposals = {i: torch.as_tensor(boxes) for i, boxes in run.proposals.items()}
        results[method] = proposal_recall(proposals, dataset)
        print(format_recall_table(results[method]))
    print(format_comparison(results, seconds))
    plot = Path(cfg.cache_dir) / f"recall_{split}.png"
    save_comparison_plot(results, plot)
    print(f"recall plot: {plot}")
    return _report_failures(failures)
