"""The file and folder settings of a config, and what a relative one means.

A relative path in a config is read from the current folder. A run's saved config (its
``config.yaml`` and the checkpoint's copy) must keep naming the same files wherever it is used
later, so training makes these settings absolute (:func:`with_absolute_paths`) before it saves
them. A checkpoint saved before that, or edited by hand, may still hold relative ones: commands
that read them name each one and the folder it is read from (:func:`warn_relative_paths`), so its
meaning never changes silently.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from pathlib import Path

from detect.config import Config

log = logging.getLogger(__name__)

# (section, key) of every setting that names a file or folder, and its values that are not paths.
PATH_SETTINGS = {
    ("data", "root"): (),
    ("data", "image_dir"): (),
    ("proposals", "cache_dir"): (),
    ("proposals", "import_file"): (),
    ("proposals", "rpn_weights"): (),
    ("finetune", "init_checkpoint"): (),
    ("model", "weights"): ("none", "imagenet"),
}


def _is_relative_path(setting: tuple[str, str], value: object) -> bool:
    return (
        isinstance(value, str)
        and value != ""
        and value not in PATH_SETTINGS[setting]
        and not Path(value).is_absolute()
    )


def absolute_path_values(values: dict) -> dict:
    """A copy of config ``values`` (the nested dict of :func:`detect.config.config_to_dict`)
    whose relative path settings are resolved against the current folder."""
    values = copy.deepcopy(values)
    for section, key in PATH_SETTINGS:
        value = values.get(section, {}).get(key)
        if _is_relative_path((section, key), value):
            values[section][key] = os.path.abspath(value)
    return values


def with_absolute_paths(config: Config) -> Config:
    """``config`` with its relative path settings resolved against the current folder."""
    sections = {}
    for (section, key), _ in PATH_SETTINGS.items():
        part = sections.get(section, getattr(config, section))
        value = getattr(part, key)
        if _is_relative_path((section, key), value):
            sections[section] = dataclasses.replace(part, **{key: os.path.abspath(value)})
    return dataclasses.replace(config, **sections)


def warn_relative_paths(config: Config, source: str, keys: tuple[str, ...]) -> None:
    """Log a warning for each of ``keys`` (``section.key``) of ``config`` (read from ``source``,
    e.g. ``checkpoint runs/x/checkpoint.pt``) that is a relative path, naming the folder it is
    read from."""
    for dotted in keys:
        section, key = dotted.split(".")
        value = getattr(getattr(config, section), key)
        if _is_relative_path((section, key), value):
            log.warning(
                "%s: %s %r is a relative path (saved by an older version or edited); it is read "
                "from the current folder: %s",
                source,
                dotted,
                value,
                os.path.abspath(value),
            )


def _folder_of(data: str | Path) -> Path:
    """The folder of a data location, absolute: the folder itself, or the folder of a file (a
    COCO json, an image list; named so even when it does not exist)."""
    path = Path(os.path.abspath(data))
    is_file = path.is_file() or path.suffix.lower() in (".json", ".txt")
    return path.parent if is_file else path


def cache_dir_for(config: Config, data: str | Path) -> str:
    """The ``proposals.cache_dir`` to use when the images come from ``data`` (``--data``) instead
    of ``config.data.root``: a cache_dir inside the config's own data folder (the shipped configs'
    ``<root>/proposals``) moves to the same place in ``data``'s folder, so the cache is written
    beside the data the user named, not into a copy of the config's data path under the current
    folder; any other cache_dir is kept."""
    cache = Path(os.path.abspath(config.proposals.cache_dir))
    try:
        inside = cache.relative_to(_folder_of(config.data.root))
    except ValueError:
        return config.proposals.cache_dir
    return str(_folder_of(data) / inside)


def with_data_root(config: Config, data_root: str | Path) -> Config:
    """``config`` reading its data from ``data_root``: ``data.root`` replaced and the proposal
    cache moved along (:func:`cache_dir_for`)."""
    proposals = dataclasses.replace(config.proposals, cache_dir=cache_dir_for(config, data_root))
    data = dataclasses.replace(config.data, root=str(data_root))
    return dataclasses.replace(config, data=data, proposals=proposals)
