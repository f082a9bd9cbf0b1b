"""Keep freed memory for reuse: glibc malloc settings for CPU inference and training.

By default glibc serves allocations above a threshold (128 KiB, raised dynamically) with
fresh ``mmap``s and returns freed heap tops to the system, so every step of the network
maps, zero-fills and unmaps its large activations again: page faults that cost the lite
step at 240x432 a third of its time on these CPUs (docs/benchmarks.md). Serving allocations
up to 32 MiB from the heap and keeping up to 1 GiB of freed memory makes steps reuse their
pages. The process keeps its peak memory instead of giving it back between steps, which is
what an inference server wants. Linux glibc only; elsewhere a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's largest mmap threshold on 64-bit (HEAP_MAX_SIZE / 2); larger values are refused.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30

_done = False


def keep_freed_memory() -> bool:
    """Apply the settings once per process; True when glibc took them."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (e.g. musl)
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _done
