"""One module per CLI command: ``add_arguments(parser)`` and ``run(args) -> int``.

Options shared by several commands are defined here, once.
"""

from __future__ import annotations

import argparse

from detect.config import PRECISIONS
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


class _AppendOverride(argparse.Action):
    """Append ``<key>=<value>`` to ``args.overrides``, in command-line order with ``--set``."""

    def __init__(self, option_strings, dest, key: str, **kwargs) -> None:
        super().__init__(option_strings, "overrides", **kwargs)
        self.key = key

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        overrides = list(getattr(namespace, "overrides", None) or [])
        namespace.overrides = [*overrides, f"{self.key}={values}"]


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--device`` and ``--precision``: shorthands for ``--set runtime.device=...`` and
    ``--set runtime.precision=...`` (:mod:`detect.runtime`), folded into ``args.overrides`` in
    command-line order (the later of ``--device`` and ``--set runtime.device=`` wins). Call after
    :func:`add_override_argument`."""
    parser.add_argument(
        "--device",
        action=_AppendOverride,
        key="runtime.device",
        metavar="auto|cpu|cuda|cuda:N|mps",
        help="where the network runs; auto: CUDA, then Apple's MPS, then the CPU (default: "
        "runtime.device of the config and --set, else auto; a checkpoint's is not used)",
    )
    parser.add_argument(
        "--precision",
        action=_AppendOverride,
        key="runtime.precision",
        choices=PRECISIONS,
        help="fp32, or autocast to bf16 (CPU and GPU) or fp16 (GPU; gradient scaler in "
        "training) (default: runtime.precision of the config and --set, else fp32)",
    )
