"""How many CPU threads the network should use: the physical cores, or those other processes
leave free.

PyTorch's CPU kernels split each operation over their threads and wait for the slowest: when
another process keeps a core busy, a thread on that core is descheduled for whole time slices and
every operation waits for it (on this project's 2-core machine one busy core made 2-thread
fine-tuning 14x slower than 1 thread). :func:`free_cores` leaves out the cores the load average
says are busy, and :func:`beside_workers` the cores taken by this program's own proposal
workers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def count_physical_cores(cpuinfo: str) -> int:
    """Distinct ``(physical id, core id)`` pairs of a Linux ``/proc/cpuinfo`` text (0 when it
    names none): hyper-threads of one core count once."""
    cores, physical = set(), "0"
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            physical = value.strip()
        elif key.strip() == "core id":
            cores.add((physical, value.strip()))
    return len(cores)


def physical_cores() -> int:
    """Physical CPU cores this process may use, the default of ``detect bench --threads``: the
    cores of ``/proc/cpuinfo`` (Linux), at most the CPUs this process may run on; elsewhere the
    logical CPU count."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        cores = count_physical_cores(Path("/proc/cpuinfo").read_text())
    except OSError:
        cores = 0
    return max(1, min(logical or 1, cores or logical or 1))


def free_cores() -> int:
    """:func:`physical_cores` less the cores other processes keep busy (the 1-minute load
    average, rounded), at least 1."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on this platform
        load = 0.0
    return max(1, physical_cores() - round(load))


@contextlib.contextmanager
def beside_workers(workers: int) -> Iterator[int]:
    """Within the block torch uses at most the physical cores ``workers`` busy worker processes
    leave (at least 1), so that its threads and the workers do not take turns on the same cores;
    the previous setting is restored after. Yields the thread count."""
    import torch

    previous = torch.get_num_threads()
    threads = min(previous, max(1, physical_cores() - workers)) if workers > 0 else previous
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)
