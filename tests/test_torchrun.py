"""Commands under torchrun with 2 gloo processes on the CPU: each rank takes its shard of the
images and rank 0 writes one result, the same as one process writes for all images."""

import json
import os
import subprocess
import sys

import pytest
from _tiny_model import save_tiny_checkpoint
from _train_data import CLASSES, make_tiny_voc

from detect.cli import main

pytestmark = pytest.mark.slow


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node NPROC -m detect ARGS`` in fresh processes."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", str(nproc), "-m", "detect", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_voc(tmp_path_factory.mktemp("tiny"), num_images=5)  # shards of 3 and 2


def test_eval_and_run_sharded_over_two_ranks_equal_one_process(data, tmp_path, capsys):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt", CLASSES)
    eval_args = ["eval", "--checkpoint", str(checkpoint), "--data", str(data / "voc")]
    eval_args += ["--set", f"proposals.import_file={data / 'proposals.json'}"]
    eval_args += ["--set", "test.score_threshold=0.0"]
    run_args = ["run", str(data / "voc" / "JPEGImages"), "--checkpoint", str(checkpoint)]
    run_args += ["--proposal-cache", str(tmp_path / "cache")]
    assert main([*eval_args, "--out", str(tmp_path / "eval1")]) == 0
    assert main([*run_args, "--out", str(tmp_path / "run1")]) == 0
    capsys.readouterr()

    done = torchrun(*eval_args, "--out", str(tmp_path / "eval2"))
    assert done.stdout.count("(voc07, 5 images)") == 1  # rank 0 alone reports, on all 5
    one, two = tmp_path / "eval1", tmp_path / "eval2"
    detections = json.loads((one / "detections.json").read_text())
    assert sum(map(len, detections["images"].values())) > 0  # something to compare
    assert (two / "detections.json").read_text() == (one / "detections.json").read_text()
    for comp4 in sorted((one / "comp4").iterdir()):
        assert (two / "comp4" / comp4.name).read_text() == comp4.read_text()
    metrics1, metrics2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    for metrics in (metrics1, metrics2):
        del metrics["seconds_per_image"]
    assert metrics2 == metrics1

    done = torchrun(*run_args, "--out", str(tmp_path / "run2"))
    assert done.stdout.count("5 image(s) processed") == 1
    one, two = tmp_path / "run1", tmp_path / "run2"
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    for path in sorted(one.glob("*.json")):  # every image's file and detections.json
        assert json.loads((two / path.name).read_text()) == json.loads(path.read_text())
