"""detect.distributed in one process: torchrun's environment read (and refused when bad), the
shards, and every collective the identity. (Several processes: tests/test_torchrun.py.)"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from detect import distributed
from detect.errors import DetectError


@pytest.fixture
def torchrun_env(monkeypatch):
    def set_env(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, str(value))

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return set_env


def test_outside_torchrun_one_process_of_rank_0(torchrun_env):
    assert (distributed.rank(), distributed.world_size(), distributed.local_rank()) == (0, 1, 0)
    assert distributed.is_main() and not distributed.is_distributed()
    assert distributed.this_shard([3, 1, 2]) == [3, 1, 2]


def test_torchrun_environment(torchrun_env):
    torchrun_env(RANK=5, WORLD_SIZE=8, LOCAL_RANK=1)
    assert (distributed.rank(), distributed.world_size(), distributed.local_rank()) == (5, 8, 1)
    assert not distributed.is_main() and distributed.is_distributed()
    assert distributed.this_shard(list(range(20))) == [5, 13]


@pytest.mark.parametrize(
    "env, match",
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two'"),
        ({"WORLD_SIZE": 0}, "WORLD_SIZE=0"),
        ({"WORLD_SIZE": 2, "RANK": 2}, "RANK=2"),
        ({"WORLD_SIZE": 2, "RANK": -1}, "RANK=-1"),
    ],
)
def test_bad_environment_is_one_line_naming_the_variable(torchrun_env, env, match):
    torchrun_env(**env)
    with pytest.raises(DetectError, match=match):
        distributed.rank()


@given(st.integers(0, 40), st.integers(1, 7))
def test_shards_cover_every_item_once_in_round_robin(size, count):
    items = [f"img{i}" for i in range(size)]
    shards = [distributed.shard_items(items, index, count) for index in range(count)]
    by_hand = [[items[i] for i in range(size) if i % count == index] for index in range(count)]
    assert shards == by_hand


@pytest.mark.parametrize("index, count", [(2, 2), (-1, 2), (0, 0)])
def test_bad_shard_is_refused(index, count):
    with pytest.raises(DetectError, match="shard"):
        distributed.shard_items([1, 2], index, count)


def test_one_process_collectives_are_the_identity(torchrun_env):
    with distributed.process_group(torch.device("cpu")):
        assert not torch.distributed.is_initialized()  # nothing started for one process
        distributed.barrier()
        assert distributed.all_gather_object({"a": 1}) == [{"a": 1}]
        assert distributed.gather_dict({"b": 2, "a": 1}, ["a", "b", "c"]) == {"a": 1, "b": 2}
        total = torch.tensor([1.0, 2.0])
        assert distributed.all_reduce_sum(total) is total
        assert total.tolist() == [1.0, 2.0]
