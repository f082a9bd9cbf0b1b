"""Keep freed memory for reuse: glibc malloc settings for CPU inference and training.

By default glibc serves allocations above a threshold (128 KiB, raised dynamically) with
fresh ``mmap``s and returns freed heap tops to the system, so every step of the network
maps, zero-fills and unmaps its large activations again: page faults that cost the lite
step at 240x432 a third of its time on these CPUs (docs/benchmarks.md). Serving allocations
up to 32 MiB from the heap and keeping up to 1 GiB of freed memory makes steps reuse their
pages. The process keeps its peak memory instead of giving it back between steps, which is
what an inference server wants.

One arena: glibc gives each thread that allocates its own arena, whose heaps are capped at
64 MiB, and an allocation that does not fit one is mapped afresh whatever the threshold. The
in-process backend runs the model on a thread of its own, where this made 480p steps 20%
slower than on the main thread. With one arena every thread allocates from the main heap.
The arena limit only applies to threads that have not allocated yet, so the command line
applies these settings when it starts (``service.cli``), before any thread exists.

Linux glibc only; elsewhere a no-op. The environment equivalent (for processes started
elsewhere, e.g. Triton's python backend): ``MALLOC_ARENA_MAX=1
MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
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
    _done = all(
        mallopt(option, value)
        for option, value in ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                              (M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    )  # fmt: skip
    return _done


ENVIRONMENT = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
    "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
}
