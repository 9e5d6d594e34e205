"""The process's memory allocator: glibc's malloc kept from returning large blocks to the OS.

No torch import here, so the command line can apply it before any tensor exists.
"""

from __future__ import annotations

import ctypes
import os

# glibc's malloc: freed blocks up to 32 MiB stay in the process instead of going back to the
# OS (M_TRIM_THRESHOLD 2 GiB, M_MMAP_THRESHOLD 32 MiB, the most mallopt takes on 64 bits). By
# default each large tensor freed is unmapped or trimmed, and the next one of its size
# page-faults its memory in again: on ResNet-20 evaluation at batch 500 that was 2.0 M minor
# faults in 13 forward passes, 0.2 M with these settings (either one alone is worse), and the
# evaluation benchmark's system time fell from 39 s to 1 s (benchmarks/quant_throughput.py).
MALLOC_SETTINGS = {"MALLOC_TRIM_THRESHOLD_": (-1, 2**31 - 1),
                   "MALLOC_MMAP_THRESHOLD_": (-3, 32 * 2**20)}  # env name: (mallopt id, value)


def keep_freed_memory() -> bool:
    """Apply ``MALLOC_SETTINGS`` to this process (``mallopt``) and, through the environment,
    to the processes it starts (the notebook kernel, DVC workers, torchrun). Results do not
    change: torch's CPU allocations keep their 64-byte alignment either way. Leaves a
    process alone whose environment already sets either variable (glibc applied those at
    start: the user's choice, or a parent's that called this), and returns False then and
    off glibc (no ``mallopt``); True when both settings took."""
    if any(name in os.environ for name in MALLOC_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    took = all(mallopt(option, value) == 1 for option, value in MALLOC_SETTINGS.values())
    if took:
        os.environ.update({name: str(value) for name, (_, value) in MALLOC_SETTINGS.items()})
    return took
