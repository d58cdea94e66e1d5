"""``detect demo``: the whole pipeline on the built-in data (see :mod:`detect.demo`)."""

from __future__ import annotations

import argparse

from detect.commands import add_config_argument, add_override_argument, add_runtime_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    add_config_argument(parser, "default: demo")
    add_override_argument(parser, "finetune.iterations=200")
    add_runtime_arguments(parser)
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: $OMP_NUM_THREADS if set, else the physical cores "
        "other processes leave free, sampled for half a second: threads on busy cores slow "
        "every operation down)",
    )


def run(args: argparse.Namespace) -> int:
    import os

    import torch

    from detect.cpu_threads import free_cores
    from detect.demo import format_summary_table, run_demo
    from detect.errors import DetectError

    if args.threads is not None and args.threads < 1:
        raise DetectError(f"--threads: expected a positive number, got {args.threads}")
    if args.threads is not None or "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(args.threads or free_cores())
    summary = run_demo(args.out, args.config, args.overrides)
    total = sum(summary.stage_seconds.values())
    print()
    print(format_summary_table(summary))
    print()
    print("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in summary.stage_seconds.items()))
    print(f"total {total:.1f} s; report: {summary.report}")
    print(f"annotated test images: {summary.out_dir / 'detections.png'}")
    return 0
