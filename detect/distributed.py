"""Running one command as several processes under ``torchrun`` (PyTorch's own launcher).

``torchrun`` starts every process with ``RANK`` (0 .. ``WORLD_SIZE`` - 1 over all machines),
``WORLD_SIZE`` and ``LOCAL_RANK`` (the process's index on its machine) in the environment. Without
them a command is one process of rank 0 of 1, and nothing here touches ``torch.distributed``.

* :func:`rank`, :func:`world_size`, :func:`local_rank`, :func:`is_main` read the environment.
* :func:`process_group` starts the process group (gloo on the CPU, nccl on CUDA) only when
  ``WORLD_SIZE`` > 1, and ends it on the way out.
* :func:`shard_items` splits a list into ``count`` strided shards, :func:`this_shard` is this
  rank's; :func:`gather_dict` / :func:`all_gather_object` / :func:`gather_to_main` /
  :func:`all_reduce_sum` / :func:`barrier` combine the ranks' results (each the identity for one
  process).

Importing this module imports neither torch nor ``torch.distributed`` (``detect --help`` and a
cached ``detect proposals`` rerun start without torch); the functions that need it import it.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from detect.errors import DetectError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

# How long a rank waits for the others at a collective before failing: long enough for one rank's
# share of a large split's proposals or region features (torch's default is 30 minutes).
TIMEOUT = datetime.timedelta(hours=3)


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError as exc:
        raise DetectError(f"environment variable {name}={text!r}: expected an integer") from exc


def world_size() -> int:
    """The number of processes of this command (``WORLD_SIZE``; 1 outside torchrun)."""
    size = _env_int("WORLD_SIZE", 1)
    if size < 1:
        raise DetectError(f"environment variable WORLD_SIZE={size}: expected >= 1")
    return size


def rank() -> int:
    """This process's 0-based rank among all processes (``RANK``; 0 outside torchrun)."""
    value, size = _env_int("RANK", 0), world_size()
    if not 0 <= value < size:
        raise DetectError(f"environment variable RANK={value}: expected 0 .. WORLD_SIZE-1 ({size})")
    return value


def local_rank() -> int:
    """This process's index on its own machine (``LOCAL_RANK``; 0 outside torchrun): the GPU
    it uses."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """Whether this process is rank 0: the one that prints, logs and writes shared files."""
    return rank() == 0


def is_distributed() -> bool:
    """Whether this command runs as several processes (``WORLD_SIZE`` > 1)."""
    return world_size() > 1


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def process_group(device: torch.device | None = None) -> Iterator[None]:
    """Join the ranks of this command for the enclosed block when ``WORLD_SIZE`` > 1: backend
    nccl for a CUDA ``device``, else gloo; on a machine with GPUs, ``cuda`` (no index) then means
    GPU ``LOCAL_RANK`` (modulo the GPUs visible) in this process. The rendezvous is
    torchrun's (``MASTER_ADDR`` / ``MASTER_PORT``). A group already started is reused and left
    running; one started here is destroyed on the way out. Ranks other than 0 log only warnings
    and errors meanwhile. One process: does nothing."""
    if not is_distributed() or _initialized():
        yield
        return
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise DetectError("WORLD_SIZE > 1, but this torch build has no torch.distributed")
    if torch.cuda.is_available():  # "cuda" means this rank's GPU from now on
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
    cuda = device is not None and device.type == "cuda"
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, rank=rank(), world_size=world_size(), timeout=TIMEOUT)
    root = logging.getLogger()
    level = root.level
    if not is_main():  # rank 0 reports; the others only say what went wrong
        root.setLevel(max(level, logging.WARNING))
    try:
        yield
        # Every rank done with its collectives before any closes its connections: a rank that
        # tore down while another still read its last bytes aborted it in gloo's native code,
        # about once in 20 launches. (Not after an error: the others may never get here.)
        dist.barrier()
    finally:
        root.setLevel(level)
        dist.destroy_process_group()


def shard_items(items: Sequence[T], index: int, count: int) -> list[T]:
    """Shard ``index`` of ``count``: items ``index, index + count, ...`` of the list (round robin,
    so shard sizes differ by at most one, every item lands in exactly one shard, and costs that
    drift along a sorted list are spread evenly)."""
    if count < 1 or not 0 <= index < count:
        raise DetectError(f"shard {index}/{count}: need count >= 1 and 0 <= index < count")
    return list(items[index::count])


def this_shard(items: Sequence[T]) -> list[T]:
    """This rank's shard of ``items`` (:func:`shard_items` at ``RANK`` of ``WORLD_SIZE``); all of
    them for one process."""
    return shard_items(items, rank(), world_size())


def barrier() -> None:
    """Wait until every rank gets here (no-op without a process group)."""
    if _initialized():
        import torch.distributed as dist

        dist.barrier()


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order, on every rank; ``[value]`` for one
    process."""
    if not _initialized():
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def gather_to_main(value: Any) -> list[Any] | None:
    """Every rank's ``value`` (picklable), in rank order, on rank 0; None on the other ranks
    (``[value]`` for one process). Unlike :func:`all_gather_object`, only rank 0 holds them all."""
    if not _initialized():
        return [value]
    import torch.distributed as dist

    gathered: list[Any] | None = [None] * dist.get_world_size() if is_main() else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def gather_dict(part: dict[str, T], order: Iterable[str]) -> dict[str, T]:
    """The union of every rank's ``part`` (disjoint keys, e.g. image ids of one shard each),
    keyed in ``order`` (keys absent from every part are left out), on every rank."""
    merged: dict[str, T] = {}
    for piece in all_gather_object(part):
        merged.update(piece)
    return {key: merged[key] for key in order if key in merged}


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks in place (unchanged for one process); returns it."""
    if _initialized():
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
