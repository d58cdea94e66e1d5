"""One module per CLI command: ``add_arguments(parser)`` and ``run(args) -> int``.

Options shared by several commands are defined here, once.
"""

from __future__ import annotations

import argparse

from detect.shipped_configs import shipped_config_names


def add_config_argument(parser: argparse.ArgumentParser, what: str, **kwargs) -> None:
    """Add ``--config``: a YAML file, or the name of a config shipped with the package
    (:mod:`detect.shipped_configs`).

    Args:
        what: what the command takes from the config, and its default, for the help text.
        kwargs: passed to ``add_argument`` (e.g. ``type=Path``).
    """
    names = ", ".join(shipped_config_names())
    parser.add_argument(
        "--config",
        metavar="YAML|NAME",
        help=f"YAML config file or a shipped config's name ({names}); {what}",
        **kwargs,
    )


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
