"""The step lr schedule: the lr of every iteration, by hand, also across a resume."""

import csv
import io
import signal

import pytest
import torch
from _train_data import make_tiny_voc, tiny_config

from detect.errors import DetectError
from detect.training import train
from detect.training.hooks import LRSchedule
from detect.training.schedule import step_lr_scheduler
from detect.training.trainer import Trainer


def optimizer_and_scheduler(lr, steps, gamma):
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=lr, momentum=0.9)
    return weight, optimizer, step_lr_scheduler(optimizer, steps, gamma)


def run(weight, optimizer, scheduler, start, stop):
    """Trains ``weight`` for iterations start..stop-1; the lr each iteration ran at."""
    lrs = []

    def step(iteration):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        (weight**2).sum().backward()
        optimizer.step()

    Trainer(step, [LRSchedule(scheduler)], start, stop).train()
    return lrs


def test_each_iteration_runs_at_the_hand_computed_lr():
    lrs = run(*optimizer_and_scheduler(0.1, (3, 5), 0.5), 0, 7)
    assert lrs == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025]


def test_the_lr_is_one_multiplication_from_the_initial_lr():
    # Steps at 1, 2 and 4: iterations 0..5 have 0, 1, 2, 2, 3, 3 steps behind them. The lr is
    # lr * gamma ** n, not a running product (0.01 * 0.1 * 0.1 != 0.01 * 0.1 ** 2 in floats).
    lrs = run(*optimizer_and_scheduler(0.01, (1, 2, 4), 0.1), 0, 6)
    assert lrs == [0.01 * 0.1**n for n in (0, 1, 2, 2, 3, 3)]
    assert 0.01 * 0.1 * 0.1 != 0.01 * 0.1**2  # what makes the check above meaningful


def test_a_resumed_schedule_continues_from_the_saved_state():
    weight, optimizer, scheduler = optimizer_and_scheduler(0.01, (1, 2, 4), 0.1)
    first = run(weight, optimizer, scheduler, 0, 3)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "lr": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # as a checkpoint is read
    weight2, optimizer2, scheduler2 = optimizer_and_scheduler(0.01, (1, 2, 4), 0.1)
    with torch.no_grad():
        weight2.copy_(weight)
    optimizer2.load_state_dict(saved["optimizer"])
    scheduler2.load_state_dict(saved["lr"])
    rest = run(weight2, optimizer2, scheduler2, 3, 6)
    assert first + rest == [0.01 * 0.1**n for n in (0, 1, 2, 2, 3, 3)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_voc(tmp_path_factory.mktemp("tiny"))


def test_training_logs_and_checkpoints_the_schedule(data, tmp_path):
    cfg = tiny_config(data, iterations=5, lr=0.2, lr_steps=[2, 4], lr_gamma=0.5, log_every=1)
    result = train(cfg, out_dir=tmp_path / "run")
    with open(result.log_csv, newline="") as handle:
        logged = [float(row["lr"]) for row in csv.DictReader(handle)]
    assert logged == [0.2, 0.2, 0.1, 0.1, 0.05]

    def ctrl_c_at_3(completed):
        if completed == 3:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train(cfg, out_dir=tmp_path / "cut", on_iteration=ctrl_c_at_3)
    saved = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert saved["iteration"] == 3
    # Stepped after each of the 3 iterations: set for iteration 3 (one step, at 2, behind it).
    assert saved["lr_scheduler"]["last_epoch"] == 3
    assert saved["optimizer"]["param_groups"][0]["lr"] == 0.1


def test_resume_needs_the_saved_scheduler(data, tmp_path):
    cfg = tiny_config(data, iterations=3)

    def ctrl_c_at_1(completed):
        if completed == 1:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train(cfg, out_dir=tmp_path / "run", on_iteration=ctrl_c_at_1)
    path = tmp_path / "run" / "checkpoint.pt"
    payload = torch.load(path, weights_only=True)
    del payload["lr_scheduler"]
    torch.save(payload, path)
    with pytest.raises(DetectError, match=r"cannot resume: missing or bad 'lr_scheduler'"):
        train(cfg, out_dir=tmp_path / "run", resume=True)
