"""keep_freed_memory against glibc's own accounting (mallinfo2), each case in a fresh process."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import ctypes, sys
import torch
from model.cpu_allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
before = libc.mallinfo2().hblks  # chunks served by their own mapping
tensor = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MB, above glibc's largest default mmap threshold
mapped = libc.mallinfo2().hblks - before
del tensor
print(kept, mapped, libc.mallinfo2().fordblks)  # fordblks: free bytes kept in the heap
"""


def probe(mode: str) -> tuple[bool, int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, check=True, capture_output=True, text=True)
    kept, mapped, free = out.stdout.split()
    return kept == "True", int(mapped), int(free)


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="needs glibc >= 2.33 (mallinfo2)")
def test_large_tensors_come_from_the_heap_and_stay_for_reuse():
    kept, mapped, _ = probe("default")
    assert not kept and mapped >= 1  # glibc's default: its own mapping, returned when freed
    kept, mapped, free = probe("keep")
    assert kept and mapped == 0
    assert free >= 64 << 20  # the freed tensor's memory waits in the heap for the next one


RELEASE = """
import sys
import torch
from model.cpu_allocator import keep_freed_memory, release_freed_memory

def resident():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS:")).split()[1]) * 1024

keep_freed_memory()
tensor = torch.ones(256 << 20, dtype=torch.uint8)  # 256 MB, every page touched
del tensor
kept = resident()
released = release_freed_memory()
print(released, kept - resident())
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists() or not hasattr(ctypes.CDLL(None), "malloc_trim"),
                    reason="needs Linux /proc and glibc's malloc_trim")
def test_released_memory_leaves_the_process():
    """Freed memory kept in the heap still counts as the process's resident memory until released."""
    out = subprocess.run([sys.executable, "-c", RELEASE], cwd=ROOT, check=True, capture_output=True, text=True)
    released, returned = out.stdout.split()
    assert released == "True" and int(returned) >= 200 << 20
