"""How many CPU threads the network should use: the physical cores, or those other processes
leave free.

PyTorch's CPU kernels split each operation over their threads and wait for the slowest: when
another process keeps a core busy, a thread on that core is descheduled for whole time slices and
every operation waits for it (on this project's 2-core machine one busy core made 2-thread
fine-tuning 14x slower than 1 thread). :func:`free_cores` leaves out the cores other processes
keep busy now (sampled from ``/proc/stat``; the load average where there is none), and
:func:`beside_workers` the cores taken by this program's own proposal workers.
"""

from __future__ import annotations

import contextlib
import os
import time
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


def cpu_times(stat_text: str) -> tuple[int, int] | None:
    """``(busy, total)`` clock ticks of all CPUs from a Linux ``/proc/stat`` text (its ``cpu``
    line: idle and iowait are idle, the rest busy; guest time is already in user), or None when
    it has no such line."""
    for line in stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu" and len(fields) >= 5:
            ticks = [int(value) for value in fields[1:9]]
            idle = ticks[3] + ticks[4]
            return sum(ticks) - idle, sum(ticks)
    return None


def busy_fraction(interval: float = 0.5) -> float | None:
    """The share of all CPU time that processes used during the next ``interval`` seconds (0-1),
    from two readings of ``/proc/stat``; None where there is no ``/proc/stat``."""
    stat = Path("/proc/stat")
    try:
        before = cpu_times(stat.read_text())
        time.sleep(interval)
        after = cpu_times(stat.read_text())
    except OSError:
        return None
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def free_cores(interval: float = 0.5) -> int:
    """:func:`physical_cores` less the cores other processes keep busy, at least 1: busy now
    (:func:`busy_fraction` of the cores, rounded), or where that cannot be read, by the 1-minute
    load average. The load average alone lags: a minute after a job on every core has ended it
    still counts most of them busy."""
    cores = physical_cores()
    fraction = busy_fraction(interval)
    return max(1, cores - round(fraction * cores if fraction is not None else _load_average()))


def _load_average() -> float:
    """The 1-minute load average (0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on this platform
        return 0.0


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
