"""A run started from a weights file (``model.weights``, ``finetune.init_checkpoint``) resumes
only while that file holds the same bytes: the same path with other weights is another run."""

import shutil

import pytest
from _train_data import make_tiny_voc, tiny_config

from detect.checkpoints import read_checkpoint
from detect.errors import DetectError
from detect.files import file_sha256
from detect.training import train
from detect.training.checkpoint import initial_weights_digests


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_voc(tmp_path_factory.mktemp("tiny"))


def test_resume_refuses_a_starting_file_that_now_holds_other_weights(data, tmp_path):
    first = train(tiny_config(data, iterations=1), out_dir=tmp_path / "first").checkpoint
    second = train(tiny_config(data, iterations=2), out_dir=tmp_path / "second").checkpoint
    start = tmp_path / "start.pt"
    shutil.copyfile(first, start)
    config = tiny_config(data, iterations=1, init_checkpoint=str(start))
    run = train(config, out_dir=tmp_path / "run").checkpoint
    saved = read_checkpoint(run)["initial_weights"]
    assert saved == {"finetune.init_checkpoint": file_sha256(start, "test")}
    assert initial_weights_digests(tiny_config(data)) == {}  # a run from random weights
    train(config, out_dir=tmp_path / "run", resume=True)  # the same bytes: resumes (done)
    shutil.copyfile(second, start)  # the same path, other weights
    with pytest.raises(DetectError, match=r"finetune\.init_checkpoint: .*start\.pt holds other"):
        train(config, out_dir=tmp_path / "run", resume=True)
    start.unlink()  # gone: nothing to compare, the run's own checkpoint is what resumes
    train(config, out_dir=tmp_path / "run", resume=True)
