"""A proposal cache inside the config's data folder (the shipped configs' ``<root>/proposals``)
follows ``--data`` to the data the user named instead of being written under the current folder:
:func:`cache_dir_for` against hand-worked paths, and ``detect proposals`` / ``detect train`` run
from an empty folder writing nothing into it."""

import os
from dataclasses import replace

from proposals_testdata import write_images

from detect.cli import main
from detect.config import Config
from detect.config_paths import cache_dir_for, with_data_root


def _config(root: str, cache: str) -> Config:
    config = Config()
    return replace(
        config,
        data=replace(config.data, root=root),
        proposals=replace(config.proposals, cache_dir=cache),
    )


def test_cache_inside_the_config_data_moves_with_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    config = _config("data/small_dense", "data/small_dense/proposals")
    assert cache_dir_for(config, "mine") == str(tmp_path / "mine" / "proposals")
    # a COCO json or an image list: its folder
    (tmp_path / "mine" / "instances.json").write_text("{}")
    assert cache_dir_for(config, "mine/instances.json") == str(tmp_path / "mine" / "proposals")
    nested = _config("data/demo", "data/demo/cache/ss")
    assert cache_dir_for(nested, "/abs/set") == os.path.abspath("/abs/set/cache/ss")
    # a cache elsewhere stays where the config put it
    apart = _config("data/demo", "caches/demo")
    assert cache_dir_for(apart, "mine") == "caches/demo"
    moved = with_data_root(config, "mine")
    assert moved.data.root == "mine"
    assert moved.proposals.cache_dir == str(tmp_path / "mine" / "proposals")


def test_detect_proposals_writes_beside_the_named_data(tmp_path, monkeypatch):
    images = tmp_path / "photos"
    write_images(images, 2)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    fast = ["--set", "proposals.resize_long_side=160", "--set", "proposals.min_size=8"]
    assert main(["proposals", "--config", "demo", "--data", str(images), *fast]) == 0
    assert list(cwd.iterdir()) == []  # not data/demo/proposals here
    assert len(list((images / "proposals").glob("*.npz"))) == 2
