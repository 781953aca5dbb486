"""Just-in-time build and loading of the C++ CPU rasterizer in csrc/.

The build is keyed by a hash of the sources, compiler flags, torch and Python versions, and cached under
torch's extension directory (`$TORCH_EXTENSIONS_DIR`, default ~/.cache/torch_extensions), so it
happens once per machine and source change. Concurrent first uses (e.g. parallel test workers)
are serialised by torch's build lock.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from pathlib import Path

import torch

_HERE = Path(__file__).resolve().parent
# A wheel ships the sources inside this package (setup.py); a source checkout keeps them at its top level.
CSRC = _HERE / "csrc" if (_HERE / "csrc").is_dir() else _HERE.parents[1] / "csrc"
SOURCES = ("project.cpp", "sh_colors.cpp", "tiles.cpp", "composite_forward.cpp", "composite_backward.cpp", "ops.cpp")
HEADERS = ("splat.h", "simd.h", "small_math.h", "sh.h", "for_each_tile.h", "camera_sums.h", "composite_common.h")
# -ffp-contract=off: forward and backward must round identically so they agree on which
# (pixel, Gaussian) pairs pass the alpha test. -fno-trapping-math / -fno-math-errno (nothing reads
# FP traps or errno) let GCC if-convert and vectorise the compositing loops.
CFLAGS = ("-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno")
LDFLAGS = ("-fopenmp",)


def _build_name() -> str:
    digest = hashlib.sha256()
    for name in SOURCES + HEADERS:
        digest.update(name.encode())
        digest.update((CSRC / name).read_bytes())
    digest.update(" ".join(CFLAGS + LDFLAGS).encode())
    digest.update(f"{torch.__version__} py{sys.version_info[0]}.{sys.version_info[1]}".encode())
    return f"splat_cpu_{digest.hexdigest()[:12]}"


@functools.cache
def load_ops():
    """Compile (first use only) and load the kernels; returns the `torch.ops.splat_cpu` namespace."""
    from torch.utils.cpp_extension import get_default_build_root, load

    missing = [n for n in SOURCES + HEADERS if not (CSRC / n).is_file()]
    if missing:
        raise RuntimeError(
            f"the CPU rasterizer sources are missing from {CSRC} ({', '.join(missing)}); "
            "reinstall the project (pip install .) or use a full source checkout"
        )
    name = _build_name()
    build_dir = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()) / name
    library = build_dir / f"{name}.so"
    # torch holds build_dir/lock while a build (maybe in another process) is writing the library.
    if library.is_file() and not (build_dir / "lock").exists():
        torch.ops.load_library(str(library))
        return torch.ops.splat_cpu
    if not library.is_file():
        print("compiling the CPU rasterizer (first use only)...", file=sys.stderr, flush=True)
    build_dir.mkdir(parents=True, exist_ok=True)
    load(
        name=name,
        sources=[str(CSRC / n) for n in SOURCES],
        extra_cflags=list(CFLAGS),
        extra_ldflags=list(LDFLAGS),
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.splat_cpu
