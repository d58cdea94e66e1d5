"""A non-editable install ships the configs: the wheel holds them, and the installed package loads
the demo config by name and prints its help from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from detect.shipped_configs import shipped_config_names

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built offline from a copy of the sources (the tree is left alone)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT / "detect", src / "detect", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    run([*pip_wheel, "--no-index", "-q", "-w", str(tmp / "dist"), str(src)], cwd=tmp)
    (built,) = (tmp / "dist").glob("detect-*.whl")
    return built


@pytest.mark.slow
def test_wheel_contains_every_shipped_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert shipped_config_names()  # the source tree has them
    for name in shipped_config_names():
        assert f"detect/configs/{name}.yaml" in names


@pytest.mark.slow
def test_installed_package_loads_the_demo_config_from_any_folder(wheel, tmp_path):
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip_install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q"]
    run([*pip_install, "--target", str(target), str(wheel)], cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(target)}
    script = (
        "import detect\n"
        "from detect.config import load_config\n"
        "from detect.demo import DEMO_CONFIG\n"
        "cfg = load_config('demo')\n"
        "assert cfg == load_config(DEMO_CONFIG) == load_config('demo.yaml')\n"
        "print(detect.__file__)\n"
        "print(cfg.model.backbone)\n"
    )
    out = run([sys.executable, "-c", script], cwd=elsewhere, env=env).splitlines()
    assert Path(out[0]).is_relative_to(target)  # the installed copy, not the source tree
    assert out[1] == "tiny"
    assert "usage: detect" in run([sys.executable, "-m", "detect", "--help"], elsewhere, env)
