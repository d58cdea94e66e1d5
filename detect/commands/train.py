"""`detect train`: fine-tune a detector (then SVMs / ridge box regression) from a YAML config.

Usage: ``detect train --config X.yaml|NAME [--data PATH] [--out runs/NAME] [--method spp|rcnn]
[--resume | --overwrite] [--set section.key=value ...] [--device D] [--precision P]``. The run
folder gets ``checkpoint.pt``, ``config.yaml``, ``train_log.csv``, ``loss.png`` and, with
``proposals.method: rpn``, the region proposal network ``rpn.pt`` trained first. A folder that
already holds a run is refused unless ``--resume`` (continue it) or ``--overwrite`` (replace it)
is given.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from detect.commands import add_config_argument, add_override_argument, add_runtime_arguments
from detect.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, "default: the paper's settings", type=Path)
    parser.add_argument("--data", help="VOC-layout folder or COCO json (default: data.root)")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<config name>)")
    parser.add_argument("--method", choices=["spp", "rcnn"], default="spp")
    parser.add_argument(
        "--resume", action="store_true", help="continue the interrupted run in --out"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (without it such a folder is refused)",
    )
    add_override_argument(parser)
    add_runtime_arguments(parser)


def run(args) -> int:
    from detect.distributed import is_main
    from detect.training import train
    from detect.training.rpn import RPN_WEIGHTS_NAME

    config = load_config(args.config, args.overrides)
    out = args.out or Path("runs") / (args.config.stem if args.config else "train")
    # Ctrl-C raises detect.errors.Interrupted saying what was kept; the CLI prints it (status 130).
    result = train(
        config, args.data, out, method=args.method, resume=args.resume, overwrite=args.overwrite
    )
    if not is_main():  # under torchrun rank 0 alone reports (and wrote the run folder)
        return 0
    files = [result.checkpoint, result.config_path, result.log_csv, result.loss_png]
    rpn_weights = result.out_dir / RPN_WEIGHTS_NAME  # proposals.method rpn: the trained RPN
    files.append(rpn_weights if rpn_weights.is_file() else None)
    print(
        f"trained {result.method} on {result.num_images} images "
        f"({len(result.class_names)} classes: {', '.join(result.class_names)}) "
        f"in {result.seconds:.1f} s"
    )
    print(f"  stages      {', '.join(result.stages)}")
    loss = (
        "no loss logged" if math.isnan(result.final_loss) else f"final loss {result.final_loss:.4f}"
    )
    print(f"  iterations  {result.iterations}, {loss}")
    print(f"  run folder  {result.out_dir}: {', '.join(p.name for p in files if p)}")
    print(f"next: detect eval --checkpoint {result.checkpoint}")
    return 0
