"""`detect bench` on a tiny backbone, a small image and a few proposals."""

import json
import os

import numpy as np
import pytest
import torch

import detect.bench
from detect import bench_peers, cpu_threads
from detect.bench import (
    PathTiming,
    count_flops,
    format_bench_report,
    head_flops_per_region,
    run_bench,
    timing_summary,
)
from detect.cli import main
from detect.config import BenchConfig, Config, ModelConfig, RuntimeConfig
from detect.cpu_threads import count_physical_cores, physical_cores
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


IMAGE = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
PROPOSALS = torch.tensor(
    [[0, 0, 64, 64], [1, 1, 65, 65], [20, 10, 120, 90], [40, 40, 60, 60], [5, 5, 125, 95.0]]
)


def bench_config(precision: str = "fp32", **bench) -> Config:
    values = dict(
        rcnn_sample=3, rcnn_batch=2, multi_scales=(64, 128), svd_ranks=(16, 8), matmul_size=128
    )
    return Config(
        model=MODEL,
        bench=BenchConfig(**{**values, **bench}),
        runtime=RuntimeConfig(device="cpu", precision=precision),
    )


def test_run_bench_report():
    model = build_detector("spp", MODEL, 3)
    report = run_bench(model, [IMAGE], [PROPOSALS], bench_config(repeats=2), svd=True)
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
        ratios = [r / s for r, s in zip(rcnn["total_runs_s"], row["total_runs_s"], strict=True)]
        assert row["speedup"] == pytest.approx(np.median(ratios))
        assert (row["speedup_min"], row["speedup_max"]) == pytest.approx((min(ratios), max(ratios)))
        assert 1 <= row["windows"] <= 5
    for row in rows:
        assert row["precision"] == "fp32" and len(row["total_runs_s"]) == 2
        assert row["total_s"] == pytest.approx(np.median(row["total_runs_s"]))
    # R-CNN conv FLOPs: every one of the 5 crops (128x128) through the backbone.
    with count_flops(model) as flops, torch.no_grad():
        model.backbone(torch.zeros(1, 3, 128, 128))
    assert rcnn["conv_gflop"] == pytest.approx(5 * flops.conv / 1e9)
    assert report["matmul_gflops_per_s"] > 0
    text = format_bench_report(report)
    assert "random sample of 3 crops" in text and "GFLOP/s" in text
    assert "median of 2 interleaved pass(es)" in text


def test_passes_are_interleaved_after_one_warm_up_of_each_path(monkeypatch):
    calls = []
    for name in ("spp_flops", "rcnn_flops", "spp_pass", "rcnn_pass"):
        original = getattr(detect.bench, name)

        def logged(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(detect.bench, name, logged)
    model = build_detector("spp", MODEL, 3)
    run_bench(model, [IMAGE], [PROPOSALS], bench_config(repeats=3, multi_scales=()))
    warm_up = ["spp_flops", "rcnn_flops"]
    assert calls == warm_up + ["spp_pass", "rcnn_pass"] * 3


def test_summarize_takes_medians_and_the_spread():
    runs = [
        PathTiming({"conv": 1.0, "fc": 4.0}),
        PathTiming({"conv": 3.0, "fc": 1.0}),
        PathTiming({"conv": 2.0, "fc": 9.0}),
    ]
    row = timing_summary(runs)
    assert row["seconds"] == {"conv": 2.0, "fc": 4.0}  # medians stage by stage
    assert row["total_runs_s"] == [5.0, 4.0, 11.0]
    assert (row["total_s"], row["total_min_s"], row["total_max_s"]) == (5.0, 4.0, 11.0)


def test_bf16_runs_every_fc_layer_and_conv_of_both_paths_in_bfloat16():
    model = build_detector("spp", MODEL, 3)
    dtypes = set()
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    for layer in layers:
        layer.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
    report = run_bench(model, [IMAGE], [PROPOSALS], bench_config("bf16", multi_scales=()))
    assert dtypes == {torch.bfloat16}
    assert [row["precision"] for row in report["rows"]] == ["bf16", "bf16"]


def test_physical_cores_count_hyper_threads_once():
    # 2 sockets x 2 cores x 2 hyper-threads: 8 logical CPUs, 4 cores.
    entries = [
        f"processor\t: {i}\nphysical id\t: {i // 4}\ncore id\t\t: {(i // 2) % 2}\n"
        for i in range(8)
    ]
    assert count_physical_cores("\n".join(entries)) == 4
    assert count_physical_cores("processor\t: 0\n") == 0
    assert 1 <= physical_cores() <= (torch.multiprocessing.cpu_count() or 1)


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
            "--precision",
            "bf16",
        ]
    )
    assert status == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["backbone"] == "tiny" and 0 < report["regions_per_image"] <= 40
    assert report["threads"] == physical_cores() and report["precision"] == "bf16"
    for row in report["rows"]:
        assert {"path", "scales", "head", "precision", "total_s", "speedup"} <= set(row)
        assert row["precision"] == "bf16" and row["total_s"] > 0
    assert "speed-up" in capsys.readouterr().out


