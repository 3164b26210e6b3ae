"""How busy the machine is while a benchmark runs, in one line shared by every script here.

A timing, and above all a speed ratio between two pieces of code, means something only on a
quiet machine. On a busy one the two slow down by different factors: the permutation benchmark
reported 82x and 72x at a load average of 6 where the same code gives 14x and 22x at a load of
1, because the single-threaded loop lost more to the other processes than the batched code.
Every script prints :func:`load_note` before and after its timings, and scripts that report a
ratio print :func:`ratio_note` with the two loads; above the number of cores both say that the
numbers of the run are not valid, and why.

The load is the 1-minute load average (``os.getloadavg``): runnable processes averaged over
the last minute, so a run starting right after heavy work still reads busy.
"""

from __future__ import annotations

import os

#: why numbers from a busy machine are not valid, said once for every message
_WHY = ("other processes share the cores, and code that uses them differently (one thread or "
        "several, arithmetic or memory traffic) slows down by different factors")


def cores() -> int:
    """The number of CPUs of this machine."""
    return os.cpu_count() or 1


def load_average() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def is_busy(load: float) -> bool:
    """Whether a load average exceeds the number of cores."""
    return load > cores()


def load_note() -> str:
    """``"load average 0.85 (quiet: within the 2 cores)"``, or ``"load average 6.10 (BUSY:
    above the 2 cores; timings and speed ratios from this run are not valid: ...)"``."""
    load = load_average()
    if not is_busy(load):
        return f"load average {load:.2f} (quiet: within the {cores()} cores)"
    return (f"load average {load:.2f} (BUSY: above the {cores()} cores; timings and speed "
            f"ratios from this run are not valid: {_WHY})")


def ratio_note(load_before: float, load_after: float) -> str:
    """Whether the speed ratios of a run measured between these two loads are valid."""
    loads = f"load average {load_before:.2f} before and {load_after:.2f} after"
    if is_busy(load_before) or is_busy(load_after):
        return (f"speed ratios NOT VALID: {loads}, above the {cores()} cores; {_WHY}. Rerun on "
                "a quiet machine.")
    return f"speed ratios valid: {loads}, within the {cores()} cores"
