"""Each fine-tuning hook on its own, driven by a Trainer whose steps return chosen outcomes."""

import math
import signal

import pytest
import torch

from detect.errors import DetectError, Interrupted
from detect.training.divergence import GoodCheckpointWriter
from detect.training.hooks import (
    CSVLog,
    CtrlC,
    DivergenceCheck,
    IterationCallback,
    IterationTimer,
    LogLine,
    PeriodicCheckpoint,
    ProgressBar,
    StepOutcome,
    empty_sums,
)
from detect.training.trainer import Trainer


def outcome(loss, lr=0.01):
    return StepOutcome(lr, {"loss": loss, "cls_loss": loss / 2, "bbox_loss": loss / 4})


def steps(*losses):
    """A step returning the outcome of the given loss per iteration (None: no window sampled)."""
    return lambda i: StepOutcome(0.01, None) if losses[i] is None else outcome(losses[i])


def recording_writer(tmp_path):
    """A GoodCheckpointWriter whose disk is a list of the iterations written."""
    written = []
    writer = GoodCheckpointWriter(lambda extras: written.append(extras["iteration"]), tmp_path, 0)
    return writer, written


def snapshot(weight=1.0):
    return lambda completed: {"iteration": completed, "model": {"w": torch.tensor([weight])}}


def test_periodic_checkpoint_writes_start_and_end_and_holds_the_rest(tmp_path):
    writer, written = recording_writer(tmp_path)
    hook = PeriodicCheckpoint(writer, snapshot(), period=2, save_start=True)
    Trainer(steps(1.0, 1.0, 1.0, 1.0, 1.0), [hook], 0, 5).train()
    # 2 and 4 are held until a loss vouches for them (DivergenceCheck); none did here.
    assert written == [0, 5]
    writer, written = recording_writer(tmp_path)
    hook = PeriodicCheckpoint(writer, snapshot(), period=2, save_start=False)  # a resumed run
    Trainer(steps(1.0, 1.0, 1.0, 1.0, 1.0), [hook], 3, 5).train()
    assert written == [5]


def test_a_good_loss_vouches_for_the_held_checkpoint(tmp_path):
    writer, written = recording_writer(tmp_path)
    divergence = DivergenceCheck(writer, first_loss=None)
    periodic = PeriodicCheckpoint(writer, snapshot(), period=2, save_start=True)
    Trainer(steps(2.0, 1.5, 1.0, 1.0, 0.5), [divergence, periodic], 0, 5).train()
    # Held after iterations 2 and 4, written when iterations 3 and 5 gave good losses.
    assert written == [0, 2, 4, 5]
    assert divergence.first_loss == 2.0


@pytest.mark.parametrize(
    ("losses", "message", "kept"),
    [
        # The checkpoint of iteration 2 is held, then written when iteration 3's loss is good.
        ((1.0, 1.0, 1.0, math.nan), r"iteration 4: the loss is nan .*\(iteration 2\) is kept", 2),
        # Held, but the next loss (computed with those very weights) is bad: never written.
        ((1.0, 1.0, math.nan), r"iteration 3: the loss is nan .*\(iteration 0\) is kept", 0),
        ((1.0, math.inf), r"iteration 2: the loss is inf .*\(iteration 0\) is kept", 0),
        ((2.0, 1.0, 201.0), r"iteration 3: the loss 201 exploded .*first loss 2\b", 0),
    ],
)
def test_a_diverged_loss_stops_naming_the_checkpoint_kept(tmp_path, losses, message, kept):
    writer, written = recording_writer(tmp_path)
    hooks = [DivergenceCheck(writer, None), PeriodicCheckpoint(writer, snapshot(), 2, True)]
    with pytest.raises(DetectError, match=r"fine-tuning diverged at " + message):
        Trainer(steps(*losses), hooks, 0, 6).train()
    assert written[-1] == kept


def test_a_step_without_windows_is_neither_judged_nor_averaged(tmp_path):
    writer, written = recording_writer(tmp_path)
    divergence = DivergenceCheck(writer, first_loss=None)
    log = CSVLog(tmp_path / "log.csv", every=3, rows=[], sums=empty_sums())
    Trainer(steps(None, 3.0, 1.0, None, None, None), [divergence, log], 0, 6).train()
    assert divergence.first_loss == 3.0
    assert [(row["iteration"], row["loss"]) for row in log.rows] == [(3, 2.0), (6, 0.0)]


def test_csv_log_averages_each_interval_and_ends_with_the_last_iteration(tmp_path):
    log = CSVLog(tmp_path / "log.csv", every=2, rows=[], sums=empty_sums())
    Trainer(steps(4.0, 2.0, 1.0, 3.0, 8.0), [log], 0, 5).train()
    assert log.rows == [
        {"iteration": 2, "loss": 3.0, "cls_loss": 1.5, "bbox_loss": 0.75, "lr": 0.01},
        {"iteration": 4, "loss": 2.0, "cls_loss": 1.0, "bbox_loss": 0.5, "lr": 0.01},
        {"iteration": 5, "loss": 8.0, "cls_loss": 4.0, "bbox_loss": 2.0, "lr": 0.01},
    ]
    assert (tmp_path / "log.csv").read_text().splitlines()[1:] == [
        "2,3.0,1.5,0.75,0.01,nan,nan",  # no timer: no throughput
        "4,2.0,1.0,0.5,0.01,nan,nan",
        "5,8.0,4.0,2.0,0.01,nan,nan",
    ]