def test_peers_are_torchvision_detectors():
    from torchvision.models import detection

    assert set(bench_peers.PEERS.values()) <= set(detection.__dict__)


@pytest.mark.slow
def test_bench_peers_rows_end_to_end(tmp_path, capsys, monkeypatch):
    # The MobileNetV3 peer only: the ResNet-50 one takes the same path at 5x the time.
    monkeypatch.setattr(
        bench_peers, "PEERS", {"frcnn-mnv3-fpn": "fasterrcnn_mobilenet_v3_large_fpn"}
    )
    write_scene(tmp_path / "scene.png")
    args = ["bench", "--config", str(write_bench_config(tmp_path))]
    args += ["--images", str(tmp_path / "scene.png"), "--proposals", "40", "--threads", "1"]
    args += ["--set", "bench.repeats=1", "--peers", "--json", str(tmp_path / "bench.json")]
    assert main(args) == 0
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    spp, ours, shared, *peers = rows[0], rows[2], rows[3], *rows[4:]
    assert ours["path"] == "spp+ss" and ours["network_s"] == spp["total_s"]
    assert ours["total_s"] == pytest.approx(ours["proposal_s"] + spp["total_s"])
    # SPP-net + RPN on the shared conv map: one pass timed by stage, proposals.rpn_post_nms at most
    assert shared["path"] == "spp+rpn" and 0 < shared["proposals"] <= 300
    assert set(shared["seconds"]) == {"conv", "rpn", "pool", "fc", "post"}
    assert shared["total_s"] == pytest.approx(sum(shared["seconds"].values()))
    assert shared["speedup"] == pytest.approx(shared["total_s"] / ours["total_s"])
    assert [row["path"] for row in peers] == ["frcnn-mnv3-fpn"]
    for row in peers:
        assert row["speedup"] == pytest.approx(row["total_s"] / ours["total_s"])
        assert row["scales"] == [800] and row["total_s"] > 0
    out = capsys.readouterr().out
    assert "end to end, proposals included" in out and "frcnn-mnv3-fpn" in out
    assert "shared conv" in out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--proposals", "0"], "bench.num_proposals must be >= 1, got 0"),
        (["--proposals", "-1"], "bench.num_proposals must be >= 1, got -1"),
        (["--threads", "0"], "--threads: expected a positive number, got 0"),
        (["--precision", "fp16"], "fp16 needs a GPU"),
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


def test_free_cores_leave_out_the_cores_the_load_average_says_are_busy(monkeypatch):
    """Where /proc/stat cannot be read (macOS), the 1-minute load average decides."""
    monkeypatch.setattr(cpu_threads, "physical_cores", lambda: 4)
    monkeypatch.setattr(cpu_threads, "busy_fraction", lambda interval=0.5: None)
    for load, free in [(0.2, 4), (1.4, 3), (2.6, 1), (9.0, 1)]:
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, 0.0, 0.0))
        assert cpu_threads.free_cores() == free


def test_free_cores_follow_the_cpu_time_used_now_not_the_lagging_load_average(monkeypatch):
    monkeypatch.setattr(cpu_threads, "physical_cores", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (4.0, 4.0, 4.0))  # a job that just ended
    for fraction, free in [(0.0, 4), (0.2, 3), (0.5, 2), (0.74, 1), (1.0, 1)]:
        monkeypatch.setattr(cpu_threads, "busy_fraction", lambda interval=0.5, f=fraction: f)
        assert cpu_threads.free_cores() == free


def test_cpu_times_read_the_busy_and_total_ticks_of_proc_stat():
    # user nice system idle iowait irq softirq steal guest guest_nice
    text = "cpu  100 5 50 1000 20 3 2 7 40 0\ncpu0 50 2 25 500 10 1 1 3 20 0\nintr 1 2 3\n"
    busy = 100 + 5 + 50 + 3 + 2 + 7  # guest time is already counted in user
    assert cpu_threads.cpu_times(text) == (busy, busy + 1000 + 20)
    assert cpu_threads.cpu_times("intr 1 2 3\n") is None


def test_busy_fraction_is_the_share_of_ticks_used_between_two_readings(monkeypatch, tmp_path):
    readings = iter(["cpu 100 0 100 800 0 0 0 0\n", "cpu 250 0 150 1000 0 0 0 0\n"])
    monkeypatch.setattr(cpu_threads.Path, "read_text", lambda self: next(readings))
    monkeypatch.setattr(cpu_threads.time, "sleep", lambda seconds: None)
    # busy 200 -> 400 ticks, total 1000 -> 1400: 200 of 400 ticks busy
    assert cpu_threads.busy_fraction() == 0.5
