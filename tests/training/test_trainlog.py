"""The CSV training log is appended to, never rewritten; a resumed run continues it in place."""

import csv
import signal

import pytest
from _train_data import make_tiny_voc, tiny_config

from detect.training import train
from detect.training.trainlog import append_log_row, start_log_csv

HEADER = "iteration,loss,cls_loss,bbox_loss,lr,images_per_s,s_per_iter\n"
ROW_1 = {"iteration": 1, "loss": 0.5, "cls_loss": 0.25, "bbox_loss": 0.125, "lr": 0.01}
ROW_1 |= {"images_per_s": 4.0, "s_per_iter": 0.5}
ROW_2 = {"iteration": 2, "loss": 1.5, "cls_loss": 1.0, "bbox_loss": 0.25, "lr": 0.001}
ROW_2 |= {"images_per_s": 2.5, "s_per_iter": 0.8}
TEXT_1, TEXT_2 = "1,0.5,0.25,0.125,0.01,4.0,0.5\n", "2,1.5,1.0,0.25,0.001,2.5,0.8\n"


def test_a_fresh_log_is_the_header_and_rows_are_appended(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("left by an earlier run\n")
    start_log_csv(path, [])
    assert path.read_text() == HEADER
    append_log_row(path, ROW_1)
    append_log_row(path, ROW_2)
    assert path.read_text() == HEADER + TEXT_1 + TEXT_2


def test_a_resumed_log_is_cut_after_the_checkpoints_rows_in_place(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(HEADER + TEXT_1 + TEXT_2 + "3,0.2")  # rows past the checkpoint, a torn line
    inode = path.stat().st_ino
    start_log_csv(path, [ROW_1])
    assert path.read_text() == HEADER + TEXT_1
    assert path.stat().st_ino == inode  # cut, not replaced
    start_log_csv(path, [ROW_1])
    assert path.read_text() == HEADER + TEXT_1


def test_a_log_that_does_not_match_the_checkpoint_is_rewritten_from_it(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(HEADER + "1,9,9,9,9\n")
    start_log_csv(path, [ROW_1, ROW_2])
    assert path.read_text() == HEADER + TEXT_1 + TEXT_2
    missing = tmp_path / "missing.csv"
    start_log_csv(missing, [ROW_1])
    assert missing.read_text() == HEADER + TEXT_1


def test_a_log_with_the_header_before_the_throughput_columns_gets_one_header(tmp_path):
    # A run begun before images_per_s / s_per_iter were logged, resumed now: its checkpoint's
    # rows lack them. The file is rewritten with the new header; the old rows get nan there.
    path = tmp_path / "log.csv"
    path.write_text("iteration,loss,cls_loss,bbox_loss,lr\n1,0.5,0.25,0.125,0.01\n")
    old_row = {key: ROW_1[key] for key in ("iteration", "loss", "cls_loss", "bbox_loss", "lr")}
    start_log_csv(path, [old_row])
    append_log_row(path, ROW_2)
    assert path.read_text() == HEADER + "1,0.5,0.25,0.125,0.01,nan,nan\n" + TEXT_2
    with open(path, newline="") as handle:
        assert [len(row) for row in csv.reader(handle)] == [7, 7, 7]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_voc(tmp_path_factory.mktemp("tiny"))


def iterations(path):
    with open(path, newline="") as handle:
        return [int(row["iteration"]) for row in csv.DictReader(handle)]


def test_training_appends_one_row_per_interval_without_rewriting(data, tmp_path):
    log = tmp_path / "run" / "train_log.csv"
    seen = []  # (inode, bytes) after every iteration

    def look(completed):
        seen.append((log.stat().st_ino, log.read_bytes()))

    train(tiny_config(data, iterations=6, log_every=2), out_dir=tmp_path / "run", on_iteration=look)
    assert len({inode for inode, _ in seen}) == 1  # the same file throughout
    for (_, before), (_, after) in zip(seen, seen[1:], strict=False):
        assert after.startswith(before)  # earlier bytes untouched
    assert [len(text.splitlines()) for _, text in seen] == [1, 2, 2, 3, 3, 4]
    assert iterations(log) == [2, 4, 6]


def test_an_interrupted_and_resumed_log_has_every_iteration_once(data, tmp_path):
    cfg = tiny_config(data, iterations=6, log_every=1, checkpoint_every=2)
    log = tmp_path / "run" / "train_log.csv"

    def ctrl_c_at_4(completed):
        if completed == 4:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C does

    with pytest.raises(KeyboardInterrupt):
        train(cfg, out_dir=tmp_path / "run", on_iteration=ctrl_c_at_4)
    at_interrupt = log.read_bytes()
    assert iterations(log) == [1, 2, 3, 4]
    inode = log.stat().st_ino
    train(cfg, out_dir=tmp_path / "run", resume=True)
    assert iterations(log) == [1, 2, 3, 4, 5, 6]
    assert log.read_bytes().startswith(at_interrupt)
    assert log.stat().st_ino == inode


def test_rows_logged_past_the_resumed_checkpoint_are_not_repeated(data, tmp_path):
    # A run killed outright (no Ctrl-C checkpoint) after logging past its last checkpoint.
    cfg = tiny_config(data, iterations=6, log_every=1, checkpoint_every=2)
    log = tmp_path / "run" / "train_log.csv"

    def ctrl_c_at_4(completed):
        if completed == 4:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train(cfg, out_dir=tmp_path / "run", on_iteration=ctrl_c_at_4)
    at_checkpoint = log.read_bytes()
    with open(log, "a") as handle:
        handle.write("5,1.0,1.0,0.0,0.01\n6,1.0")  # what the killed run had logged after it
    train(cfg, out_dir=tmp_path / "run", resume=True)
    assert iterations(log) == [1, 2, 3, 4, 5, 6]
    assert log.read_bytes().startswith(at_checkpoint)
    assert b"5,1.0,1.0,0.0,0.01" not in log.read_bytes()
