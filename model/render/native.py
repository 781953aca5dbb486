"""Just-in-time build and loading of the C++ CPU rasterizer in csrc/ (see model/native_build.py)."""

from __future__ import annotations

import functools

from model.native_build import load_library

SOURCES = ("project.cpp", "sh_colors.cpp", "tiles.cpp", "composite_forward.cpp", "composite_backward.cpp", "ops.cpp")
HEADERS = ("splat.h", "simd.h", "small_math.h", "sh.h", "for_each_tile.h", "camera_sums.h", "composite_common.h")
# -ffp-contract=off: forward and backward must round identically so they agree on which
# (pixel, Gaussian) pairs pass the alpha test. -fno-trapping-math / -fno-math-errno (nothing reads
# FP traps or errno) let GCC if-convert and vectorise the compositing loops.
CFLAGS = ("-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno")
LDFLAGS = ("-fopenmp",)


@functools.cache
def load_ops():
    """Compile (first use only) and load the kernels; returns the `torch.ops.splat_cpu` namespace."""
    return load_library("splat_cpu", SOURCES, HEADERS, CFLAGS, LDFLAGS, "the CPU rasterizer")
