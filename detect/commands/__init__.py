"""One module per CLI command: ``add_arguments(parser)`` and ``run(args) -> int``.

Options shared by several commands are defined here, once.
"""

from __future__ import annotations

import argparse


def add_override_argument(
    parser: argparse.ArgumentParser, example: str = "finetune.iterations=500"
) -> None:
    """Add the repeatable ``--set SECTION.KEY=VALUE`` config override; the values land in
    ``args.overrides`` (a list of strings for :func:`detect.config.load_config`).

    Args:
        example: an override shown in the help text.
    """
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=f"override a config value (repeatable), e.g. --set {example}",
    )
