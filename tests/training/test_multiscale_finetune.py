"""Fine-tuning with several scales draws a random scale per window (or per image), as the
released ``spp_finetune_voc.m``; one scale behaves as before (nothing drawn)."""

from collections import Counter
from dataclasses import replace

import pytest
import torch
from _train_data import make_tiny_voc, tiny_config

from detect.errors import DetectError
from detect.models.poolers import SPPPooler
from detect.training import train
from detect.training.sampling import draw_scales

# 64 x 64 images; the tiny backbone (stride 16, padded) gives 3 x 3 maps at 48, 6 x 6 at 96.
MAP_SCALE = {(3, 3): 48, (6, 6): 96}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_voc(tmp_path_factory.mktemp("tiny"))


def _record_pooling(monkeypatch) -> list[tuple[int, int]]:
    """Every SPP pooling call of fine-tuning as ``(scale of its feature map, windows)``."""
    calls: list[tuple[int, int]] = []
    original = SPPPooler.pool_map

    def recording(self, model, feature_map, boxes, *args, **kwargs):
        calls.append((MAP_SCALE[tuple(feature_map.shape[1:])], boxes.shape[0]))
        return original(self, model, feature_map, boxes, *args, **kwargs)

    monkeypatch.setattr(SPPPooler, "pool_map", recording)
    return calls


@pytest.mark.parametrize(
    ("per", "mode"), [("window", "end_to_end"), ("image", "end_to_end"), ("window", "fc")]
)
def test_two_scales_record_where_windows_came_from(data, tmp_path, monkeypatch, per, mode):
    cfg = tiny_config(data, mode=mode, random_scale=per, allow_random_backbone=True)
    cfg = replace(cfg, model=replace(cfg.model, scales=(48, 96)))
    calls = _record_pooling(monkeypatch)
    train(cfg, out_dir=tmp_path / "run")
    images = cfg.finetune.iterations * cfg.finetune.images_per_batch  # 12 image visits
    windows = Counter()
    for scale, count in calls:
        windows[scale] += count
    total = windows[48] + windows[96]
    assert total > 8 * images  # up to 16 windows per image visit (fewer when candidates run out)
    # Both scales are used, each for a fair share of the windows (a uniform draw).
    assert 0.25 * total < windows[48] < 0.75 * total
    if per == "image":
        assert len(calls) == images  # one scale, one pooling call per image visit
    else:
        assert len(calls) > images  # an image's windows split over both scales


def test_one_scale_draws_nothing(data, tmp_path, monkeypatch):
    calls = _record_pooling(monkeypatch)
    cfg = tiny_config(data)
    cfg = replace(cfg, model=replace(cfg.model, scales=(48,)))
    train(cfg, out_dir=tmp_path / "run")
    assert {scale for scale, _ in calls} == {48}
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    assert draw_scales(16, 1, "window", generator).tolist() == [0] * 16
    assert torch.equal(generator.get_state(), state)  # no random number consumed


def test_draw_scales_per_window_and_per_image():
    generator = torch.Generator().manual_seed(0)
    per_window = draw_scales(1000, 3, "window", generator)
    assert set(per_window.tolist()) == {0, 1, 2}
    assert all(250 < n < 420 for n in Counter(per_window.tolist()).values())
    per_image = draw_scales(50, 3, "image", generator)
    assert len(set(per_image.tolist())) == 1


def test_bad_random_scale_is_one_line(data, tmp_path):
    cfg = tiny_config(data, random_scale="box")
    with pytest.raises(DetectError, match="finetune.random_scale must be one of"):
        train(cfg, out_dir=tmp_path / "run")
