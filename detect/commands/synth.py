"""`detect synth --out data/NAME`: generate the built-in synthetic data set (VOC layout).

A folder that already holds a complete data set made with the same parameters is left as it is.
"""

from __future__ import annotations

import argparse
import time

from detect.data.synthetic import (
    PRESETS,
    SYNTHETIC_CLASSES,
    SyntheticParams,
    ensure_synthetic_dataset,
    read_info,
)
from detect.errors import DetectError

SUMMARY_SPLITS = ("train", "val", "trainval", "test")


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected HxW such as 256x320, got {text!r}") from exc
    return height, width


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder, e.g. data/demo")
    default = SyntheticParams()
    dense = PRESETS["small-dense"]
    parser.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=default.preset,
        help=f"default: 1-{default.max_objects} objects from 24 px to half the image; small-dense: "
        f"{dense.min_objects}-{dense.max_objects} objects of 15-60 px, partly occluded, "
        f"{dense.image_size[0]}x{dense.image_size[1]} (default {default.preset})",
    )
    parser.add_argument(
        "--seed", type=int, default=default.seed, help=f"random seed (default {default.seed})"
    )
    for split in ("train", "val", "test"):
        count = getattr(default, f"num_{split}")
        parser.add_argument(
            f"--{split}", type=int, default=count, help=f"{split} images (default {count})"
        )
    parser.add_argument(
        "--size",
        type=_size,
        help="image size HxW (default: the preset's, 256x320 for default)",
    )
    parser.add_argument(
        "--max-objects",
        type=int,
        help="objects per image: the preset's minimum..N (default: the preset's maximum)",
    )
    parser.add_argument(
        "--format", choices=("jpg", "png"), default="jpg", help="image file format (default jpg)"
    )
    parser.add_argument("--force", action="store_true", help="regenerate even when complete")


def format_summary(summary: dict) -> str:
    """A table: images, objects per class, difficult and truncated counts, per split."""
    splits = [s for s in SUMMARY_SPLITS if s in summary.get("images", {})]
    rows = [("images", *(summary["images"][s] for s in splits))]
    rows += [(name, *(summary["objects"][s][name] for s in splits)) for name in SYNTHETIC_CLASSES]
    rows += [(key, *(summary[key][s] for s in splits)) for key in ("difficult", "truncated")]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':<{width}}" + "".join(f"{s:>10}" for s in splits)]
    lines += [f"{r[0]:<{width}}" + "".join(f"{v:>10}" for v in r[1:]) for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    params = {
        "num_train": args.train,
        "num_val": args.val,
        "num_test": args.test,
        "image_size": args.size,
        "seed": args.seed,
        "max_objects": args.max_objects,
        "image_ext": f".{args.format}",
        "preset": args.preset,
    }
    start = time.perf_counter()
    if ensure_synthetic_dataset(args.out, force=args.force, **params):
        print(f"{args.out}: synthetic data set written in {time.perf_counter() - start:.1f} s")
    else:
        print(
            f"{args.out}: already holds a complete synthetic data set with these parameters; kept"
        )
    info = read_info(args.out)
    if info is None:
        raise DetectError(f"synthetic data {args.out}: synthetic.json missing after generation")
    height, width = info["params"]["image_size"]
    print(
        f"classes: {', '.join(info['classes'])}; images {height}x{width}; seed {info['params']['seed']}"
    )
    print(format_summary(info["summary"]))
    return 0
