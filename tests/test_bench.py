"""`detect bench` on a tiny backbone, a small image and a few proposals."""

import json

import numpy as np
import pytest
import torch

from detect.bench import count_flops, format_bench_report, head_flops_per_region, run_bench
from detect.cli import main
from detect.config import BenchConfig, Config, ModelConfig
from detect.data.images import write_image
from detect.models import build_detector

MODEL = ModelConfig(backbone="tiny", scales=(96,), fc_dims=(32, 16), rcnn_context=4)


def test_flops_counted_from_the_modules_that_ran():
    model = build_detector("spp", MODEL, 3).eval()
    with count_flops(model) as flops, torch.no_grad():
        model.head(model.pyramid.pool_maps(model.backbone(torch.zeros(2, 3, 64, 48))))
    # tiny: 3x3 convs, widths 32 64 128 128 64, strides 2 2 2 2 1; by hand for a 64x48 input.
    sizes = [(32, 24), (16, 12), (8, 6), (4, 3), (4, 3)]
    channels = [3, 32, 64, 128, 128, 64]
    expected = sum(
        2 * 2 * h * w * channels[i + 1] * channels[i] * 9 for i, (h, w) in enumerate(sizes)
    )
    assert flops.conv == expected
    per_region = 2 * (64 * 50 * 32 + 32 * 16 + 16 * 4 + 16 * 16)
    assert head_flops_per_region(model.head) == per_region
    assert flops.fc == 2 * per_region


def test_run_bench_report():
    model = build_detector("spp", MODEL, 3)
    image = np.random.randint(0, 256, (96, 128, 3), dtype=np.uint8)
    proposals = torch.tensor(
        [[0, 0, 64, 64], [1, 1, 65, 65], [20, 10, 120, 90], [40, 40, 60, 60], [5, 5, 125, 95.0]]
    )
    config = Config(
        model=MODEL,
        bench=BenchConfig(
            rcnn_sample=3, rcnn_batch=2, multi_scales=(64, 128), svd_ranks=(16, 8), matmul_size=128
        ),
    )
    report = run_bench(model, [image], [proposals], config, svd=True)
    rows = report["rows"]
    assert [(r["path"], len(r["scales"]), r["head"]) for r in rows] == [
        ("spp", 1, "full"),
        ("spp", 2, "full"),
        ("rcnn", 0, "full"),
        ("spp", 1, "svd 16/8"),
        ("spp", 2, "svd 16/8"),
        ("rcnn", 0, "svd 16/8"),
    ]
    rcnn = rows[2]
    for row in rows[:2]:
        assert row["speedup"] == pytest.approx(rcnn["total_seconds"] / row["total_seconds"])
        assert 1 <= row["windows"] <= 5
    # R-CNN conv FLOPs: every one of the 5 crops (128x128) through the backbone.
    with count_flops(model) as flops, torch.no_grad():
        model.backbone(torch.zeros(1, 3, 128, 128))
    assert rcnn["conv_gflop"] == pytest.approx(5 * flops.conv / 1e9)
    assert report["matmul_gflops_per_s"] > 0
    text = format_bench_report(report)
    assert "random sample of 3 crops" in text and "GFLOP/s" in text


def write_scene(path):
    rng = np.random.default_rng(0)
    image = np.full((120, 160, 3), 90, dtype=np.uint8)
    image[20:70, 30:90] = (200, 40, 40)
    image[60:110, 90:150] = (40, 180, 60)
    image = np.clip(image + rng.integers(0, 30, image.shape), 0, 255).astype(np.uint8)
    write_image(path, image)


def write_bench_config(tmp_path):
    (tmp_path / "bench.yaml").write_text(
        "model: {backbone: tiny, scales: [96], fc_dims: [32, 32], rcnn_context: 4}\n"
        f"proposals: {{cache_dir: {tmp_path / 'cache'}}}\n"
        "bench: {rcnn_sample: 4, rcnn_batch: 4, multi_scales: [], matmul_size: 128}\n"
    )
    return tmp_path / "bench.yaml"


def test_bench_command(tmp_path, capsys):
    write_scene(tmp_path / "scene.png")
    write_bench_config(tmp_path)
    status = main(
        [
            "bench",
            "--config",
            str(tmp_path / "bench.yaml"),
            "--images",
            str(tmp_path / "scene.png"),
            "--proposals",
            "40",
            "--json",
            str(tmp_path / "bench.json"),
        ]
    )
    assert status == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["backbone"] == "tiny" and 0 < report["regions_per_image"] <= 40
    assert "speed-up" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--proposals", "0"], "bench.num_proposals must be >= 1, got 0"),
        (["--proposals", "-1"], "bench.num_proposals must be >= 1, got -1"),
        (["--threads", "0"], "--threads: expected a positive number, got 0"),
        (["--threads", "-2"], "--threads: expected a positive number, got -2"),
        (["--scales", "0"], "model.scales must be a non-empty list of positive sizes"),
        (["--multi-scales", "0", "-5"], "bench.multi_scales must be positive sizes"),
        (["--set", "bench.repeats=0"], "bench.repeats must be >= 1, got 0"),
        (["--json", "."], "--json .: is a folder"),
        (["--images", "folder"], "folder: is a folder, not an image file"),
        (["--checkpoint", "text.pt"], "text.pt: cannot read: not a file written by torch.save"),
    ],
)
def test_bench_bad_input_fails_before_timing(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    write_scene(tmp_path / "scene.png")
    (tmp_path / "folder").mkdir()
    (tmp_path / "text.pt").write_text("hello")
    config = write_bench_config(tmp_path)
    args = ["bench", "--config", str(config), "--images", "scene.png", "--proposals", "40"]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("detect bench: error:") and message in err
    assert "Traceback" not in err and not (tmp_path / "cache").exists()
