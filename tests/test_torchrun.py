"""Commands under torchrun with 2 gloo processes on the CPU, against one process doing all the
work: `detect eval` and `detect run` shard the images and rank 0 writes the same result;
`detect train` (DistributedDataParallel, sharded region features) ends with the same weights,
SVMs and box regressor. One torchrun launch runs the three commands (start-up is most of the
cost)."""

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from _tiny_model import save_tiny_checkpoint
from _train_data import CLASSES, make_tiny_voc, tiny_config_dict

from detect.checkpoints import read_checkpoint
from detect.cli import main
from detect.config import config_from_dict
from detect.models import build_detector

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).with_name("_torchrun_commands.py")


def untimed(metrics: dict) -> dict:
    """``metrics`` without its wall-clock timings."""
    return {k: v for k, v in metrics.items() if "seconds" not in k and "per_s" not in k}


def torchrun(commands: list[list[str]], nproc: int = 2) -> subprocess.CompletedProcess:
    """``detect`` with each argument list of ``commands`` in turn, in ``nproc`` processes of one
    ``torchrun --standalone`` launch."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", str(nproc), str(SCRIPT), json.dumps(commands)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


# A rank aborting in native code ("terminate called without an active exception", SIGABRT), seen
# about once in 20 launches of this file's commands (the one-image-per-iteration training, later
# the sharded eval). Since the ranks meet at a barrier before tearing the group down
# (detect.distributed.process_group) it has not come back in 10 runs of this file; should it,
# the launch is repeated once, with a warning.
NATIVE_ABORT = "terminate called without an active exception"


def torchrun_checked(commands: list[list[str]], clean: Path) -> subprocess.CompletedProcess:
    """:func:`torchrun`, asserting success; a launch that a native abort ended is repeated once
    (warned) after removing ``clean``, the folder its commands write."""
    done = torchrun(commands)
    if done.returncode != 0 and NATIVE_ABORT in done.stderr:
        warnings.warn(f"torchrun: a rank aborted ({NATIVE_ABORT}); launching again", stacklevel=2)
        shutil.rmtree(clean, ignore_errors=True)
        done = torchrun(commands)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every command once in this process (``one``) and once in 2 processes (``two``):
    ``(root, torchrun's output)``."""
    root = tmp_path_factory.mktemp("torchrun")
    data = make_tiny_voc(root, num_images=5)  # shards of 3 and 2 images
    checkpoint = save_tiny_checkpoint(root / "tiny.pt", CLASSES)
    config = tiny_config_dict(data, iterations=4, images_per_batch=3, checkpoint_every=2)
    config["svm"] = {"enabled": True, "rounds": 2}
    config["bbox_reg"] = {"method": "ridge"}
    (root / "train.yaml").write_text(yaml.safe_dump(config))
    # One image per iteration: rank 1 never has a window and joins DDP's averaging with zeros.
    single = tiny_config_dict(data, iterations=3, images_per_batch=1, checkpoint_every=2)
    (root / "single.yaml").write_text(yaml.safe_dump(single))
    proposals = ["--set", f"proposals.import_file={data / 'proposals.json'}"]

    def commands(name: str) -> list[list[str]]:
        eval_ = ["eval", "--checkpoint", str(checkpoint), "--data", str(data / "voc"), *proposals]
        eval_ += ["--set", "test.score_threshold=0.0", "--out", str(root / name / "eval")]
        run = ["run", str(data / "voc" / "JPEGImages"), "--checkpoint", str(checkpoint)]
        run += ["--proposal-cache", str(root / name / "cache"), "--out", str(root / name / "run")]
        # selective search at the images' size, in this process (a worker pool takes seconds)
        run += ["--set", "proposals.resize_long_side=64", "--set", "proposals.workers=0"]
        train = ["train", "--config", str(root / "train.yaml"), "--out", str(root / name / "tr")]
        single = ["train", "--config", str(root / "single.yaml"), "--out", str(root / name / "tr1")]
        return [eval_, run, train, single]

    for argv in commands("one"):
        assert main(argv) == 0
    return root, torchrun_checked(commands("two"), root / "two")


def test_eval_sharded_over_two_ranks_equals_one_process(runs):
    root, done = runs
    assert done.stdout.count("(voc07, 5 images)") == 1  # rank 0 alone reports, on all 5
    one, two = root / "one" / "eval", root / "two" / "eval"
    detections = json.loads((one / "detections.json").read_text())
    assert sum(map(len, detections["images"].values())) > 0  # something to compare
    assert (two / "detections.json").read_text() == (one / "detections.json").read_text()
    for comp4 in sorted((one / "comp4").iterdir()):
        assert (two / "comp4" / comp4.name).read_text() == comp4.read_text()
    metrics1, metrics2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert untimed(metrics2) == untimed(metrics1)


def test_run_sharded_over_two_ranks_equals_one_process(runs):
    root, done = runs
    assert done.stdout.count("5 image(s) processed") == 1
    one, two = root / "one" / "run", root / "two" / "run"
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    for path in sorted(one.glob("*.json")):  # every image's file and detections.json
        assert json.loads((two / path.name).read_text()) == json.loads(path.read_text())


def test_train_on_two_ranks_ends_with_one_process_weights(runs):
    root, done = runs
    assert done.stdout.count("trained spp on 5 images") == 2  # rank 0 alone, of both runs
    one = read_checkpoint(root / "one" / "tr" / "checkpoint.pt")
    two = read_checkpoint(root / "two" / "tr" / "checkpoint.pt")
    assert one["model"].keys() == two["model"].keys()
    for key, value in one["model"].items():
        assert torch.allclose(two["model"][key], value, rtol=1e-4, atol=1e-6), key
    torch.manual_seed(3)  # the weights training started from (train seeds with config.seed)
    config = config_from_dict(yaml.safe_load((root / "train.yaml").read_text()), "train.yaml")
    start = build_detector("spp", config.model, len(CLASSES)).state_dict()
    assert not torch.allclose(start["head.cls_score.weight"], one["model"]["head.cls_score.weight"])
    # The same losses in the log (rank 0's, summed over the ranks' windows), written once.
    log1, log2 = (
        (root / name / "tr" / "train_log.csv").read_text().splitlines() for name in ("one", "two")
    )
    assert len(log2) == len(log1) == 1 + 2
    for row1, row2 in zip(log1[1:], log2[1:], strict=True):
        losses1, losses2 = (list(map(float, row.split(",")[1:4])) for row in (row1, row2))
        assert losses2 == pytest.approx(losses1, rel=1e-5)
    # SVMs and ridge regressor fitted by rank 0 on the region features of both ranks' shards.
    for name in ("svm", "ridge"):
        assert one[name] is not None
        for key, value in one[name].items():
            other = two[name][key]
            if isinstance(value, torch.Tensor):
                assert torch.allclose(other, value, rtol=1e-3, atol=1e-5), (name, key)
            elif isinstance(value, float):
                assert other == pytest.approx(value, rel=1e-4), (name, key)
            else:
                assert other == value, (name, key)


def test_train_with_more_ranks_than_images_per_batch(runs):
    root, _ = runs
    one = read_checkpoint(root / "one" / "tr1" / "checkpoint.pt")["model"]
    two = read_checkpoint(root / "two" / "tr1" / "checkpoint.pt")["model"]
    for key, value in one.items():
        assert torch.allclose(two[key], value, rtol=1e-4, atol=1e-6), key
