"""Which settings differ between an interrupted run's saved config and the config resuming it.

``detect train --resume`` and ``detect classify train --resume`` continue a run only with the
config it was started with; they refuse with the list of differences this module computes.
"""

from __future__ import annotations

from collections.abc import Sequence

from detect.config import Config, config_to_dict
from detect.config_paths import absolute_path_values


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """``"section.key: saved -> current"`` for every leaf that differs (nested dicts), sorted."""
    differences = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differences.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return differences


def with_defaults(saved: dict, defaults: dict) -> dict:
    """``saved`` with every key it lacks taken from ``defaults`` (nested): a checkpoint written
    before a config key existed ran with that key's default behaviour."""
    merged = dict(saved)
    for key, value in defaults.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = with_defaults(merged[key], value)
    return merged


def resume_differences(saved: dict, config: Config, ignored_sections: Sequence[str]) -> list[str]:
    """The differences that forbid resuming: ``saved`` (a checkpoint's config dict) against
    ``config``, outside ``ignored_sections``. Keys the saved config lacks count as their defaults;
    paths are compared absolute, relative ones taken from the current folder (a relative one
    saved by an older version means the same only when resumed from the same folder)."""
    saved = with_defaults(absolute_path_values(saved), config_to_dict(Config()))
    current = absolute_path_values(config_to_dict(config))
    return [
        difference
        for difference in config_differences(saved, current)
        if difference.split(".", 1)[0] not in ignored_sections
    ]
