"""Nothing lost, nothing stale (issue 11, points 1-7): finished runs are not overwritten, damaged
checkpoints are refused, killed writers' temp files are cleaned, Ctrl-C says what was kept."""

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from _train_data import make_tiny_voc, tiny_config_dict

from detect.cli import main
from detect.files import atomic_write_text

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_voc(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory):
    """A finished 1-iteration run folder and its config file."""
    folder = tmp_path_factory.mktemp("finished")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(data, iterations=1)))
    assert main(["train", "--config", str(config), "--out", str(folder / "run")]) == 0
    return folder / "run", config


def last_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    return lines[-1]


def test_train_refuses_to_overwrite_a_finished_run(finished_run, tmp_path, capsys):
    run, config = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = (copy / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--out", str(copy)]) == 2
    line = last_error_line(capsys.readouterr().err)
    assert line.startswith("detect train: error: run folder") and str(copy) in line
    assert "--resume" in line and "--out" in line and "--overwrite" in line
    assert (copy / "checkpoint.pt").read_bytes() == before  # not touched
    args = ["train", "--config", str(config), "--out", str(copy)]
    assert main([*args, "--resume", "--overwrite"]) == 2
    assert "contradict" in last_error_line(capsys.readouterr().err)
    assert main([*args, "--overwrite"]) == 0  # asked for explicitly
    assert (copy / "checkpoint.pt").read_bytes() != before


def member_data_offset(path: Path, name: str) -> tuple[int, int]:
    """``(offset, size)`` of the stored bytes of zip member ``name``, read from its local header
    (30 fixed bytes, then the file name and the extra field)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_length + extra_length, info.file_size


def test_a_damaged_checkpoint_is_refused_naming_the_file(finished_run, data, tmp_path, capsys):
    run, _ = finished_run
    damaged = tmp_path / "damaged.pt"
    shutil.copy(run / "checkpoint.pt", damaged)
    with zipfile.ZipFile(damaged) as archive:
        largest = max(archive.infolist(), key=lambda info: info.file_size).filename
    offset, size = member_data_offset(damaged, largest)
    assert size > 8192
    raw = bytearray(damaged.read_bytes())
    start = offset + size // 2 - 2048
    raw[start : start + 4096] = bytes(b ^ 0x5A for b in raw[start : start + 4096])  # 4 KB flipped
    damaged.write_bytes(bytes(raw))
    image = data / "voc" / "JPEGImages" / "0000.png"
    commands = [
        ["eval", "--checkpoint", str(damaged), "--out", str(tmp_path / "ev")],
        ["run", "--checkpoint", str(damaged), str(image), "--out", str(tmp_path / "rn")],
    ]
    for command in commands:
        capsys.readouterr()
        assert main(command) == 2, command
        line = last_error_line(capsys.readouterr().err)
        assert line.startswith(f"detect {command[0]}: error: checkpoint {damaged}: damaged")
        assert largest in line
    assert not (tmp_path / "ev").exists() and not (tmp_path / "rn").exists()


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from detect.files import atomic_path
with atomic_path(Path(sys.argv[1])) as tmp:
    tmp.write_bytes(b"half a checkpoint" * 256)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_temp_files_of_a_killed_writer_are_removed_on_the_next_write(tmp_path):
    target = tmp_path / "checkpoint.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], env=env)
    assert done.returncode == -9
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".checkpoint.pt.")]
    assert len(left) == 1 and left[0].name.endswith(".tmp") and not target.exists()
    # An old temp file with no writer tag (an earlier version's), unchanged for two hours.
    old = tmp_path / ".checkpoint.pt.k2j4xq9a.tmp"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    recent = tmp_path / ".checkpoint.pt.zz81mmqa.tmp"  # untagged but recent: maybe a live writer
    recent.write_bytes(b"x")
    other = tmp_path / ".other.pt.k2j4xq9a.tmp"  # another target's, old: cleaned as well
    other.write_bytes(b"x")
    mine = tmp_path / ".notes.tmp"  # not named like the project's temporary files: never touched
    mine.write_bytes(b"x")
    for path in (other, mine):
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    atomic_write_text(target, "new")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([recent.name, mine.name, "checkpoint.pt"])
    assert target.read_text() == "new"


LIVE_WRITER = """
import sys, time
from pathlib import Path
from detect.files import atomic_path
with atomic_path(Path(sys.argv[1])) as tmp:
    tmp.write_bytes(b"in progress")
    sys.stdin.readline()  # until the test says go on
"""


def test_a_live_writers_temp_file_is_kept(tmp_path):
    target = tmp_path / "cache.npz"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", LIVE_WRITER, str(target)]
    writer = subprocess.Popen(command, env=env, stdin=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
            assert time.time() < deadline and writer.poll() is None
            time.sleep(0.05)
        atomic_write_text(target, "mine")  # the other process is still writing it
        assert len([p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]) == 1
    finally:
        writer.communicate(b"go\n", timeout=60)
    assert writer.returncode == 0 and target.read_bytes() == b"in progress"  # it finished last
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]


def test_ctrl_c_during_the_proposal_stage_says_what_was_kept(data, tmp_path, capsys, monkeypatch):
    import detect.proposals.compute as compute

    values = tiny_config_dict(data, iterations=1)
    cache = tmp_path / "cache"
    values["proposals"] = {"import_file": "", "cache_dir": str(cache), "resize_long_side": 128}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(values))
    search, calls, interrupt = compute.propose, [], True

    def ctrl_c_at_the_third_image(image, method, params):
        calls.append(1)
        if len(calls) == 3 and interrupt:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C does
        return search(image, method, params)

    monkeypatch.setattr(compute, "propose", ctrl_c_at_the_third_image)
    args = ["train", "--config", str(config), "--out", str(tmp_path / "run")]
    assert main(args) == 130
    line = last_error_line(capsys.readouterr().err)
    assert line.startswith("detect train: interrupted: while computing proposals")
    assert f"proposal cache {cache} keeps the proposals of 2 of 6 images" in line
    assert "no checkpoint" in line and "same command again" in line and "--resume" not in line
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert len(list(cache.glob("*.npz"))) == 2
    calls.clear()
    interrupt = False
    assert main(args) == 0  # as the message says: the same command again
    assert len(calls) == 4  # only the images that were not cached


def test_ctrl_c_during_fine_tuning_names_the_saved_iteration(data, tmp_path, capsys):
    from detect.training import pipeline

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(data, iterations=6)))
    original = pipeline.finetune

    def ctrl_c_at_4(*args):
        on_iteration = lambda done: done == 4 and signal.raise_signal(signal.SIGINT)  # noqa: E731
        return original(*args[:-1], on_iteration)

    pipeline.finetune = ctrl_c_at_4
    try:
        args = ["train", "--config", str(config), "--out", str(tmp_path / "run")]
        assert main(args) == 130
    finally:
        pipeline.finetune = original
    line = last_error_line(capsys.readouterr().err)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    assert f"checkpoint {checkpoint} saved at iteration 4" in line and "plus --resume" in line
    assert main([*args, "--resume"]) == 0


@pytest.mark.parametrize("checkpoint_every", [1, 2])
def test_a_diverged_run_keeps_only_finite_weights_that_gave_a_good_loss(
    data, tmp_path, capsys, checkpoint_every
):
    import re

    import torch

    from detect.checkpoints import read_checkpoint
    from detect.config import config_from_dict
    from detect.models import build_detector

    values = tiny_config_dict(
        data, iterations=30, lr=1e6, lr_steps=[], checkpoint_every=checkpoint_every
    )
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(values))
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run)]) == 2
    line = last_error_line(capsys.readouterr().err)
    found = re.search(
        r"diverged at iteration (\d+): .*checkpoint (\S+) \(iteration (\d+)\) is kept", line
    )
    assert found and found[2] == str(run / "checkpoint.pt"), line
    payload = read_checkpoint(run / "checkpoint.pt")
    assert payload["iteration"] == int(found[3]) < int(found[1])
    weights = [v for v in payload["model"].values() if v.is_floating_point()]
    assert all(torch.isfinite(v).all() for v in weights)
    assert max(float(v.abs().max()) for v in weights) < 1e3  # not blown up
    # One step at lr 1e6 blows the weights up, so the only good weights are the initial ones,
    # rebuilt here the way a run starts: the seed, then the detector.
    assert payload["iteration"] == 0
    torch.manual_seed(values["seed"])
    initial = build_detector("spp", config_from_dict(values, "test").model, 2).state_dict()
    assert all(torch.equal(initial[key], payload["model"][key]) for key in initial)


def checkpoint_with_saved(finished_run, path: Path, **settings) -> Path:
    """The finished run's checkpoint with some saved settings (``section__key=value``) changed,
    as an older version or a hand edit leaves them."""
    import torch

    payload = torch.load(finished_run[0] / "checkpoint.pt", weights_only=True)
    for dotted, value in settings.items():
        section, key = dotted.split("__")
        payload["config"][section][key] = value
    torch.save(payload, path)
    return path


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_run_and_eval_write_nothing_outside_out(finished_run, data, tmp_path, monkeypatch):
    # The saved cache folder is relative, as in the default config: it must not be used.
    checkpoint = checkpoint_with_saved(
        finished_run,
        tmp_path / "ck.pt",
        proposals__cache_dir="data/proposals",
        proposals__import_file="",
        proposals__resize_long_side=128,
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    image = data / "voc" / "JPEGImages" / "0000.png"
    assert main(["run", "--checkpoint", str(checkpoint), str(image), "--out", "out"]) == 0
    # proposals kept nowhere
    assert files_under(work) == ["out/0000.jpg", "out/0000.json", "out/detections.json"]
    cache = tmp_path / "named_cache"
    args = ["run", "--checkpoint", str(checkpoint), str(image), "--out", "out2"]
    assert main([*args, "--proposal-cache", str(cache)]) == 0
    assert len(list(cache.glob("*.npz"))) == 1  # the folder the user named
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(data / "voc")]) == 0
    assert not (work / "data").exists() and not (tmp_path / "data").exists()
    evaluated = tmp_path / "eval_test"  # the default --out, beside the checkpoint
    assert len(list((evaluated / "proposals").glob("*.npz"))) == 6


def test_a_saved_relative_path_keeps_its_meaning(data, tmp_path, monkeypatch, caplog):
    import logging

    from detect.checkpoints import read_checkpoint

    values = tiny_config_dict(data, iterations=1)
    values["data"]["root"] = "voc"  # relative to the folder training starts in
    values["proposals"]["import_file"] = "proposals.json"
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(values))
    monkeypatch.chdir(data)
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "tiny.yaml"), "--out", str(run)]) == 0
    saved = read_checkpoint(run / "checkpoint.pt")["config"]
    assert saved["data"]["root"] == str(data / "voc")
    assert saved["proposals"]["import_file"] == str(data / "proposals.json")
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["root"] == str(data / "voc")
    # Resumed from the same folder with the same relative config: the same run.
    args = ["train", "--config", str(tmp_path / "tiny.yaml"), "--out", str(run), "--resume"]
    assert main(args) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ev = ["eval", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(tmp_path / "ev")]
    assert main(ev) == 0  # the saved data set is found from any folder
    # A checkpoint still holding a relative path (an older version's) says how it is read.
    old = checkpoint_with_saved(
        (run, None), tmp_path / "old.pt", data__root="voc", proposals__import_file="proposals.json"
    )
    monkeypatch.chdir(data)
    with caplog.at_level(logging.WARNING):
        assert main(["eval", "--checkpoint", str(old), "--out", str(tmp_path / "ev2")]) == 0
    assert "data.root 'voc' is a relative path" in caplog.text
    assert f"read from the current folder: {data / 'voc'}" in caplog.text
    assert "proposals.import_file 'proposals.json' is a relative path" in caplog.text
