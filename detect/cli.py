"""Command-line entry point: ``detect <command> ...`` (also ``python -m detect``).

Each command lives in ``detect/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; this module only dispatches and turns :class:`DetectError` (and an
:class:`OSError` such as a full disk or a read-only folder) into a one-line message and exit
status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Collection, Sequence

from detect import __version__
from detect.errors import DetectError, Interrupted

# command name -> one-line help. The module detect.commands.<name> implements it.
COMMANDS = {
    "synth": "generate the built-in synthetic data set (VOC layout)",
    "proposals": "compute, cache, import/export and measure proposals (selective search, ss-multi, dense, rpn)",
    "train": "train a detector (fine-tuning, SVMs, box regression) from a YAML config",
    "eval": "run a trained detector over a split and score it (VOC / COCO metrics)",
    "run": "detect objects in images with a trained checkpoint",
    "score": "score detection files against ground truth (VOC07, VOC10, COCO)",
    "bench": "time SPP-net against R-CNN on the same images, model and proposals",
    "demo": "the whole pipeline on built-in data: train, evaluate, draw, compare speed",
    "classify": "image classification with image-level SPP at any size: train, eval, predict",
}


# What ``detect --help`` shows above and below the list of commands.
DESCRIPTION = """\
Detect objects in images with SPP-net: convolutional features are computed once per image and
every region proposal is pooled from them by a spatial pyramid. The R-CNN baseline, which runs
the network on every warped crop, is trained and timed beside it with the same model."""
EPILOG = """\
examples:
  detect demo                     train, evaluate, draw and time both on built-in data
  detect train --config my.yaml --data data/mine --out runs/mine
  detect run --checkpoint runs/mine/checkpoint.pt photo.jpg --out found

'detect COMMAND --help' lists a command's options. --config takes a YAML file or the name of a
config shipped with detect (e.g. --config demo). The README describes the data layouts, the
configs and every output file."""


def build_parser(commands: Collection[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The ``detect`` parser. Every command is listed with its help line; only those in
    ``commands`` import their module and take their options, so a command (or ``detect --help``)
    does not import what the other commands need (torch, OpenCV, scikit-learn)."""
    parser = argparse.ArgumentParser(
        prog="detect",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"detect {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name in commands:
            module = importlib.import_module(f"detect.commands.{name}")
            module.add_arguments(command_parser)
            command_parser.set_defaults(handler=module.run)
    return parser


def command_named(argv: Sequence[str]) -> list[str]:
    """The command ``argv`` names (its first word that is not an option: the options before the
    command take no value), as a list of at most one."""
    return [word for word in argv if not word.startswith("-")][:1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(command_named(argv)).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except DetectError as exc:
        print(f"detect {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the environment, not the code: a full disk, a read-only folder...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"detect {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        kept = f": {exc}" if isinstance(exc, Interrupted) and str(exc) else ""
        print(f"detect {args.command}: interrupted{kept}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
