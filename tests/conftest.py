"""Shared test settings: deterministic, single-threaded torch so parallel runs stay predictable."""

import os
import signal

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture(autouse=True)
def _ctrl_c_raises():
    """Ctrl-C (SIGINT) raises KeyboardInterrupt in every test, as in an interactive shell, also
    when the suite was started with SIGINT ignored (a shell's background job, nohup, some CI
    runners), where the tests that send themselves Ctrl-C would see nothing happen."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
