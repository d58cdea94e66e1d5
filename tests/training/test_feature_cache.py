"""fc-mode conv maps on disk (fp16, keyed by content) with a RAM budget; workers train as the main
process does; a resumed fc run reads the interrupted run's maps and ends with the same weights."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
from _train_data import ctrl_c_after, make_tiny_voc, tiny_config

import detect.training.feature_cache as feature_cache
from detect.checkpoints import read_checkpoint
from detect.data import load_dataset
from detect.data.images import read_image
from detect.models import build_detector
from detect.training import train
from detect.training.feature_cache import ConvMapCache, backbone_fingerprint


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_voc(tmp_path_factory.mktemp("tiny"))


def with_workers(cfg, workers: int):
    return replace(cfg, runtime=replace(cfg.runtime, device="cpu", num_workers=workers))


def losses(log_csv) -> list[list[str]]:
    return [line.split(",")[:5] for line in log_csv.read_text().splitlines()]


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_workers_train_exactly_as_the_main_process(data, tmp_path):
    cfg = tiny_config(data)  # 6 iterations, flips and dropout on
    main = train(with_workers(cfg, 0), out_dir=tmp_path / "main")
    workers = train(with_workers(cfg, 2), out_dir=tmp_path / "workers")
    assert same_weights(
        read_checkpoint(main.checkpoint)["model"], read_checkpoint(workers.checkpoint)["model"]
    )
    # iteration, loss, cls_loss, bbox_loss, lr (the timing columns differ)
    assert losses(main.log_csv) == losses(workers.log_csv)


@pytest.mark.slow
def test_fc_resume_reads_the_cached_maps_and_ends_as_uninterrupted(data, tmp_path, monkeypatch):
    cfg = with_workers(tiny_config(data, mode="fc", allow_random_backbone=True), 0)
    full = train(cfg, out_dir=tmp_path / "full")

    with pytest.raises(KeyboardInterrupt):
        train(cfg, out_dir=tmp_path / "cut", on_iteration=ctrl_c_after(4))
    kept = {path.name for path in (tmp_path / "cut" / "features").glob("*.npy")}
    assert kept
    written = []
    write = ConvMapCache._write
    monkeypatch.setattr(
        ConvMapCache,
        "_write",
        lambda self, name, half: written.append(name) or write(self, name, half),
    )
    resumed = train(cfg, out_dir=tmp_path / "cut", resume=True)
    assert not set(written) & kept  # the interrupted run's maps were read back, not recomputed
    assert same_weights(
        read_checkpoint(full.checkpoint)["model"], read_checkpoint(resumed.checkpoint)["model"]
    )

    # Every stored map is the fp16 conv map of one training image, mirrored or not, computed
    # here with the (frozen) backbone of the checkpoint.
    model = build_detector("spp", cfg.model, 2)
    model.load_state_dict(read_checkpoint(full.checkpoint)["model"])
    model.eval()
    expected = []
    with torch.no_grad():
        for ann in load_dataset(cfg.data.root, "trainval", cfg.data.classes).annotations:
            image = read_image(ann.path)
            for view in (image, np.ascontiguousarray(image[:, ::-1])):
                prepared, _ = model.prepare(view)
                expected.append(model.backbone(prepared[None])[0].half().numpy())
    stored = list((tmp_path / "full" / "features").glob("*.npy"))
    assert 6 <= len(stored) <= 12  # 12 image visits over 6 images, mirrored or not
    for path in stored:
        array = np.load(path)
        assert array.dtype == np.float16
        assert any(np.array_equal(array, e) for e in expected), path.name


def tiny_model():
    return build_detector("spp", tiny_config_model(), 2)


def tiny_config_model():
    from detect.config import ModelConfig

    return ModelConfig(backbone="tiny", scales=(64,), pyramid_levels=(1, 2), fc_dims=(8, 8))


def test_map_names_differ_for_every_input_and_weights():
    torch.manual_seed(0)
    model = tiny_model()
    fingerprint = backbone_fingerprint(model, "fp32")
    cache = ConvMapCache(None, fingerprint, 1, torch.device("cpu"))
    names = {
        cache.name("a" * 64, False, 64),
        cache.name("b" * 64, False, 64),
        cache.name("a" * 64, True, 64),
        cache.name("a" * 64, False, 96),
    }
    assert len(names) == 4
    assert backbone_fingerprint(model, "bf16") != fingerprint
    with torch.no_grad():
        weight = next(model.backbone.parameters())
        weight[(0,) * weight.dim()] += 1e-3
    changed = backbone_fingerprint(model, "fp32")
    assert changed != fingerprint
    other = ConvMapCache(None, changed, 1, torch.device("cpu"))
    assert other.name("a" * 64, False, 64) != cache.name("a" * 64, False, 64)


def test_ram_budget_and_damaged_files(tmp_path, caplog):
    maps = [torch.randn(4, 16, 16) for _ in range(5)]  # 2 KiB each in fp16
    cache = ConvMapCache(tmp_path, "f", 5 / 1024, torch.device("cpu"))  # room for two
    for i, m in enumerate(maps):
        served = cache.get(str(i), False, 64, lambda m=m: m)
        assert torch.equal(served, m.half().float())
    assert len(cache.memory) == 2 and cache.bytes == 2 * 2048
    assert list(cache.memory) == [cache.name("3", False, 64), cache.name("4", False, 64)]
    assert cache.counts == {"ram": 0, "disk": 0, "computed": 5}

    def never():
        raise AssertionError("computed again")

    assert torch.equal(cache.get("0", False, 64, never), maps[0].half().float())  # from disk
    assert cache.get("4", False, 64, never) is not None and cache.counts["ram"] == 1
    (tmp_path / cache.name("1", False, 64)).write_bytes(b"damaged")
    with caplog.at_level(logging.WARNING, logger=feature_cache.__name__):
        again = cache.get("1", False, 64, lambda: maps[1])
    assert torch.equal(again, maps[1].half().float()) and "unreadable" in caplog.text

    read_only = ConvMapCache(tmp_path, "f", 1, torch.device("cpu"), read_only=True)
    assert torch.equal(read_only.get("0", False, 64, never), maps[0].half().float())
    fresh = torch.randn(4, 16, 16)
    assert torch.equal(read_only.get("new", False, 64, lambda: fresh), fresh.half().float())
    assert not (tmp_path / read_only.name("new", False, 64)).exists()
    assert list(read_only.memory) == [read_only.name("0", False, 64)]


@pytest.mark.slow
def test_svm_and_ridge_features_reuse_the_fine_tuning_maps(data, tmp_path, monkeypatch):
    cfg = tiny_config(data, mode="fc", allow_random_backbone=True)
    cfg = replace(
        cfg,
        svm=replace(cfg.svm, enabled=True, initial_negatives=50, rounds=1),
        bbox_reg=replace(cfg.bbox_reg, method="ridge", min_iou=0.5),
    )
    computed, read = [], []
    write, load = ConvMapCache._write, ConvMapCache._read
    monkeypatch.setattr(
        ConvMapCache,
        "_write",
        lambda self, name, half: computed.append(name) or write(self, name, half),
    )

    def reading(self, name):
        half = load(self, name)
        if half is not None:
            read.append(name)
        return half

    monkeypatch.setattr(ConvMapCache, "_read", reading)
    result = train(with_workers(cfg, 0), out_dir=tmp_path / "run")
    assert result.stages == ("finetune", "svm", "ridge")
    # The region-feature pass reads the unmirrored maps fine-tuning stored instead of running
    # the backbone again; no map is ever computed twice.
    assert read and set(read) <= set(computed)
    assert len(computed) == len(set(computed))
    # ... and stores none of its own (read only: one pass gains nothing from them).
    assert {path.name for path in (tmp_path / "run" / "features").iterdir()} == set(computed)
    assert not (tmp_path / "run" / "region_features").exists()  # shards removed after fitting
