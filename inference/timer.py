"""Wall-clock timing of pipeline stages, synchronised on CUDA so asynchronous kernels are counted.

A stage's end is also where its temporaries have died: the CPU memory they held is returned to the
system there (model/cpu_allocator.py), so stages do not stack their peaks.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

from model.cpu_allocator import release_freed_memory


class StageTimer:
    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str):
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            release_freed_memory()