def test_csv_log_resumes_a_half_finished_interval(tmp_path):
    # Resumed after iteration 3 of intervals of 2: iteration 3's loss (6.0) is in the sums.
    sums = {"loss": 6.0, "cls_loss": 3.0, "bbox_loss": 1.5, "count": 1}
    first = {"iteration": 2, "loss": 1.0, "cls_loss": 0.5, "bbox_loss": 0.25, "lr": 0.01}
    log = CSVLog(tmp_path / "log.csv", every=2, rows=[first], sums=sums)
    Trainer(steps(0.0, 0.0, 0.0, 2.0), [log], 3, 4).train()
    assert log.rows[1]["iteration"] == 4 and log.rows[1]["loss"] == 4.0


def test_iteration_callback_gets_the_completed_count():
    seen = []
    Trainer(steps(1.0, 1.0, 1.0), [IterationCallback(seen.append)], 1, 3).train()
    assert seen == [2, 3]


def test_progress_bar_counts_from_the_resumed_iteration_and_closes():
    timer = IterationTimer(2, clock=iter([10.0, 11.0, 13.0, 14.0]).__next__)
    hook = ProgressBar("fine-tune", timer)
    Trainer(steps(0.0, 2.0, 0.5, None), [timer, hook], 1, 4).train()
    assert (hook.bar.n, hook.bar.total) == (4, 4)
    assert "loss=0.5000" in hook.bar.postfix  # the last step that had a loss
    assert "img/s=1.5" in hook.bar.postfix  # 3 iterations of 2 images in 4 s
    assert hook.bar.disable  # closed


def fake_clock(*times):
    """A clock returning ``times`` one call after the other."""
    return iter(times).__next__


def test_throughput_columns_log_lines_and_totals_by_hand(tmp_path, caplog):
    # Iterations take 1, 2, 3 and 4 s (clock read before training and after each iteration).
    timer = IterationTimer(images_per_iteration=2, clock=fake_clock(0.0, 1.0, 3.0, 6.0, 10.0))
    log = CSVLog(tmp_path / "log.csv", every=2, rows=[], sums=empty_sums(), timer=timer)
    with caplog.at_level("INFO", logger="detect.training.hooks"):
        Trainer(steps(4.0, 2.0, 1.0, 3.0), [timer, log, LogLine(log, timer)], 0, 4).train()
    # 4 images in 3 s, 1.5 s each; then 4 images in 7 s, 3.5 s each.
    assert [(row["images_per_s"], row["s_per_iter"]) for row in log.rows] == [
        (1.333, 1.5),
        (0.5714, 3.5),
    ]
    assert (tmp_path / "log.csv").read_text().splitlines() == [
        "iteration,loss,cls_loss,bbox_loss,lr,images_per_s,s_per_iter",
        "2,3.0,1.5,0.75,0.01,1.333,1.5",
        "4,2.0,1.0,0.5,0.01,0.5714,3.5",
    ]
    assert caplog.messages == [
        # ETA after iteration 2: 2 iterations left at 3 s / 2 iterations.
        "iteration 2/4: loss 3.0000 (cls 1.5000, bbox 0.7500), lr 0.01, 1.33 images/s, "
        "1.5 s/iteration, ETA 00:03",
        "iteration 4/4: loss 2.0000 (cls 1.0000, bbox 0.5000), lr 0.01, 0.571 images/s, "
        "3.5 s/iteration, ETA 00:00",
        "fine-tuning: 4 iterations (8 images) in 00:10: 0.8 images/s, 2.5 s/iteration",
    ]


def test_a_resumed_run_times_and_reports_only_its_own_iterations(tmp_path, caplog):
    timer = IterationTimer(1, clock=fake_clock(5.0, 7.0, 8.0))
    first = {"iteration": 2, "loss": 1.0, "cls_loss": 0.5, "bbox_loss": 0.25, "lr": 0.01}
    log = CSVLog(tmp_path / "log.csv", every=2, rows=[first], sums=empty_sums(), timer=timer)
    with caplog.at_level("INFO", logger="detect.training.hooks"):
        Trainer(steps(0, 0, 1.0, 1.0), [timer, log, LogLine(log, timer)], 2, 4).train()
    assert log.rows[1]["images_per_s"] == pytest.approx(2 / 3, abs=1e-4)
    assert [m.split(":")[0] for m in caplog.messages] == ["iteration 4/4", "fine-tuning"]
    assert caplog.messages[-1].startswith("fine-tuning: 2 iterations (2 images) in 00:03")
    # A checkpoint's row from before the throughput columns is written with nan there.
    assert (tmp_path / "log.csv").read_text().splitlines()[1] == "2,1.0,0.5,0.25,0.01,nan,nan"


def test_ctrl_c_saves_after_the_iteration_and_says_which(tmp_path):
    writer, written = recording_writer(tmp_path)

    def step(i):
        if i == 2:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C does, in the middle of a step
        return outcome(1.0)

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted, match=r"checkpoint \S+ saved at iteration 3"):
        Trainer(step, [CtrlC(writer, snapshot())], 0, 10).train()
    assert written == [3]
    assert signal.getsignal(signal.SIGINT) is before  # the handler of before training put back


def test_a_second_ctrl_c_aborts_at_once(tmp_path):
    writer, written = recording_writer(tmp_path)

    def step(i):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
        return outcome(1.0)

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as info:
        Trainer(step, [CtrlC(writer, snapshot())], 0, 10).train()
    assert not isinstance(info.value, Interrupted) and written == []
    assert signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_never_saves_weights_that_are_not_finite(tmp_path):
    writer, written = recording_writer(tmp_path)

    def step(i):
        signal.raise_signal(signal.SIGINT)
        return outcome(1.0)

    with pytest.raises(DetectError, match=r"weight w is not finite.*\(iteration 0\) is kept"):
        Trainer(step, [CtrlC(writer, snapshot(math.nan))], 0, 10).train()
    assert written == []
