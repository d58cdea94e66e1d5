"""A reduced `detect demo` (tiny data, few iterations) runs end to end and writes every file."""

import json

import pytest

from detect.cli import main
from detect.demo import run_demo


def reduced_overrides(tmp_path):
    return [
        f"data.root={tmp_path / 'data'}",
        f"proposals.cache_dir={tmp_path / 'data' / 'proposals'}",
        "proposals.workers=1",
        "demo.num_train=6",
        "demo.num_val=2",
        "demo.num_test=4",
        "demo.image_size=[128, 160]",
        "demo.rcnn_eval_images=2",
        "demo.bench_images=1",
        "demo.draw_images=2",
        "demo.rcnn_overrides=[finetune.mode=fc, finetune.iterations=3, svm.enabled=false, "
        "bbox_reg.method=learned, test.classifier=softmax]",
        "finetune.iterations=6",
        "finetune.lr_steps=[4]",
        "finetune.checkpoint_every=3",
        "finetune.log_every=2",
        "svm.rounds=1",
        "bench.rcnn_sample=8",
        "bench.matmul_size=256",
        "model.fc_dims=[32, 32]",
        "model.svd_ranks=[16, 8]",
        "demo.classify_modes=[]",  # the classification stages: tests/classify/test_classify_demo_stages.py
        "demo.pretrain=false",
    ]


@pytest.mark.slow
def test_reduced_demo_end_to_end_and_rerun_reuses_work(tmp_path):
    out = tmp_path / "run"
    summary = run_demo(out, overrides=reduced_overrides(tmp_path))

    for path in summary.files:
        assert path is not None and path.is_file(), path
    for name in ("report.md", "bench.json", "bench.txt", "detections.png", "config.yaml"):
        assert (out / name).is_file()
    assert len(list((out / "detections").glob("*.png"))) == 2
    assert (out / "spp" / "eval" / "pr_curves.png").is_file()
    assert (out / "rcnn" / "eval" / "metrics.json").is_file()
    metrics = json.loads((out / "spp" / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] == 4 and metrics["method"] == "spp"
    assert json.loads((out / "rcnn" / "eval" / "metrics.json").read_text())["num_images"] == 2
    assert 0.0 <= summary.spp_map <= 1.0
    bench = json.loads((out / "bench.json").read_text())
    assert {row["path"] for row in bench["rows"]} == {"spp", "rcnn"}
    assert summary.speedup > 0
    report = (out / "report.md").read_text()
    assert "SPP-net VOC07 mAP" in report and "speed-up" in report

    # A rerun reuses the data set, the proposal cache and both finished checkpoints: none of
    # their files is written again (no timing: the reduced stages take well under a second).
    kept = [
        summary.files[1],
        *(tmp_path / "data").rglob("*.npz"),
        *(tmp_path / "data").rglob("*.xml"),
    ]
    assert len(kept) == 1 + 12 + 12  # the checkpoint, 12 images' proposals and annotations
    mtimes = [path.stat().st_mtime_ns for path in kept]
    again = run_demo(out, overrides=reduced_overrides(tmp_path))
    assert [path.stat().st_mtime_ns for path in kept] == mtimes
    assert again.spp_map == pytest.approx(summary.spp_map)


def test_demo_bad_config_value_is_a_clean_error(tmp_path, capsys):
    status = main(["demo", "--out", str(tmp_path), "--set", "demo.num_tset=3"])
    assert status == 2
    assert "unknown key 'num_tset'" in capsys.readouterr().err
    # A bad pretraining count stops the demo before its first stage: nothing is written.
    out = tmp_path / "run"
    status = main(["demo", "--out", str(out), "--set", "demo.pretrain_images=-3"])
    assert status == 2
    assert "demo.pretrain_images must be >= 0" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_spp_net_learns_to_detect_the_synthetic_shapes(tmp_path):
    """End to end from scratch (40 training images, 300 iterations, SVMs + ridge): far above chance.

    Deterministic: 0.785 VOC07 mAP with this seed (0). Over seeds 0-11 (data and training both
    change) it measured 0.62-0.85, median 0.78, 11 of 12 seeds at 0.71 or more; the bar 0.70 sits
    just below that, so a loss of about 0.09 fails here while an unlucky platform-dependent
    rounding path is unlikely to. A broken projection, pooling, sampling or scorer drops it far
    lower.
    """
    overrides = [
        f"data.root={tmp_path / 'data'}",
        f"proposals.cache_dir={tmp_path / 'data' / 'proposals'}",
        "proposals.workers=1",
        "proposals.resize_long_side=200",
        "demo.num_train=40",
        "demo.num_val=0",
        "demo.num_test=20",
        "demo.image_size=[160, 200]",
        "demo.rcnn_eval_images=0",
        "demo.bench_images=1",
        "demo.draw_images=1",
        "model.scales=[160]",
        "finetune.iterations=300",
        "finetune.lr_steps=[240]",
        "bench.rcnn_sample=8",
        "bench.matmul_size=256",
        "demo.classify_modes=[]",
        "demo.pretrain=false",
    ]
    summary = run_demo(tmp_path / "run", overrides=overrides)
    assert summary.spp_map >= 0.70, summary.spp_ap
    assert summary.rcnn_map is None  # demo.rcnn_eval_images=0 skips the baseline
