"""TensorBoard scalars: read back with tensorboard's own reader when it is installed; without it
(the import made to fail) nothing fails, nothing is written and one info line says so."""

import sys

import pytest
from test_hooks import steps

from detect.scalars import summary_writer_class, write_scalars
from detect.training.hooks import CSVLog, IterationTimer, TensorBoardLog, empty_sums
from detect.training.trainer import Trainer


def run(tmp_path, losses, start=0, rows=None):
    """Train on ``losses`` (log every 2 iterations) with a TensorBoardLog in tmp_path/tb."""
    timer = IterationTimer(2, clock=iter(float(t) for t in range(20)).__next__)
    log = CSVLog(tmp_path / "log.csv", 2, list(rows or []), empty_sums(), timer)
    Trainer(steps(*losses), [timer, log, TensorBoardLog(log, tmp_path / "tb")], start, 4).train()
    return log.rows


def scalars(folder, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return [(event.step, round(event.value, 6)) for event in events.Scalars(tag)]


@pytest.fixture
def fresh_import():
    """The import of SummaryWriter tried again (it is cached per process), before and after."""
    summary_writer_class.cache_clear()
    yield
    summary_writer_class.cache_clear()


def test_without_tensorboard_nothing_fails_and_one_line_says_so(
    tmp_path, monkeypatch, caplog, fresh_import
):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with caplog.at_level("INFO", logger="detect.scalars"):
        rows = run(tmp_path, (4.0, 2.0, 1.0, 3.0))
        assert not write_scalars(tmp_path / "eval", {"mAP": 0.5}, 1)
    assert [row["iteration"] for row in rows] == [2, 4]
    assert caplog.messages == [  # once, for training and evaluation together
        "TensorBoard scalars off: the tensorboard package is not installed "
        "(pip install 'detect[tensorboard]')"
    ]
    assert not (tmp_path / "tb").exists() and not (tmp_path / "eval").exists()


def test_training_scalars_read_back_and_a_resume_replaces_what_followed_its_checkpoint(
    tmp_path, fresh_import
):
    pytest.importorskip("tensorboard")
    rows = run(tmp_path, (4.0, 2.0, 1.0, 3.0))
    assert scalars(tmp_path / "tb", "train/loss") == [(2, 3.0), (4, 2.0)]
    assert scalars(tmp_path / "tb", "train/bbox_loss") == [(2, 0.75), (4, 0.5)]
    assert scalars(tmp_path / "tb", "train/lr") == [(2, 0.01), (4, 0.01)]
    # Iterations took 1 s each (the fake clock): 2 images per second.
    assert scalars(tmp_path / "tb", "train/images_per_s") == [(2, 2.0), (4, 2.0)]
    # Resumed from the checkpoint of iteration 2, iterations 3-4 give other losses.
    run(tmp_path, (0.0, 0.0, 5.0, 7.0), start=2, rows=rows[:1])
    assert scalars(tmp_path / "tb", "train/loss") == [(2, 3.0), (4, 6.0)]
    run(tmp_path, (1.0, 1.0, 2.0, 2.0))  # a fresh run in the same folder (--overwrite)
    assert scalars(tmp_path / "tb", "train/loss") == [(2, 1.0), (4, 2.0)]


def test_eval_scalars_read_back(tmp_path, fresh_import):
    pytest.importorskip("tensorboard")
    scores = {"eval_test/mAP": 0.75, "eval_test/AP/cat": 0.5, "eval_test/AP/dog": float("nan")}
    assert write_scalars(tmp_path / "tb", scores, 300)
    assert scalars(tmp_path / "tb", "eval_test/mAP") == [(300, 0.75)]
    assert scalars(tmp_path / "tb", "eval_test/AP/cat") == [(300, 0.5)]
