"""Keep freed memory for reuse (glibc): otherwise every large CPU tensor is page-faulted in anew.

glibc serves each allocation above its mmap threshold (adaptive, at most 32 MB) with a fresh
mapping and returns it to the system when freed, so each large activation the network creates
costs a page fault per 4 KB page on first touch. On virtual machines that costs more than the
arithmetic done in the tensor: a Mamba2 block took 2.3x longer per token at 64k tokens than at
32k with the default, and the same time per token with freed memory kept
(`python bench/bench_model.py` compares both). The price is that the process keeps its peak heap,
and that the next phase of a reconstruction (pruning, rendering, metrics, the PLY) cannot always
reuse the blocks the last one freed: `release_freed_memory` between phases hands them back, so the
peak is that of the largest phase instead of growing phase after phase (inference/memory.py), for
the next phase's first-touch page faults (a few percent of a reconstruction's time).
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
_LARGEST = 2**31 - 1  # mallopt takes an int; larger allocations still get their own mapping


def release_freed_memory() -> bool:
    """Return the heap's free pages to the system (glibc malloc_trim); False, doing nothing, without it."""
    if not sys.platform.startswith("linux"):
        return False
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process. Returns False, changing nothing,
    where they do not exist (not Linux, or a C library without mallopt such as musl)."""
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, _LARGEST)) and bool(mallopt(M_TRIM_THRESHOLD, _LARGEST))

