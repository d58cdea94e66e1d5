"""The configs that ship inside the package (``detect/configs/*.yaml``), found by name.

``--config X`` (and :func:`detect.config.load_config`) reads the file ``X``; when no file ``X``
exists relative to the current folder and ``X`` is a bare name such as ``demo`` or
``demo.yaml``, the shipped config of that name is read instead, so an installed package runs
``detect demo`` or ``detect train --config voc07_zf5`` from any folder.
"""

from __future__ import annotations

from pathlib import Path

from detect.errors import DetectError

SHIPPED_CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def shipped_config_names() -> list[str]:
    """The names (``demo``, ``voc07_zf5``, ...) of the shipped configs, sorted."""
    return sorted(path.stem for path in SHIPPED_CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(value: str | Path) -> Path:
    """The file ``--config value`` names: ``value`` itself when it is a file, else the shipped config
    of that name; :class:`DetectError` naming ``value`` and the shipped names when neither exists
    (a folder ``value`` is returned for the reader to refuse)."""
    path = Path(value)
    if path.is_file():
        return path
    is_bare_name = path.parent == Path(".") and path.suffix in ("", ".yaml")
    if is_bare_name and path.stem in shipped_config_names():
        return SHIPPED_CONFIG_DIR / f"{path.stem}.yaml"
    if path.exists():
        return path
    raise DetectError(
        f"config {value}: file not found, and no shipped config has that name "
        f"(shipped: {', '.join(shipped_config_names())})"
    )
