"""The training loop with hooks: the order of the calls, and after_train after an error."""

import pytest

from detect.training.trainer import HookBase, Trainer


class Recorder(HookBase):
    """Records every call it receives, with the iteration and the step's outcome it sees."""

    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def before_train(self):
        self.calls.append((self.name, "before_train", self.trainer.iter))

    def before_step(self):
        self.calls.append((self.name, "before_step", self.trainer.iter))

    def after_step(self):
        self.calls.append((self.name, "after_step", self.trainer.iter, self.trainer.outcome))

    def after_train(self):
        self.calls.append((self.name, "after_train", self.trainer.iter))


def test_a_custom_hook_receives_the_calls_in_order():
    calls = []

    def step(iteration):
        calls.append(("step", iteration))
        return f"outcome {iteration}"

    hooks = [Recorder("a", calls), Recorder("b", calls)]
    trainer = Trainer(step, hooks, start_iter=2, max_iter=4)  # a run resumed at iteration 2
    trainer.train()
    assert calls == [
        ("a", "before_train", 2),
        ("b", "before_train", 2),
        ("a", "before_step", 2),
        ("b", "before_step", 2),
        ("step", 2),
        ("a", "after_step", 2, "outcome 2"),
        ("b", "after_step", 2, "outcome 2"),
        ("a", "before_step", 3),
        ("b", "before_step", 3),
        ("step", 3),
        ("a", "after_step", 3, "outcome 3"),
        ("b", "after_step", 3, "outcome 3"),
        ("a", "after_train", 4),
        ("b", "after_train", 4),
    ]
    assert all(hook.trainer is trainer for hook in hooks)


def test_nothing_left_to_run_still_calls_before_and_after_train():
    calls = []
    Trainer(lambda i: calls.append(("step", i)), [Recorder("a", calls)], 3, 3).train()
    assert calls == [("a", "before_train", 3), ("a", "after_train", 3)]


def test_after_train_runs_when_a_hook_raises_and_the_error_goes_through():
    calls = []

    class StopAtOne(HookBase):
        def after_step(self):
            if self.trainer.iter == 1:
                raise RuntimeError("stop")

    trainer = Trainer(lambda i: i, [StopAtOne(), Recorder("r", calls)], 0, 5)
    with pytest.raises(RuntimeError, match="stop"):
        trainer.train()
    # Iteration 1 never completed: the recorder saw its before_step, not its after_step.
    assert [call[1:3] for call in calls] == [
        ("before_train", 0),
        ("before_step", 0),
        ("after_step", 0),
        ("before_step", 1),
        ("after_train", 1),
    ]
    assert trainer.iter == 1
